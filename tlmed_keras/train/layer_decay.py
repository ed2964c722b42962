"""Layer-wise learning-rate decay (LLRD) for the fine-tune phase.

The new head learns at the phase's rate; the backbone's top block at ``decay`` times it, the
block below at ``decay**2``, and so on down to the stem: the early, generic ImageNet filters
move least, the task-specific top most. The blocks are the model registry's (the ones
``--unfreeze=N`` counts), so every backbone of the zoo gets it the same way. A layer outside
every block takes the depth of the nearest block above it in the network (the stem: the
bottom block's), or the top block's when no block is above it.

Keras optimizers have one learning rate; ``scaled_optimizer`` subclasses one so that
``update_step`` multiplies the rate by the variable's factor. Decoupled weight decay stays
at the global rate.
"""

from __future__ import annotations

import functools
from typing import Any

import keras


def _sublayers(model: keras.layers.Layer) -> list[keras.layers.Layer]:
    return list(model._flatten_layers(include_self=False, recursive=True))


def block_depths(backbone: keras.Model, blocks: list[list[Any]]) -> dict[int, int]:
    """``id(variable) -> depth`` for every backbone variable: the top block is depth 1, the
    block below it 2, ...; see the module docstring for layers outside every block."""
    depths: dict[int, int] = {}
    for i, block in enumerate(blocks):
        for layer in block:  # a block's layer may be a container: .weights holds its sublayers'
            for variable in layer.weights:
                depths.setdefault(id(variable), len(blocks) - i)
    above = 1  # walking down from the top: the depth of the lowest block passed
    # Reversed pre-order: a container comes after its sublayers, so its own depth (the
    # lowest of its blocks) applies to what lies below it.
    for layer in reversed(_sublayers(backbone)):
        known = [depths[id(v)] for v in layer.weights if id(v) in depths]
        for variable in layer.weights:
            depths.setdefault(id(variable), above)
        if known:
            above = max(known)
    return depths


def lr_scales(backbone: keras.Model, blocks: list[list[Any]], decay: float) -> dict[int, float]:
    """``id(variable) -> decay ** depth`` for the backbone's variables (others: 1)."""
    return {key: decay**depth for key, depth in block_depths(backbone, blocks).items()}


@functools.cache
def _scaled_class(base: type) -> type:
    class LayerScaled(base):
        """``base`` with a per-variable factor on the learning rate (``lr_scales``)."""

        def __init__(self, *args, lr_scales: dict[int, float], **kwargs):
            super().__init__(*args, **kwargs)
            self._scale_by_id = dict(lr_scales)
            self._scales: list[float] = []

        def build(self, variables):
            # Factors in the order of the optimizer's variable index, fixed at build time.
            self._scales = [float(self._scale_by_id.get(id(v), 1.0)) for v in variables]
            super().build(variables)

        def update_step(self, gradient, variable, learning_rate):
            scale = self._scales[self._get_variable_index(variable)]
            if scale != 1.0:
                learning_rate = learning_rate * scale
            return super().update_step(gradient, variable, learning_rate)

    LayerScaled.__name__ = f"LayerScaled{base.__name__}"
    return LayerScaled


def scaled_optimizer(base: type, lr_scales: dict[int, float], *args, **kwargs):
    """An instance of optimizer class ``base`` (``*args, **kwargs`` as for ``base``) whose
    learning rate is multiplied by ``lr_scales[id(variable)]`` (default 1) per variable."""
    return _scaled_class(base)(*args, lr_scales=lr_scales, **kwargs)
