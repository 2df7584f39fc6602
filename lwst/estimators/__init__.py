"""Warp estimators other than the learned network (optimisation, parametric fits)."""
