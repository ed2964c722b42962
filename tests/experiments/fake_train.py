"""A stand-in trainer for the sweep tests: writes what tlmed_keras.train writes at the end of a
run (metrics.json, then DONE), with metrics taken from its flagfile, in milliseconds.

Flagfile lines it reads (others are ignored): ``--model``, ``--data``, ``--size``,
``--image_size``, ``--weights``, ``--fake_metrics=SEED:ACC:AUC;SEED:ACC:AUC;...`` and
``--fake_fail=MESSAGE`` (print MESSAGE to stderr and exit 1 without writing anything).
Test metrics are ACC/AUC as given; validation metrics are half of them.
Every start appends one line to ``<workdir>/../../starts.txt`` (a run counter).

    python fake_train.py --flagfile=F --seed=K --workdir=W
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys


def main() -> int:
    parser = argparse.ArgumentParser()
    for name in ("flagfile", "seed", "workdir"):
        parser.add_argument(f"--{name}", required=True)
    args = parser.parse_args()
    workdir = pathlib.Path(args.workdir)
    with open(workdir.parents[1] / "starts.txt", "a") as f:
        f.write(f"{workdir.parent.name}/{workdir.name}\n")
    flags = {}
    for line in pathlib.Path(args.flagfile).read_text().splitlines():
        if line.startswith("--"):
            name, _, value = line[2:].partition("=")
            flags[name] = value
    print("fake training: epoch 1/1 ...")
    if "fake_fail" in flags:
        print("Traceback (most recent call last):", file=sys.stderr)
        print(f"ValueError: {flags['fake_fail']}", file=sys.stderr)
        return 1
    table = {}
    for item in flags["fake_metrics"].split(";"):
        seed, acc, auc = item.split(":")
        table[int(seed)] = (float(acc), float(auc))
    acc, auc = table[int(args.seed)]
    metrics = {
        "model": flags["model"],
        "data": flags["data"],
        "size": int(flags.get("size", 28)),
        "seed": int(args.seed),
        "image_size": int(flags.get("image_size", 32)),
        "weights": flags.get("weights", "imagenet"),
        "val": {"acc": acc / 2, "auc": auc / 2},  # distinct from test, so columns can't mix
        "test": {"acc": acc, "auc": auc},
    }
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "metrics.json").write_text(json.dumps(metrics))
    (workdir / "DONE").write_text("done\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
