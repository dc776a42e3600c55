"""Retrieval: the modes and their fusion, the retriever that builds published matches, the
calibrated tiers, and the evaluation and calibration that measure and tune them."""
