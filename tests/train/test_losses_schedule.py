"""Losses, class weights and learning-rate schedules (no training)."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest
from sklearn.utils.class_weight import compute_class_weight

from tlmed_keras.runs.config import Config
from tlmed_keras.train import losses, schedule


def test_balanced_weights_equal_sklearn():
    labels = np.array([0, 0, 0, 0, 1, 1, 2])[:, None]
    expected = compute_class_weight("balanced", classes=np.arange(3), y=labels[:, 0])
    np.testing.assert_allclose(losses.balanced_weights(labels, 3, False), expected, rtol=1e-6)
    multi = np.array([[1, 0], [0, 0], [0, 0], [1, 1]])
    w = losses.balanced_weights(multi, 2, True)  # [neg, pos] x labels
    np.testing.assert_allclose(w[:, 0], [4 / (2 * 2), 4 / (2 * 2)])
    np.testing.assert_allclose(w[:, 1], [4 / (2 * 3), 4 / (2 * 1)])


def _np_softmax_ce(y, logits, smoothing, k):
    target = np.eye(k)[y] * (1 - smoothing) + smoothing / k
    z = logits - logits.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    return -(target * logp).sum(1)


def test_softmax_loss_smoothing_and_class_weights():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 3)).astype("float32")
    y = np.array([0, 1, 2, 0, 1, 1], dtype="int32")
    weights = np.array([1.0, 2.0, 3.0], dtype="float32")
    fn = losses.make_loss(3, False, label_smoothing=0.1, class_weights=weights)
    got = keras.ops.convert_to_numpy(fn(y, logits))
    np.testing.assert_allclose(got, _np_softmax_ce(y, logits, 0.1, 3) * weights[y], rtol=1e-5)


def test_sigmoid_loss_per_label_mean():
    logits = np.array([[2.0, -1.0], [0.5, 0.0]], dtype="float32")
    y = np.array([[1.0, 0.0], [0.0, 1.0]], dtype="float32")
    fn = losses.make_loss(2, True)
    p = 1 / (1 + np.exp(-logits))
    expected = -(y * np.log(p) + (1 - y) * np.log(1 - p)).mean(1)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(fn(y, logits)), expected, rtol=1e-5)


def test_phases_and_finetune_schedule_warmup_then_cosine():
    config = Config(model="m", data="bloodmnist", head_epochs=2, finetune_epochs=4, warmup_epochs=1)
    head, finetune = schedule.phases(config)
    assert (head.name, head.trainable, head.first_epoch) == ("head", "frozen", 0)
    assert (finetune.name, finetune.trainable, finetune.first_epoch) == ("finetune", "all", 2)
    assert schedule.learning_rate(config, head, 10) == config.head_lr
    lr = schedule.learning_rate(config, finetune, 10)
    values = [float(keras.ops.convert_to_numpy(lr(step))) for step in range(41)]
    peak = config.finetune_lr
    assert values[0] == pytest.approx(peak / 10)  # warm-up starts at lr / warmup_steps
    assert values[10] == pytest.approx(peak)  # end of the 1-epoch warm-up
    assert all(a < b for a, b in zip(values[:10], values[1:11], strict=True))
    assert all(a >= b for a, b in zip(values[10:40], values[11:41], strict=True))
    assert values[25] == pytest.approx(peak * 0.5, rel=1e-4)  # cosine half-way
    assert values[40] == pytest.approx(0.0, abs=1e-12)


def test_only_finetune_phase_and_optimizers():
    config = Config(model="m", data="bloodmnist", head_epochs=0, unfreeze="3")
    (only,) = schedule.phases(config)
    assert only.trainable == 3 and only.first_epoch == 0
    for name, cls in (("adamw", "AdamW"), ("adam", "Adam"), ("sgd", "SGD")):
        opt = schedule.make_optimizer(dataclasses.replace(config, optimizer=name), only, 5)
        assert type(opt).__name__ == cls


def test_steps_per_epoch():
    config = Config(model="m", data="bloodmnist", batch_size=8)
    assert schedule.steps_per_epoch(30, config, drop_remainder=False) == 4
    assert schedule.steps_per_epoch(30, config, drop_remainder=True) == 3
    capped = dataclasses.replace(config, max_steps_per_epoch=2)
    assert schedule.steps_per_epoch(30, capped, drop_remainder=False) == 2


def _per_example(loss_fn, y, logits) -> np.ndarray:
    return keras.ops.convert_to_numpy(loss_fn(keras.ops.convert_to_tensor(y), logits))


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_soft_targets_blend_the_loss_like_the_labels(smoothing):
    """Mixup/CutMix targets: a one-hot row costs what its class id does, and a blend costs
    the blend of the two (cross-entropy is linear in the target), class weights included."""
    rng = np.random.default_rng(0)
    k, n = 4, 6
    logits = rng.normal(size=(n, k)).astype(np.float32)
    a, b = rng.integers(0, k, n), rng.integers(0, k, n)
    lam = rng.uniform(size=n).astype(np.float32)
    weights = np.array([0.5, 1.0, 2.0, 4.0], np.float32)
    loss = losses.make_loss(k, False, smoothing, weights)
    hard_a = _per_example(loss, a.astype(np.int32), logits)
    np.testing.assert_allclose(
        _per_example(loss, np.eye(k, dtype=np.float32)[a], logits), hard_a, rtol=1e-6
    )
    blend = lam[:, None] * np.eye(k)[a] + (1 - lam[:, None]) * np.eye(k)[b]
    got = _per_example(loss, blend.astype(np.float32), logits)
    plain = losses.make_loss(k, False, smoothing)
    ce_a, ce_b = (
        _per_example(plain, a.astype(np.int32), logits),
        _per_example(plain, b.astype(np.int32), logits),
    )
    weight = lam * weights[a] + (1 - lam) * weights[b]
    ce_blend = _per_example(plain, blend.astype(np.float32), logits)
    np.testing.assert_allclose(ce_blend, lam * ce_a + (1 - lam) * ce_b, rtol=1e-5)
    np.testing.assert_allclose(got, weight * ce_blend, rtol=1e-5)


def test_ordinal_kernel_spreads_mass_to_near_grades():
    kernel = losses.ordinal_kernel(5, 0.5)
    np.testing.assert_allclose(kernel.sum(axis=1), 1.0, rtol=1e-6)
    assert np.all(np.argmax(kernel, axis=1) == np.arange(5))  # the true grade stays the top
    # Row 2 by hand: exp(-d^2 / 0.5) for distances 2, 1, 0, 1, 2, normalised.
    raw = np.exp(-np.array([4.0, 1.0, 0.0, 1.0, 4.0]) / 0.5)
    np.testing.assert_allclose(kernel[2], raw / raw.sum(), rtol=1e-6)
    assert kernel[0, 1] > kernel[0, 2] > kernel[0, 4] > 0  # nearer grades get more
    np.testing.assert_array_equal(losses.ordinal_kernel(5, 0.0), np.eye(5))


def test_ordinal_loss_is_cross_entropy_to_the_soft_grade_labels():
    rng = np.random.default_rng(1)
    k = 5
    logits = rng.normal(size=(8, k)).astype(np.float32)
    y = rng.integers(0, k, 8).astype(np.int32)
    weights = rng.uniform(0.5, 2, k).astype(np.float32)
    fn = losses.make_loss(k, False, label_smoothing=0.1, class_weights=weights, ordinal_width=0.7)
    target = losses.ordinal_kernel(k, 0.7)[y] * 0.9 + 0.1 / k
    z = logits - logits.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    expected = -(target * logp).sum(1) * weights[y]
    np.testing.assert_allclose(_per_example(fn, y, logits), expected, rtol=1e-5)
    # A mixup blend of two grades costs the blend of their soft-label losses (linear kernel).
    a, b, lam = y, (y + 2) % k, rng.uniform(size=8).astype(np.float32)
    blend = (lam[:, None] * np.eye(k)[a] + (1 - lam[:, None]) * np.eye(k)[b]).astype(np.float32)
    plain = losses.make_loss(k, False, ordinal_width=0.7)
    np.testing.assert_allclose(
        _per_example(plain, blend, logits),
        lam * _per_example(plain, a, logits) + (1 - lam) * _per_example(plain, b, logits),
        rtol=1e-5,
    )
    with pytest.raises(ValueError, match="single-label"):
        losses.make_loss(k, True, ordinal_width=0.7)


def test_training_metrics_read_soft_targets_as_their_larger_share():
    from tlmed_keras.train import keras_metrics

    logits = np.array(
        [[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0], [2.0, 0.0, 0.0]], np.float32
    )
    ids = np.array([0, 1, 1, 2], np.int32)
    soft = 0.7 * np.eye(3, dtype=np.float32)[ids] + 0.3 * np.eye(3, dtype=np.float32)[ids[::-1]]
    for_ids = keras_metrics.train_metrics("multi-class", 3)
    for_soft = keras_metrics.train_metrics("multi-class", 3)
    for metric in for_ids:
        metric.update_state(ids, logits)
    for metric in for_soft:
        metric.update_state(soft, logits)
    got = [float(m.result()) for m in for_soft]
    assert got == [float(m.result()) for m in for_ids]
    assert got[0] == 0.5  # rows 0 and 1 right
    multilabel = keras_metrics.train_metrics("multi-label, binary-class", 2)[0]
    multilabel.update_state(np.array([[0.7, 0.2]], np.float32), np.array([[1.0, -1.0]], np.float32))
    assert float(multilabel.result()) == 1.0


class _CountingCosine(keras.optimizers.schedules.CosineDecay):
    """The trainer's warm-up + cosine schedule, counting how often it is evaluated."""

    calls = 0

    def __call__(self, step):
        type(self).calls += 1
        return super().__call__(step)


@pytest.mark.parametrize("base", [keras.optimizers.AdamW, keras.optimizers.SGD])
def test_weight_decay_reads_the_schedule_once_per_step_with_keras_numbers(base):
    """Keras' weight decay evaluates the schedule once per variable (a copy of its graph per
    variable in the traced step); one_rate_per_step evaluates it once for all of them and
    still updates every variable exactly as Keras does."""
    rng = np.random.default_rng(0)
    start = [rng.normal(size=(3, 4)).astype(np.float32) for _ in range(6)]
    grads = [[rng.normal(size=(3, 4)).astype(np.float32) for _ in start] for _ in range(5)]
    finals, calls = [], []
    for cls in (base, schedule.one_rate_per_step(base)):
        sched = _CountingCosine(1e-3, decay_steps=8, warmup_target=1e-2, warmup_steps=2)
        variables = [keras.Variable(a) for a in start]
        opt = cls(sched, weight_decay=0.1)
        opt.build(variables)
        _CountingCosine.calls = 0
        for step_grads in grads:
            opt.apply([keras.ops.convert_to_tensor(g) for g in step_grads], variables)
        calls.append(_CountingCosine.calls / len(grads))
        finals.append([keras.ops.convert_to_numpy(v) for v in variables])
    assert calls[0] >= len(start)  # the cost this removes: once per variable
    assert calls[1] <= 2  # once for the decay, once for the update
    for keras_value, ours in zip(*finals, strict=True):
        np.testing.assert_allclose(ours, keras_value, rtol=1e-6, atol=1e-7)
    assert schedule.one_rate_per_step(base).__name__ == base.__name__
