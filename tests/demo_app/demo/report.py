"""Count what happened to a producer run: sent, completed, lost, run twice.

    python -m demo.report RUN_ID

Reads the ledger demo.producer and demo.tasks write (Redis database 2) and prints one JSON line.
A task counts as lost when it never finished, as run twice when it started more than once (or
one of its retried attempts ran more than once).
"""

from __future__ import annotations

import json
import sys

from demo.tasks import ledger


def counts(run: str) -> dict[str, int]:
    db = ledger()
    jobs = [k.decode() for k in db.hgetall(f"demo:run:{run}:sent")]
    pipe = db.pipeline()
    for job in jobs:
        pipe.llen(f"demo:started:{job}")
        pipe.llen(f"demo:finished:{job}")
        pipe.lrange(f"demo:attempts:{job}", 0, -1)
    replies = pipe.execute()
    started, finished, attempts = replies[::3], replies[1::3], replies[2::3]

    def attempt_twice(entries) -> bool:
        numbers = [e.split()[0] for e in entries]
        return len(numbers) != len(set(numbers))

    return {
        "sent": len(jobs),
        "completed": sum(1 for n in finished if n),
        "lost": sum(1 for n in finished if not n),
        "run_twice": sum(1 for n, a in zip(started, attempts) if n > 1 or attempt_twice(a)),
        "retried": sum(1 for a in attempts if a),
    }


if __name__ == "__main__":
    print(json.dumps(counts(sys.argv[1])))
