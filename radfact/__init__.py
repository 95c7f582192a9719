"""radfact"""
