"""saerad"""
