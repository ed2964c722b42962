"""Fine-tunes an ImageNet backbone on a MedMNIST dataset (head first, then unfrozen).

    python -m tlmed_keras.train --model=mobilenet_v2 --data=bloodmnist --workdir=runs/blood
    python -m tlmed_keras.train --flagfile=flags/cpu/breastmnist_mobilenet_v2_torchvision.cfg

Every flag is a field of ``tlmed_keras.runs.config.Config`` (names, defaults and help are
defined there, in one place). The run directory is described in
``tlmed_keras.runs.rundir``; rerunning with the same flags resumes an interrupted run.

Data parallelism: on the JAX backend with more than one device the batch is split over all
local devices (``--distribute=auto``). For several hosts start every host with
KERAS_DISTRIBUTION_JOB_ADDRESSES, KERAS_DISTRIBUTION_NUM_PROCESSES and
KERAS_DISTRIBUTION_PROCESS_ID set: ``keras.distribution.initialize()`` joins them.
"""

from __future__ import annotations

import os

from absl import app, flags

from tlmed_keras import cli, precheck
from tlmed_keras.runs.config import Config, fields_help

_DEFINE = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float}
for _name, _default, _help in fields_help():
    _DEFINE.get(type(_default), flags.DEFINE_string)(_name, _default, _help)
flags.DEFINE_string(
    "workdir", "", "Run directory; empty = runs/<data>_<size>/<model>/seed<seed>[_fold<K>of<N>]/."
)
# Output only, so not a Config field: changing it never makes a run "other flags" to resume.
flags.DEFINE_enum(
    "verbose",
    "auto",
    ["auto", "0", "1", "2"],
    "Per-epoch output: 0 none (banner and result only), 1 Keras' progress bar, 2 one line per "
    "epoch; auto = 1 on a terminal, 2 when stdout is a file or pipe.",
)
FLAGS = flags.FLAGS


def config_from_flags() -> Config:
    """The Config of the parsed flags."""
    return cli.options_from_flags(Config)


def default_workdir(config: Config) -> str:
    run = f"seed{config.seed}"
    if config.cv_folds:  # one run per fold: they must not share (and resume) one directory
        run += f"_fold{config.cv_fold}of{config.cv_folds}"
    return os.path.join("runs", f"{config.data}_{config.size}", config.model, run)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    config = config_from_flags()
    # Bad names fail in a second, before TensorFlow and Keras load.
    precheck.check_data(config.data)
    precheck.check_model(config.model)
    workdir = FLAGS.workdir or default_workdir(config)
    verbose = None if FLAGS.verbose == "auto" else int(FLAGS.verbose)
    # TensorFlow's start-up, the data and the model take 10-30 s before the banner: say so.
    print(f"tlmed_keras.train: {config.model} on {config.data}; starting up...", flush=True)
    from tlmed_keras import runtime
    from tlmed_keras.housekeeping import RunLock

    # Locked before the slow imports, so a second trainer in this run directory refuses at
    # once (the trainer takes the same lock again, for callers that skip this entry point).
    with RunLock(workdir):
        runtime.setup(config.backend)
        from tlmed_keras.train.trainer import train_and_evaluate

        # Errors reach the user as one line through cli.run (tlmed_keras/cli.py).
        train_and_evaluate(config, workdir, verbose=verbose)


if __name__ == "__main__":
    cli.run(main)
