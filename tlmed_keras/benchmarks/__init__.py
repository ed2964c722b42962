"""Benchmark targets of ``python -m tlmed_keras.bench --target=NAME``.

Each module here is a target named after the module. Its top level imports only absl and the
standard library and defines its own flags (``bench`` imports every target before parsing
flags, so the flags of all targets exist). It provides ``run() -> tuple[str, float]``: the
name and value of its headline metric, which ``bench`` prints as the last line
``name=value``. Heavy imports (TensorFlow, Keras) go inside ``run``, after the backend is set.
"""
