"""recs.sim"""
