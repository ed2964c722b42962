"""Exploratory data analysis of MedMNIST splits (numpy, scikit-learn, matplotlib only).

Entry point: ``python -m tlmed_keras.eda``; library: ``write_eda(images, labels, info, out)``.
"""

from tlmed_keras.analysis.classes import ClassView, class_view, short_name
from tlmed_keras.analysis.report import EdaOptions, write_eda
from tlmed_keras.analysis.sampling import stratified_sample

__all__ = [
    "ClassView",
    "EdaOptions",
    "class_view",
    "short_name",
    "stratified_sample",
    "write_eda",
]
