"""TensorBoard beyond the scalars: the run's flags (HParams plugin and a Text summary) and a
marker where each phase starts.

- ``write_run_summary``: the flags plus the resolved backend / input size as HParams (so
  runs can be compared in TensorBoard's HParams tab against their ``epoch_*`` metrics) and
  as a Markdown table under Text (``flags``), in ``tb/`` itself, once per run.
- ``mark_phase``: a Text entry ``phase`` at the phase's first epoch and a ``phase`` scalar
  (1 or 2) over its epochs, in ``tb/train``: the switch shows as a step in the Scalars tab.
"""

from __future__ import annotations

import os
from typing import Any

from tlmed_keras.runs.config import Config

RESOLVED_HPARAMS = ("backend", "image_size", "devices", "task", "num_classes")


def hparams(config: Config, resolved: dict[str, Any]) -> dict[str, bool | int | float | str]:
    """The values logged as hparams: every flag, plus what ``auto`` and 0 resolved to."""
    values = dict(config.to_dict())
    for key in RESOLVED_HPARAMS:
        if key in resolved:
            values[f"resolved_{key}"] = resolved[key]
    return {k: v if isinstance(v, bool | int | float | str) else str(v) for k, v in values.items()}


def flags_markdown(values: dict[str, Any]) -> str:
    rows = "\n".join(f"| `--{k}` | `{v}` |" for k, v in values.items())
    return "| flag | value |\n|---|---|\n" + rows


def write_run_summary(logdir: os.PathLike | str, config: Config, resolved: dict[str, Any]):
    """Writes the hparams and the ``flags`` Text summary into ``logdir`` (the run's tb/)."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    values = hparams(config, resolved)
    writer = tf.summary.create_file_writer(os.fspath(logdir))
    with writer.as_default():
        hp.hparams(values, trial_id=os.fspath(logdir))
        tf.summary.text("flags", flags_markdown(values), step=0)
    writer.close()


def mark_phase(writer, phase, line: str) -> None:
    """Marks the start of ``phase`` (``schedule.Phase``) in a tf.summary writer."""
    import tensorflow as tf

    with writer.as_default():
        tf.summary.text("phase", line, step=phase.first_epoch)
        for step in range(phase.first_epoch, phase.first_epoch + phase.epochs):
            tf.summary.scalar("phase", phase.index, step=step)
    writer.flush()
