"""recs.bundle"""
