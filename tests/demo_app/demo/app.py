"""The demo Celery application (`celery -A demo.app`).

Configured the way this collection recommends for tasks that must not be lost: acks_late with
reject_on_worker_lost, prefetch 1. DEMO_ACKS_LATE=0 turns both off, as a hand-made stack's app
has them (the adopt scenario): a task running when its worker dies is then lost, not repeated. Broker and result backend come from the environment file the
collection writes (CELERY_BROKER_URL, CELERY_RESULT_BACKEND), as for any app.
"""

import os

from celery import Celery
from celery.signals import before_task_publish

# Like a Django app that opens its log file at import: every process that imports the app
# leaves a trace named after its user id (a test checks that root never imports it).
if os.environ.get("DEMO_IMPORT_TRACE_DIR"):
    try:
        os.makedirs(os.environ["DEMO_IMPORT_TRACE_DIR"], exist_ok=True)
        with open(os.path.join(os.environ["DEMO_IMPORT_TRACE_DIR"], f"imported-by-uid-{os.getuid()}"), "a"):
            pass
    except OSError:
        pass  # a sandboxed service (Flower) may not write there

ACKS_LATE = os.environ.get("DEMO_ACKS_LATE", "1") != "0"

app = Celery("demo")
app.conf.update(
    imports=("demo.tasks",),
    task_acks_late=ACKS_LATE,
    task_reject_on_worker_lost=ACKS_LATE,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    # 3600 s, as Celery; a test scenario lowers it to see a killed worker's message come back.
    # kombu looks for such messages only every unacked_restore_interval (10 s) times
    # unacked_restore_throttle (10) seconds: with a low timeout, every 10 s, as kombu advises.
    broker_transport_options={"visibility_timeout": int(os.environ.get("DEMO_VISIBILITY_TIMEOUT", "3600")),
                              **({"unacked_restore_throttle": 1} if os.environ.get("DEMO_VISIBILITY_TIMEOUT") else {})},
    result_expires=3600,
    # Ride out a broker restart (a few seconds), as an app that must not lose tasks should:
    # publishing retries for about 10 s, and so does storing a result.
    task_publish_retry_policy={"max_retries": 20, "interval_start": 0.2, "interval_step": 0.2, "interval_max": 1.0},
    result_backend_always_retry=True,
    result_backend_max_retries=20,
    beat_schedule={"demo-tick": {"task": "demo.tasks.tick", "schedule": 2.0}},
)


@before_task_publish.connect
def record_tick_fired(sender=None, **_kwargs):
    """When beat fires the tick (in the process that publishes it, beat's own): the time it fired,
    under demo:tick_sent. demo:ticks holds when a worker ran it, which is later by however long
    the tick waited in the queue; a test of how often beat fires counts this list instead."""
    if sender != "demo.tasks.tick":
        return
    import time

    from demo.tasks import ledger

    ledger().rpush("demo:tick_sent", f"{time.time():.3f}")
