"""SavedModel export in TF Serving's layout: ``python -m tlmed_keras.export`` (``__main__``).

``savedmodel.export_savedmodel`` writes and verifies a version, ``archive`` the JAX
artifact. The serving format it writes (signature, folders, checked ``predict``) is
``tlmed_keras.serving``, which ``predict`` reads too. Importing
this package imports nothing: TensorFlow loads with its modules, after the backend is set.
"""
