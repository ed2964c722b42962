"""Predictions on ordinary image files: ``python -m tlmed_keras.predict`` (``__main__``).

``images`` (no TensorFlow) reads PNG/JPEG/TIFF files (``depth``: 16/32-bit grey to 8 bits)
and DICOM (``dicom``), refuses what cannot give an answer, and brings the rest to a dataset's
stored size and channels the way MedMNIST made its images; ``sources`` wraps a run directory
or an exported SavedModel; ``classify`` runs them on files; ``familiar`` warns about images
unlike the training images; ``output`` prints the top classes as text, CSV or JSON;
``explain`` writes the ``--explain`` PNGs (maps: ``tlmed_keras.saliency``). Importing this
package imports nothing (``python -m`` imports it first).
"""
