"""Evaluation of a finished run: MedMNIST metrics, per-class report, figures.

``report.evaluate_run`` / ``evaluate_ensemble`` (entry: ``python -m tlmed_keras.evaluate``,
``__main__``); ``evaluation`` holds the numbers and the summary, ``figures`` the PNGs,
``calibrate`` the calibration part of the report (the temperature itself is found or fitted
by ``runs.calibration``, shared with ``export`` and ``predict``), ``compare`` is
``--compare``'s paired difference of two runs or ensembles, ``explain`` draws the saliency
montage of ``--explain=K`` (maps: ``tlmed_keras.saliency``). A run's data (``runs.split``)
and seed ensembles (``runs.ensemble``) are shared with ``export``.
The MedMNIST metrics themselves are ``tlmed_keras.metrics`` (shared with ``train``).
"""
