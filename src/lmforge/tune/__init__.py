"""Tuning: hyperparameter sweeps (space.py parses a sweep file, sweep.py runs it with Optuna) and
scaling-law fits over a ladder of model sizes and compute budgets (scaling.py)."""
