"""recs.datasets"""
