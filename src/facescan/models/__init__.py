"""facescan.models: the ResNet-50 / ASPP / (Cross Scan) ViT family of the ablation, torch only.

Entry points: :func:`list_variants`, :func:`resolve_options`, :func:`create_model`,
:func:`count_forward_flops`, :func:`count_parameters`. See docs/model.md.
"""

from facescan.models.aspp import ASPP, ASPPPooling
from facescan.models.attention import UNFUSED_MAX_TOKENS, SelfAttention
from facescan.models.classifier import MIN_INPUT_SIZE, FaceScanNet
from facescan.models.cross_scan import DIRECTIONS, cross_scan, cross_scan_pos_embed
from facescan.models.dropout import Dropout, dropout
from facescan.models.factory import create_model
from facescan.models.flops import count_forward_flops, count_parameters
from facescan.models.fusion import FeatureFusion
from facescan.models.patch_embed import PatchEmbed
from facescan.models.pooling import GlobalAvgPool2d
from facescan.models.pos_embed import sincos_pos_embed_2d
from facescan.models.pretrained import PretrainedReport, load_resnet50_weights
from facescan.models.resnet import resnet50_trunk
from facescan.models.se_bottleneck import SEBottleneck, se_bottleneck
from facescan.models.tta import TTA_CHOICES, HorizontalFlipTTA, single_view, with_tta
from facescan.models.variants import (
    DEFAULT_OPTIONS,
    OPTION_HELP,
    VARIANT_DESCRIPTIONS,
    VARIANTS,
    list_variants,
    resolve_options,
)
from facescan.models.vit import CrossScanViT, MidViT, TokenMeanPool, ViT, ViTBlock, ViTEncoder

__all__ = [
    "ASPP",
    "ASPPPooling",
    "DEFAULT_OPTIONS",
    "DIRECTIONS",
    "UNFUSED_MAX_TOKENS",
    "MIN_INPUT_SIZE",
    "OPTION_HELP",
    "VARIANTS",
    "TTA_CHOICES",
    "VARIANT_DESCRIPTIONS",
    "CrossScanViT",
    "Dropout",
    "FaceScanNet",
    "FeatureFusion",
    "GlobalAvgPool2d",
    "HorizontalFlipTTA",
    "MidViT",
    "PatchEmbed",
    "PretrainedReport",
    "SelfAttention",
    "SEBottleneck",
    "TokenMeanPool",
    "ViT",
    "ViTBlock",
    "ViTEncoder",
    "count_forward_flops",
    "count_parameters",
    "create_model",
    "cross_scan",
    "cross_scan_pos_embed",
    "dropout",
    "list_variants",
    "load_resnet50_weights",
    "resnet50_trunk",
    "resolve_options",
    "se_bottleneck",
    "sincos_pos_embed_2d",
    "single_view",
    "with_tta",
]
