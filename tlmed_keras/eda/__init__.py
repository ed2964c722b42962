"""Exploratory data analysis of MedMNIST splits (numpy, scikit-learn, matplotlib only).

Entry point: ``python -m tlmed_keras.eda`` (``__main__``); library:
``eda.write.write_eda(images, labels, info, out)``. Importing this package imports nothing,
so that a bad name or path fails before matplotlib and scikit-learn load.
"""
