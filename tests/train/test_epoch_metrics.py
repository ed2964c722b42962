"""The epoch's metrics as data: one list of names drives the logs, history.csv, TensorBoard,
the summary line and --select_on."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tlmed_keras import housekeeping
from tlmed_keras.runs import config, rundir
from tlmed_keras.train import epoch_metrics, keras_metrics, selection
from tlmed_keras.train.callbacks import compute_metrics
from tlmed_keras.train.losses import make_loss

LOGS = {
    "loss": 0.5,
    "acc": 0.75,
    "auc": 0.8,
    "val_loss": 0.625,
    "val_acc": 0.5,
    "val_auc": 0.875,
    "learning_rate": 1e-3,
}


def test_history_columns_keep_their_order():
    # history.csv of earlier runs: epoch, phase, these, seconds.
    assert tuple(LOGS) == epoch_metrics.HISTORY_KEYS
    row = epoch_metrics.epoch_row({**LOGS, "val_auc": None, "other": 1.0})
    assert list(row) == list(LOGS) and row["val_auc"] is None and row["loss"] == 0.5


def test_tensorboard_scalars_per_split():
    assert epoch_metrics.by_split({**LOGS, "val_acc": None}) == {
        "train": {"loss": 0.5, "acc": 0.75, "auc": 0.8, "learning_rate": 1e-3},
        "validation": {"loss": 0.625, "auc": 0.875},
    }


def test_summary_text_is_the_epoch_line():
    text = epoch_metrics.summary_text({**LOGS, "auc": None})
    assert text == "loss 0.5000 acc 0.7500 auc n/a | val loss 0.6250 acc 0.5000 auc 0.8750"


def test_compiled_metrics_log_under_the_metric_names():
    names = [m.name for m in keras_metrics.train_metrics("multi-class", 3)]
    assert ["loss", *names] == list(epoch_metrics.METRICS)


def test_compute_metrics_returns_every_metric():
    y = np.array([[0], [1], [2], [1]])
    logits = np.eye(3)[[0, 1, 2, 2]] * 3.0
    got = compute_metrics(y, logits, "multi-class", make_loss(3, False, 0.0))
    assert tuple(got) == epoch_metrics.METRICS
    assert got["acc"] == 0.75 and 0 < got["loss"] < 1 and got["auc"] > 0.5
    nan = epoch_metrics.val_logs(epoch_metrics.undefined())
    assert list(nan) == ["val_loss", "val_acc", "val_auc"] and all(map(math.isnan, nan.values()))


def test_select_on_choices_are_the_metrics_default_first():
    assert config.SELECT_ON == ("auc", "acc", "loss")
    assert sorted(config.SELECT_ON) == sorted(epoch_metrics.METRICS)  # named in two layers
    assert config.Config().select_on == selection.DEFAULT == "auc"
    assert selection.selection_value(LOGS, "loss") == 0.625
    assert selection.improves(0.5, 0.625, "loss") and not selection.improves(0.5, 0.6, "auc")
    with pytest.raises(ValueError, match="accepted: auc, acc, loss"):
        config.check(config.Config(model="m", data="bloodmnist", select_on="f1"))


def test_save_model_renames_its_temporary_file(tmp_path):
    class Model:
        def save(self, path):
            path.write_bytes(b"model")

    run = rundir.RunDir(tmp_path)
    run.save_model(Model())
    assert sorted(p.name for p in tmp_path.iterdir()) == [rundir.MODEL_FILE]
    assert (tmp_path / rundir.MODEL_FILE).read_bytes() == b"model"
    # What a kill between save and rename leaves is cleaned up at the next start.
    (tmp_path / rundir.MODEL_TEMP_FILE).write_bytes(b"half")
    assert housekeeping.remove_stale_temps([tmp_path], lambda *a: None) == 1
