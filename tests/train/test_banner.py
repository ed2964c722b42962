"""The run's banner, --verbose, "what next" lines, TensorBoard flags (issue #16 items 2, 4, 6)."""

from __future__ import annotations

import pathlib
import re

import numpy as np
import pytest
import tensorflow as tf

from tests import tiny_registry
from tlmed_keras.data import catalog
from tlmed_keras.runs.rundir import load_run
from tlmed_keras.train import banner
from tlmed_keras.train.trainer import train_and_evaluate

EPOCH_LINE = re.compile(r"^\[phase [12] (head|finetune)\] epoch [12]/2: loss ")


def _train(config, workdir, verbose):
    lines: list[str] = []
    train_and_evaluate(
        config,
        workdir,
        registry=tiny_registry,
        say=lambda *a, **k: lines.append(" ".join(map(str, a))),
        verbose=verbose,
    )
    return lines


def _events(folder: pathlib.Path) -> list:
    files = sorted(folder.glob("events.out.tfevents.*"))
    return [event for f in files for event in tf.compat.v1.train.summary_iterator(str(f))]


def test_banner_epoch_lines_next_steps_and_tensorboard(tiny_config, tmp_path, capsys):
    config = tiny_config("bloodmnist", backend="jax")
    workdir = tmp_path / "run"
    lines = _train(config, workdir, verbose=2)
    said = "\n".join(lines)
    stdout = capsys.readouterr().out

    info = catalog.get_info("bloodmnist")
    assert f"run dir     {workdir}" in said
    assert "backend     jax (--backend=jax)" in said
    assert "train 32 / val 16 / test 16" in said
    assert f"bloodmnist ({info.task}), 8 classes: {info.label_names[0]!r}" in said
    run = load_run(workdir)
    assert f"28 px stored -> {run.preprocess.image_size} px (bilinear)" in said
    counts = {}
    for phase in ("1", "2"):
        match = re.search(
            rf"phase {phase} [^\n]*\n +params trainable ([\d,]+) / frozen ([\d,]+)", said
        )
        assert match, said
        counts[phase] = [int(g.replace(",", "")) for g in match.groups()]
    total = run.model.count_params()
    assert sum(counts["1"]) == sum(counts["2"]) == total
    assert 0 < counts["1"][0] < counts["2"][0]  # the head alone, then more
    # The banner comes before the first epoch; one line per epoch, no Keras bar.
    first_epoch = next(i for i, line in enumerate(lines) if EPOCH_LINE.match(line))
    assert any(line.startswith("run dir") for line in lines[:first_epoch])
    assert sum(bool(EPOCH_LINE.match(line)) for line in lines) == 2
    assert "-- phase 1 (head)" in said and "-- phase 2 (finetune)" in said
    assert "\r" not in stdout and "\x1b" not in stdout and "Epoch 1/2" not in stdout
    assert f"tlmed_keras.evaluate --workdir={workdir}" in lines[-4]
    assert lines[-1].strip().startswith(f"uv run tensorboard --logdir={workdir / 'tb'}")

    root = _events(workdir / "tb")
    tags = {v.tag: v for e in root for v in e.summary.value}
    assert "_hparams_/session_start_info" in tags
    flags_text = tf.make_ndarray(tags["flags"].tensor).item().decode()
    assert "| `--model` | `tiny_cnn` |" in flags_text
    assert "| `--resolved_backend` | `jax` |" in flags_text
    train = _events(workdir / "tb" / "train")
    phase = [(e.step, v) for e in train for v in e.summary.value if v.tag == "phase"]
    plugins = sorted((step, v.metadata.plugin_data.plugin_name) for step, v in phase)
    assert plugins == [(0, "scalars"), (0, "text"), (1, "scalars"), (1, "text")]
    values = [float(tf.make_ndarray(v.tensor)) for _, v in sorted(phase, key=lambda p: p[0])
              if v.metadata.plugin_data.plugin_name == "scalars"]  # fmt: skip
    assert values == [1.0, 2.0]


def test_verbose_1_shows_the_bar_without_a_second_epoch_line(tiny_config, tmp_path, capsys):
    lines = _train(tiny_config(finetune_epochs=0, backend="jax"), tmp_path / "run", verbose=1)
    stdout = capsys.readouterr().out
    # Keras' bar, whose last update carries the epoch's validation metrics and rate.
    assert "\r" in stdout and "val_auc: " in stdout and "learning_rate: " in stdout
    assert not any(EPOCH_LINE.match(line) for line in lines)


def test_verbose_mode_defaults_to_lines_off_a_terminal():
    assert banner.verbose_mode(None, is_tty=True) == 1
    assert banner.verbose_mode(None, is_tty=False) == 2
    assert banner.verbose_mode(0, is_tty=True) == 0
    with pytest.raises(ValueError, match=r"Bad --verbose=3: accepted 0"):
        banner.verbose_mode(3, is_tty=False)


def test_backend_reason_says_why():
    assert "auto: no GPU/TPU" in banner.backend_reason("auto", "tensorflow")
    assert banner.backend_reason("auto", "jax") == "jax (auto: JAX sees a GPU/TPU)"
    assert banner.backend_reason("torch", "torch") == "torch (--backend=torch)"
    assert np.int64(banner.count_params([np.zeros((3, 4)), np.zeros(5)])) == 17


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("organamnist", "augment     flip without horizontal flips (labels name body sides: "),
        ("retinamnist", "augment     flip, mixup 0.2, ordinal soft labels, width 0.7 grades"),
        ("bloodmnist", "augment     flip, mixup 0.2, no ordinal soft labels (the task is multi"),
    ],
)
def test_banner_says_what_the_training_batches_get(data, expected):
    from tlmed_keras.runs.config import Config

    info = catalog.get_info(data)
    mixup = 0.0 if data == "organamnist" else 0.2
    config = Config(model="m", data=data, augment="flip", mixup=mixup, ordinal_smoothing=0.7)
    resolved = {
        "backend": "jax",
        "task": info.task,
        "label_names": list(info.label_names),
        "image_size": 32,
        "steps_per_epoch": 3,
    }
    lines = banner.start_lines(config, "w", resolved, info.split_sizes, None, [], ["cpu"])
    assert any(line.startswith(expected) for line in lines), lines


@pytest.mark.parametrize(
    ("folds", "fold", "expected"),
    [
        (0, 0, "splits      train 499 / val 125 / test 156"),
        (5, 3, "splits      train 499 / val 125 / test 156 (val = fold 3 of 5 of train + val)"),
    ],
)
def test_banner_says_val_is_a_fold_when_cross_fitting(folds, fold, expected):
    from tlmed_keras.runs.config import Config

    info = catalog.get_info("breastmnist")
    resolved = {"backend": "jax", "task": info.task, "label_names": list(info.label_names)}
    resolved |= {"image_size": 32, "steps_per_epoch": 3}
    sizes = {"train": 499, "val": 125, "test": 156}
    config = Config(model="m", data="breastmnist", cv_folds=folds, cv_fold=fold)
    lines = banner.start_lines(config, "w", resolved, sizes, None, [], ["cpu"])
    assert expected in lines, lines
