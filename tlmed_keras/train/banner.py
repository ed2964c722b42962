"""What a training run tells its user: a banner before the first epoch, what to run next.

The banner follows the habits of Hugging Face Trainer's "Running training" block and Keras'
``summary()``: where the run writes, which backend ``auto`` chose and why, on which devices,
the dataset (task, classes, split sizes, file), the input size, and per phase the epochs,
learning rate and trainable / frozen parameter counts. Pure formatting: the trainer passes
the values in.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tlmed_keras.data import catalog
from tlmed_keras.runs.config import Config

MAX_LABELS_SHOWN = 8
RULE_WIDTH = 88  # the banner's rules; long paths may run past them


@dataclasses.dataclass(frozen=True)
class PhaseCounts:
    """Parameters of the classifier while one phase trains."""

    name: str
    index: int
    first_epoch: int
    epochs: int
    lr: float
    trainable: int
    frozen: int


def count_params(weights) -> int:
    return int(sum(np.prod(w.shape, dtype=np.int64) for w in weights))


def phase_counts(model, phases: Sequence, set_trainable: Callable[[Any], None]) -> list:
    """``PhaseCounts`` of each phase: applies the phase's trainable mode, then counts.

    The trainer compiles each phase later with the same ``set_trainable``, so the counts
    are those training sees. Frozen includes non-trainable state (batch-norm statistics).
    """
    counts = []
    for phase in phases:
        set_trainable(phase)
        counts.append(
            PhaseCounts(
                phase.name,
                phase.index,
                phase.first_epoch,
                phase.epochs,
                phase.lr,
                count_params(model.trainable_weights),
                count_params(model.non_trainable_weights),
            )
        )
    return counts


def backend_reason(requested: str, chosen: str) -> str:
    """Why this backend runs (``runtime.resolve_backend``'s rule for auto)."""
    if requested != "auto":
        return f"{chosen} (--backend={requested})"
    if chosen == "jax":
        return "jax (auto: JAX sees a GPU/TPU)"
    return f"{chosen} (auto: no GPU/TPU, and TensorFlow's CPU kernels are the fastest)"


def device_names() -> list[str]:
    """The compute devices Keras sees (CPU core count added for a CPU)."""
    import keras

    try:
        devices = [str(d) for d in keras.distribution.list_devices()]
    except (NotImplementedError, RuntimeError, ValueError, AttributeError):
        # Keras has no distribution library for the torch backend (list_devices then fails
        # with an AttributeError): the banner names the CPU instead.
        devices = []
    if not devices or all("cpu" in d.lower() for d in devices):
        cores = os.cpu_count() or 1
        return [f"{d or 'cpu'} ({cores} CPU core{'s' * (cores != 1)})" for d in devices or [""]]
    return devices


def _labels(names: Sequence[str]) -> str:
    shown = ", ".join(repr(str(name)) for name in names[:MAX_LABELS_SHOWN])
    return shown + (f", ... ({len(names) - MAX_LABELS_SHOWN} more)" if len(names) > 8 else "")


def _normalisation(norm: dict) -> str:
    if "scale" not in norm:
        return ""
    mean = "/".join(f"{m:g}" for m in norm.get("mean", ()))
    std = "/".join(f"{s:g}" for s in norm.get("std", ()))
    bgr = ", BGR" if norm.get("bgr") else ""
    inverse = 1 / norm["scale"]
    scale = f"1/{inverse:.0f}" if abs(inverse - round(inverse)) < 1e-6 else f"{norm['scale']:g}"
    return f", scale {scale}, mean {mean}, std {std}{bgr}"


def _augment_line(config: Config, label_names: Sequence[str], task: str) -> str:
    """What the training batches get: augmentation (flips dropped where labels name a body
    side), mixup / CutMix, ordinal soft labels."""
    parts = [config.augment]
    sided = catalog.sided_labels(label_names)
    if config.augment != "none" and sided:  # every preset mirrors
        parts[0] += (
            f" without horizontal flips (labels name body sides: {_labels(sided)}; a mirror "
            "image would show the other side's class)"
        )
    for name in ("mixup", "cutmix"):
        if getattr(config, name):
            parts.append(f"{name} {getattr(config, name):g}")
    if config.ordinal_smoothing and task == "ordinal-regression":
        parts.append(f"ordinal soft labels, width {config.ordinal_smoothing:g} grades")
    elif config.ordinal_smoothing:
        parts.append(f"no ordinal soft labels (the task is {task})")
    return "augment     " + ", ".join(parts)


def _epochs(first: int, count: int) -> str:
    """1-based ``epoch 3`` or ``epochs 4-13`` (global numbering over both phases)."""
    return f"epoch {first + 1}" if count == 1 else f"epochs {first + 1}-{first + count}"


def _phase_line(p: PhaseCounts, config: Config) -> str:
    lr = f"lr {p.lr:g}"
    if p.name == "finetune":
        lr += f" (warm-up {config.warmup_epochs:g} epoch, cosine)"
        what = f"unfreeze {config.unfreeze}"
    else:
        what = "backbone frozen"
    return (
        f"phase {p.index}     {p.name}: {_epochs(p.first_epoch, p.epochs)}, {what}, {lr}\n"
        f"            params trainable {p.trainable:,} / frozen {p.frozen:,}"
    )


def _weights(config: Config) -> str:
    """``--weights``, and the file it was found as when that is another path."""
    from tlmed_keras import weights_files

    found = weights_files.find_weights_file(config.weights, config.weights_dir)
    return config.weights if found == config.weights else f"{config.weights} (found: {found})"


def start_lines(
    config: Config,
    workdir: os.PathLike | str,
    resolved: dict[str, Any],
    split_sizes: dict[str, int],
    data_file: os.PathLike | str | None,
    counts: Sequence[PhaseCounts],
    devices: Sequence[str],
) -> list[str]:
    """The banner printed before the first epoch, one string per line."""
    norm = resolved.get("normalization", {})
    inner = norm.get("normalization", {})
    splits = " / ".join(f"{k} {v:,}" for k, v in split_sizes.items())
    if config.cv_folds:
        splits += f" (val = fold {config.cv_fold} of {config.cv_folds} of train + val)"
    lines = [
        f"run dir     {workdir}",
        f"backend     {backend_reason(config.backend, resolved['backend'])}",
        f"devices     {len(devices)}: {', '.join(devices)}",
        f"data        {config.data} ({resolved['task']}), {len(resolved['label_names'])} "
        f"classes: {_labels(resolved['label_names'])}",
        f"splits      {splits}" + (f"  from {data_file}" if data_file else ""),
        f"input       {config.size} px stored -> {resolved['image_size']} px "
        f"({norm.get('interpolation', config.interpolation)}){_normalisation(inner)}",
        f"model       {config.model}",
        f"weights     {_weights(config)}",
        f"batches     {config.batch_size} images, {resolved['steps_per_epoch']} steps/epoch, "
        f"seed {config.seed}",
        _augment_line(config, resolved["label_names"], resolved["task"]),
    ]
    lines += [line for p in counts for line in _phase_line(p, config).split("\n")]
    title = " tlmed_keras.train "
    rule = "=" * ((min(RULE_WIDTH, max(len(line) for line in lines)) - len(title)) // 2)
    return [f"{rule}{title}{rule}", *lines, "=" * (2 * len(rule) + len(title))]


def phase_start_line(phase, config: Config) -> str:
    """The one line that opens a phase (also the point TensorBoard marks)."""
    what = "new head, backbone frozen" if phase.name == "head" else f"unfreeze {config.unfreeze}"
    epochs = _epochs(phase.first_epoch, phase.epochs)
    return f"-- phase {phase.index} ({phase.name}): {epochs}, {what}, lr {phase.lr:g} --"


def next_steps(workdir: os.PathLike | str) -> list[str]:
    """What to run on a finished run, with its real path (copy-paste ready)."""
    run = shlex.quote(os.fspath(workdir))
    tb = shlex.quote(os.path.join(os.fspath(workdir), "tb"))
    py = "uv run python -m tlmed_keras"
    return [
        "Next:",
        f"  {py}.evaluate --workdir={run}   # ACC/AUC, per class, figures",
        f"  {py}.predict --workdir={run} IMAGE.png   # your own images",
        f"  {py}.export --workdir={run} --export_dir=serving   # SavedModel for TF Serving",
        f"  uv run tensorboard --logdir={tb}   # curves; flags under HParams and Text",
    ]


def verbose_mode(verbose: int | None, is_tty: bool) -> int:
    """``--verbose``: 0 silent epochs, 1 Keras' progress bar, 2 one line per epoch; None =
    1 on a terminal, 2 when stdout is a file or a pipe (no ``\\r`` and ANSI codes there).

    Raises:
        ValueError: a value other than 0, 1, 2 or None.
    """
    if verbose is None:
        return 1 if is_tty else 2
    if verbose not in (0, 1, 2):
        raise ValueError(
            f"Bad --verbose={verbose!r}: accepted 0 (no per-epoch output), 1 (progress bar), "
            "2 (one line per epoch), or auto."
        )
    return verbose
