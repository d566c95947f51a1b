"""Choose the order of tests/molecule-matrix.txt from the scenario times of a test run.

scripts/test.sh starts the scenario runs TASKSTACK_JOBS (2) at a time in the matrix's order,
never two of one scenario at once (lib.sh run_scenarios). With two slots the order decides how
long the tail is in which one slot idles: the run before this tool ended with both Debian
versions of one scenario back to back, one slot idle for 8 minutes. This simulates that
scheduler on the times a run printed, perturbed so the order does not hang on one run's noise,
and prints the order with the shortest mean wall time, as matrix lines.

    python scripts/matrix_order.py /tmp/ci.log           # the summary table of a `make test` log
    python scripts/matrix_order.py /tmp/ci.log --jobs 2 --trials 200
"""

from __future__ import annotations

import argparse
import random
import re
import sys
from collections.abc import Sequence
from pathlib import Path

Job = tuple[str, str]
STAGE = re.compile(r"^molecule (?P<scenario>\S+) \((?P<distro>[^)]+)\)\s+(?P<seconds>\d+)\s+ok$")


def read_times(log: str) -> dict[Job, float]:
    """Scenario seconds from the summary table at the end of a `make test` log."""
    times: dict[Job, float] = {}
    for line in log.splitlines():
        match = STAGE.match(line.strip())
        if match:
            times[(match["scenario"], match["distro"])] = float(match["seconds"])
    return times


def wall_time(order: Sequence[Job], times: dict[Job, float], jobs: int) -> float:
    """The wall time of run_scenarios on `order`: free slots take the first job whose scenario
    is not running; a job ending frees its slot."""
    queue = list(order)
    now = 0.0
    running: list[tuple[float, str]] = []
    while queue or running:
        while len(running) < jobs:
            busy = {scenario for _end, scenario in running}
            pick = next((job for job in queue if job[0] not in busy), None)
            if pick is None:
                break
            queue.remove(pick)
            running.append((now + times[pick], pick[0]))
        running.sort()
        now, _scenario = running.pop(0)
    return now


def read_matrix(text: str) -> list[Job]:
    """The runs of a matrix file ("SCENARIO DISTRO..." lines), in its order."""
    order: list[Job] = []
    for line in text.splitlines():
        scenario, *distros = line.split("#", 1)[0].split() or [""]
        order.extend((scenario, distro) for distro in distros)
    return order


def mean_wall_time(order: Sequence[Job], samples: Sequence[dict[Job, float]], jobs: int) -> float:
    return sum(wall_time(order, times, jobs) for times in samples) / len(samples)


def best_order(times: dict[Job, float], jobs: int = 2, trials: int = 100, seed: int = 1) -> list[Job]:
    """Hill climbing over swaps from the longest-first order, scored on `trials` copies of the
    times each scaled by up to +-20%."""
    rng = random.Random(seed)
    samples = [{job: t * rng.uniform(0.8, 1.2) for job, t in times.items()} for _trial in range(trials)]
    order = sorted(times, key=lambda job: -times[job])
    score = mean_wall_time(order, samples, jobs)
    improved = True
    while improved:
        improved = False
        for i in range(len(order)):
            for k in range(i + 1, len(order)):
                candidate = order[:]
                candidate[i], candidate[k] = candidate[k], candidate[i]
                candidate_score = mean_wall_time(candidate, samples, jobs)
                if candidate_score < score - 0.5:
                    order, score, improved = candidate, candidate_score, True
    return order


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("log", type=Path, help="a `make test` log with its summary table")
    parser.add_argument("--matrix", type=Path, default=Path(__file__).parent.parent / "tests/molecule-matrix.txt")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--trials", type=int, default=100)
    args = parser.parse_args(argv)
    times = read_times(args.log.read_text())
    if not times:
        print(f"no passed 'molecule SCENARIO (DISTRO)' rows in {args.log}", file=sys.stderr)
        return 1
    order = best_order(times, args.jobs, args.trials)
    now = [job for job in read_matrix(args.matrix.read_text()) if job in times]
    print(f"# {len(order)} runs, {args.jobs} at a time: about {wall_time(order, times, args.jobs):.0f} s of scenarios"
          f" ({args.matrix.name} as it is: {wall_time(now, times, args.jobs):.0f} s)")
    for scenario, distro in order:
        print(f"{scenario} {distro}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
