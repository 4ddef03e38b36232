"""facescan.models"""
