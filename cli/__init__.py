"""recs.cli"""
