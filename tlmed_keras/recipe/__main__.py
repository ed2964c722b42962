"""The best model for a MedMNIST set in one command: train the recipe's members, evaluate them
and their ensemble on the test split, print the export command.

    python -m tlmed_keras.recipe --data=NAME --data_dir=DIR --workdir=DIR \\
        [--weights_dir=../shared/weights] [--download]

The members (backbone flagfiles x seeds) are listed in ONE file, ``flags/recipes/best.toml``
(``--members`` takes another). Each member is an ordinary training run in
``WORKDIR/<member>/seed<k>``, run one after another as ``python -m tlmed_keras.train``: a
rerun keeps finished members and resumes an unfinished one where it stopped. Then every run
and their ensemble (mean probability, the members' own test-time augmentation) are scored on
the test split; the table, ``WORKDIR/recipe_summary.json`` / ``.md`` and the export command
are printed. Weight files named in a member's flagfile are found by file name in
``--weights_dir`` (recursively) and the usual caches before any download. See docs/recipe.md.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

from absl import app, flags

from tlmed_keras import cli, precheck, runtime, tta

flags.DEFINE_string("data", None, "MedMNIST dataset name, e.g. breastmnist, bloodmnist.")
flags.DEFINE_string("data_dir", "", "Folder of the npz files; empty = medmnist's ~/.medmnist.")
flags.DEFINE_string("workdir", None, "Folder of the member runs and the summary.")
flags.DEFINE_string(
    "weights_dir",
    "",
    "Folder searched recursively for the members' weight files by their published names "
    "(e.g. ../shared/weights), before ~/.cache/torch/hub/checkpoints, ~/.keras/models and "
    "any download.",
)
flags.DEFINE_bool("download", False, "Download a missing dataset file (MD5 verified).")
flags.DEFINE_bool(
    "verify_data", True, "Check the dataset file's MD5 (off only for synthetic files)."
)
flags.DEFINE_string(
    "members",
    None,
    "Members file (TOML: seeds and [members] name = flagfile); default flags/recipes/best.toml.",
)
flags.DEFINE_list("seeds", None, "Seeds of every member; default: the members file's.")
flags.DEFINE_enum(
    "tta",
    "members",
    ["members", *tta.NAMES],
    "Test-time augmentation of the final evaluation: members (the members' own --tta when "
    "they agree, else none) or a mode. " + tta.HELP,
)
flags.DEFINE_enum("backend", "auto", list(runtime.BACKENDS), "Keras backend of the evaluation.")
flags.mark_flags_as_required(["data", "workdir"])
FLAGS = flags.FLAGS


def _extra_flags(info) -> dict[str, str]:
    """What the command adds to every member's flagfile (it wins over the file)."""
    extra = {"data": FLAGS.data}
    if FLAGS.data_dir:
        extra["data_dir"] = FLAGS.data_dir
    if FLAGS.weights_dir:
        extra["weights_dir"] = FLAGS.weights_dir
    if FLAGS.download:
        extra["download"] = "true"
    if not FLAGS.verify_data:
        extra["verify_data"] = "false"
    if info.sided_labels:  # the trainer refuses a mirror view on these sets
        extra["tta"] = "none"
    return extra


def _evaluation_tta(configs) -> str:
    """``--tta``, or the members' own TTA when they agree (else none)."""
    if FLAGS.tta != "members":
        return FLAGS.tta
    modes = {config.tta for config in configs}
    return modes.pop() if len(modes) == 1 else "none"


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    started = time.perf_counter()
    precheck.check_data(FLAGS.data)
    from tlmed_keras import weights_files
    from tlmed_keras.data import catalog
    from tlmed_keras.recipe import members, runner

    weights_files.check_weights_dir(FLAGS.weights_dir)
    seeds = None if FLAGS.seeds is None else [_seed(s) for s in FLAGS.seeds]
    recipe = members.load_recipe(FLAGS.members or members.DEFAULT_MEMBERS, seeds)
    extra = _extra_flags(catalog.get_info(FLAGS.data))
    runs = members.plan(recipe, FLAGS.workdir)
    configs = [members.member_config(members.train_arguments(r, extra)) for r in runs]
    for config in configs:  # a missing weights file stops the command before any training
        weights_files.find_weights_file(config.weights, config.weights_dir)
    mode = _evaluation_tta(configs)
    print(
        f"[recipe] {len(recipe.members)} member(s) x seeds {list(recipe.seeds)} on "
        f"{FLAGS.data} ({recipe.source}) -> {FLAGS.workdir}",
        flush=True,
    )
    if "tta" in extra:
        print(f"[recipe] {FLAGS.data}'s labels name body sides: members run with --tta=none.")
    outcomes = runner.train_all(runs, extra)
    runtime.setup(FLAGS.backend)
    _evaluate(outcomes, recipe, mode, configs[0].size, started)


def _seed(value: str) -> int:
    if not value.strip().isdigit():
        raise app.UsageError(f"Bad --seeds value {value!r}: give integers >= 0, e.g. 0,1,2.")
    return int(value)


def _evaluate(outcomes, recipe, mode: str, size: int, started: float) -> None:
    import json

    from tlmed_keras.evaluate.report import ENSEMBLE_DIR, EvalOptions, evaluate_ensemble
    from tlmed_keras.recipe import summary

    print(f"[recipe] scoring {len(outcomes)} run(s) and their ensemble on test...", flush=True)
    workdirs = [o.run.workdir for o in outcomes]
    options = EvalOptions(data_dir=FLAGS.data_dir or None, tta=mode)
    # Beside the members' folders (not in the one member's, when there is one member).
    out = options.out_path(Path(FLAGS.workdir) / ENSEMBLE_DIR, "test")
    options = dataclasses.replace(options, out_dir=out)
    report = evaluate_ensemble(workdirs, "test", options)
    rows = json.loads(report.files["report"].read_text())["members"]
    facts = {
        "data": FLAGS.data,
        "size": size,
        "tta": mode,
        "members_file": str(recipe.source),
        "seeds": list(recipe.seeds),
        "command": ["python", "-m", "tlmed_keras.recipe", *sys.argv[1:]],
        "wall_s": None,
    }
    result = summary.build(outcomes, rows, report.evaluation, facts)
    result["wall_s"] = round(time.perf_counter() - started, 1)
    paths = summary.write(result, FLAGS.workdir)
    print()
    print(summary.text(result))
    print(f"\nSummary: {paths['json']}, {paths['md']}; ensemble report: {report.out_dir}")


if __name__ == "__main__":
    cli.run(main)
