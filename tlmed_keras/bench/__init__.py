"""Benchmark targets of ``python -m tlmed_keras.bench --target=NAME`` (``__main__``).

Each module here but ``__main__`` is a target named after the module. Its top level imports
only absl and the standard library. It provides:
- ``define_flags()`` (optional; flags defined at module level work too): defines the flags
  only this target uses. ``bench`` imports every target and calls it before parsing, so all
  targets' flags exist; a flag more than one target uses belongs in ``__main__.py``, since absl
  refuses a flag defined twice;
- ``check_flags()`` (optional): exits with a one-line error when the flags cannot work;
  ``bench`` calls it before setting up the backend, so bad input fails in a second;
- ``run() -> tuple[str, float]``: runs the benchmark from ``absl.flags.FLAGS`` and returns the
  name and value of its headline metric, which ``bench`` prints as the last line
  ``name=value``. Heavy imports (TensorFlow, Keras) go inside ``run``, after the backend is
  set.
"""
