"""Seconds per image of ``predict`` with and without ``--explain``, after warm-up.

    python -m experiments.saliency.timing --workdir=RUN --data_dir=../shared/data/medmnist

Writes N test images of the run's dataset as PNG files, then times, in one process on the
backend ``--backend`` picks (auto: TensorFlow on a CPU), what ``predict`` does for them:
``predict_images`` alone, and ``predict_images`` followed by ``write_explanations`` (maps and
PNGs). A warm-up call of each comes first (TensorFlow traces, matplotlib's fonts); then
``--rounds`` alternating rounds, and the median of each, in wall-clock seconds and in CPU
seconds of this process (all threads): on a shared machine the wall clock also counts the
other users' load, the CPU time does not. Prints one JSON line.
"""

from __future__ import annotations

import json
import pathlib
import statistics
import tempfile
import time

from absl import app, flags

from tlmed_keras import runtime

flags.DEFINE_string("workdir", None, "A finished run directory.", required=True)
flags.DEFINE_string("data_dir", None, "Folder of the run's npz file (default: the run's).")
flags.DEFINE_integer("images", 16, "Images per timed call.")
flags.DEFINE_integer("rounds", 3, "Alternating timed rounds of each.")
flags.DEFINE_enum("backend", "auto", list(runtime.BACKENDS), "Keras backend.")
FLAGS = flags.FLAGS


def _write_pngs(run, folder: pathlib.Path, n: int) -> list[pathlib.Path]:
    import numpy as np
    from PIL import Image

    from tlmed_keras.runs.split import load_split

    images, _ = load_split(run, "test", FLAGS.data_dir)
    paths = []
    for i, pixels in enumerate(np.asarray(images[:n])):
        paths.append(folder / f"test{i}.png")
        Image.fromarray(pixels.squeeze()).save(paths[-1])
    return paths


def main(argv) -> None:
    del argv
    backend = runtime.setup(FLAGS.backend)
    from tlmed_keras.predict.classify import predict_images
    from tlmed_keras.predict.explain import write_explanations
    from tlmed_keras.predict.images import read_image
    from tlmed_keras.predict.sources import RunPredictor

    predictor = RunPredictor(FLAGS.workdir)
    with tempfile.TemporaryDirectory() as tmp:
        folder = pathlib.Path(tmp)
        paths = _write_pngs(predictor.run, folder, FLAGS.images)

        def plain():
            images = [read_image(p) for p in paths]
            return images, predict_images([predictor], paths, 3, images=images)

        def explained():
            images, results = plain()
            write_explanations([predictor], images, results, folder / "out")

        timings = {f"{k}_{c}": [] for k in ("predict", "predict_explain") for c in ("wall", "cpu")}
        plain(), explained()  # warm-up
        for _ in range(FLAGS.rounds):
            for name, call in (("predict", plain), ("predict_explain", explained)):
                wall, cpu = time.perf_counter(), time.process_time()
                call()
                timings[f"{name}_wall"].append((time.perf_counter() - wall) / len(paths))
                timings[f"{name}_cpu"].append((time.process_time() - cpu) / len(paths))
    medians = {f"{k}_s_per_image": round(statistics.median(v), 4) for k, v in timings.items()}
    print(json.dumps({"backend": backend, "images": len(paths), **medians, "rounds": timings}))


if __name__ == "__main__":
    app.run(main)
