"""facescan.training"""
