"""facescan.datasets"""
