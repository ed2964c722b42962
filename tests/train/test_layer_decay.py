"""Layer-wise learning-rate decay: depths from the registry's blocks, per-variable rates."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tests import tiny_registry
from tlmed_keras.train import layer_decay, schedule, trainer


def _depth_by_path(model, depths):
    return {v.path: depths[id(v)] for v in model.weights}


def test_tiny_backbone_depths_count_blocks_from_the_top():
    _, backbone = tiny_registry.build_classifier("tiny_cnn", 3, weights="none")
    depths = layer_decay.block_depths(backbone, tiny_registry.blocks(backbone, "tiny_cnn"))
    by_path = _depth_by_path(backbone, depths)
    assert {p: d for p, d in by_path.items() if p.startswith("block2")} == {
        p: 1 for p in by_path if p.startswith("block2")
    }
    assert all(d == 2 for p, d in by_path.items() if p.startswith("block1"))
    assert len(by_path) == len(backbone.weights)


def test_mobilenet_v2_stem_takes_the_bottom_blocks_depth():
    from tlmed_keras.models import registry

    name = "mobilenet_v2_torchvision"
    _, backbone = registry.build_classifier(name, 2, weights="none", image_size=32)
    blocks = registry.blocks(backbone, name)
    depths = layer_decay.block_depths(backbone, blocks)
    by_path = _depth_by_path(backbone, depths)
    assert len(by_path) == len(backbone.weights)  # every variable has a depth
    assert sorted(set(by_path.values())) == list(range(1, len(blocks) + 1))
    assert by_path["features_0_0/kernel"] == len(blocks)  # the stem, below block 1
    assert by_path["features_18_0/kernel"] == 1  # the last 1x1 conv, in the top block
    scales = layer_decay.lr_scales(backbone, blocks, 0.9)
    assert min(scales.values()) == pytest.approx(0.9 ** len(blocks))


@pytest.mark.parametrize("base", [keras.optimizers.SGD, keras.optimizers.AdamW])
def test_each_variable_steps_at_its_scaled_rate(base):
    """SGD: the step is exactly lr x scale x gradient. AdamW: its first step is
    lr x sign(gradient), so the steps of two variables are in the ratio of their scales."""
    a, b, c = (keras.Variable(np.zeros(4, np.float32), name=n) for n in "abc")
    scales = {id(a): 0.5, id(b): 0.125}  # c: absent, so 1
    kwargs = {"weight_decay": 0.0} if base is keras.optimizers.AdamW else {}
    optimizer = layer_decay.scaled_optimizer(base, scales, 0.1, **kwargs)
    grads = [np.full(4, 2.0, np.float32)] * 3
    optimizer.apply(grads, [a, b, c])
    steps = [-keras.ops.convert_to_numpy(v)[0] for v in (a, b, c)]
    unit = 0.2 if base is keras.optimizers.SGD else 0.1  # lr x gradient, or lr x sign
    np.testing.assert_allclose(steps, [unit * 0.5, unit * 0.125, unit], rtol=1e-4)
    assert isinstance(optimizer, base)


def test_the_trainer_scales_only_the_finetune_phase(tiny_config):
    config = tiny_config(layer_decay=0.5)
    finetune = trainer.compile_phase(config, "finetune", registry=tiny_registry)
    scale_of = dict(
        zip(
            (v.path for v in finetune.model.trainable_variables),
            finetune.optimizer._scales,
            strict=True,
        )
    )
    assert {p: s for p, s in scale_of.items() if p.startswith("head")} == {
        "head/kernel": 1.0,
        "head/bias": 1.0,
    }
    assert all(s == 0.5 for p, s in scale_of.items() if p.startswith("block2"))
    assert all(s == 0.25 for p, s in scale_of.items() if p.startswith("block1"))
    head = trainer.compile_phase(config, "head", registry=tiny_registry)
    assert not hasattr(head.optimizer, "_scales")
    plain = trainer.compile_phase(tiny_config(), "finetune", registry=tiny_registry)
    assert not hasattr(plain.optimizer, "_scales")
    assert type(plain.optimizer) is schedule.one_rate_per_step(keras.optimizers.AdamW)
