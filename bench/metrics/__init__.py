"""bench/metrics"""
