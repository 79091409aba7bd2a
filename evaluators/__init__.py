"""recs.evaluators"""
