"""Every value the fine-tuning job uses, in one place.

``Config`` is the run's configuration: one field per ``tlmed_keras.train`` flag (same name,
same default, same help). ``check`` validates it before any work is done; ``check_against``
adds the checks that need the dataset catalog and the model registry.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from tlmed_keras import tta

OPTIMIZERS = ("adamw", "adam", "sgd")
CLASS_WEIGHTS = ("none", "balanced")
DISTRIBUTE = ("auto", "none", "data_parallel")
BATCHNORM = ("auto", "frozen", "train")
WEIGHTS_KEYWORDS = ("imagenet", "none")
# --select_on's choices, the default first: the epoch metrics (train.epoch_metrics.METRICS;
# tests/train/test_epoch_metrics.py checks the two name the same metrics).
SELECT_ON = ("auc", "acc", "loss")
TTA = tta.NAMES
DATA_SOURCES = ("auto", "memory", "stream")  # as tlmed_keras.data.sources


def _field(default: Any, help: str, minimum: float | None = None):
    """A Config field: its flag's default and help, and the least value ``check`` accepts."""
    return dataclasses.field(default=default, metadata={"help": help, "minimum": minimum})


@dataclasses.dataclass(frozen=True)
class Config:
    """The fine-tuning run. Field names are the flag names of ``python -m tlmed_keras.train``."""

    # What to train on what.
    model: str = _field("", "Backbone name from the model registry (tlmed_keras.models).")
    data: str = _field("", "MedMNIST dataset name, e.g. bloodmnist, breastmnist, chestmnist.")
    size: int = _field(28, "MedMNIST pixel size of the dataset files: 28, 64, 128 or 224.")
    image_size: int = _field(0, "Backbone input side in pixels; 0 = the model's native size.")
    interpolation: str = _field("bilinear", "Resize: bilinear, nearest or bicubic.")
    weights: str = _field(
        "imagenet",
        "Backbone weights: imagenet, none, or a weights file: a path, or a published file name "
        "(e.g. mobilenet_v2-b0353104.pth) found in --weights_dir or the usual caches.",
    )
    weights_dir: str = _field(
        "",
        "Folder searched recursively for a --weights file by its name (and, with imagenet, for "
        "the backbone's published file) before the caches ~/.cache/torch/hub/checkpoints and "
        "~/.keras/models and before any download; e.g. ../shared/weights.",
    )
    data_dir: str = _field("", "Folder of the MedMNIST npz files; empty = medmnist's ~/.medmnist.")
    download: bool = _field(
        False, "Download missing dataset files (MD5 verified); off by default, as in data/eda."
    )
    verify_data: bool = _field(True, "Check the dataset file's MD5 (off only for synthetic files).")
    data_source: str = _field(
        "auto",
        "Where training reads images: memory (every split in RAM, fastest), stream (raw image "
        "shards converted once beside the npz, bounded memory, for 224 px sets), or auto "
        "(memory when the splits fit comfortably in available RAM; says which and why).",
    )
    seed: int = _field(0, "Seed for weights init, shuffling, dropout and augmentation.")
    cv_folds: int = _field(
        0,
        "Cross-fitting for comparing recipes on small sets: train + val are re-split into this "
        "many stratified folds (the same folds for every run) and --cv_fold is the validation "
        "split; the test split is untouched and the trainer does not score it (folds choose "
        "settings; test is read once per final run). 0 = the official train / val split.",
    )
    cv_fold: int = _field(0, "With --cv_folds=K: which fold (0 to K-1) is the validation split.")
    # Phase 1: a new head on the frozen backbone.
    # Defaults follow flags/recipes/mobilenet_v2_torchvision.cfg (issue #12) where they are
    # not model-specific.
    head_epochs: int = _field(
        3, "Phase 1 epochs (new head, frozen backbone); 0 skips it.", minimum=0
    )
    head_lr: float = _field(1e-3, "Phase 1 learning rate (constant).")
    # Phase 2: unfrozen backbone, warm-up then cosine decay.
    finetune_epochs: int = _field(10, "Phase 2 epochs (unfrozen backbone); 0 skips it.", minimum=0)
    finetune_lr: float = _field(1e-4, "Phase 2 peak learning rate (after warm-up).")
    warmup_epochs: float = _field(1.0, "Phase 2 linear warm-up length in epochs, then cosine.")
    unfreeze: str = _field("all", "Phase 2 unfreezes 'all' of the backbone or its top N blocks.")
    layer_decay: float = _field(
        1.0,
        "Phase 2 layer-wise learning-rate decay, in (0, 1]: the head learns at --finetune_lr, "
        "the backbone's top block at this times it, the block below at its square, and so "
        "on down to the stem (blocks as --unfreeze counts them); 1 = one rate for all.",
    )
    batchnorm: str = _field(
        "auto",
        "Phase 2 batch-norm: frozen (inference mode, the transfer-learning convention), "
        "train (batch statistics; needed from random init), auto (frozen with pretrained "
        "weights, train with --weights=none).",
    )
    # Optimisation.
    batch_size: int = _field(32, "Training batch size (global, over all devices).", minimum=1)
    eval_batch_size: int = _field(256, "Batch size for validation and test predictions.", minimum=1)
    optimizer: str = _field("adamw", "adamw, adam or sgd.")
    weight_decay: float = _field(1e-4, "Decoupled weight decay (all optimizers).", minimum=0)
    momentum: float = _field(0.9, "SGD momentum (sgd only).")
    label_smoothing: float = _field(0.0, "Label smoothing of the cross-entropy, in [0, 1).")
    ordinal_smoothing: float = _field(
        0.0,
        "Ordinal-regression tasks only (e.g. RetinaMNIST's grades; ignored on others, so one "
        "recipe serves every set): soft labels exp(-(i - y)^2 / (2 w^2)) over grades i "
        "(SORD), so that near misses cost less than far ones; this is w, in grades (0.5 "
        "gives each neighbour ~11 %); 0 = off.",
        minimum=0,
    )
    augment: str = _field(
        "flip",
        "Training augmentation of the data pipeline: none; flip (horizontal flips; the "
        "default, as in the recipe; dropped on sets whose labels name a body side); basic "
        "(flips, rotation +-10 degrees, zoom +-10 %, contrast +-10 %).",
    )
    mixup: float = _field(
        0.0,
        "Mixup: each training image is blended with another of its batch, and so are their "
        "labels, by a weight drawn from Beta(alpha, alpha); this is alpha (0.2 is the usual "
        "mild setting); 0 = off.",
        minimum=0,
    )
    cutmix: float = _field(
        0.0,
        "CutMix: a box of another image of the batch is pasted in, the labels blended by its "
        "area; Beta(alpha, alpha) alpha of the kept share; 0 = off. With --mixup too, each "
        "batch uses one of the two, at random.",
        minimum=0,
    )
    class_weight: str = _field("none", "none or balanced (weights inverse to class frequency).")
    patience: int = _field(
        0,
        "Early stopping: epochs without a gain of the --select_on metric per phase; 0 = off.",
        minimum=0,
    )
    divergence_factor: float = _field(
        10.0,
        "Divergence: a training loss above this multiple of min(first-epoch loss, chance-level "
        "loss) counts as diverged; 0 = never checked.",
    )
    on_divergence: str = _field(
        "stop",
        "On divergence: stop (after checkpointing the epoch; rerun with warn to continue) or warn.",
    )
    # 0.2 = torchvision's own MobileNetV2/V3 and EfficientNet-B0 head, which a PyTorch user who
    # swaps the last Linear keeps; it won rule 7 of the recipe study on 5 folds of two sets
    # (+0.0086 over none, experiments/results/recipe/NOTES.md). The paper flagfiles pin 0.0.
    dropout: float = _field(0.2, "Dropout before the classifier head, in [0, 1); 0 = none.")
    max_steps_per_epoch: int = _field(
        0, "Cap on training steps per epoch; 0 = full epoch.", minimum=0
    )
    select_on: str = _field(
        SELECT_ON[0],
        "Validation metric that selects the checkpoint evaluated on test and that --patience "
        "watches: auc, acc (highest) or loss (lowest).",
    )
    tta: str = _field(
        "none",
        "Of the final val/test evaluation. " + tta.HELP,
    )
    ema_epochs: float = _field(
        0.0,
        "EMA of the weights: validation, checkpoint selection, model.keras and the final "
        "val/test use an exponential moving average of the weights (training steps the raw "
        "ones), over a horizon of this many epochs: per-step decay 1 - 1/(ema_epochs x "
        "steps per epoch). A horizon in epochs, not a fixed decay, so one value means the "
        "same on any set (0.999 would span 55 epochs of BreastMNIST but 0.4 of ChestMNIST). "
        "0 = off.",
        minimum=0,
    )
    # Execution.
    mixed_precision: bool = _field(False, "mixed_bfloat16 compute (head output stays float32).")
    backend: str = _field("auto", "Keras backend: auto, jax, tensorflow or torch.")
    distribute: str = _field(
        "auto", "auto (data parallel when >1 device on JAX), none, or data_parallel."
    )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Config:
        """Builds a Config from a dict, ignoring keys that are not Config fields."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    def to_flagfile(self) -> str:
        """The flags of this config, one ``--name=value`` a line (``--flagfile`` reads it)."""
        lines = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool):
                lines.append(f"--{f.name}" if value else f"--no{f.name}")
            else:
                lines.append(f"--{f.name}={value}")
        return "\n".join(lines) + "\n"

    @property
    def train_batchnorm(self) -> bool:
        """Whether phase 2 trains batch-norm layers (batch statistics, moving averages)."""
        if self.batchnorm == "auto":
            return self.weights == "none"
        return self.batchnorm == "train"

    @property
    def unfreeze_mode(self) -> str | int:
        """``"all"`` or the number of top blocks, as ``models.set_trainable`` takes it."""
        return "all" if self.unfreeze == "all" else int(self.unfreeze)


def fields_help() -> list[tuple[str, Any, str]]:
    """``(name, default, help)`` of every field: what ``train.py`` turns into flags."""
    return [(f.name, f.default, f.metadata["help"]) for f in dataclasses.fields(Config)]


def _fail(name: str, value: Any, accepted: str) -> None:
    raise ValueError(f"Bad --{name}={value!r}: {accepted}")


def check(config: Config) -> None:
    """Validates values that need nothing but the config itself.

    Raises:
        ValueError: naming the flag, its value and what is accepted.
    """
    from tlmed_keras.data import catalog
    from tlmed_keras.data.preprocess import INTERPOLATIONS

    if not config.model:
        _fail("model", config.model, "a model name is required (see tlmed_keras.models).")
    if config.data not in catalog.dataset_names():
        _fail("data", config.data, f"accepted: {', '.join(catalog.dataset_names())}.")
    if config.size not in catalog.SIZES:
        _fail("size", config.size, f"accepted: {catalog.SIZES}.")
    if config.image_size < 0:
        _fail("image_size", config.image_size, "use a positive side in pixels, or 0 (native).")
    if config.interpolation not in INTERPOLATIONS:
        _fail("interpolation", config.interpolation, f"accepted: {', '.join(INTERPOLATIONS)}.")
    _check_weights(config)
    for field in dataclasses.fields(config):
        _check_minimum(field.name, getattr(config, field.name), field.metadata["minimum"])
    if config.head_epochs + config.finetune_epochs == 0:
        _fail("finetune_epochs", 0, "head_epochs and finetune_epochs are both 0: nothing to do.")
    for name in ("head_lr", "finetune_lr"):
        value = getattr(config, name)
        if not (math.isfinite(value) and value > 0):
            _fail(name, value, "must be a positive number.")
    if not 0 <= config.warmup_epochs <= max(config.finetune_epochs, 0):
        _fail("warmup_epochs", config.warmup_epochs, "must be in [0, finetune_epochs].")
    if config.unfreeze != "all" and not (config.unfreeze.isdigit() and int(config.unfreeze) > 0):
        _fail("unfreeze", config.unfreeze, "use 'all' or a positive number of top blocks.")
    if not 0 < config.layer_decay <= 1:
        _fail("layer_decay", config.layer_decay, "must be in (0, 1]; 1 = off.")
    if config.optimizer not in OPTIMIZERS:
        _fail("optimizer", config.optimizer, f"accepted: {', '.join(OPTIMIZERS)}.")
    if not 0 <= config.momentum < 1:
        _fail("momentum", config.momentum, "must be in [0, 1).")
    if not 0 <= config.label_smoothing < 1:
        _fail("label_smoothing", config.label_smoothing, "must be in [0, 1).")
    if not 0 <= config.dropout < 1:
        _fail("dropout", config.dropout, "must be in [0, 1).")
    if config.class_weight not in CLASS_WEIGHTS:
        _fail("class_weight", config.class_weight, f"accepted: {', '.join(CLASS_WEIGHTS)}.")
    if config.batchnorm not in BATCHNORM:
        _fail("batchnorm", config.batchnorm, f"accepted: {', '.join(BATCHNORM)}.")
    if config.distribute not in DISTRIBUTE:
        _fail("distribute", config.distribute, f"accepted: {', '.join(DISTRIBUTE)}.")
    if config.divergence_factor != 0 and not config.divergence_factor > 1:
        _fail("divergence_factor", config.divergence_factor, "use 0 (off) or a number > 1.")
    if config.on_divergence not in ("stop", "warn"):
        _fail("on_divergence", config.on_divergence, "accepted: stop, warn.")
    if config.select_on not in SELECT_ON:
        _fail("select_on", config.select_on, f"accepted: {', '.join(SELECT_ON)}.")
    if config.tta not in TTA:
        _fail("tta", config.tta, f"accepted: {', '.join(TTA)}.")
    _check_augment(config.augment)
    for name in ("mixup", "cutmix"):
        if not math.isfinite(getattr(config, name)):
            _fail(name, getattr(config, name), "use 0 (off) or a positive Beta alpha.")
    if not math.isfinite(config.ordinal_smoothing):
        _fail("ordinal_smoothing", config.ordinal_smoothing, "use 0 (off) or a width in grades.")
    if config.data_source not in DATA_SOURCES:
        _fail("data_source", config.data_source, f"accepted: {', '.join(DATA_SOURCES)}.")
    _check_cross_fitting(config)


def _check_weights(config: Config) -> None:
    from tlmed_keras import weights_files

    if not config.weights:
        _fail("weights", config.weights, "use imagenet, none, or a weights file.")
    weights_files.check_weights_dir(config.weights_dir)
    if config.weights not in WEIGHTS_KEYWORDS:
        weights_files.find_weights_file(config.weights, config.weights_dir)


def _check_cross_fitting(config: Config) -> None:
    from tlmed_keras.data import folds

    folds.check_fold(config.cv_folds, config.cv_fold)
    if config.cv_folds and config.data_source == "stream":
        _fail(
            "data_source",
            config.data_source,
            "--cv_folds re-splits the arrays in memory: use --data_source=memory or auto.",
        )


def _check_minimum(name: str, value: Any, minimum: float | None) -> None:
    if minimum is not None and value < minimum:
        _fail(name, value, f"must be >= {minimum}.")


def _check_augment(augment: str) -> None:
    from tlmed_keras.data import pipeline  # imports Keras: here, after the backend is set

    accepted = ("none", *pipeline.AUGMENTATIONS)
    if augment not in accepted:
        _fail("augment", augment, f"accepted: {', '.join(accepted)}.")


def check_against(config: Config, spec: Any, info: Any) -> None:
    """Checks that need the model's spec and the dataset's catalog entry.

    Args:
        config: the run's config.
        spec: ``models.get_spec(config.model)`` (``min_input_size``, ``num_blocks``).
        info: ``catalog.get_info(config.data, config.size)`` (``split_sizes``).

    Raises:
        ValueError: an image size the backbone rejects, more blocks than it has, or a batch
            larger than the training split.
    """
    image_size = config.image_size or spec.input_size
    min_size = spec.min_input_size
    if image_size < min_size:
        _fail(
            "image_size",
            config.image_size,
            f"{spec.name} takes inputs of at least {min_size} px (native {spec.input_size}).",
        )
    blocks = spec.num_blocks
    mode = config.unfreeze_mode
    if isinstance(mode, int) and mode > blocks:
        _fail("unfreeze", config.unfreeze, f"{spec.name} has {blocks} blocks; use <= {blocks}.")
    check_split_sizes(config, info.split_sizes)


def check_split_sizes(config: Config, split_sizes: dict[str, int]) -> None:
    """Raises ValueError when the training batch is larger than the training split."""
    if config.batch_size > split_sizes["train"]:
        _fail(
            "batch_size",
            config.batch_size,
            f"larger than the {split_sizes['train']} training images of {config.data}.",
        )
    for split in ("val", "test"):
        if split_sizes.get(split, 0) < 1:
            raise ValueError(f"The {split} split of {config.data} is empty.")
