"""Predictions on ordinary image files: ``python -m tlmed_keras.predict`` (``__main__``).

``images`` (no TensorFlow) reads PNG/JPEG files and brings them to a dataset's stored size
and channels the way MedMNIST made its images; ``sources`` wraps a run directory or an
exported SavedModel; ``classify`` runs them on files; ``output`` prints the top classes as
text, CSV or JSON; ``explain`` writes the ``--explain`` PNGs (maps: ``tlmed_keras.saliency``).
Importing this package imports nothing (``python -m`` imports it first).
"""
