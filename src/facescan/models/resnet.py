"""The ResNet-50 trunk of every variant, built by torchvision's ``ResNet``."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn
from torchvision.models.resnet import Bottleneck, ResNet

from facescan.models.se_bottleneck import se_bottleneck

RESNET50_LAYERS = (3, 4, 6, 3)


def resnet50_trunk(
    *,
    se: bool = False,
    se_reduction: int = 16,
    dilated: bool = False,
    dilation_rates: Sequence[int] = (2, 4),
    layer4_in_channels: int = 1024,
    num_classes: int = 2,
    zero_init_residual: bool = True,
) -> ResNet:
    """A torchvision ResNet-50, optionally with SE bottlenecks, dilation and a narrower layer4 input.

    Dilation is torchvision's ``replace_stride_with_dilation=[False, True, True]`` (output stride 8
    instead of 32). torchvision then dilates layer3 by 2 and layer4 by 4, the first block of each
    keeping the previous rate (DeepLab's convention); ``dilation_rates`` replaces those two rates.

    Args:
        se: use :class:`SEBottleneck` instead of torchvision's ``Bottleneck``.
        se_reduction: SE squeeze ratio.
        dilated: remove the stride of layer3 and layer4 and dilate their 3x3 convolutions.
        dilation_rates: the dilation of layer3 and of layer4 when ``dilated``.
        layer4_in_channels: input channels of layer4 (1024 normally; the mid ViT's width when a
            ViT sits between layer3 and layer4, as the authors built it).
        num_classes: outputs of the ``fc`` layer.
        zero_init_residual: start each bottleneck's last BatchNorm at 0 (torchvision's option), so
            every residual block starts as the identity; from-scratch training starts faster.

    Returns:
        The ``ResNet`` module (callers take its stem, layers and ``fc``).
    """
    block = se_bottleneck(se_reduction) if se else Bottleneck
    model = ResNet(
        block,  # type: ignore[arg-type]
        list(RESNET50_LAYERS),
        num_classes=num_classes,
        replace_stride_with_dilation=[False, dilated, dilated],
        zero_init_residual=zero_init_residual,
    )
    if layer4_in_channels != model.layer4[0].conv1.in_channels:
        # Rebuild layer4 with torchvision's own layer factory, from the state it had after layer3.
        model.inplanes = layer4_in_channels
        model.dilation = 2 if dilated else 1
        model.layer4 = model._make_layer(block, 512, RESNET50_LAYERS[3], stride=2, dilate=dilated)  # type: ignore[arg-type]
        init_resnet_weights(model.layer4)
        if zero_init_residual:
            for block in model.layer4:
                nn.init.zeros_(block.bn3.weight)
    if dilated:
        rate3, rate4 = dilation_rates
        _set_dilation(model.layer3, first=1, rest=rate3)
        _set_dilation(model.layer4, first=rate3, rest=rate4)
    return model


def _set_dilation(layer: nn.Sequential, first: int, rest: int) -> None:
    """Set the 3x3 convolutions' dilation (and 'same' padding) of a stride-free layer."""
    for i, block in enumerate(layer):
        rate = first if i == 0 else rest
        conv = block.conv2
        conv.dilation = (rate, rate)
        conv.padding = (rate, rate)


def init_resnet_weights(module: nn.Module) -> None:
    """The weight initialisation ``torchvision.models.ResNet.__init__`` applies."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)
