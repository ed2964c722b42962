"""Seed ensembles and test-time augmentation (TTA) of finished runs.

``Averaged`` is a Keras model on preprocessed images that averages the class probabilities of
its members over the TTA views (``tlmed_keras.tta.MODES``: ``"none"``, the image; ``"flip"``,
the image and its horizontal mirror; ``"shift"`` / ``"flip_shift"``, small shifts too) and
returns them as logits of the same task: ``log p`` (softmax tasks) or
``log p - log(1 - p)`` (multi-label, sigmoid). Softmax / sigmoid of those logits give back the
averaged probabilities, so everything that takes a run's logits-returning model (evaluation,
the SavedModel export and its verification) takes an ensemble unchanged.

Members may differ in backbone, model input size and normalisation: ``serving_parts`` gives
such an ensemble as ``PerMemberPreprocessing``, a model on raw pixels that runs each member's
own ``Preprocess`` inside (one SavedModel, raw uint8 in). ``resolve_workdirs`` (``workdirs``)
reads ``--workdir=A,B,C`` or a glob; ``load_members`` loads the runs and refuses members that
do not share the dataset, its stored image size and its label set.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import keras
from keras.src.layers.preprocessing.data_layer import DataLayer

from tlmed_keras import metrics as mm
from tlmed_keras import tta as tta_modes
from tlmed_keras.runs.workdirs import resolve_workdirs  # noqa: F401 (re-exported)

TTA_MODES = tta_modes.NAMES
# Probabilities are clipped before the log so that a saturated member gives finite logits;
# softmax(log(clip(p))) differs from p by at most classes * EPSILON, far below the 1e-4 the
# export is verified to.
EPSILON = 1e-7


def check_tta(tta: str) -> str:
    """Returns ``tta`` or raises ValueError naming the accepted modes."""
    if tta not in TTA_MODES:
        raise ValueError(f"Bad --tta={tta!r}: accepted: {', '.join(TTA_MODES)}.")
    return tta


def check_tta_for(tta: str, info: Any) -> str:
    """``check_tta``, and refuses mirroring TTA on a set whose labels name a body side
    (``info.sided_labels``): the mirror of a left organ looks like the right one, so averaging
    the two views would blend the two classes."""
    check_tta(tta)
    if tta_modes.mirrors(tta) and info.sided_labels:
        raise ValueError(
            f"Bad --tta={tta} for {info.name}: its labels name body sides "
            f"({', '.join(info.sided_labels)}), and a mirror image shows the other side's "
            "class. Use --tta=none or --tta=shift."
        )
    return tta


def _views(images, tta: str) -> list:
    """The TTA views of a preprocessed ``[B, H, W, C]`` batch (channels last)."""
    views = [images]
    if tta_modes.shifts(tta):
        views += _shifts(images)
    if tta_modes.mirrors(tta):
        views += [keras.ops.flip(view, axis=2) for view in views]
    return views


def _shifts(images) -> list:
    """``images`` moved by ``tta.shift_pixels`` down, up, right and left (axes 1 and 2), the
    edge row or column repeated into the gap: no wrap-around, no made-up border colour."""
    return [
        _shifted(images, axis, step * tta_modes.shift_pixels(images.shape[axis]))
        for axis in (1, 2)
        for step in (1, -1)
    ]


def _shifted(images, axis: int, pixels: int):
    """``images`` moved by ``pixels`` along ``axis`` (positive: towards higher indices): one
    gather whose indices past the edge are clamped to it."""
    side = images.shape[axis]
    index = [min(max(i - pixels, 0), side - 1) for i in range(side)]
    return keras.ops.take(images, index, axis=axis)


def _probabilities(logits, task: str):
    if task == mm.MULTILABEL:
        return keras.ops.sigmoid(logits)
    return keras.ops.softmax(logits, axis=-1)


def _as_logits(probabilities, task: str):
    p = keras.ops.clip(probabilities, EPSILON, 1.0 - EPSILON)
    if task == mm.MULTILABEL:
        return keras.ops.log(p) - keras.ops.log(1.0 - p)
    return keras.ops.log(p)


class Averaged(keras.Model):
    """Mean probability of ``members`` over the views of ``tta``, returned as logits.

    Args:
        members: classifiers on preprocessed images returning logits (runs' model.keras),
            all fed the same preprocessing.
        task: the dataset's MedMNIST task (softmax, or sigmoid for multi-label).
        tta: a mode of ``tlmed_keras.tta.MODES`` ("none", "flip", "shift", "flip_shift").

    Not saved as .keras: it is rebuilt from the members' run directories when needed.
    """

    def __init__(self, members: Sequence[keras.Model], task: str, tta: str = "none", **kwargs):
        kwargs.setdefault("name", "ensemble" if len(members) > 1 else "tta")
        super().__init__(**kwargs)
        if not members:
            raise ValueError("An ensemble needs at least one member model.")
        self.members = list(members)
        self.task = task
        self.tta = check_tta(tta)
        self.built = all(m.built for m in self.members)

    def call(self, images, training=False):
        probs = [
            _probabilities(member(view, training=False), self.task)
            for member in self.members
            for view in _views(images, self.tta)
        ]
        mean = probs[0] if len(probs) == 1 else keras.ops.mean(keras.ops.stack(probs), axis=0)
        return _as_logits(mean, self.task)


def with_tta(model: keras.Model, task: str, tta: str) -> keras.Model:
    """``model`` itself for ``tta="none"``, else the model averaged over the TTA views."""
    if check_tta(tta) == "none":
        return model
    return Averaged([model], task, tta)


def _member_facts(run: Any) -> dict[str, Any]:
    """What members must share: the same images in (dataset, stored size), the same classes
    out. Backbone, model input size and normalisation may differ: each member keeps its own
    preprocessing."""
    return {
        "dataset": run.config.data,
        "stored image size": run.config.size,
        "label set": tuple(run.info.label_names),
    }


def _preprocessing(preprocess: Any) -> dict[str, Any] | None:
    """The Preprocess settings that change pixels (not the layer's name or dtype policy)."""
    if preprocess is None:
        return None
    config = preprocess.get_config()
    return {k: config.get(k) for k in ("image_size", "interpolation", "normalization")}


def check_members(runs: Sequence[Any]) -> None:
    """Refuses an ensemble of runs that differ in dataset, stored image size or label set.

    Raises:
        ValueError: naming the first differing fact, its value in the first member and in
            the member that differs.
    """
    if not runs:
        raise ValueError("An ensemble needs at least one run directory.")
    first = _member_facts(runs[0])
    for run in runs[1:]:
        facts = _member_facts(run)
        for key, value in first.items():
            if facts[key] != value:
                raise ValueError(
                    f"Ensemble members must share the dataset, its stored image size and its "
                    f"label set: the {key} is {value!r} in {runs[0].workdir} but "
                    f"{facts[key]!r} in {run.workdir}. Pass runs trained on the same "
                    "dataset files (backbones and model input sizes may differ)."
                )


def check_split_shared(runs: Sequence[Any], split: str) -> None:
    """Refuses scoring cross-fitted members (``--cv_folds``) together on "train" or "val"
    when their folds differ: each member's "val" is other images. Test is shared by all.

    Raises:
        ValueError: naming the two runs and their folds.
    """
    if split == "test":
        return
    first = _folds(runs[0])
    for run in runs[1:]:
        if _folds(run) != first:
            raise ValueError(
                f"Members split train + val differently: {runs[0].workdir} has {first}, "
                f"{run.workdir} has {_folds(run)}, so their {split!r} splits are other images. "
                "Score them together on --split=test, or pass runs of one fold."
            )


def _folds(run: Any) -> str:
    folds, fold = run.config.cv_folds, run.config.cv_fold
    return f"fold {fold} of {folds}" if folds else "the official split"


def recorded_tta(runs: Sequence[Any]) -> str:
    """The TTA the runs were trained with (their config.json's ``tta``; "none" for runs that
    predate the flag): the TTA behind each run's own final test numbers.

    Raises:
        ValueError: members trained with different TTA modes, naming each run's mode.
    """
    modes = {str(run.workdir): run.config.tta for run in runs}
    if len(set(modes.values())) > 1:
        listed = ", ".join(f"{workdir}: {mode}" for workdir, mode in modes.items())
        raise ValueError(
            f"The runs were trained with different --tta ({listed}), so they have no common "
            "TTA to default to. Pass --tta=MODE to evaluate them all with one mode."
        )
    return next(iter(modes.values()))


def load_members(workdirs: Sequence[str | os.PathLike]) -> list[Any]:
    """Loads finished runs (``rundir.load_run``) and checks that they can be averaged."""
    from tlmed_keras.runs.rundir import load_run

    runs = [load_run(w) for w in workdirs]
    check_members(runs)
    return runs


def ensemble_model(runs: Sequence[Any], tta: str = "none") -> keras.Model:
    """The run's own model for one run without TTA, else an ``Averaged`` of the runs: a
    model on the runs' shared preprocessed input (``serving_parts`` takes any members).

    Raises:
        ValueError: a bad ``tta``, mirroring TTA on a set whose labels name a body side, or
            members with different preprocessing.
    """
    check_tta_for(tta, runs[0].info)
    if not _same_preprocessing(runs):
        raise ValueError(
            "These members preprocess their input differently (backbone, input size or "
            "normalisation): use serving_parts, which runs each member's own preprocessing."
        )
    if len(runs) == 1:
        return with_tta(runs[0].model, runs[0].info.task, tta)
    return Averaged([run.model for run in runs], runs[0].info.task, tta)


def _same_preprocessing(runs: Sequence[Any]) -> bool:
    first = _preprocessing(runs[0].preprocess)
    return all(_preprocessing(run.preprocess) == first for run in runs[1:])


class RawPixels(DataLayer):
    """The input layer of a ``PerMemberPreprocessing`` ensemble: raw images (uint8,
    ``[B, H, W]`` or ``[B, H, W, C]``) as float32 ``[B, H, W, C]``, nothing else: each member
    resizes and normalises them itself."""

    def call(self, images):
        x = self.backend.cast(images, "float32")
        return self.backend.numpy.expand_dims(x, -1) if len(x.shape) == 3 else x

    def map_batch(self, images):
        """The tf.data pipeline's call (``Preprocess.map_batch``'s counterpart)."""
        return self(images)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) if len(input_shape) == 4 else (*input_shape, 1)


class PerMemberPreprocessing(keras.Model):
    """Mean probability of members that each bring their own preprocessing, on raw pixels
    (``RawPixels``' output), returned as logits like ``Averaged``.

    Members sharing one ``Preprocess`` configuration are fed one preprocessed batch; each
    member's TTA views are taken of its own preprocessed images, exactly as when it is
    evaluated alone, so the ensemble is the mean of its members' evaluations.

    Args:
        groups: ``(preprocess, models)`` pairs: a ``Preprocess`` layer and the classifiers
            (returning logits) trained behind it.
        task: the dataset's MedMNIST task.
        tta: a mode of ``tlmed_keras.tta.MODES``.
    """

    def __init__(self, groups: Sequence[tuple[Any, Sequence[keras.Model]]], task: str, tta="none"):
        super().__init__(name="ensemble")
        if not groups or not all(models for _, models in groups):
            raise ValueError("An ensemble needs at least one member model.")
        self.preprocessing = [preprocess for preprocess, _ in groups]
        self.groups = [list(models) for _, models in groups]
        self.task = task
        self.tta = check_tta(tta)
        self.built = all(m.built for models in self.groups for m in models)

    def call(self, images, training=False):
        probs = [
            _probabilities(member(view, training=False), self.task)
            for preprocess, members in zip(self.preprocessing, self.groups, strict=True)
            for view in _views(preprocess(images), self.tta)
            for member in members
        ]
        mean = probs[0] if len(probs) == 1 else keras.ops.mean(keras.ops.stack(probs), axis=0)
        return _as_logits(mean, self.task)


def _grouped(runs: Sequence[Any]) -> list[tuple[Any, list[keras.Model]]]:
    """The runs' models grouped by preprocessing (in order of first appearance)."""
    groups: dict[str, tuple[Any, list[keras.Model]]] = {}
    for run in runs:
        key = repr(_preprocessing(run.preprocess))
        groups.setdefault(key, (run.preprocess, []))[1].append(run.model)
    return list(groups.values())


def serving_parts(runs: Sequence[Any], tta: str = "none") -> tuple[keras.Model, Any]:
    """``(model, preprocess)`` of the runs' ensemble for export: ``preprocess`` maps raw
    pixels to ``model``'s input. Members with one preprocessing: their ``Preprocess`` and
    ``ensemble_model``; otherwise ``RawPixels`` and a ``PerMemberPreprocessing``.

    Raises:
        ValueError: a bad ``tta``, or mirroring TTA on a set whose labels name a body side.
    """
    check_tta_for(tta, runs[0].info)
    if _same_preprocessing(runs):
        return ensemble_model(runs, tta), runs[0].preprocess
    return PerMemberPreprocessing(_grouped(runs), runs[0].info.task, tta), RawPixels()
