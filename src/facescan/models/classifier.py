"""FaceScanNet: one classifier class assembling every ablation variant from options."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from facescan.models.aspp import ASPP
from facescan.models.fusion import FeatureFusion
from facescan.models.pooling import GlobalAvgPool2d
from facescan.models.resnet import init_resnet_weights, resnet50_trunk
from facescan.models.vit import CrossScanViT, MidViT, TokenMeanPool, ViT

#: Smallest input side every variant accepts (ResNet-50 reduces 32 px to one layer4 position).
MIN_INPUT_SIZE = 32


def init_vit_weights(module: nn.Module, std: float = 0.02) -> None:
    """timm's ViT initialisation (``init_weights_vit_timm``), for PyTorch's attention layout.

    Every ``nn.Linear`` (MLP, attention output) and ``nn.MultiheadAttention``'s packed q/k/v
    projection get a normal of ``std`` truncated at +-2 std (JAX/Flax's ``truncated_normal``
    convention; the resulting std is 0.88 ``std``; timm's ``trunc_normal_(std=.02)`` cuts at +-2
    absolute, which leaves it untruncated: see docs/model.md) and zero biases; LayerNorms start at
    weight 1, bias 0. The patch-embedding convolution keeps PyTorch's default, as in timm.
    """
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=std, a=-2 * std, b=2 * std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.MultiheadAttention):
            if m.in_proj_weight is not None:
                nn.init.trunc_normal_(m.in_proj_weight, std=std, a=-2 * std, b=2 * std)
            if m.in_proj_bias is not None:
                nn.init.zeros_(m.in_proj_bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class FaceScanNet(nn.Module):
    """ResNet-50 with the report's optional modules; returns logits ``(B, num_classes)``.

    ``stem, layer1-3 -> [mid ViT] -> layer4 -> [ASPP] -> [tail ViT | Cross Scan ViT] -> pool -> fc``.
    A part switched off is ``nn.Identity`` and the pooling matches what precedes it (average pool
    of a map, mean of tokens, or mean of each direction's tokens followed by :class:`FeatureFusion`),
    so ``forward`` is the same for every variant. Module names follow torchvision's ResNet
    (``conv1``, ``bn1``, ``layer1``..``layer4``, ``fc``): the baseline's state dict is exactly
    ``torchvision.models.resnet50(num_classes=2)``'s, and ImageNet weights load by name.

    Build it with :func:`facescan.models.create_model`, which validates the options; the keyword
    arguments here are the option keys of ``facescan.models.variants.DEFAULT_OPTIONS``.

    Args:
        se: SE bottlenecks (``torchvision.ops.SqueezeExcitation`` after the last BN).
        se_reduction: SE ratio of the bottlenecks and of FeatureFusion.
        dilated: output stride 8 (layer3 and layer4 dilated instead of strided).
        dilation_rates: dilation of layer3 and layer4 when dilated.
        aspp: ASPP after layer4.
        aspp_rates: dilation rates of ASPP's 3x3 branches.
        aspp_channels: ASPP output channels.
        vit: None, ``"mid"`` (between layer3 and layer4) or ``"tail"`` (after layer4 / ASPP).
        cross_scan: at the tail, Cross Scan ViT + FeatureFusion instead of one token sequence.
        vit_dim: token width.
        vit_depth: transformer blocks.
        vit_heads: attention heads.
        vit_mlp_ratio: MLP hidden width / ``vit_dim``.
        vit_dropout: transformer dropout (block outputs and MLP).
        vit_attention_dropout: dropout on the attention weights.
        mid_patch_size: patch side of the mid ViT's embedding convolution.
        tail_patch_size: patch side of the tail ViT's embedding convolution.
        num_classes: outputs.
        zero_init_residual: start every bottleneck's last BN at 0 (identity residual blocks).
        vit_init: ``"timm"`` (truncated normal 0.02 for the transformers' linear maps, zero
            biases) or ``"torch"`` (PyTorch's defaults); see :func:`init_vit_weights`.
        head_norm: LayerNorm on the pooled features before ``fc`` when the tail is a ViT.
        zero_init_head: ``fc`` starts at zero (p_fake 0.5 for every image).

    Attributes:
        num_features: width of the pooled features fed to ``fc``.
        options: the options the model was built from (``create_model`` stores the resolved dict,
            ``pretrained`` included).
    """

    def __init__(
        self,
        *,
        se: bool = False,
        se_reduction: int = 16,
        dilated: bool = False,
        dilation_rates: Sequence[int] = (2, 4),
        aspp: bool = False,
        aspp_rates: Sequence[int] = (3, 5, 7),
        aspp_channels: int = 256,
        vit: str | None = None,
        cross_scan: bool = False,
        vit_dim: int = 512,
        vit_depth: int = 4,
        vit_heads: int = 8,
        vit_mlp_ratio: float = 4.0,
        vit_dropout: float = 0.1,
        vit_attention_dropout: float = 0.0,
        mid_patch_size: int = 1,
        tail_patch_size: int = 2,
        num_classes: int = 2,
        zero_init_residual: bool = True,
        vit_init: str = "timm",
        head_norm: bool = True,
        zero_init_head: bool = True,
    ) -> None:
        super().__init__()
        if vit not in (None, "mid", "tail"):
            raise ValueError(f"vit must be None, 'mid' or 'tail', got {vit!r}")
        if cross_scan and vit != "tail":
            raise ValueError(
                f"cross_scan needs vit: tail (it is the tail ViT's input), got vit: {vit!r}"
            )
        # The constructor's own arguments (JSON-friendly); create_model replaces them with the
        # resolved options, ``pretrained`` included.
        self.options: dict[str, Any] = {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in locals().items()
            if k not in ("self", "__class__")
        }
        vit_args = {
            "depth": vit_depth,
            "heads": vit_heads,
            "mlp_ratio": vit_mlp_ratio,
            "dropout": vit_dropout,
            "attention_dropout": vit_attention_dropout,
        }

        trunk = resnet50_trunk(
            se=se,
            se_reduction=se_reduction,
            dilated=dilated,
            dilation_rates=dilation_rates,
            layer4_in_channels=vit_dim if vit == "mid" else 1024,
            num_classes=num_classes,
            zero_init_residual=zero_init_residual,
        )
        self.conv1, self.bn1 = trunk.conv1, trunk.bn1
        self.relu, self.maxpool = trunk.relu, trunk.maxpool
        self.layer1, self.layer2, self.layer3 = trunk.layer1, trunk.layer2, trunk.layer3
        self.mid_vit: nn.Module = (
            MidViT(1024, vit_dim, mid_patch_size, **vit_args) if vit == "mid" else nn.Identity()
        )
        self.layer4 = trunk.layer4
        channels = 2048

        self.aspp: nn.Module = nn.Identity()
        if aspp:
            self.aspp = ASPP(channels, aspp_channels, aspp_rates)
            init_resnet_weights(self.aspp)  # the authors initialise every conv this way
            channels = aspp_channels

        self.tail_vit: nn.Module = nn.Identity()
        self.global_pool: nn.Module = nn.Sequential(GlobalAvgPool2d(), nn.Flatten(1))
        if vit == "tail":
            tail_cls = CrossScanViT if cross_scan else ViT
            self.tail_vit = tail_cls(channels, vit_dim, tail_patch_size, **vit_args)
            pool: list[nn.Module] = [TokenMeanPool()]
            if cross_scan:
                pool.append(FeatureFusion(vit_dim, reduction=se_reduction))
            if head_norm:
                pool.append(nn.LayerNorm(vit_dim))
            self.global_pool = nn.Sequential(*pool)
            channels = vit_dim
        if vit_init == "timm":
            for part in (self.mid_vit, self.tail_vit):
                init_vit_weights(part)
        elif vit_init != "torch":
            raise ValueError(f"vit_init must be 'timm' or 'torch', got {vit_init!r}")
        self.num_features = channels
        self.fc = nn.Linear(channels, num_classes)
        if zero_init_head:
            nn.init.zeros_(self.fc.weight)
            nn.init.zeros_(self.fc.bias)

    def transformer_parameters(self) -> list[nn.Parameter]:
        """The parameters of the mid and tail ViTs (patch embeddings and encoders).

        Training may give them their own learning rate (``training.transformer_lr_scale``).
        """
        return [*self.mid_vit.parameters(), *self.tail_vit.parameters()]

    def forward_features(self, x: Tensor) -> Tensor:
        """Images ``(B, 3, H, W)`` to the last features before pooling.

        Returns:
            ``(B, C, h, w)`` map, ``(B, N, D)`` tokens (tail ViT) or ``(B, 4, N, D)`` (Cross Scan).

        Raises:
            ValueError: if ``x`` is not ``(B, 3, H, W)`` with H, W >= 32.
        """
        if x.ndim != 4 or x.shape[1] != 3 or min(x.shape[-2:]) < MIN_INPUT_SIZE:
            raise ValueError(
                f"FaceScanNet expects images (B, 3, H, W) with H, W >= {MIN_INPUT_SIZE}, "
                f"got {tuple(x.shape)}"
            )
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = self.layer4(self.mid_vit(x))
        return self.tail_vit(self.aspp(x))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Pool the features of :meth:`forward_features` to ``(B, num_features)`` and classify.

        Args:
            x: output of :meth:`forward_features`.
            pre_logits: return the pooled features instead of the logits.
        """
        x = self.global_pool(x)
        return x if pre_logits else self.fc(x)

    def forward(self, x: Tensor) -> Tensor:
        """Images ``(B, 3, H, W)``, ImageNet-normalised, to logits ``(B, num_classes)``."""
        return self.forward_head(self.forward_features(x))
