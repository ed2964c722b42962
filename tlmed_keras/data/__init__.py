"""MedMNIST data: catalog, verified files, arrays, TFDS builder and the tf.data pipeline.

Importing this package is light (numpy only): TensorFlow and Keras load with ``pipeline``,
``preprocess`` and ``tfds_builder``.
"""

from tlmed_keras.data.arrays import Splits, load_arrays, read_splits

__all__ = ["Splits", "load_arrays", "read_splits"]
