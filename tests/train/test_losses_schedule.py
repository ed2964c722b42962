"""Losses, class weights and learning-rate schedules (no training)."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest
from sklearn.utils.class_weight import compute_class_weight

from tlmed_keras.train import losses, schedule
from tlmed_keras.train.config import Config


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
