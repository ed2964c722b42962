"""The Preprocess layer against a plain reference (resize, triple, then normalise)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tlmed_keras.data import preprocess
from tlmed_keras.data.preprocess import NORMALIZATIONS, Preprocess


def reference(images: np.ndarray, size: int, normalization: str, interpolation: str):
    """The textbook order, in TensorFlow: resize, grey to RGB, (BGR), scale, mean, std."""
    x = tf.cast(images, tf.float32)
    if x.shape.rank == 3:
        x = x[..., None]
    x = tf.image.resize(x, (size, size), method=interpolation)
    if x.shape[-1] == 1:
        x = tf.concat([x, x, x], axis=-1)
    norm = NORMALIZATIONS[normalization]
    if norm.bgr:
        x = x[..., ::-1]
    return ((x * norm.scale - norm.mean) / norm.std).numpy()


def _images(channels: int, count: int = 3, size: int = 28) -> np.ndarray:
    shape = (count, size, size) if channels == 1 else (count, size, size, 3)
    return np.random.default_rng(channels).integers(0, 256, shape, dtype=np.uint8)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("normalization", sorted(NORMALIZATIONS))
@pytest.mark.parametrize("interpolation", ["bilinear", "nearest", "bicubic"])
@pytest.mark.parametrize("source", [28, 40, 56])  # up-sized, same size, down-sized
def test_matches_reference_in_tf_data(channels, normalization, interpolation, source):
    images = _images(channels, size=source)
    layer = Preprocess(40, normalization, interpolation)
    (out,) = tf.data.Dataset.from_tensors(images).map(layer).as_numpy_iterator()
    expected = reference(images, 40, normalization, interpolation)
    assert out.shape == (3, 40, 40, 3) and out.dtype == np.float32
    scale = np.abs(expected).max()
    np.testing.assert_allclose(out, expected, atol=1e-5 * scale)


@pytest.mark.parametrize("channels", [1, 3])
def test_model_backend_matches_tf_data(channels):
    """Inside a model (the JAX backend in tests) the layer gives what tf.data gave."""
    images = _images(channels, count=2, size=28)
    layer = Preprocess(56, "caffe")
    (fed,) = tf.data.Dataset.from_tensors(images).map(layer).as_numpy_iterator()
    restored = Preprocess.from_config(layer.get_config())
    np.testing.assert_allclose(keras.ops.convert_to_numpy(restored(images)), fed, atol=1e-3)


@pytest.mark.parametrize("channels", [1, 3])
def test_unknown_spatial_size_in_a_graph(channels):
    layer = Preprocess(40, "caffe")
    shape = [None, None, None] if channels == 1 else [None, None, None, 3]
    run = tf.function(layer, input_signature=[tf.TensorSpec(shape, tf.uint8)])
    images = _images(channels, size=28)
    expected = reference(images, 40, "caffe", "bilinear")
    np.testing.assert_allclose(run(images).numpy(), expected, atol=1e-3)


def test_same_size_skips_resize_and_keeps_pixels():
    images = _images(1)
    out = keras.ops.convert_to_numpy(Preprocess(28, "unit")(images))
    np.testing.assert_allclose(out, np.repeat(images[..., None] / 255, 3, axis=-1), atol=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="interpolation"):
        Preprocess(32, interpolation="area")
    with pytest.raises(ValueError, match="normalization"):
        Preprocess(32, "imagenet")
    with pytest.raises(ValueError, match="1 or 3 channels"):
        Preprocess(32)(np.zeros((1, 8, 8, 2), np.uint8))


def _graph_ops(layer, shape) -> set[str]:
    """The op types of ``layer``'s graph for uint8 ``shape``, "Cast<-uint8" for a cast of it."""
    run = tf.function(layer, input_signature=[tf.TensorSpec(shape, tf.uint8)])
    ops = run.get_concrete_function().graph.get_operations()
    casts = {"Cast<-uint8" for op in ops if op.type == "Cast" and op.get_attr("SrcT") == tf.uint8}
    return {op.type for op in ops} | casts


@pytest.mark.parametrize("normalization", sorted(NORMALIZATIONS))
@pytest.mark.parametrize("shape", [[None, 40, 40, 3], [None, 40, 40], [None, 28, 28, 3]])
def test_one_pass_conversion_exactly_where_it_applies(normalization, shape):
    # uint8 at the output size, one scale and offset for all channels: TF's one-pass
    # Dequantize (the streamed 224 px pipeline's main cost otherwise: cast, multiply,
    # subtract); per-channel constants or a resize keep the general path.
    norm = NORMALIZATIONS[normalization]
    uniform = len(set(norm.std)) == 1 and len(set(norm.mean)) == 1
    ops = _graph_ops(Preprocess(40, normalization), shape)
    assert ("Dequantize" in ops) == (uniform and shape[1] == 40)
    assert ("Cast<-uint8" in ops) == (not uniform or shape[1] != 40)
    # The rest is a per-channel map: oneDNN's 1x1 depthwise conv + bias on x86 (one kernel).
    assert ("DepthwiseConv2dNative" in ops) == (
        preprocess._onednn_enabled() and "Cast<-uint8" in ops
    )


def test_without_onednn_the_per_channel_map_stays_a_broadcast(monkeypatch):
    monkeypatch.setattr(preprocess, "_onednn_enabled", lambda: False)
    ops = _graph_ops(Preprocess(40, "torch"), [None, 40, 40, 3])
    assert "DepthwiseConv2dNative" not in ops and {"Mul", "Sub"} <= ops
    images = _images(3, size=40)
    (out,) = tf.data.Dataset.from_tensors(images).map(Preprocess(40, "torch")).as_numpy_iterator()
    np.testing.assert_allclose(out, reference(images, 40, "torch", "bilinear"), atol=1e-5 * 3)


def test_flip_of_the_uint8_batch_equals_flip_of_its_floats():
    # The pipeline flips uint8 batches (so Preprocess keeps its one-pass conversion): the
    # same draws and pixels as flipping the float batch, bit for bit.
    from tlmed_keras.data import augment

    images = _images(3, count=16, size=12)
    seed = tf.constant([3, 7], tf.int64)
    flipped = augment.flip(tf.constant(images), seed).numpy()
    assert flipped.dtype == np.uint8 and not np.array_equal(flipped, images)
    np.testing.assert_array_equal(flipped, augment.flip(tf.cast(images, tf.float32), seed).numpy())


def test_one_pass_conversion_keeps_a_bgr_order():
    # A custom one-scale normalisation that wants BGR: the one-pass path reverses the
    # channels exactly as the general path does.
    spec = preprocess.Normalization(scale=1 / 255, bgr=True)
    layer = Preprocess(40, spec)
    assert "Dequantize" in _graph_ops(layer, [None, 40, 40, 3])
    images = _images(3, size=40)
    (out,) = tf.data.Dataset.from_tensors(images).map(layer).as_numpy_iterator()
    np.testing.assert_allclose(out, images[..., ::-1] / 255, atol=1e-6)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("normalization", sorted(NORMALIZATIONS))
@pytest.mark.parametrize("source", [28, 40])  # resized (the layer's path), at size (fused)
def test_pipeline_call_matches_reference(channels, normalization, source):
    # map_batch, the tf.data pipeline's call, may take one XLA-compiled pass: same values as
    # the textbook order within float rounding, for every normalisation and channel count.
    images = _images(channels, size=source)
    layer = Preprocess(40, normalization)
    (out,) = tf.data.Dataset.from_tensors(images).map(layer.map_batch).as_numpy_iterator()
    expected = reference(images, 40, normalization, "bilinear")
    assert out.shape == (3, 40, 40, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, atol=1e-6 * np.abs(expected).max())


def _xla_calls(fn, shape) -> int:
    """How many XLA-compiled function calls the graph of ``fn`` for uint8 ``shape`` makes."""
    run = tf.function(fn, input_signature=[tf.TensorSpec(shape, tf.uint8)])
    ops = run.get_concrete_function().graph.get_operations()
    compiled = [op for op in ops if "_XlaMustCompile" in op.node_def.attr]
    return sum(op.get_attr("_XlaMustCompile") for op in compiled)


def test_pipeline_call_fuses_exactly_uint8_batches_at_size(monkeypatch):
    layer = Preprocess(40, "torch")
    assert preprocess.xla_available()  # TensorFlow's Linux / x86 wheels have XLA's CPU JIT
    assert _xla_calls(layer.map_batch, [None, 40, 40, 3]) == 1
    assert _xla_calls(layer.map_batch, [None, 40, 40]) == 1  # grey, tripled in the kernel
    assert _xla_calls(layer.map_batch, [None, 28, 28, 3]) == 0  # a resize: the layer's ops
    assert _xla_calls(layer, [None, 40, 40, 3]) == 0  # serving: no XLA needed
    # Without XLA the pipeline call is the layer's own.
    monkeypatch.setattr(preprocess, "xla_available", lambda: False)
    assert _xla_calls(layer.map_batch, [None, 40, 40, 3]) == 0
    images = _images(3, size=40)
    (out,) = tf.data.Dataset.from_tensors(images).map(layer.map_batch).as_numpy_iterator()
    (own,) = tf.data.Dataset.from_tensors(images).map(layer).as_numpy_iterator()
    np.testing.assert_array_equal(out, own)


def test_pipeline_call_keeps_a_bgr_order():
    spec = preprocess.Normalization(scale=1 / 255, mean=(0.1, 0.2, 0.3), bgr=True)
    images = _images(3, size=40)
    dataset = tf.data.Dataset.from_tensors(images).map(Preprocess(40, spec).map_batch)
    (out,) = dataset.as_numpy_iterator()
    np.testing.assert_allclose(out, images[..., ::-1] / 255 - [0.1, 0.2, 0.3], atol=1e-6)
