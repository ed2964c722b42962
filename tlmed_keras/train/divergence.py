"""Divergence check: a training loss far above where it started stops the run (or warns).

NaN/inf losses already stop a run (trainer); a too-high learning rate can instead leave a
finite loss in the thousands and a useless model with exit code 0. After every epoch the
loss is compared with a reference: the smaller of the first epoch's loss and the chance-level
loss (what predicting the class frequencies uniformly costs: ln(classes) for one label,
ln(2) per label for binary and multi-label tasks). A loss above ``--divergence_factor`` times
the reference counts as divergence; the run stops after checkpointing that epoch
(``--on_divergence=stop``) or says so and goes on (``warn``).
"""

from __future__ import annotations

import math
from typing import Any

ACTIONS = ("stop", "warn")


def chance_loss(num_classes: int, multilabel: bool) -> float:
    """Cross-entropy of uniform predictions: ln(C) for one label, ln(2) per binary label."""
    return math.log(2) if multilabel or num_classes <= 2 else math.log(num_classes)


def check(
    loss: float, first_loss: float | None, info: Any, factor: float, where: str
) -> str | None:
    """A one-line description of the divergence, or None when ``loss`` looks sane.

    Args:
        loss: this epoch's mean training loss.
        first_loss: the run's first epoch loss (None when this is the first epoch).
        info: the dataset's catalog entry (``num_classes``, ``is_multilabel``).
        factor: ``--divergence_factor`` (0 = never).
        where: e.g. "phase 1 (head), epoch 3", for the message.
    """
    if not factor or not math.isfinite(loss):
        return None
    chance = chance_loss(info.num_classes, info.is_multilabel)
    reference = chance if first_loss is None else min(first_loss, chance)
    if loss <= factor * reference:
        return None
    return (
        f"Training diverged in {where}: loss {loss:.4g} is above {factor:g}x {reference:.3g} "
        f"(the smaller of the first epoch's loss and chance level {chance:.3g})."
    )
