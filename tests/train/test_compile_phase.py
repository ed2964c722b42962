"""``trainer.compile_phase``: the trainer's compiled step for one phase, without a run."""

from __future__ import annotations

import pytest

from tests import tiny_registry
from tlmed_keras.train import trainer


def _trainable_backbone(compiled) -> int:
    return len(compiled.backbone.trainable_variables)


def test_head_phase_freezes_the_backbone_and_finetune_unfreezes_it(tiny_config):
    config = tiny_config(unfreeze="all")
    head = trainer.compile_phase(config, "head", registry=tiny_registry)
    finetune = trainer.compile_phase(config, "finetune", registry=tiny_registry)
    assert _trainable_backbone(head) == 0
    assert len(head.model.trainable_variables) == 2  # the new head's kernel and bias
    assert _trainable_backbone(finetune) > 0
    assert finetune.phase.index == 2 and finetune.phase.lr == config.finetune_lr
    # Its optimizer is built (variables exist before the first step, as in the trainer).
    assert finetune.optimizer.built


def test_one_step_on_the_trainers_pipeline(tiny_config):
    compiled = trainer.compile_phase(tiny_config(), registry=tiny_registry)
    images, labels = next(iter(compiled.train_dataset(epoch=0).as_numpy_iterator()))
    assert images.shape == (8, *compiled.model.input_shape[1:])
    logs = compiled.model.train_on_batch(images, labels, return_dict=True)
    assert logs["loss"] > 0


def test_a_phase_the_config_does_not_run_is_a_clear_error(tiny_config):
    with pytest.raises(ValueError, match=r"Bad phase 'head': this config runs finetune"):
        trainer.compile_phase(tiny_config(head_epochs=0), "head", registry=tiny_registry)
