"""Memory benchmark: peak RSS of a short training run as the dataset grows.

    python -m tlmed_keras.bench --target=memory --size=224 --num_images=2000,8000 \
        --data_source=stream

For each ``--num_images`` N it writes a synthetic file in the official layout of
``--memory_data`` at ``--size`` px (uncompressed npz, N train images, N/10 val and N/10
test, random pixels and valid labels) into a temporary folder (``--scratch_dir``, default
the system's), then runs ``python -m tlmed_keras.train`` on it in a subprocess (1 head + 1
fine-tune epoch of ``--memory_steps`` steps, MobileNetV2 at 64 px, random init,
``--data_source``) and reads that process's peak RSS from the kernel (``wait4``). Streamed
runs include the one-time shard conversion. The folder is deleted after each size.

Prints one row per size, then ``memory_slope=<peak RSS growth / file-size growth>`` and,
last, ``memory_peak_mb=<largest peak>``.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile

from absl import flags

CHUNK_IMAGES = 256


def define_flags() -> None:
    flags.DEFINE_integer("size", 224, "target=memory: MedMNIST size of the synthetic files.")
    flags.DEFINE_string(
        "memory_data", "pathmnist", "target=memory: dataset whose layout the files copy."
    )
    flags.DEFINE_string("memory_model", "mobilenet_v2", "target=memory: model trained.")
    flags.DEFINE_integer("memory_image_size", 64, "target=memory: model input side.")
    flags.DEFINE_integer("memory_steps", 3, "target=memory: training steps per epoch.")
    flags.DEFINE_string("scratch_dir", None, "target=memory: folder for the synthetic files.")


def _write_member(archive: zipfile.ZipFile, key: str, shape, make_chunk) -> None:
    """Writes one ``.npy`` member chunk by chunk (never the whole array in memory)."""
    import numpy as np

    with archive.open(f"{key}.npy", "w", force_zip64=True) as stream:
        header = {"descr": "|u1", "fortran_order": False, "shape": tuple(shape)}
        np.lib.format.write_array_header_2_0(stream, header)
        for start in range(0, shape[0], CHUNK_IMAGES):
            count = min(CHUNK_IMAGES, shape[0] - start)
            stream.write(make_chunk(start, count).tobytes())


def write_official_layout(folder: pathlib.Path, name: str, size: int, num_train: int):
    """Writes an uncompressed npz of ``name`` at ``size`` px; returns its path."""
    import numpy as np

    from tlmed_keras.data import catalog

    info = catalog.get_info(name, size)
    width = info.num_classes if info.is_multilabel else 1
    high = 2 if info.is_multilabel else info.num_classes
    rng = np.random.default_rng(0)
    path = folder / info.filename
    counts = {"train": num_train, "val": max(num_train // 10, 1), "test": max(num_train // 10, 1)}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for split, count in counts.items():
            _write_member(
                archive,
                f"{split}_images",
                (count, *info.image_shape),
                lambda start, n: rng.integers(0, 256, (n, *info.image_shape), dtype=np.uint8),
            )
            _write_member(
                archive,
                f"{split}_labels",
                (count, width),
                lambda start, n: rng.integers(0, high, (n, width), dtype=np.uint8),
            )
    return path


def _train_peak(data_dir: pathlib.Path, workdir: pathlib.Path) -> tuple[int, float, str]:
    """Runs the trainer once; returns (peak RSS bytes, seconds, the data-source line)."""
    f = flags.FLAGS
    command = [
        sys.executable,
        "-m",
        "tlmed_keras.train",
        f"--model={f.memory_model}",
        f"--data={f.memory_data}",
        f"--size={f.size}",
        f"--image_size={f.memory_image_size}",
        "--weights=none",
        f"--data_dir={data_dir}",
        "--noverify_data",
        "--head_epochs=1",
        "--finetune_epochs=1",
        "--warmup_epochs=0",
        f"--max_steps_per_epoch={f.memory_steps}",
        "--batch_size=32",
        "--eval_batch_size=128",
        f"--data_source={f.data_source}",
        f"--backend={f.backend}",
        f"--workdir={workdir}",
    ]
    start = time.perf_counter()
    log = open(workdir.parent / "train.log", "w+")  # noqa: SIM115 (read back below)
    with log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - start
        log.seek(0)
        output = log.read()
    if process.returncode != 0:
        sys.exit(f"tlmed_keras.bench: error: the training run failed:\n{output[-3000:]}")
    source = next((x for x in output.splitlines() if x.startswith("data source:")), "?")
    return usage.ru_maxrss * 1024, seconds, source  # ru_maxrss is in KiB on Linux


def run() -> tuple[str, float]:
    f = flags.FLAGS
    sizes = sorted(int(n) for n in f.num_images)
    rows = []
    for count in sizes:
        with tempfile.TemporaryDirectory(prefix="tlmed_mem_", dir=f.scratch_dir) as scratch:
            folder = pathlib.Path(scratch)
            (folder / "data").mkdir()
            path = write_official_layout(folder / "data", f.memory_data, f.size, count)
            file_bytes = path.stat().st_size
            peak, seconds, source = _train_peak(folder / "data", folder / "run")
            free = shutil.disk_usage(folder).free
        rows.append((count, file_bytes, peak))
        print(
            f"num_images={count} file_mb={file_bytes / 2**20:.0f} peak_rss_mb={peak / 2**20:.0f} "
            f"seconds={seconds:.0f} load={os.getloadavg()[0]:.2f} disk_free_gb={free / 2**30:.0f}"
            f" | {source}",
            flush=True,
        )
    if len(rows) > 1:
        (_, file_a, peak_a), (_, file_b, peak_b) = rows[0], rows[-1]
        print(f"memory_slope={(peak_b - peak_a) / (file_b - file_a):.3f}")
    return "memory_peak_mb", max(peak for _, _, peak in rows) / 2**20
