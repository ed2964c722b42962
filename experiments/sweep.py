"""Run a set of flagfiles x seeds as independent training processes and tabulate them.

    python -m experiments.sweep --flagfiles='flags/cpu/realdata/*.cfg' --seeds=0,1,2 \\
        --out=experiments/results/realdata

Each run is ``python -m tlmed_keras.train --flagfile=F --seed=K --workdir=OUT/runs/<stem>/seedK``
in its own process; finished runs (DONE + metrics.json) are skipped, failed ones are retried
on the next invocation and never stop the others. At the end every run's metrics.json is
collected into OUT/results.md, results.csv, runs.csv and results.png (see experiments.collect).

Spreading a sweep over machines (the runs share nothing but the filesystem of OUT):

- ``--list`` prints one command per unfinished run (the runner on that one run), e.g.
  ``python -m experiments.sweep ... --list | xargs -P 4 -I{} sh -c '{}'`` or one line per
  SLURM array task: ``sed -n "$((SLURM_ARRAY_TASK_ID+1))p" cmds.txt | sh``.
- ``--shard=i/n`` runs every n-th run starting at i (start n workers with i = 0..n-1).
- ``--jobs=N`` runs N processes at once on this machine.
Then ``--collect_only`` writes the table from whatever has finished.
"""

from __future__ import annotations

import concurrent.futures
import os
import sys

from absl import app, flags

from experiments.runs import DEFAULT_COMMAND
from tlmed_keras import cli

flags.DEFINE_list("flagfiles", [], "Flagfiles or quoted globs, comma-separated (required).")
flags.DEFINE_string("seeds", "0", "Seeds: 0,1,2 or 0-4 (inclusive) or a mix.")
flags.DEFINE_string("out", "experiments/results/sweep", "Output folder: runs/ + the tables.")
flags.DEFINE_string(
    "command",
    DEFAULT_COMMAND,
    "Command template of one run; fields {python} {flagfile} {seed} {workdir}.",
)
flags.DEFINE_string(
    "train_args", "", "Extra arguments appended to every run's command, e.g. for a smoke test."
)
flags.DEFINE_bool("list", False, "Print one command per unfinished run and exit.")
flags.DEFINE_string("shard", "", "i/n: run only every n-th run starting at i (0-based).")
flags.DEFINE_integer("jobs", 1, "Runs at once on this machine.")
flags.DEFINE_float("timeout_s", 0, "Kill a run after this many seconds; 0 = no limit.")
flags.DEFINE_bool("collect", True, "Write the tables after running.")
flags.DEFINE_bool("collect_only", False, "Only write the tables (start no run).")
flags.DEFINE_bool("plot", True, "Also draw results.png.")
FLAGS = flags.FLAGS


def _passthrough() -> list[str]:
    """Flags --list must hand on to each single-run command."""
    out = []
    if FLAGS["command"].present:
        out.append(f"--command={FLAGS.command}")
    if FLAGS.train_args:
        out.append(f"--train_args={FLAGS.train_args}")
    if FLAGS.timeout_s:
        out.append(f"--timeout_s={FLAGS.timeout_s:g}")
    return out


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    from experiments import collect
    from experiments import runs as sweep_runs

    try:
        if not FLAGS.flagfiles:
            raise sweep_runs.SweepError("Bad --flagfiles=: give flagfiles or quoted globs.")
        if FLAGS.jobs < 1:
            raise sweep_runs.SweepError(f"Bad --jobs={FLAGS.jobs}: must be >= 1.")
        sweep_runs.check_template(FLAGS.command)
        files = sweep_runs.expand_flagfiles(FLAGS.flagfiles)
        plan = sweep_runs.plan(files, sweep_runs.parse_seeds(FLAGS.seeds), FLAGS.out)
        mine = sweep_runs.shard(plan, *sweep_runs.parse_shard(FLAGS.shard))
    except sweep_runs.SweepError as e:
        sys.exit(f"experiments.sweep: error: {e}")

    if FLAGS.list:
        text = sweep_runs.list_commands(mine, FLAGS.out, _passthrough())
        try:
            if text:
                print(text, flush=True)
        except BrokenPipeError:  # e.g. piped into head: the reader has what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    outcomes: dict[str, int] = {}
    if not FLAGS.collect_only:

        def one(run):
            return sweep_runs.execute(run, FLAGS.command, FLAGS.train_args, FLAGS.timeout_s)

        with concurrent.futures.ThreadPoolExecutor(FLAGS.jobs) as pool:
            for state in pool.map(one, mine):
                outcomes[state] = outcomes.get(state, 0) + 1
        summary = ", ".join(f"{n} {s}" for s, n in sorted(outcomes.items())) or "nothing to run"
        print(f"[sweep] {len(mine)} runs in this shard: {summary}.")
    if FLAGS.collect or FLAGS.collect_only:
        paths = collect.write(collect.collect(plan), FLAGS.out, plot=FLAGS.plot)
        print(f"[sweep] wrote {', '.join(str(p) for p in paths.values())}")
    return 1 if outcomes.get("failed") else 0


if __name__ == "__main__":
    cli.run(main, prog="experiments.sweep")
