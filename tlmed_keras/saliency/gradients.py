"""The one backend-specific piece of saliency: gradients of per-image scores w.r.t. an input.

Keras 3 has no backend-neutral gradient: TensorFlow records a ``GradientTape``, JAX
transforms the function (``jax.value_and_grad``). Everything else in ``tlmed_keras.saliency``
runs on ``keras.ops``.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np

BACKENDS = ("tensorflow", "jax")


def scores_and_gradients(score: Callable, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(score(x), d sum(score(x)) / dx)`` as numpy arrays.

    Args:
        score: ``x [B, ...] -> [B]``, one score per image; images must not interact (batch
            norm in inference mode), so the gradient of the sum is each image's own.
        x: the input, float32.

    Raises:
        ValueError: Keras runs on a backend other than TensorFlow or JAX.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            scores = score(x)
        return np.asarray(scores), np.asarray(tape.gradient(scores, x))
    if backend == "jax":
        import jax

        def total(x):
            scores = score(x)
            return jax.numpy.sum(scores), scores

        (_, scores), grads = jax.value_and_grad(total, has_aux=True)(x)
        return np.asarray(scores), np.asarray(grads)
    raise ValueError(
        f"Saliency maps need gradients, computed here on {' or '.join(BACKENDS)}; Keras runs "
        f"on {backend!r}. Pass --backend=tensorflow or --backend=jax."
    )
