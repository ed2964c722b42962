"""Bad flags fail before any work (no data loaded, no workdir written) with a specific message."""

from __future__ import annotations

import dataclasses

import pytest

from tests import tiny_registry
from tlmed_keras.runs import config as cfg
from tlmed_keras.train.trainer import train_and_evaluate

BAD = [
    ({"head_epochs": -1}, "--head_epochs=-1"),
    ({"finetune_epochs": -2}, "--finetune_epochs=-2"),
    ({"head_epochs": 0, "finetune_epochs": 0}, "nothing to do"),
    ({"optimizer": "lion"}, "--optimizer='lion'.*adamw, adam, sgd"),
    ({"data": "mnist"}, "--data='mnist'.*bloodmnist"),
    ({"size": 32}, "--size=32"),
    ({"model": "resnet9000"}, "--model='resnet9000'"),
    ({"image_size": 8}, "--image_size=8.*at least 16"),
    ({"batch_size": 33}, "--batch_size=33.*32 training images"),
    ({"unfreeze": "3"}, "--unfreeze='3'.*2 blocks"),
    ({"unfreeze": "half"}, "--unfreeze='half'"),
    ({"head_lr": 0.0}, "--head_lr=0.0"),
    ({"warmup_epochs": 5.0}, "--warmup_epochs=5.0"),
    ({"label_smoothing": 1.0}, "--label_smoothing=1.0"),
    ({"class_weight": "inverse"}, "--class_weight='inverse'"),
    ({"augment": "mixup"}, "--augment='mixup'"),
    ({"weights": "/no/such/file.pth"}, "--weights='/no/such/file.pth'"),
    ({"interpolation": "lanczos"}, "--interpolation='lanczos'"),
    ({"distribute": "fsdp"}, "--distribute='fsdp'"),
    ({"divergence_factor": 0.5}, "--divergence_factor=0.5.*0 \\(off\\) or a number > 1"),
    ({"on_divergence": "ignore"}, "--on_divergence='ignore'.*stop, warn"),
    # Lower bounds declared in the fields (minimum=):
    ({"eval_batch_size": 0}, "--eval_batch_size=0: must be >= 1\\."),
    ({"weight_decay": -0.1}, "--weight_decay=-0.1: must be >= 0\\."),
    ({"patience": -1}, "--patience=-1: must be >= 0\\."),
    ({"mixup": -0.2}, "--mixup=-0.2: must be >= 0\\."),
    ({"layer_decay": 0.0}, "--layer_decay=0.0: must be in \\(0, 1\\]; 1 = off"),
    ({"layer_decay": 1.5}, "--layer_decay=1.5: must be in"),
    ({"cutmix": float("nan")}, "--cutmix=nan: use 0 \\(off\\) or a positive Beta alpha"),
    ({"ordinal_smoothing": -0.5}, "--ordinal_smoothing=-0.5: must be >= 0\\."),
    ({"ordinal_smoothing": float("inf")}, "--ordinal_smoothing=inf: use 0 \\(off\\) or a width"),
    ({"cv_folds": 1}, "--cv_folds=1: use 0 \\(official split\\) or K >= 2"),
    ({"cv_folds": 5, "cv_fold": 5}, "--cv_fold=5: with --cv_folds=5 use 0 to 4"),
    ({"cv_fold": 2}, "--cv_fold=2: it picks one of --cv_folds folds"),
    ({"cv_folds": 3, "data_source": "stream"}, "--data_source='stream': --cv_folds re-splits"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD, ids=[m for _, m in BAD])
def test_bad_flag_fails_before_any_work(tiny_config, tmp_path, overrides, message):
    config = tiny_config(n={"train": 32, "val": 16, "test": 16})
    config = dataclasses.replace(config, **overrides)
    workdir = tmp_path / "run"
    with pytest.raises(ValueError, match=message):
        train_and_evaluate(config, workdir, registry=tiny_registry)
    assert not workdir.exists()


def test_batch_larger_than_catalog_split_fails_without_data(tmp_path):
    config = cfg.Config(model="tiny_cnn", data="breastmnist", batch_size=1024, weights="none")
    with pytest.raises(ValueError, match="--batch_size=1024.*546 training images"):
        train_and_evaluate(config, tmp_path / "run", registry=tiny_registry)


def test_flagfile_round_trip():
    config = cfg.Config(model="m", data="bloodmnist", mixed_precision=True, unfreeze="3")
    from absl import flags

    values = flags.FlagValues()
    for name, default, help_ in cfg.fields_help():
        define = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float}
        define.get(type(default), flags.DEFINE_string)(name, default, help_, flag_values=values)
    values(["prog", *config.to_flagfile().split()])
    parsed = cfg.Config(**{name: values[name].value for name, _, _ in cfg.fields_help()})
    assert parsed == config
    assert parsed.unfreeze_mode == 3


def test_flip_tta_on_a_set_whose_labels_name_body_sides_fails_before_any_work(tmp_path):
    """OrganAMNIST's labels include kidney-left / kidney-right: averaging an image with its
    mirror would blend the two classes, so --tta=flip is refused naming the labels."""
    config = cfg.Config(model="tiny_cnn", data="organamnist", tta="flip", weights="none")
    with pytest.raises(ValueError, match="--tta=flip for organamnist.*kidney-left.*--tta=none"):
        train_and_evaluate(config, tmp_path / "run", registry=tiny_registry)
    assert not (tmp_path / "run").exists()
