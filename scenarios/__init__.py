"""recs.scenarios"""
