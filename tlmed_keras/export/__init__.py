"""SavedModel export in TF Serving's layout: ``python -m tlmed_keras.export`` (``__main__``).

``savedmodel.export_savedmodel`` writes and verifies a version, ``verify`` holds the checked
``predict`` and the comparison with Keras, ``signature`` the serving signature, ``layout``
the folders, ``models.config`` and ``request.json``, ``archive`` the JAX artifact. Importing
this package imports nothing: TensorFlow loads with its modules, after the backend is set.
"""
