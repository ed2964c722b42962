"""Child process for test_zoo: builds every registered model on the TensorFlow backend.

Run as ``python tests/models/zoo_probe.py OUT.json`` with KERAS_HOME pointing at a folder
whose ``models/`` holds the shared Keras MobileNet file. Writes one JSON object of results;
exceptions are recorded as strings so the parent test can name the failing check.
"""

from __future__ import annotations

import json
import sys
import traceback
import urllib.error

# One per family / custom layer: own graph with "_" names, keras-hub CNN, class-token pooling.
SERIALIZED = ("mobilenet_v2_torchvision", "resnet18", "dinov2_small")


def _offline(*args, **kwargs):
    raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution (test)")


def probe_model(name: str) -> dict:
    import numpy as np

    from tlmed_keras import models

    spec = models.get_spec(name)
    size = spec.min_input_size
    model, backbone = models.build_classifier(name, 3, weights="none", image_size=size)
    x = np.random.default_rng(0).normal(size=(2, size, size, 3)).astype("float32")
    logits = np.asarray(model(x))
    models.set_trainable(backbone, name, "frozen")
    frozen = len(backbone.trainable_weights)
    models.set_trainable(backbone, name, 1)
    return {
        "size": size,
        "logits_shape": list(logits.shape),
        "finite": bool(np.isfinite(logits).all()),
        "blocks": len(spec.blocks(backbone)),
        "num_blocks": spec.num_blocks,
        "frozen_trainable": frozen,
        "top1_trainable": len(backbone.trainable_weights),
    }


def probe_keras_weight_file(tmp: str) -> dict:
    import numpy as np

    from tlmed_keras import models

    _, backbone = models.build_classifier("resnet50", 2, weights="none", image_size=32)
    path = f"{tmp}/resnet50.weights.h5"
    backbone.save_weights(path)
    _, again = models.build_classifier("resnet50", 2, weights=path, image_size=32)
    same = all(
        np.array_equal(np.asarray(a), np.asarray(b))
        for a, b in zip(backbone.weights, again.weights, strict=True)
    )
    return {"same": same}


def probe_keras_home_cache() -> dict:
    import os

    import h5py
    import keras
    import numpy as np

    path = os.path.join(os.environ["KERAS_HOME"], "models", "mobilenet_2_5_224_tf_no_top.h5")
    model = keras.applications.MobileNet(alpha=0.25, include_top=False, weights="imagenet")
    kernel = np.asarray(model.get_layer("conv1").kernel)
    with h5py.File(path, "r") as f:
        stored = f["conv1"]["conv1"]["kernel:0"][()]
    return {"equal": bool(np.array_equal(kernel, stored)), "std": float(kernel.std())}


def probe_serialization(name: str, tmp: str) -> dict:
    """The classifier survives a .keras round trip loaded with safe_mode=True."""
    import keras
    import numpy as np

    from tlmed_keras import models

    size = models.get_spec(name).min_input_size
    model, _ = models.build_classifier(name, 2, weights="none", image_size=size)
    path = f"{tmp}/{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    x = np.random.default_rng(0).normal(size=(2, size, size, 3)).astype("float32")
    diff = float(np.abs(np.asarray(model(x)) - np.asarray(loaded(x))).max())
    return {"max_abs_diff": diff}


def probe_offline() -> dict:
    from tlmed_keras import models

    try:
        models.build_classifier("mobilenet_v2", 2, weights="imagenet", image_size=32)
    except models.WeightsUnavailableError as err:
        return {"error": str(err)}
    return {"error": None}


def main(out_path: str, tmp: str, names: list[str]) -> None:
    from keras.src.utils import file_utils

    file_utils.urlretrieve = _offline  # no probe may touch the network
    from tlmed_keras import models

    results = {}
    checks = {
        **{f"model:{n}": (lambda n=n: probe_model(n)) for n in names or models.model_names()},
        **{f"serialize:{n}": (lambda n=n: probe_serialization(n, tmp)) for n in SERIALIZED},
        "keras_weight_file": lambda: probe_keras_weight_file(tmp),
        "keras_home_cache": probe_keras_home_cache,
        "offline": probe_offline,
    }
    for key, check in checks.items():
        try:
            results[key] = check()
        except Exception:
            results[key] = {"exception": traceback.format_exc(limit=4)}
    with open(out_path, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
