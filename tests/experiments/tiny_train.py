"""``tlmed_keras.train`` with the test-only tiny model registry: the real trainer
(train_and_evaluate: both phases, metrics, run directory, DONE) on a 2-block CNN.

    python tiny_train.py --flagfile=F --seed=K --workdir=W   (the flags of tlmed_keras.train)
"""

from __future__ import annotations

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))  # the checkout

from absl import app  # noqa: E402

from tlmed_keras.train import __main__ as train_cli  # noqa: E402  (defines the train flags)


def main(argv: list[str]) -> None:
    from tlmed_keras import runtime

    config = train_cli.config_from_flags()
    runtime.setup(config.backend)
    from tests import tiny_registry
    from tlmed_keras.train.trainer import train_and_evaluate

    train_and_evaluate(config, train_cli.FLAGS.workdir, registry=tiny_registry)


if __name__ == "__main__":
    app.run(main)
