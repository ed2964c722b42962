"""--ema_epochs: the EMA of the weights (train/ema.py) and how the trainer uses it."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest

from tests import tiny_registry
from tlmed_keras.errors import CheckpointError
from tlmed_keras.runs import rundir
from tlmed_keras.train import ema
from tlmed_keras.train.trainer import train_and_evaluate

STEPS = 4  # TINY_SPLITS: 32 training images, batch 8


def _quiet(*args, **kwargs):
    pass


def _values(model) -> list[np.ndarray]:
    return [np.array(keras.ops.convert_to_numpy(v.value)) for v in model.variables]


class Snapshots:
    """epoch_end_hook: the model's (raw) variables after each epoch."""

    def __init__(self):
        self.after: dict[int, list[np.ndarray]] = {}

    def __call__(self, epoch, phase, model):
        self.after[epoch] = _values(model)


def test_decay_per_step_spans_the_horizon():
    assert ema.decay_per_step(2, 18) == pytest.approx(1 - 1 / 36)
    assert ema.decay_per_step(0.25, STEPS) == 0.0  # a one-step horizon: the weights themselves
    assert ema.decay_per_step(0.1, STEPS) == 0.0


class _RawAfterStep(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.steps: list[list[np.ndarray]] = []

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append(
            [np.array(keras.ops.convert_to_numpy(v.value)) for v in self.model.variables]
        )


def test_ema_after_n_steps_equals_numpy_recursion():
    keras.utils.set_random_seed(0)
    model, _ = tiny_registry.build_classifier(tiny_registry.NAME, 3, weights="none")
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    decay = 0.7
    average = ema.WeightEMA(model, decay)
    expected = [a.copy() for a in average.arrays()]
    floats = [i for i, v in enumerate(model.variables) if keras.backend.is_float_dtype(v.dtype)]
    raw = _RawAfterStep()
    rng = np.random.default_rng(0)
    x = rng.random((24, 28, 28, 3)).astype("float32")
    y = rng.integers(0, 3, 24)
    model.fit(x, y, batch_size=4, epochs=1, callbacks=[ema.EMAUpdate(average), raw], verbose=0)
    assert len(raw.steps) == 6
    for weights in raw.steps:
        expected = [
            decay * e + (1 - decay) * weights[i] for e, i in zip(expected, floats, strict=True)
        ]
    for got, want in zip(average.arrays(), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # The average is not the last weights (the test would pass trivially if it were).
    assert any(
        not np.allclose(got, raw.steps[-1][i])
        for got, i in zip(average.arrays(), floats, strict=True)
    )


def test_swapped_in_restores_the_raw_weights():
    model, _ = tiny_registry.build_classifier(tiny_registry.NAME, 3, weights="none")
    before = _values(model)
    average = ema.WeightEMA(model, 0.5)
    average.average = [a + 1.0 for a in average.average]
    with average.swapped_in():
        inside = _values(model)
    assert any(not np.array_equal(a, b) for a, b in zip(inside, before, strict=True))
    for a, b in zip(_values(model), before, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.fixture
def base(tiny_config):
    """The tiny config (1 head + 2 fine-tune epochs) on one synthetic file."""
    return tiny_config(finetune_epochs=2)


@pytest.fixture
def runs(base, tmp_path):
    """``run(name, **overrides) -> (metrics, Snapshots, workdir)``: a tiny run of ``base``."""

    def run(name, **overrides):
        snapshots = Snapshots()
        workdir = tmp_path / name
        config = dataclasses.replace(base, **overrides)
        metrics = train_and_evaluate(
            config, workdir, registry=tiny_registry, say=_quiet, epoch_end_hook=snapshots
        )
        return metrics, snapshots, workdir

    return run


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_decay_0_is_no_ema(runs):
    plain, plain_raw, _ = runs("plain")
    one_step, one_step_raw, workdir = runs("one_step", ema_epochs=1 / STEPS)
    assert ema.decay_per_step(1 / STEPS, STEPS) == 0.0
    assert one_step["val"] == plain["val"]
    assert one_step["test"] == plain["test"]
    assert _same(one_step_raw.after[3], plain_raw.after[3])
    assert "ema" in rundir.RunDir(workdir).load_arrays("ckpt-3.npz")


def test_training_continues_from_raw_weights_and_selection_uses_the_average(runs):
    plain, plain_raw, _ = runs("plain")
    averaged, averaged_raw, workdir = runs("ema", ema_epochs=2.0)
    # The EMA never feeds back into training: the raw weights after every epoch are those of
    # the run without EMA (Keras' use_ema would continue epoch 2 from the average).
    for epoch in (1, 2, 3):
        assert _same(averaged_raw.after[epoch], plain_raw.after[epoch]), epoch
    run = rundir.RunDir(workdir)
    state = run.load_state()
    best = run.load_arrays(state.best)["model"]
    saved = run.load_arrays(f"ckpt-{state.best_epoch}.npz")
    floats = [i for i, a in enumerate(saved["model"]) if np.issubdtype(a.dtype, np.floating)]
    assert _same([best[i] for i in floats], saved["ema"])  # selection saved the average
    assert not _same([best[i] for i in floats], [saved["model"][i] for i in floats])
    assert averaged["val"] != plain["val"] or averaged["test"] != plain["test"]


class Killed(Exception):
    pass


def test_resume_keeps_the_ema(runs, base, tmp_path):
    whole, _, whole_dir = runs("whole", ema_epochs=2.0)

    # Killed after epoch 1, where the average is not the raw weights. (At the phase boundary:
    # a resume inside a phase does not reproduce the uninterrupted run to the last bit, with
    # or without EMA, on JAX CPU.)
    def kill_after_1(epoch, phase, model):
        if epoch == 1:
            raise Killed

    config = dataclasses.replace(base, ema_epochs=2.0)
    resumed_dir = tmp_path / "resumed"
    with pytest.raises(Killed):
        train_and_evaluate(
            config, resumed_dir, registry=tiny_registry, say=_quiet, epoch_end_hook=kill_after_1
        )
    metrics = train_and_evaluate(config, resumed_dir, registry=tiny_registry, say=_quiet)
    assert metrics["val"] == whole["val"]
    assert metrics["test"] == whole["test"]
    last = rundir.RunDir(resumed_dir).load_arrays("ckpt-3.npz")["ema"]
    assert _same(last, rundir.RunDir(whole_dir).load_arrays("ckpt-3.npz")["ema"])


def test_resume_without_ema_in_the_checkpoint_is_refused(runs):
    _, _, workdir = runs("ema", ema_epochs=2.0)
    run = rundir.RunDir(workdir)
    saved = run.load_arrays("ckpt-2.npz")
    from tlmed_keras.train import resume

    model, _ = tiny_registry.build_classifier(tiny_registry.NAME, 8, weights="none")
    average = ema.WeightEMA(model, 0.9)
    with pytest.raises(CheckpointError, match="no EMA"):
        resume.restore_ema(average, {"model": saved["model"]}, "ckpt-2.npz")
    resume.restore_ema(average, saved, "ckpt-2.npz")
    assert _same(average.arrays(), saved["ema"])
