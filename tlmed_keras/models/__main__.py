"""Model zoo command line.

    python -m tlmed_keras.models --list
    python -m tlmed_keras.models --model=mobilenet_v2_torchvision \\
        --weights=../shared/weights/torchvision/mobilenet_v2-b0353104.pth --classify=cat.png

``--classify`` prints the top-5 ImageNet classes, ``index name probability``, best first.
Only absl and the standard library are imported before the backend is chosen.
"""

from __future__ import annotations

from absl import app, flags

from tlmed_keras import cli

FLAGS = flags.FLAGS
flags.DEFINE_bool("list", False, "List every model with its input size and weight source.")
flags.DEFINE_string("model", None, "Registered model name (see --list).")
flags.DEFINE_string(
    "weights", "imagenet", "'imagenet', 'none', or a local weights file / checkpoint."
)
flags.DEFINE_string("classify", None, "Image to classify with the model's ImageNet head.")
flags.DEFINE_integer("top", 5, "How many classes --classify prints.")
flags.DEFINE_string("backend", "auto", "Keras backend: auto, jax, tensorflow or torch.")


def list_models() -> list[str]:
    """One line per registered model: name, input size (min), normalisation, weights."""
    from tlmed_keras import models

    lines = [f"{'name':26} {'input':>5} {'min':>4}  {'normalization':13} imagenet weights"]
    for name in models.model_names():
        spec = models.get_spec(name)
        norm = spec.normalization if isinstance(spec.normalization, str) else "custom"
        lines.append(
            f"{name:26} {spec.input_size:5d} {spec.min_input_size:4d}  {norm:13} "
            f"{spec.weights_source}"
        )
    return lines


def load_image(path: str):
    """An RGB image as uint8 ``[1, H, W, 3]``."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))[None]


def classify(name: str, weights: str, image_path: str, top: int = 5) -> list[str]:
    """Top-``top`` ImageNet classes of an image, as ``index name probability`` lines."""
    import keras
    import numpy as np
    from keras_hub.utils import imagenet_id_to_name

    from tlmed_keras import models
    from tlmed_keras.data.preprocess import Preprocess

    spec = models.get_spec(name)
    from tlmed_keras.weights_guard import loading_weights

    with loading_weights(weights, name):  # any failure of a weights file: one clear error
        model = models.build_imagenet_classifier(name, weights=weights)
    preprocess = Preprocess(spec.input_size, spec.normalization)
    probs = keras.ops.convert_to_numpy(model(preprocess(load_image(image_path))))[0]
    best = np.argsort(-probs)[:top]
    return [f"{i} {imagenet_id_to_name(int(i))} {probs[i]:.4f}" for i in best]


def main(argv: list[str]) -> int:
    del argv
    from tlmed_keras import runtime

    runtime.setup(FLAGS.backend)
    if FLAGS.list:
        print("\n".join(list_models()))
        return 0
    if not FLAGS.model or not FLAGS.classify:
        raise app.UsageError("Pass --list, or --model=NAME --classify=IMAGE [--weights=...].")
    print("\n".join(classify(FLAGS.model, FLAGS.weights, FLAGS.classify, FLAGS.top)))
    return 0


if __name__ == "__main__":
    cli.run(main)
