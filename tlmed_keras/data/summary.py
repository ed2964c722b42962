"""Text summaries of the catalog and of one verified file (for ``python -m tlmed_keras.data``)."""

from __future__ import annotations

from tlmed_keras.data import catalog, files, npz


def catalog_lines() -> list[str]:
    """One line per dataset: name, task, channels, classes, split sizes."""
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
