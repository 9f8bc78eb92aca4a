"""Synthetic worlds with exact ground truth, shared by the data sets and the exact oracles."""
