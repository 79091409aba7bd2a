"""recs.features"""
