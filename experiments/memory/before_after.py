"""One pipeline bench, two code trees, alternating rounds: before/after a change, side by side.

    python -m experiments.memory.before_after --before=/tmp/base --rounds=3 -- \
        --data_source=stream --source_size=224 --channels=3 --image_size=224 \
        --num_images=2000 --steps=30 --warmup_steps=5

Runs ``python -m tlmed_keras.bench --target=pipeline <args>`` with the package imported from
``--before`` (e.g. ``git archive <commit> | tar -x -C /tmp/base``) and from ``--after``
(default: this checkout), order alternated per round, each a fresh process; prints every rate
with the load average, then the medians of images/s and of images per CPU-second (the
machine is shared: the per-CPU rate depends much less on the neighbours' load).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics

from experiments.memory import compare

HERE = pathlib.Path(__file__).resolve().parents[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="tree of the code before the change")
    parser.add_argument("--after", default=str(HERE), help="tree after (default: this one)")
    parser.add_argument("--rounds", type=int, default=3)
    args, extra = parser.parse_known_args()
    extra = [x for x in extra if x != "--"]
    trees = {"before": args.before, "after": args.after}
    rates: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
    for round_ in range(args.rounds):
        for name in trees if round_ % 2 == 0 else list(trees)[::-1]:
            rate, cpu = compare.run_bench("pipeline", extra, trees[name])
            rates[name].append((rate, cpu or float("nan")))
            print(
                f"round={round_ + 1} code={name} images_per_s={rate:.1f} "
                f"images_per_cpu_s={cpu} load={os.getloadavg()[0]:.2f}",
                flush=True,
            )
    for name, values in rates.items():
        rate = statistics.median(r for r, _ in values)
        cpu = statistics.median(c for _, c in values)
        print(f"median_{name} images_per_s={rate:.1f} images_per_cpu_s={cpu:.1f}")
    after, before = (statistics.median(r for r, _ in rates[n]) for n in ("after", "before"))
    print(f"after_over_before={after / before:.3f}")


if __name__ == "__main__":
    main()
