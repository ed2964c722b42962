"""Small checks shared by the architectures written in this package (AlexNet, SqueezeNet, BEiT)."""

from __future__ import annotations

import keras


def has_layer(model: keras.Model, name: str) -> bool:
    """Whether ``model`` has a layer called ``name`` (``get_layer`` raises instead)."""
    return any(layer.name == name for layer in model.layers)


def check_rgb_input_shape(
    input_shape: tuple[int, int, int], label: str, min_size: int, native_size: int
) -> None:
    """Refuses a non-RGB or too-small input before any layer is built.

    Raises:
        ValueError: names the shape received, the minimum, and the fix.
    """
    if len(input_shape) != 3 or input_shape[-1] != 3:
        raise ValueError(f"{label} takes RGB input (H, W, 3); got input_shape={input_shape}.")
    if any(side is None or side < min_size for side in input_shape[:2]):
        raise ValueError(
            f"{label} needs a static input of at least {min_size}x{min_size}; got "
            f"{input_shape[:2]}. Resize the images (e.g. Preprocess(image_size={native_size}))."
        )
