"""experiments.gpu.step_rate: the TF-free step timer used on the GPU machine, run on CPU."""

from __future__ import annotations

import numpy as np
import pytest

from experiments.gpu import step_rate


def test_entries_parse_and_a_bad_size_is_refused():
    assert step_rate.parse_entry("resnet50@224") == ("resnet50", 224)
    assert step_rate.parse_entry("resnet50") == ("resnet50", None)
    with pytest.raises(ValueError, match=r"Bad --models entry 'resnet50@big'.*NAME@SIZE"):
        step_rate.parse_entry("resnet50@big")


def test_a_fine_tuning_step_is_timed_with_batch_norm_frozen():
    model = step_rate.fine_tuning_classifier("mobilenet_v2_torchvision", 32, num_classes=3)
    assert model.input_shape == (None, 32, 32, 3) and model.output_shape == (None, 3)
    layers = list(model._flatten_layers())
    batch_norms = [layer for layer in layers if "BatchNorm" in type(layer).__name__]
    assert batch_norms and not any(layer.trainable for layer in batch_norms)  # as fine-tuning
    assert any(layer.trainable and layer.weights for layer in layers if layer not in batch_norms)
    before = [np.array(w) for w in model.trainable_weights]
    row = step_rate.time_steps(model, batch=2, steps=2, warmup=1)
    assert row["input_px"] == 32 and row["final_loss_finite"]
    assert row["images_per_s"] > 0 and row["step_ms"] > 0 and row["first_step_s"] > 0
    after = [np.array(w) for w in model.trainable_weights]
    moved = [not np.array_equal(b, a) for b, a in zip(before, after, strict=True)]
    assert any(moved)  # the timed steps really train


def test_importing_it_defines_no_flags():
    """Its --out / --batch_size / --steps would clash with other modules' flags in one process
    (the test suite's), so they are defined only when it runs as a program."""
    from absl import flags

    assert "bf16" not in flags.FLAGS and "warmup" not in flags.FLAGS
