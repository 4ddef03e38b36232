"""facescan.evaluation"""
