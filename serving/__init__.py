"""recs.serving"""
