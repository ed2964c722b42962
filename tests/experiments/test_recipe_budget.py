"""experiments.recipe_budget: the synthetic 5,000-image split passes the loader's checks."""

from __future__ import annotations

import numpy as np

from experiments import recipe_budget
from tlmed_keras.data import catalog, read_splits


def test_synthetic_split_is_shaped_like_the_official_file(tmp_path):
    path = recipe_budget.synthetic_npz(tmp_path, train_images=300)
    info = catalog.get_info(recipe_budget.DATA)
    splits = read_splits(path, info)  # header, dtype, shape and label checks of the trainer
    assert splits.sizes() == {**info.split_sizes, "train": 300}
    images, labels = splits["train"]
    assert images.dtype == np.uint8 and images.shape[1:] == info.image_shape
    assert set(np.unique(labels)) == {0, 1}
