"""Child process for test_saliency: HiResCAM maps of every registered model on the
TensorFlow backend, and of a model file saved by the JAX parent (the same map on both).

Run as ``python tests/saliency/zoo_saliency_probe.py OUT.json MODEL.keras IMAGES.npy``; writes
one JSON object. Exceptions are recorded as strings so the parent names the failing model.
"""

from __future__ import annotations

import json
import sys
import traceback


def zoo_map(name: str) -> dict:
    import numpy as np

    from tlmed_keras import models
    from tlmed_keras.saliency import cam

    # 64 px: at least a 2 x 2 map for the stride-32 CNNs (a 1 x 1 map is a constant).
    size = max(models.get_spec(name).min_input_size, 64)
    model, _ = models.build_classifier(name, 3, weights="none", image_size=size)
    x = np.random.default_rng(0).normal(size=(2, size, size, 3)).astype("float32")
    predicted = np.argmax(np.asarray(model(x)), axis=-1)
    maps = cam.class_maps([cam.cam_model(model, name)], x, predicted)
    return {
        "size": size,
        "shape": list(maps.shape),
        "finite": bool(np.isfinite(maps).all()),
        "peaks": [float(m.max()) for m in maps],
        "min": float(maps.min()),
    }


def saved_map(model_path: str, images_path: str) -> list:
    import keras
    import numpy as np

    from tests.saliency import corner_task
    from tlmed_keras.saliency import cam

    model = keras.saving.load_model(model_path, safe_mode=True, compile=False)
    _, registry = corner_task.tiny_cnn()
    images = np.load(images_path)
    return cam.class_maps(
        [cam.cam_model(model, "cnn", registry)], images, [1] * len(images)
    ).tolist()


def main(out: str, model_path: str, images_path: str) -> None:
    import keras

    from tlmed_keras import models

    results: dict = {"backend": keras.backend.backend()}
    for name in models.model_names():
        try:
            results[name] = zoo_map(name)
        except Exception:
            results[name] = {"exception": traceback.format_exc()[-2000:]}
    results["saved"] = saved_map(model_path, images_path)
    with open(out, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main(*sys.argv[1:4])
