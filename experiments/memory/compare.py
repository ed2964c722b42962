"""Stream vs memory throughput in alternating rounds (the machine is shared: medians).

    python -m experiments.memory.compare --target=pipeline --rounds=3 -- \
        --source_size=224 --channels=3 --image_size=224 --num_images=2000 --steps=30

Runs ``python -m tlmed_keras.bench --target=T --data_source=S <args>`` for S = memory, stream,
memory, stream, ... (``--rounds`` each), each in a fresh process, and prints every rate, then
the medians and the stream / memory ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

SOURCES = ("memory", "stream")


def run_bench(target: str, args: list[str], tree: str | None = None) -> tuple[float, float | None]:
    """(images/s, images per CPU-second or None) of one bench process, importing the package
    from ``tree`` (a checkout) when given, else as this process does."""
    command = [sys.executable, "-m", "tlmed_keras.bench", f"--target={target}", *args]
    env = None if tree is None else {**os.environ, "PYTHONPATH": tree}
    # cwd too: ``python -m`` puts the working directory ahead of PYTHONPATH.
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=tree, env=env)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    name, value = done.stdout.strip().splitlines()[-1].split("=")
    per_cpu = [w for w in done.stdout.split() if w.startswith("images_per_cpu_s=")]
    return float(value), float(per_cpu[-1].split("=")[1]) if per_cpu else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="pipeline", choices=["pipeline", "train"])
    parser.add_argument("--rounds", type=int, default=3)
    args, extra = parser.parse_known_args()
    extra = [x for x in extra if x != "--"]
    rates: dict[str, list[float]] = {source: [] for source in SOURCES}
    per_cpu: dict[str, list[float]] = {source: [] for source in SOURCES}
    for round_ in range(args.rounds):
        for source in SOURCES if round_ % 2 == 0 else SOURCES[::-1]:
            rate, cpu = run_bench(args.target, [f"--data_source={source}", *extra])
            rates[source].append(rate)
            if cpu is not None:
                per_cpu[source].append(cpu)
            print(
                f"round={round_ + 1} source={source} images_per_s={rate:.1f} "
                f"images_per_cpu_s={cpu} load={os.getloadavg()[0]:.2f}",
                flush=True,
            )
    medians = {source: statistics.median(values) for source, values in rates.items()}
    for source, value in medians.items():
        cpu = (
            f" images_per_cpu_s={statistics.median(per_cpu[source]):.1f}" if per_cpu[source] else ""
        )
        print(f"median_{source}={value:.1f}{cpu}")
    print(f"stream_over_memory={medians['stream'] / medians['memory']:.3f}")


if __name__ == "__main__":
    main()
