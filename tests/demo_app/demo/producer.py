"""Load for the deploy tests: send `demo.tasks.work` tasks of mixed length until told to stop.

    python -m demo.producer RUN_ID [RATE]

Every task is recorded in the ledger (hash demo:run:RUN_ID:sent: job id -> seconds, countdown,
queue, sent time, eta, retries) BEFORE it is sent, so a task that never ran counts as lost, never as
unsent. Stops when the key demo:run:RUN_ID:stop exists; writes demo:run:RUN_ID:done then.
"""

from __future__ import annotations

import json
import random
import sys
import time

from demo.tasks import ledger, work

# (seconds, weight): mostly sub-second, some of a few seconds.
DURATIONS = [(0.1, 40), (0.3, 30), (1.0, 15), (2.0, 10), (4.0, 5)]
COUNTDOWN_SHARE = 0.1
SLOW_QUEUE_SHARE = 0.1
# Tasks that fail their first attempt and retry (self.retry(countdown=1)).
RETRY_SHARE = 0.05


def main(run: str, rate: float = 3.0, seed: int = 5) -> int:
    db = ledger()
    rng = random.Random(seed)
    seconds_choices, weights = zip(*DURATIONS)
    sent = 0
    while not db.exists(f"demo:run:{run}:stop"):
        seconds = rng.choices(seconds_choices, weights)[0]
        countdown = rng.choice([2, 3, 5]) if rng.random() < COUNTDOWN_SHARE else 0
        queue = "slow" if rng.random() < SLOW_QUEUE_SHARE else "celery"
        retries = 1 if rng.random() < RETRY_SHARE else 0
        job = f"{run}-{sent}"
        now = time.time()
        db.hset(f"demo:run:{run}:sent", job, json.dumps(
            {"seconds": seconds, "countdown": countdown, "queue": queue, "sent": now,
             "eta": now + countdown if countdown else None, "retries": retries}))
        work.apply_async((job, seconds, retries), countdown=countdown or None, queue=queue)
        sent += 1
        time.sleep(1 / rate)
    db.set(f"demo:run:{run}:done", sent)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], *(float(a) for a in sys.argv[2:3])))
