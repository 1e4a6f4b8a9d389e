"""Latency: per-block lookup tables measured on a real runtime, a calibrated vectorized predictor.

``profile.profile_space`` measures a table, ``predictor.load_predictor`` turns it into a cost
model (an ``AdditiveCost`` in ms), ``validate.validate_table`` checks it on fresh subnets.
"""
