"""Fine-tuning job (``python -m tlmed_keras.train``, ``__main__``): schedules, callbacks,
trainer. The run directory and the run's config are ``tlmed_keras.runs`` (read by every job);
the MedMNIST metrics are ``tlmed_keras.metrics``. Importing this package imports nothing.
"""
