"""MedMNIST files from the command line.

    python -m tlmed_keras.data --list
    python -m tlmed_keras.data --data=breastmnist [--size=28] [--data_dir=DIR] [--download]

The second form finds (or, with --download, downloads) one file, verifies its MD5 and
contents, and prints a summary. Neither loads TensorFlow or Keras, nor holds the images in memory.
"""

from __future__ import annotations

from absl import app, flags

from tlmed_keras import cli

_LIST = flags.DEFINE_boolean("list", False, "Print the catalog of MedMNIST 2D datasets.")
_DATA = flags.DEFINE_string("data", None, "Dataset to fetch and verify, e.g. breastmnist.")
_SIZE = flags.DEFINE_enum("size", "28", ["28", "64", "128", "224"], "Image size in pixels.")
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "Folder to look in first and download into (else ~/.medmnist)."
)
_DOWNLOAD = flags.DEFINE_boolean(
    "download", False, "Download the file (MD5 verified) when it is not found; off by default."
)


def main(argv: list[str]) -> int:
    del argv
    from tlmed_keras.data.summary import catalog_lines, summary_lines

    if _LIST.value:
        print("\n".join(catalog_lines()))
        return 0
    if not _DATA.value:
        raise app.UsageError("Pass --list, or --data=NAME (see --list for names).")
    # A bad file or name reaches the user as one line through cli.run (tlmed_keras/cli.py).
    lines = summary_lines(_DATA.value, int(_SIZE.value), _DATA_DIR.value, _DOWNLOAD.value)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    cli.run(main)
