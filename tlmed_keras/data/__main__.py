"""MedMNIST files from the command line.

    python -m tlmed_keras.data --list
    python -m tlmed_keras.data --data=breastmnist [--size=28] [--data_dir=DIR] [--nodownload]

The second form finds (or downloads) one file, verifies its MD5 and contents, and prints a
summary. Neither loads TensorFlow or Keras, nor holds the images in memory.
"""

from __future__ import annotations

import sys

from absl import app, flags

_LIST = flags.DEFINE_boolean("list", False, "Print the catalog of MedMNIST 2D datasets.")
_DATA = flags.DEFINE_string("data", None, "Dataset to fetch and verify, e.g. breastmnist.")
_SIZE = flags.DEFINE_enum("size", "28", ["28", "64", "128", "224"], "Image size in pixels.")
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "Folder to look in first and download into (else ~/.medmnist)."
)
_DOWNLOAD = flags.DEFINE_boolean("download", True, "Download the file when it is not found.")


def catalog_lines() -> list[str]:
    """One line per dataset: name, task, channels, classes, split sizes."""
    from tlmed_keras.data import catalog

    lines = [f"{'dataset':<15} {'task':<26} {'ch':>2} {'classes':>7}  train/val/test"]
    for name in catalog.dataset_names():
        info = catalog.get_info(name)
        sizes = "/".join(str(info.split_sizes[s]) for s in catalog.SPLITS)
        lines.append(
            f"{name:<15} {info.task:<26} {info.channels:>2} {info.num_classes:>7}  {sizes}"
        )
    lines.append(f"sizes: {', '.join(str(s) for s in catalog.SIZES)} px")
    return lines


def summary_lines(name: str, size: int, data_dir: str | None, download: bool) -> list[str]:
    """Finds, verifies and checks one file; returns the summary to print.

    Raises:
        ValueError, MedMNISTFileError: unknown dataset or size; any file problem.
    """
    from tlmed_keras.data import catalog, files, npz

    info = catalog.get_info(name, size)
    path = files.find_or_download(info, data_dir, download)
    headers = npz.read_headers(path)
    npz.validate_headers(headers, info, path)
    for split in catalog.SPLITS:
        labels = npz.read_array(path, f"{split}_labels")
        npz.validate_labels(labels, info, f"{path}:{split}_labels")
    counts = {split: headers[f"{split}_images"].shape[0] for split in catalog.SPLITS}
    labels = ", ".join(f"{i}={label}" for i, label in enumerate(info.label_names))
    return [
        f"path:        {path}",
        f"md5:         ok ({info.md5}, as the catalog lists)",
        f"task:        {info.task}",
        f"labels:      {labels}",
        f"splits:      {', '.join(f'{s}={n}' for s, n in counts.items())}",
        f"image shape: {headers['train_images'].shape[1:]} {headers['train_images'].dtype}",
    ]


def main(argv: list[str]) -> int:
    del argv
    from tlmed_keras.data.errors import MedMNISTFileError

    if _LIST.value:
        print("\n".join(catalog_lines()))
        return 0
    if not _DATA.value:
        raise app.UsageError("Pass --list, or --data=NAME (see --list for names).")
    try:
        lines = summary_lines(_DATA.value, int(_SIZE.value), _DATA_DIR.value, _DOWNLOAD.value)
    except (MedMNISTFileError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    app.run(main)
