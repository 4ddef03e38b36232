"""facescan: tells real face photos from AI-generated ones, and reproduces the CrossScanViT+ResNet ablation."""

__version__ = "0.1.0"
