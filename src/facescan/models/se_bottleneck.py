"""The report's SE bottleneck: torchvision's ``Bottleneck`` with squeeze-and-excitation."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch import Tensor, nn
from torchvision.models.resnet import Bottleneck
from torchvision.ops import SqueezeExcitation

from facescan.models.pooling import GlobalAvgPool2d


class SEBottleneck(Bottleneck):
    """torchvision ResNet-50 bottleneck with squeeze-and-excitation after the last BN.

    The residual branch is ``conv1x1-BN-ReLU, conv3x3-BN-ReLU, conv1x1-BN, SE`` and the SE output is
    added to the identity, as in the report and Hu et al. (2018). Every other detail (stride on the
    3x3 convolution, dilation, downsample) is torchvision's, so ``ResNet(SEBottleneck, ...)`` gives a
    backbone whose non-SE weights have the same names and shapes as ``torchvision.models.resnet50``.

    Args:
        inplanes: input channels.
        planes: bottleneck width; the block outputs ``planes * 4`` channels.
        stride: stride of the 3x3 convolution.
        downsample: projection of the identity when shape changes.
        groups: groups of the 3x3 convolution.
        base_width: width per group.
        dilation: dilation of the 3x3 convolution.
        norm_layer: normalisation layer (``nn.BatchNorm2d`` when None).
        se_reduction: the SE squeeze ratio (channels // se_reduction hidden units).
    """

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        dilation: int = 1,
        norm_layer: Callable[..., nn.Module] | None = None,
        se_reduction: int = 16,
    ) -> None:
        super().__init__(
            inplanes, planes, stride, downsample, groups, base_width, dilation, norm_layer
        )
        channels = planes * self.expansion
        if not 1 <= se_reduction <= channels:
            raise ValueError(f"se_reduction must be in 1..{channels}, got {se_reduction!r}")
        self.se = SqueezeExcitation(channels, channels // se_reduction)
        self.se.avgpool = GlobalAvgPool2d()  # the same mean, fast in bf16 channels-last

    def forward(self, x: Tensor) -> Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.se(self.bn3(self.conv3(out)))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


def se_bottleneck(se_reduction: int = 16) -> Callable[..., SEBottleneck]:
    """An ``SEBottleneck`` constructor with a fixed reduction, usable as torchvision's ``block``.

    torchvision's ``ResNet`` calls ``block(inplanes, planes, ...)`` positionally and reads
    ``block.expansion``; a ``partial`` carrying that attribute satisfies both.

    Args:
        se_reduction: the SE squeeze ratio.

    Returns:
        A callable building ``SEBottleneck`` blocks.
    """
    block = partial(SEBottleneck, se_reduction=se_reduction)
    block.expansion = SEBottleneck.expansion  # type: ignore[attr-defined]
    return block
