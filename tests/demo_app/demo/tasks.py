"""Tasks that record what happened to them in a ledger (Redis database 2 of the broker).

Each `work` run appends "started" and "finished" entries under its job id, so a harness can count
sent, completed, lost and run-twice without trusting Celery's own bookkeeping.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from demo.app import app

LEDGER_DB = 2


def ledger_url() -> str:
    """The broker's Redis, database 2: same host and ACL user, separate from queues and results."""
    parts = urlsplit(os.environ.get("DEMO_LEDGER_URL") or os.environ["CELERY_BROKER_URL"])
    return urlunsplit(parts._replace(path=f"/{LEDGER_DB}"))


def ledger() -> redis.Redis:
    """The ledger rides out a broker restart (retries for about 10 s): it measures what happens to
    the tasks, and must not lose entries of its own."""
    return redis.Redis.from_url(
        ledger_url(),
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.1), 15),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )


def _stamp(task) -> str:
    return f"{time.time():.3f} {task.request.hostname or socket.gethostname()} {os.getpid()}"


@app.task(bind=True)
def work(self, job_id: str, seconds: float, retries: int = 0) -> str:
    """Sleep `seconds`, recording start and finish under `job_id`.

    With `retries`, the first `retries` attempts record themselves under demo:attempts:<job>
    (as "<attempt number> <stamp>") and ask Celery to retry one second later
    (`self.retry(countdown=1)`); only the last attempt runs and records start and finish. An
    attempt number seen twice is an attempt that ran twice."""
    db = ledger()
    if self.request.retries < retries:
        db.rpush(f"demo:attempts:{job_id}", f"{self.request.retries} {_stamp(self)}")
        raise self.retry(countdown=1, max_retries=retries)
    db.rpush(f"demo:started:{job_id}", _stamp(self))
    db.sadd("demo:jobs:started", job_id)
    time.sleep(seconds)
    db.rpush(f"demo:finished:{job_id}", _stamp(self))
    db.sadd("demo:jobs:finished", job_id)
    return job_id


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def tick() -> None:
    """Fired by beat: proves the scheduler runs and how often."""
    ledger().rpush("demo:ticks", f"{time.time():.3f}")


@app.task(bind=True)
def hold(self, job_id: str, max_seconds: float = 300) -> str:
    """Run until the harness releases `job_id` (or max_seconds pass): a task that is certainly
    running when a restart begins, however long the restart takes to come."""
    db = ledger()
    db.rpush(f"demo:started:{job_id}", _stamp(self))
    deadline = time.monotonic() + max_seconds
    while time.monotonic() < deadline and not db.exists(f"demo:release:{job_id}"):
        time.sleep(0.2)
    db.rpush(f"demo:finished:{job_id}", _stamp(self))
    return job_id


@app.task(bind=True)
def stubborn(self, job_id: str, max_seconds: float = 70) -> str:
    """Like `hold`, but deaf to a cold shutdown: SIGTERM (what Celery sends a pool child to cancel
    its task) and SIGQUIT are ignored while it waits for the harness to release `job_id`, so only
    SIGKILL ends it. Its run after a redelivery finds the release already there and finishes.

    The worker's hard time limit still applies (its own SIGKILL): send it with a time_limit that
    outlasts the deploy, and below the broker's visibility timeout, or that limit ends it first."""
    db = ledger()
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGTERM, signal.SIGQUIT)}
    try:
        db.rpush(f"demo:started:{job_id}", _stamp(self))
        deadline = time.monotonic() + max_seconds
        while time.monotonic() < deadline and not db.exists(f"demo:release:{job_id}"):
            time.sleep(0.2)
        db.rpush(f"demo:finished:{job_id}", _stamp(self))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return job_id
