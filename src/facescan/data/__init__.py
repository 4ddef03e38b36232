"""facescan.data"""
