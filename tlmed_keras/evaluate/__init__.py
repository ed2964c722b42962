"""Evaluation of a finished run: MedMNIST metrics, per-class report, figures.

``report.evaluate_run`` / ``evaluate_ensemble`` (entry: ``python -m tlmed_keras.evaluate``,
``__main__``); ``evaluation`` holds the numbers and the summary, ``figures`` the PNGs,
``split`` finds a run's data, ``ensemble`` averages seed runs (also used by ``export``),
``explain`` draws the saliency montage of ``--explain=K`` (maps: ``tlmed_keras.saliency``).
The MedMNIST metrics themselves are ``tlmed_keras.metrics`` (shared with ``train``).
"""
