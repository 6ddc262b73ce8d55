"""Sweeps: trials of recipe variations (trials.py), their search space, ranking and comparison."""
