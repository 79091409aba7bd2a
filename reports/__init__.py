"""recs.reports"""
