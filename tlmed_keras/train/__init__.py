"""Fine-tuning job (``python -m tlmed_keras.train``, ``__main__``): config, schedules,
callbacks, run directory, trainer. The MedMNIST metrics are ``tlmed_keras.metrics`` (shared
with ``evaluate``). Importing this package imports nothing.
"""
