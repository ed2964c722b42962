"""Experiments: the sweep runner (``python -m experiments.sweep``) and committed results."""
