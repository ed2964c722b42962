"""End-to-end fine-tuning on synthetic data with the tiny test model (one epoch per phase)."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import keras
import numpy as np
import pytest

from tests import tiny_registry
from tlmed_keras import metrics as mm
from tlmed_keras._medmnist import evaluator_module
from tlmed_keras.data import load_arrays
from tlmed_keras.runs import rundir
from tlmed_keras.runs.passes import balanced_batch, predict_splits, shared_batch
from tlmed_keras.train import epochs, losses, trainer
from tlmed_keras.train.setup import predict_logits
from tlmed_keras.train.trainer import train_and_evaluate


def _snapshot(model) -> dict[str, np.ndarray]:
    return {v.path: np.array(keras.ops.convert_to_numpy(v.value)) for v in model.variables}


class Recorder:
    """epoch_end_hook that snapshots the model's variables after each epoch."""

    def __init__(self):
        self.after: dict[int, dict[str, np.ndarray]] = {}

    def __call__(self, epoch, phase, model):
        self.after[epoch] = _snapshot(model)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, request):
    """One run of bloodmnist (multi-class): 1 head epoch + 1 fine-tune epoch."""
    mp = pytest.MonkeyPatch()
    tmp = tmp_path_factory.mktemp("ft")
    from tests.conftest import TINY_SPLITS, make_tiny_config, synthetic_arrays
    from tlmed_keras.data import catalog

    data_dir = tmp / "data"
    data_dir.mkdir()
    np.savez_compressed(
        data_dir / catalog.get_info("bloodmnist").filename,
        **synthetic_arrays("bloodmnist", 28, TINY_SPLITS),
    )
    config = make_tiny_config("bloodmnist", data_dir)
    keras.utils.set_random_seed(config.seed)  # the trainer's first draw: the same init
    initial = _snapshot(tiny_registry.build_classifier("tiny_cnn", 8, weights="none")[0])
    recorder = Recorder()
    workdir = tmp / "run"
    metrics = train_and_evaluate(config, workdir, registry=tiny_registry, epoch_end_hook=recorder)
    yield dict(config=config, workdir=workdir, metrics=metrics, initial=initial, rec=recorder)
    mp.undo()


def _split(snapshot, kind):
    def pick(path):
        if kind == "backbone":
            return path.startswith("backbone/")
        if kind == "bn_stats":
            return "moving_" in path
        if kind == "conv":
            return "conv/kernel" in path
        return path.startswith("head/")

    return {k: v for k, v in snapshot.items() if pick(k)}


def test_phase1_freezes_backbone_phase2_trains_it_but_not_bn_stats(finished):
    initial, after = finished["initial"], finished["rec"].after
    assert set(after) == {1, 2}
    assert _split(initial, "conv") and _split(initial, "bn_stats")
    for path, value in _split(initial, "backbone").items():
        np.testing.assert_array_equal(after[1][path], value, err_msg=f"phase 1 moved {path}")
    assert any(not np.array_equal(after[1][p], v) for p, v in _split(initial, "head").items()), (
        "phase 1 did not train the head"
    )
    for path, value in _split(initial, "conv").items():
        assert not np.array_equal(after[2][path], value), f"phase 2 left {path} unchanged"
    for path, value in _split(initial, "bn_stats").items():
        np.testing.assert_array_equal(after[2][path], value, err_msg=f"BN stat moved: {path}")


def test_metrics_json_schema_and_values(finished):
    workdir = finished["workdir"]
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert metrics == finished["metrics"]
    for key, value in (("model", "tiny_cnn"), ("data", "bloodmnist"), ("size", 28), ("seed", 0)):
        assert metrics[key] == value
    for split in ("val", "test"):
        assert set(metrics[split]) >= {"acc", "auc"}
        assert 0.0 <= metrics[split]["acc"] <= 1.0 and 0.0 <= metrics[split]["auc"] <= 1.0
    assert len(metrics["per_class"]) == 8
    assert metrics["backend"] == "jax" and "timings" in metrics
    for name in ("flags.txt", "config.json", "history.csv", "model.keras", "DONE"):
        assert (workdir / name).is_file(), name
    history = (workdir / "history.csv").read_text().splitlines()
    assert len(history) == 3 and history[1].startswith("1,head") and history[2].startswith("2,")


def test_reported_metrics_are_medmnists_on_the_selected_model(finished):
    """load_run gives back the selected model; its test predictions scored by medmnist's own
    getACC/getAUC equal metrics.json's test numbers."""
    run = rundir.load_run(finished["workdir"])
    assert run.config.model == "tiny_cnn" and run.preprocess.image_size == 28
    assert run.info.task == "multi-class"
    config = finished["config"]
    images, labels = load_arrays("bloodmnist", 28, config.data_dir, verify=False)["test"]
    logits = predict_logits(run.model, images, labels, _eval_setup(run, config.eval_batch_size))
    direct = np.asarray(run.model.predict(run.preprocess(images), verbose=0))
    np.testing.assert_allclose(logits, direct, rtol=1e-4, atol=1e-5)
    scores = mm.probabilities(logits, run.info.task)
    evaluator = evaluator_module()
    test = finished["metrics"]["test"]
    assert test["acc"] == pytest.approx(evaluator.getACC(labels, scores, run.info.task), abs=1e-6)
    assert test["auc"] == pytest.approx(evaluator.getAUC(labels, scores, run.info.task), abs=1e-6)


def test_tensorboard_holds_both_phases(finished):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb = finished["workdir"] / "tb"
    for split in ("train", "validation"):
        acc = EventAccumulator(str(tb / split), size_guidance={"tensors": 0}).Reload()
        for tag in ("epoch_loss", "epoch_acc", "epoch_auc"):
            steps = [e.step for e in acc.Tensors(tag)]
            assert steps == [0, 1], (split, tag, steps)
    acc = EventAccumulator(str(tb / "train"), size_guidance={"tensors": 0}).Reload()
    assert [e.step for e in acc.Tensors("epoch_learning_rate")] == [0, 1]


def test_finished_run_is_not_retrained(finished, capsys):
    said = []
    again = train_and_evaluate(
        finished["config"], finished["workdir"], registry=tiny_registry, say=said.append
    )
    assert again == finished["metrics"]
    assert "not retraining" in said[0]
    test = finished["metrics"]["test"]
    assert f"test ACC {test['acc']:.4f} AUC {test['auc']:.4f} (TTA none)." in said[0]


def test_other_flags_in_existing_workdir_is_an_error(finished):
    other = dataclasses.replace(finished["config"], head_lr=0.5)
    with pytest.raises(rundir.ConfigMismatchError, match="head_lr"):
        train_and_evaluate(other, finished["workdir"], registry=tiny_registry)


class Killed(Exception):
    pass


def test_interrupted_run_resumes_at_epoch_2_and_matches(finished, tmp_path):
    """Stop right after epoch 1's checkpoint (as a kill would), restart: it continues at
    epoch 2 (phase 2) and ends with the uninterrupted run's metrics. Also shows that one seed
    gives the same metrics twice."""

    def kill_after_first(epoch, phase, model):
        if epoch == 1:
            raise Killed

    with pytest.raises(Killed):
        train_and_evaluate(
            finished["config"], tmp_path, registry=tiny_registry, epoch_end_hook=kill_after_first
        )
    assert not (tmp_path / "DONE").exists()
    said, epochs = [], []
    metrics = train_and_evaluate(
        finished["config"],
        tmp_path,
        registry=tiny_registry,
        say=lambda *a, **k: said.append(a[0]),
        epoch_end_hook=lambda epoch, phase, model: epochs.append((epoch, phase.name)),
    )
    assert epochs == [(2, "finetune")]
    assert any("epoch 2" in line for line in said if line.startswith("["))
    assert metrics["val"] == finished["metrics"]["val"]
    assert metrics["test"] == finished["metrics"]["test"]
    assert len((tmp_path / "history.csv").read_text().splitlines()) == 3


def _eval_setup(run, eval_batch):
    return SimpleNamespace(
        info=run.info, preprocess=run.preprocess, eval_batch=eval_batch, devices=1
    )


def test_predict_logits_pads_to_whole_batches(finished):
    run = rundir.load_run(finished["workdir"])
    images, labels = load_arrays("bloodmnist", 28, finished["config"].data_dir, verify=False)["val"]
    logits = predict_logits(run.model, images, labels, _eval_setup(run, 5))
    direct = np.asarray(run.model.predict(run.preprocess(images), verbose=0))
    assert logits.shape == (16, 8)
    np.testing.assert_allclose(logits, direct, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "data",
    [
        "chestmnist",
        pytest.param("breastmnist", marks=pytest.mark.slow),
        pytest.param("retinamnist", marks=pytest.mark.slow),
    ],
)
def test_task_heads_metrics_and_batchnorm_from_random_init(tiny_config, tmp_path, data):
    """Multi-label (sigmoid), binary and ordinal runs report medmnist's getACC/getAUC of the
    selected model; from random init (--batchnorm=auto) phase 2 does train BN statistics."""
    config = tiny_config(data, batchnorm="auto", max_steps_per_epoch=2)
    recorder = Recorder()
    metrics = train_and_evaluate(
        config, tmp_path / "run", registry=tiny_registry, epoch_end_hook=recorder
    )
    stats = _split(recorder.after[1], "bn_stats")
    assert stats and all(not np.array_equal(recorder.after[2][p], v) for p, v in stats.items())
    run = rundir.load_run(tmp_path / "run")
    images, labels = load_arrays(data, 28, config.data_dir, verify=False)["test"]
    # The trainer's own prediction path (exact, as near-tied scores of a barely trained model
    # make AUC sensitive to float noise), checked close to a plain predict of model.keras.
    logits = predict_logits(run.model, images, labels, _eval_setup(run, 8))
    direct = np.asarray(run.model.predict(run.preprocess(images), verbose=0))
    np.testing.assert_allclose(logits, direct, rtol=1e-4, atol=1e-5)
    scores = mm.probabilities(logits, run.info.task)
    if data == "chestmnist":  # sigmoid scores: independent labels
        assert run.info.is_multilabel and not np.allclose(scores.sum(axis=1), 1.0)
    evaluator = evaluator_module()
    assert metrics["test"]["acc"] == pytest.approx(
        evaluator.getACC(labels, scores, run.info.task), abs=1e-6
    )
    assert metrics["test"]["auc"] == pytest.approx(
        evaluator.getAUC(labels, scores, run.info.task), abs=1e-6
    )


@pytest.mark.slow
def test_nan_loss_names_phase_and_epoch(tiny_config, tmp_path):
    config = tiny_config(head_epochs=2, finetune_epochs=0, head_lr=1e30, optimizer="sgd")
    with pytest.raises(FloatingPointError, match=r"phase 1 \(head\), epoch 1"):
        train_and_evaluate(config, tmp_path / "run", registry=tiny_registry)


@pytest.mark.slow
def test_patience_stops_a_phase_and_the_next_one_still_runs(tiny_config, tmp_path):
    """A learning rate too small to change anything: val AUC never improves after epoch 1,
    so with --patience=1 phase 1 stops after epoch 2 of 3; phase 2 then runs (epoch 4)."""
    config = tiny_config(
        head_epochs=3, head_lr=1e-30, weight_decay=0.0, patience=1, max_steps_per_epoch=1
    )
    epochs = []
    metrics = train_and_evaluate(
        config,
        tmp_path / "run",
        registry=tiny_registry,
        epoch_end_hook=lambda epoch, phase, model: epochs.append((epoch, phase.name)),
    )
    assert epochs == [(1, "head"), (2, "head"), (4, "finetune")]
    assert metrics["stopped_early"] == ["head"]
    assert metrics["epochs_run"] == 3


@pytest.mark.parametrize("data", ["bloodmnist", "chestmnist"])
def test_a_run_with_mixup_and_cutmix_trains_on_soft_targets(tiny_config, tmp_path, data):
    """The trainer feeds soft targets (one-hot / multi-hot blends) to the loss and its
    training metrics; validation and test still read the stored labels."""
    config = tiny_config(data, mixup=0.4, cutmix=1.0, max_steps_per_epoch=2)
    compiled = trainer.compile_phase(config, registry=tiny_registry)
    _, targets = next(iter(compiled.train_dataset(epoch=0).as_numpy_iterator()))
    classes = compiled.setup.info.num_classes
    assert targets.shape == (config.batch_size, classes) and targets.dtype == np.float32
    assert np.any((targets > 0) & (targets < 1))
    metrics = train_and_evaluate(config, tmp_path / "run", registry=tiny_registry)
    history = (tmp_path / "run" / "history.csv").read_text().splitlines()
    header, rows = history[0].split(","), [r.split(",") for r in history[1:]]
    for name in ("loss", "acc"):
        values = [float(r[header.index(name)]) for r in rows]
        assert all(np.isfinite(values)) and all(v >= 0 for v in values), (name, values)
    assert 0 <= metrics["test"]["acc"] <= 1 and metrics["test"]["auc"] is not None


@pytest.mark.parametrize(("data", "ordinal"), [("retinamnist", True), ("bloodmnist", False)])
def test_ordinal_smoothing_acts_on_ordinal_tasks_only(tiny_config, data, ordinal):
    """One recipe serves every set: --ordinal_smoothing reshapes the targets of the catalog's
    ordinal-regression sets and leaves the others' plain cross-entropy untouched, in the
    training loss and in the validation loss that --select_on=loss reads."""
    config = tiny_config(data, ordinal_smoothing=0.5)
    setup = trainer.compile_phase(config, registry=tiny_registry).setup
    k = setup.info.num_classes
    logits = np.random.default_rng(0).normal(size=(2 * k, k)).astype(np.float32)
    y = np.arange(2 * k, dtype=np.int32) % k
    soft = losses.ordinal_kernel(k, 0.5)[y] if ordinal else np.eye(k)[y]
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    expected = -(soft * logp).sum(1)
    for loss in (setup.loss, setup.val_loss):
        got = keras.ops.convert_to_numpy(loss(keras.ops.convert_to_tensor(y), logits))
        np.testing.assert_allclose(got, expected, rtol=1e-5)


@pytest.mark.parametrize(
    ("n", "eval_batch", "devices", "expected"),
    [
        (524, 256, 1, 175),  # 3 batches either way; 1 padded image instead of 244
        (78, 256, 1, 78),  # one batch, no padding
        (16, 5, 1, 4),  # 4 batches of 4
        (512, 256, 1, 256),  # already whole batches
        (10, 8, 4, 8),  # a multiple of the devices: 2 batches of 8 (the old rule: 2 of 8)
        (1, 256, 2, 2),
    ],
)
def test_balanced_batch_pads_the_least(n, eval_batch, devices, expected):
    batch = balanced_batch(n, eval_batch, devices)
    assert batch == expected
    assert batch <= eval_batch and batch % devices == 0
    # As few batches as eval_batch allows, and less padding than one image per batch/device.
    batches = -(-n // batch)
    assert batches == max(1, -(-n // eval_batch))
    assert batches * batch - n < batches * devices


@pytest.mark.parametrize(
    ("counts", "eval_batch", "devices", "expected"),
    [
        ([78, 156], 256, 1, 78),  # 1 + 2 batches, no padding (156 alone: 1 batch of 156)
        ([156, 78], 256, 1, 78),  # the order does not matter
        ([524], 256, 1, 175),  # one split: balanced_batch
        ([100, 700], 256, 1, 100),  # 8 batches, none padded (234: 4 batches, 136 padded)
        ([1, 10_000], 256, 1, 250),  # not 10,001 batches of 1
        ([10, 7], 8, 4, 8),
    ],
)
def test_shared_batch_pads_the_least_over_the_splits(counts, eval_batch, devices, expected):
    batch = shared_batch(counts, eval_batch, devices)
    assert batch == expected
    assert batch <= eval_batch and batch % devices == 0

    def cost(b):  # padded images + batches
        return sum((-n) % b + -(-n // b) for n in counts)

    assert all(cost(batch) <= cost(balanced_batch(n, eval_batch, devices)) for n in counts)


class _TraceCounter(keras.Model):
    """A model whose Python ``call`` runs once per trace of its predict function."""

    def __init__(self, model):
        super().__init__()
        self.inner, self.traces = model, 0

    def call(self, x):
        self.traces += 1
        return self.inner(x, training=False)


def test_predict_splits_is_one_traced_pass_equal_to_each_split_alone(finished):
    """Val and test (different sizes) predicted together: one trace of the predict
    function (one batch shape), and each split's logits as predicted alone."""
    run = rundir.load_run(finished["workdir"])
    arrays = load_arrays("bloodmnist", 28, finished["config"].data_dir, verify=False)
    val, test = arrays["val"], (arrays["test"][0][:11], arrays["test"][1][:11])
    assert len(val[0]) == 16  # 16 + 11 images: the short split is padded by 5
    setup = _eval_setup(run, 256)
    counter = _TraceCounter(run.model)
    counter(run.preprocess(val[0][:1]))  # built (Keras' first call), then count from 0
    counter.traces = 0
    together = predict_splits(
        counter, [val, test], info=run.info, preprocess=run.preprocess, eval_batch=256
    )
    assert counter.traces == 1
    for (images, labels), logits in zip((val, test), together, strict=True):
        alone = predict_logits(run.model, images, labels, setup)
        assert logits.shape == alone.shape == (len(images), 8)
        np.testing.assert_allclose(logits, alone, rtol=1e-5, atol=1e-6)


def test_validation_view_keeps_its_predict_function_when_the_model_is_compiled(finished):
    """The trainer compiles its model once per phase, which drops the model's predict
    function; validation predicts through an uncompiled view of the same variables, whose
    predict function survives (one trace per run instead of one per phase)."""
    model = rundir.load_run(finished["workdir"]).model
    view = epochs.Inference(model)
    x = np.random.default_rng(0).normal(size=(4, 28, 28, 3)).astype(np.float32)
    first = view.predict(x, verbose=0)
    kept = view.predict_function
    assert kept is not None
    model.compile(optimizer="adam", loss="mse")
    model.layers[-1].kernel.assign(model.layers[-1].kernel * 2.0)  # the view sees the change
    second = view.predict(x, verbose=0)
    assert view.predict_function is kept
    np.testing.assert_allclose(second, model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    assert not np.allclose(first, second)
