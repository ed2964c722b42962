"""Evaluation of a finished run: metrics, per-class report, figures."""
