"""Writes the serving SavedModel with ``keras.export.ExportArchive``, from JAX or TensorFlow.

The ``serving_default`` signature takes raw uint8 images ``[batch, H, W, C]`` (dynamic batch),
runs the training ``Preprocess`` layer, the classifier and the output head inside the graph,
and returns ``{"probabilities", "class_id" | "predictions", "probabilities_calibrated"}``.

On JAX the computation is converted with jax2tf native serialization: the graph holds
StableHLO lowered for each platform in ``platforms``. Lowering for "cuda" works on a CPU-only
machine, so the default ("cpu", "cuda") serves on CPU and on NVIDIA GPUs (the TF Serving GPU
build must then run XLA with a CUDA version compatible with the exporting jaxlib). On
TensorFlow the graph is native TF ops and serves anywhere TF runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import keras
import tensorflow as tf

from tlmed_keras.serving.signature import INPUT_NAME, ServingSpec, head

JAX_PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
DEFAULT_PLATFORMS = ("cpu", "cuda")


def check_platforms(platforms: Sequence[str]) -> tuple[str, ...]:
    """Validates jax2tf serialization platforms (lower-case names, no duplicates)."""
    chosen = tuple(p.strip().lower() for p in platforms if p.strip())
    bad = [p for p in chosen if p not in JAX_PLATFORMS]
    if not chosen or bad:
        raise ValueError(
            f"Invalid serialization platforms {list(platforms)!r}. Accepted: "
            f"{', '.join(JAX_PLATFORMS)} (e.g. cpu,cuda). Include 'cpu' to serve on CPU."
        )
    return tuple(dict.fromkeys(chosen))


def _input_spec(spec: ServingSpec) -> tf.TensorSpec:
    return tf.TensorSpec([None, *spec.image_shape], tf.uint8, name=INPUT_NAME)


def _tensorflow_core(model, preprocess, spec: ServingSpec, temperature: float):
    def core(images):
        return head(model(preprocess(images), training=False), spec.multilabel, temperature)

    return core


def _jax_core(archive, model, preprocess, spec: ServingSpec, platforms, temperature: float):
    from jax.experimental import jax2tf

    def pure(trainable, non_trainable, images):
        logits, _ = model.stateless_call(
            trainable, non_trainable, preprocess(images), training=False
        )
        return head(logits, spec.multilabel, temperature)

    h, w, c = spec.image_shape
    converted = jax2tf.convert(
        pure,
        polymorphic_shapes=[None, None, f"(batch, {h}, {w}, {c})"],
        native_serialization_platforms=platforms,
        with_gradient=False,
    )
    # archive.track(model) made TF copies of the weights, in the model's variable order.
    trainable = archive.trainable_variables
    non_trainable = archive.non_trainable_variables

    def core(images):
        return converted(list(trainable), list(non_trainable), images)

    return core


def _checked(core, spec: ServingSpec):
    """Wraps ``core`` in the signature function; it refuses a wrong image size in the graph.

    The signature's declared shape is not enforced by TF at call time (TF Serving, sessions and
    concrete functions all pass any shape through), so the check is an op in the graph.
    """
    h, w, c = spec.image_shape

    @tf.function(input_signature=[_input_spec(spec)], autograph=False)
    def serving_default(images):
        got = tf.shape(images)
        message = (
            f"{spec.dataset} (size {spec.size}) takes raw uint8 images [batch, {h}, {w}, {c}] "
            "with batch >= 1; got a different shape (see the shape printed below)."
        )
        ok = tf.logical_and(
            tf.reduce_all(tf.equal(got[1:], tf.constant([h, w, c], tf.int32))), got[0] > 0
        )
        check = tf.debugging.Assert(ok, [message, "got shape:", got])
        with tf.control_dependencies([check]):
            images = tf.identity(images)
        return core(images)

    serving_default.get_concrete_function()
    return serving_default


def write_archive(
    path: str | Path,
    model: keras.Model,
    preprocess: keras.layers.Layer,
    spec: ServingSpec,
    platforms: Sequence[str] = DEFAULT_PLATFORMS,
    temperature: float = 1.0,
) -> None:
    """Writes the SavedModel with the single ``serving_default`` signature to ``path``.

    Args:
        path: target folder (must not exist yet or be empty).
        model: classifier on preprocessed input, returning logits ``[B, classes]``.
        preprocess: the run's ``Preprocess`` layer.
        spec: the serving contract (input shape, task, labels).
        platforms: jax2tf native serialization platforms (JAX backend only).
        temperature: divides the logits of ``probabilities_calibrated``.

    Raises:
        NotImplementedError: a Keras backend other than JAX or TensorFlow.
    """
    backend = keras.backend.backend()
    if backend not in ("jax", "tensorflow"):
        raise NotImplementedError(
            f"SavedModel export runs on the jax or tensorflow Keras backend, not {backend!r}. "
            "Rerun with --backend=jax or --backend=tensorflow (model.keras loads on either)."
        )
    archive = keras.export.ExportArchive()
    archive.track(model)
    if backend == "jax":
        core = _jax_core(archive, model, preprocess, spec, check_platforms(platforms), temperature)
    else:
        core = _tensorflow_core(model, preprocess, spec, temperature)
    archive.add_endpoint("serving_default", _checked(core, spec))
    archive.write_out(str(path), verbose=False)
