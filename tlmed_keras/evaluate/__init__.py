"""Evaluation of a finished run: MedMNIST metrics, per-class report, figures.

``report.evaluate_run`` / ``evaluate_ensemble`` (entry: ``python -m tlmed_keras.evaluate``,
``__main__``); ``evaluation`` holds the numbers and the summary, ``figures`` the PNGs. A run's data
(``runs.split``) and seed ensembles (``runs.ensemble``) are shared with ``export``.
The MedMNIST metrics themselves are ``tlmed_keras.metrics`` (shared with ``train``).
"""
