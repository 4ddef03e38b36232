"""FaceScanNet: one classifier class assembling every ablation variant from options."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from facescan.models.aspp import ASPP
from facescan.models.fusion import FeatureFusion
from facescan.models.pooling import GlobalAvgPool2d
from facescan.models.resnet import init_resnet_weights, resnet50_trunk
from facescan.models.variants import ModelOptions, resolve_options
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

    Args:
        options: the validated architecture (:class:`~facescan.models.variants.ModelOptions`:
            every option's default, meaning and checks); or, without it, ``**kwargs``: option
            values over the defaults, validated the same way (errors name the option). Most code
            builds variants with :func:`facescan.models.create_model` instead.

    Attributes:
        num_features: width of the pooled features fed to ``fc``.
        options: the options the model was built from (plain dict, what a checkpoint stores).
    """

    def __init__(self, options: ModelOptions | None = None, **kwargs: Any) -> None:
        super().__init__()
        o = options if options is not None else ModelOptions(**resolve_options(kwargs))
        # The options the model was built from (JSON-friendly): what a checkpoint stores.
        self.options: dict[str, Any] = o.model_dump()
        vit_args = {
            "depth": o.vit_depth,
            "heads": o.vit_heads,
            "mlp_ratio": o.vit_mlp_ratio,
            "dropout": o.vit_dropout,
            "attention_dropout": o.vit_attention_dropout,
        }

        trunk = resnet50_trunk(
            se=o.se,
            se_reduction=o.se_reduction,
            dilated=o.dilated,
            dilation_rates=o.dilation_rates,
            layer4_in_channels=o.vit_dim if o.vit == "mid" else 1024,
            num_classes=o.num_classes,
            zero_init_residual=o.zero_init_residual,
        )
        self.conv1, self.bn1 = trunk.conv1, trunk.bn1
        self.relu, self.maxpool = trunk.relu, trunk.maxpool
        self.layer1, self.layer2, self.layer3 = trunk.layer1, trunk.layer2, trunk.layer3
        self.mid_vit: nn.Module = (
            MidViT(1024, o.vit_dim, o.mid_patch_size, **vit_args)
            if o.vit == "mid"
            else nn.Identity()
        )
        self.layer4 = trunk.layer4
        channels = 2048

        self.aspp: nn.Module = nn.Identity()
        if o.aspp:
            self.aspp = ASPP(channels, o.aspp_channels, o.aspp_rates)
            init_resnet_weights(self.aspp)  # the authors initialise every conv this way
            channels = o.aspp_channels

        self.tail_vit: nn.Module = nn.Identity()
        self.global_pool: nn.Module = nn.Sequential(GlobalAvgPool2d(), nn.Flatten(1))
        if o.vit == "tail":
            tail_cls = CrossScanViT if o.cross_scan else ViT
            self.tail_vit = tail_cls(channels, o.vit_dim, o.tail_patch_size, **vit_args)
            pool: list[nn.Module] = [TokenMeanPool()]
            if o.cross_scan:
                pool.append(FeatureFusion(o.vit_dim, reduction=o.se_reduction))
            if o.head_norm:
                pool.append(nn.LayerNorm(o.vit_dim))
            self.global_pool = nn.Sequential(*pool)
            channels = o.vit_dim
        if o.vit_init == "timm":
            for part in (self.mid_vit, self.tail_vit):
                init_vit_weights(part)
        self.num_features = channels
        self.fc = nn.Linear(channels, o.num_classes)
        if o.zero_init_head:
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
