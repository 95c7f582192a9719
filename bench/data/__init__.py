"""bench/data"""
