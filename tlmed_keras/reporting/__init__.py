"""Evaluation of a finished run: MedMNIST metrics, per-class report, figures.

``report.evaluate_run`` (entry: ``python -m tlmed_keras.evaluate``); ``evaluation`` holds the
numbers and the summary, ``figures`` the PNGs, ``split`` finds a run's data.
"""
