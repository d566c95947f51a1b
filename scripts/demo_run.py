"""Run the demo's strategies one after another on the demo host, under the same load, and write
the run's own data (ledger per strategy, deploy reports, timings) to one JSON file for
scripts/demo_picture.py.

    python scripts/demo_run.py HOST OUT.json [STRATEGY...]

HOST is the demo container (taskstack-demo-debian12); Molecule's state directory of the demo
scenario must be in MOLECULE_EPHEMERAL_DIRECTORY (its inventory runs the deploys, as
molecule/shared/tests/loadlib.deploy does for the tests). Strategies, in the order given
(default: all, in this order):

    naive-no-acks   systemctl restart on units with systemd's default KillMode=control-group,
                    the app without acks_late (DEMO_ACKS_LATE=0): how most hosts run Celery
    naive           the same restart, the app with acks_late + reject_on_worker_lost
    drain           taskstack.celery.deploy, graceful drain
    blue-green      taskstack.celery.deploy, celery_deploy_strategy=blue_green

Each runs loadlib.run_load_across: the producer, a long task, a no-deploy baseline, the action,
the settle. While it works it prints the stage, the elapsed time and the tasks done so far.
Exit 0 when every action ran (whatever it lost: the table says that), 1 otherwise.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "molecule" / "shared" / "tests"))

import loadlib  # noqa: E402  (molecule/shared/tests, put on the path above)

ACKS_DROPIN = "/etc/systemd/system/celery-demo-worker@.service.d/zz-demo-acks.conf"
STRATEGIES = ["naive-no-acks", "naive", "drain", "blue-green"]
TITLES = {
    "naive-no-acks": "naive restart, no acks_late",
    "naive": "naive restart, acks_late",
    "drain": "drain deploy",
    "blue-green": "blue-green deploy",
}
# Seconds the harness waits for every task to finish: a task lost for good never does, so the
# naive no-acks_late run waits less; the others wait for the long task run again.
SETTLE = {"naive-no-acks": 30, "naive": 90, "drain": 90, "blue-green": 90}
PROGRESS_EVERY = 10


class DemoFailure(Exception):
    """A stage of the demo failed: its message names the stage and the cause."""


def segment(strategy: str, counts: dict[str, Any], report: dict[str, Any] | None, error: str = "") -> dict[str, Any]:
    """The run's data for one strategy, as scripts/demo_picture.py reads it (loadlib.segment),
    with the harness's counts and what failed."""
    return {
        **loadlib.segment(TITLES.get(strategy, strategy), counts, report),
        "key": strategy,
        "counts": {k: v for k, v in counts.items() if k not in ("jobs", "long_task", "outcome")},
        "error": error,
    }


def restart_workers(host) -> None:
    """Restart the live colour's workers (the collection's units stop warm) and wait until both
    pools consume again."""
    for unit in loadlib.units(loadlib.live_colour(host)):
        result = host.run(f"systemctl restart {unit}")
        if result.rc != 0:
            raise DemoFailure(f"systemctl restart {unit} failed: {result.stderr.strip()}")
    loadlib.wait_for(lambda: len(loadlib.active_queues(host)) == len(loadlib.POOLS), 60,
                     what="both pools to consume again")


def set_acks_late(host, on: bool) -> None:
    """DEMO_ACKS_LATE=0 in a drop-in of the worker units (the demo app reads it), or no drop-in."""
    if on:
        host.run(f"rm -f {ACKS_DROPIN} && systemctl daemon-reload")
    else:
        host.run(f"mkdir -p $(dirname {ACKS_DROPIN}) && printf '[Service]\\nEnvironment=DEMO_ACKS_LATE=0\\n'"
                 f" > {ACKS_DROPIN} && systemctl daemon-reload")
    restart_workers(host)


class Progress:
    """Every PROGRESS_EVERY seconds: the stage, the time since the demo began, the tasks done so far."""

    def __init__(self, host, began: float) -> None:
        self.host, self.began, self.stage = host, began, ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(PROGRESS_EVERY):
            try:
                # SMEMBERS, not SCARD: the app's Redis user may run only what Celery needs.
                done = loadlib.ledger(self.host, 'print(json.dumps(len(db.smembers("demo:jobs:finished"))))')
            except (AssertionError, ValueError):
                done = "?"
            print(f"   [{self.stage}] {time.time() - self.began:4.0f} s, tasks done so far: {done}", flush=True)

    def __enter__(self) -> Progress:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()


def run_one(host, strategy: str, data: Path) -> dict[str, Any]:
    """One strategy under load: its segment (with `error` set when the action failed). A
    deploy's whole output is kept beside the run's data file `data`, as <run>-<strategy>.log."""
    holder: dict[str, Any] = {}
    extra = {"celery_deploy_strategy": "blue_green"} if strategy == "blue-green" else {}

    def deploy(_host: Any) -> dict[str, Any]:
        run, report = loadlib.deploy(extra_vars=extra)
        log = data.with_name(f"{data.stem}-{strategy}.log")
        log.write_text(run.output)
        if run.rc != 0:
            holder["error"] = f"the {strategy} deploy failed (exit {run.rc}), log: {log}"
            print("\n".join(run.output.splitlines()[-30:]))
        return report

    action: Callable[[Any], Any] = loadlib.naive_restart if strategy.startswith("naive") else deploy

    counts = loadlib.run_load_across(host, action, settle_seconds=SETTLE.get(strategy, 90))
    return segment(strategy, counts, counts.get("outcome") or None, holder.get("error", ""))


def main(argv: list[str]) -> int:
    import testinfra

    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    host_name, out = argv[0], Path(argv[1])
    strategies = argv[2:] or STRATEGIES
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        print(f"unknown strategy {unknown}: choose from {STRATEGIES}", file=sys.stderr)
        return 2
    host = testinfra.get_host(f"docker://{host_name}")
    # loadlib reads the host's inventory name where the tests' Ansible backend keeps it.
    host.backend.host = host_name
    out.parent.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {"title": f"taskstack.celery demo: one load, {len(strategies)} ways of deploying"
                           f" ({host_name})", "host": host_name, "segments": []}
    began = time.time()
    failed = []
    with Progress(host, began) as progress:
        for strategy in strategies:
            progress.stage = TITLES[strategy]
            print(f"-- {TITLES[strategy]} ({time.time() - began:.0f} s)", flush=True)
            try:
                set_acks_late(host, strategy != "naive-no-acks")
                seg = run_one(host, strategy, out)
            except Exception as exc:  # noqa: BLE001  (any cause: name it with its stage, go on with the next)
                failed.append(f"{TITLES[strategy]}: {type(exc).__name__}: {exc}")
                print(f"   FAILED: {type(exc).__name__}: {exc}", flush=True)
                continue
            if seg["error"]:
                failed.append(f"{TITLES[strategy]}: {seg['error']}")
            doc["segments"].append(seg)
            # Written after each strategy: a later failure keeps what was measured.
            out.write_text(json.dumps(doc))
        try:
            set_acks_late(host, True)
        except Exception as exc:  # noqa: BLE001
            failed.append(f"putting acks_late back: {type(exc).__name__}: {exc}")
    out.write_text(json.dumps(doc))
    for line in failed:
        print(f"FAILED: {line}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
