"""Benchmarks: `python -m benchmarks NAME`. Figures are medians of repeated runs, reported as ratios
against a baseline measured in the same run, so they compare across machines."""
