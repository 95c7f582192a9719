"""bench/systems"""
