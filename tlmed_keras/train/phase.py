"""Compiling a phase: its trainable layers, optimizer (with layer-wise rates), loss and
metrics. ``compile_phase`` gives benchmarks and notebooks the trainer's own compiled step."""

from __future__ import annotations

import dataclasses
from typing import Any

import keras

from tlmed_keras.runs.config import Config
from tlmed_keras.train import keras_metrics, layer_decay, schedule
from tlmed_keras.train.setup import (
    Setup,
    build_classifier,
    build_setup,
    default_registry,
    dtype_policy,
    prepare,
    train_dataset,
)


def set_trainable(backbone, config: Config, phase: schedule.Phase, registry) -> None:
    """The registry's trainable mode. BN stays frozen (inference mode) unless
    ``--batchnorm=train`` (or auto from random init): frozen BN keeps the initial statistics
    of a random network, whose features then collapse."""
    registry.set_trainable(
        backbone, config.model, phase.trainable, freeze_batch_norm=not config.train_batchnorm
    )


def compile_model(
    model, backbone, config: Config, phase: schedule.Phase, s: Setup, registry
) -> keras.optimizers.Optimizer:
    """Compiles ``model`` for ``phase`` (its trainable layers, optimizer with layer-wise
    rates under ``--layer_decay``, loss, metrics) and returns the built optimizer."""
    set_trainable(backbone, config, phase, registry)
    scales = None
    if phase.name == schedule.FINETUNE and config.layer_decay < 1:
        blocks = registry.blocks(backbone, config.model)
        scales = layer_decay.lr_scales(backbone, blocks, config.layer_decay)
    optimizer = schedule.make_optimizer(config, phase, s.steps, scales)
    model.compile(
        optimizer=optimizer,
        loss=s.loss,
        metrics=keras_metrics.train_metrics(s.info.task, s.info.num_classes),
        jit_compile="auto",
    )
    optimizer.build(model.trainable_variables)
    return optimizer


@dataclasses.dataclass
class CompiledPhase:
    """One phase's compiled classifier and its training data (see ``compile_phase``)."""

    model: keras.Model
    backbone: keras.Model
    optimizer: Any
    phase: schedule.Phase
    config: Config
    setup: Setup

    def train_dataset(self, epoch: int = 0):
        """The trainer's training pipeline for ``epoch`` (seeded shuffle, augmentation,
        Preprocess, prefetch)."""
        return train_dataset(self.config, self.setup, epoch)


def compile_phase(
    config: Config, phase: str = schedule.FINETUNE, *, registry: Any = None
) -> CompiledPhase:
    """What ``train_and_evaluate`` trains in one phase: the checked config, the loaded
    splits, the classifier with that phase's trainable layers, optimizer, loss and metrics,
    compiled, on one device, under ``--mixed_precision``'s dtype policy. No run directory,
    no training. For benchmarks and notebooks, so they time the trainer's own step.

    Raises:
        ValueError: a bad config (the trainer's checks), or a phase the config does not run.
    """
    registry = registry or default_registry()
    spec, info = prepare(config, registry)
    by_name = {p.name: p for p in schedule.phases(config)}
    if phase not in by_name:
        raise ValueError(
            f"Bad phase {phase!r}: this config runs {', '.join(by_name) or 'no phase'} "
            f"(a phase with 0 epochs is left out)."
        )
    with dtype_policy(config.mixed_precision):
        s = build_setup(config, spec, info, devices=1)
        model, backbone = build_classifier(config, s, registry, config.weights)
        optimizer = compile_model(model, backbone, config, by_name[phase], s, registry)
    return CompiledPhase(model, backbone, optimizer, by_name[phase], config, s)
