"""recs.models"""
