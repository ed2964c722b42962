"""The SavedModel serving format, written by ``export`` and read by ``predict``: the
signature (``signature``), the TF Serving folders and metadata (``layout``), and the checked
``predict`` with its comparison to Keras (``verify``). Importing this package imports nothing:
TensorFlow loads with its modules, after the backend is set.
"""
