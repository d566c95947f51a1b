"""The primary taken away under load: Sentinel promotes a replica, the workers and the producer
follow it, and every task the broker acknowledged to the producer runs, except those inside the
replication window.

A producer on the ledger host (demo.producer under systemd-run, as the deploy scenarios run it)
sends tasks of mixed length to both pools of the two worker hosts; a 10 s task runs across the
failover. Every task writes its starts and finishes to a ledger on a Redis of its own that never
fails over (ledger.yml, DEMO_LEDGER_URL). A thread samples INFO replication of every data node
every 50 ms and listens to a sentinel's events. The new primary's offset at promotion (its
second_repl_offset - 1) against the old primary's last offset seen bounds what the failover may
have lost, and the last moment the old primary had nothing the new one lacks opens the loss
window: a task lost must have been sent inside it. The counts are printed (pytest -s) and
gathered in docs/redis.md ("Failover, measured"):

  1. the primary's container killed (docker kill: Redis, its sentinel and systemd die at once,
     no shutdown, no last write): a hard loss;
  2. `systemctl stop redis-server` on the primary: a clean shutdown, which must lose nothing;
  3. a drain deploy during which the primary dies (SIGKILL, systemd's Restart= held off).

The test that takes a whole container away runs first and brings it back as a replica, so the
later tests (and the scenario's other files) find three data nodes and three sentinels.

TASKSTACK_SENTINEL_NAIVE=1 (by hand, docs/redis.md) runs the same tests with every Celery process
on a plain redis:// URL of the bootstrap primary, as a stack without Sentinel has it.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
import testinfra
from redis.backoff import NoBackoff
from redis.retry import Retry
from loadlib import DEPLOY, LOCK, active_queues, ledger, ran_twice, task_starts
from stacklib import PlaybookRun, converge, inventory_dir, longest_gap, wait_for

LEDGER_PLAYBOOK = Path(__file__).resolve().parents[1] / "ledger.yml"
NAIVE = os.environ.get("TASKSTACK_SENTINEL_NAIVE") == "1"
RATE = 3
WARMUP_SECONDS = 2
# Runs across the failover: its acknowledgement goes to the new primary.
LONG_SECONDS = 10
BEFORE_SECONDS = 3
AFTER_SECONDS = 4
SAMPLE_SECONDS = 0.05
WORKERS_PLAY = "PLAY [Deploy the Celery workers"
# The deploy's drain begins with this task (roles/celery_deploy/tasks/cancel.yml).
DRAIN_TASK = "TASK [taskstack.celery.celery_deploy : Stop the serving nodes taking tasks"
NO_RESTART_DROPIN = "/run/systemd/system/redis-server.service.d/zz-failover-test-no-restart.conf"
# The producer stamps a task, then publishes it: the stamp may be that much older than the
# broker's acknowledgement.
PUBLISH_SLACK = 0.5
# DEMO_VISIBILITY_TIMEOUT in molecule.yml: a message a worker held when the primary went (a
# countdown waiting, a prefetched one) can be left in `unacked`, and comes back after it.
VISIBILITY_TIMEOUT = 45
# A task that started this long after it was due waited out the failover (or the visibility timeout).
LATE_SECONDS = 20
# The workers take tasks from the new primary within this of the last start on the old one:
# down-after-milliseconds (2 s) + the election (about 1 s) + Celery's reconnect (it retries after
# 2, 4, 6 s ...) + a margin for the loaded 2-core machine.
FOLLOW_SECONDS = 20
# What the workers' journals say of the failover, printed with the counts.
WORKER_LOG = ("Connection to broker lost|Restoring|Connected to|Couldn.t ack|Unrecoverable|NOREPLICAS|"
              "MasterNotFound|mingle: all alone|Cannot connect")


@dataclass
class Stack:
    """The scenario's data nodes, sentinels, worker hosts and ledger host, from its inventory."""

    nodes: dict[str, int]
    bootstrap_primary: str
    sentinels: dict[str, int]
    workers: list[str]
    ledger_host: str
    master_name: str
    credentials: Path

    def secret(self, name: str) -> str:
        return (self.credentials / f"{name}.txt").read_text().strip()

    # No retries: redis-py's default (3, with backoff) spends seconds on a node that is down.
    def admin(self, node: str, timeout: float = 0.5) -> redis.Redis:
        return redis.Redis(port=self.nodes[node], username="admin", password=self.secret("redis_admin_password"),
                           socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0))

    def sentinel(self, name: str, timeout: float = 1.0) -> redis.Redis:
        return redis.Redis(port=self.sentinels[name], password=self.secret("sentinel_password"),
                           socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0))

    def node_at(self, port: int) -> str:
        return next(name for name, p in self.nodes.items() if p == int(port))

    def primary(self) -> str:
        """The primary as the ledger host's sentinel sees it (no test takes that one away)."""
        _addr, port = self.sentinel(self.ledger_host).execute_command(
            "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name)
        return self.node_at(int(port))

    def replication(self, node: str) -> dict | None:
        try:
            return self.admin(node).info("replication")
        except redis.RedisError:
            return None

    def sentinel_view(self) -> dict:
        """The ledger host's sentinel on the primary and its replicas: flags and offsets."""
        s = self.sentinel(self.ledger_host)
        master = s.sentinel_master(self.master_name)
        return {"primary": {k: master[k] for k in ("port", "flags", "num-slaves", "config-epoch")},
                "replicas": [{k: r[k] for k in ("port", "flags", "master-link-status", "slave-repl-offset")}
                             for r in s.sentinel_slaves(self.master_name)]}


@pytest.fixture(scope="module")
def stack() -> Stack:
    inv = json.loads(subprocess.run(["ansible-inventory", "-i", str(inventory_dir()), "--list"], capture_output=True,
                                    text=True, check=True, timeout=120).stdout)
    hostvars = inv["_meta"]["hostvars"]

    def group(name):
        return inv.get(name, {}).get("hosts", [])

    sentinels = group("redis_sentinel")
    master_name = hostvars[sentinels[0]].get("sentinel_master_name", "taskstack")
    return Stack(
        nodes={h: int(hostvars[h]["redis_port"]) for h in group("redis")},
        bootstrap_primary=next(h for h in group("redis") if hostvars[h].get("redis_replication_role") == "primary"),
        sentinels={h: int(hostvars[h].get("sentinel_port", 26379)) for h in sentinels},
        workers=group("celery_worker"),
        ledger_host=hostvars[sentinels[0]]["taskstack_test_ledger_host"],
        master_name=master_name,
        credentials=inventory_dir() / "credentials" / f"redis-{master_name}",
    )


@pytest.fixture(scope="module")
def c(stack):
    """The ledger host: its Redis holds the ledger, the producer runs there, and the tests read
    the ledger through its app environment. Started here, not by the converge: it is the tests'
    own, and nothing else of the scenario needs it."""
    run = converge(playbook=LEDGER_PLAYBOOK)
    assert run.rc == 0, run.output[-3000:]
    return testinfra.get_host(f"docker://{stack.ledger_host}")


@pytest.fixture(autouse=True)
def naive_urls(stack, all_nodes_replicating):
    """TASKSTACK_SENTINEL_NAIVE=1: each test begins with Celery on the primary of the moment."""
    if NAIVE:
        plain_urls(stack)


def plain_urls(stack: Stack) -> None:
    """The naive variant: every Celery process on redis:// URLs of today's primary, as without
    Sentinel (the password travels on stdin, never in a command line)."""
    primary = stack.primary()
    base = f"redis://celery:{stack.secret('redis_celery_password')}@127.0.0.1:{stack.nodes[primary]}"
    script = (
        "import re, sys\n"
        "base = sys.stdin.read().strip()\n"
        "path = '/etc/celery/demo.env'\n"
        "text = open(path).read()\n"
        "text = re.sub(r'(?m)^CELERY_BROKER_URL=.*$', f'CELERY_BROKER_URL=\"{base}/0\"', text)\n"
        "text = re.sub(r'(?m)^CELERY_RESULT_BACKEND=.*$', f'CELERY_RESULT_BACKEND=\"{base}/1\"', text)\n"
        "open(path, 'w').write(text)\n")
    for name in sorted({*stack.workers, stack.ledger_host}):
        subprocess.run(["docker", "exec", "-i", name, "python3", "-c", script], input=base, text=True, check=True)
        if name in stack.workers:
            subprocess.run(["docker", "exec", name, "systemctl", "restart", "celery-demo-worker@*"], check=True)
    host = testinfra.get_host(f"docker://{stack.ledger_host}")
    wait_for(lambda: len(consuming_nodes(host)) == 2 * len(stack.workers), 60, interval=2,
             what="the workers to consume on the plain URLs")
    print(f"NAIVE: Celery on redis:// URLs of {primary} (port {stack.nodes[primary]})")


@pytest.fixture(scope="module", autouse=True)
def bootstrap_primary_back(stack):
    """After these tests the bootstrap primary is the primary again, as the scenario's other
    tests expect."""
    yield
    wait_for(lambda: replicating(stack), 90, interval=1, what="every data node replicating from the primary")
    make_primary(stack, stack.bootstrap_primary)


def make_primary(stack: Stack, node: str) -> None:
    """SENTINEL FAILOVER to `node`: the other replicas' replica-priority is 0 for that one
    failover (Sentinel promotes no replica of priority 0), then their own again, recorded with
    CONFIG REWRITE as Sentinel records its own changes."""
    if stack.primary() == node:
        return
    others = [n for n in stack.nodes if n not in (node, stack.primary())]
    saved = {n: stack.admin(n).config_get("replica-priority")["replica-priority"] for n in others}
    try:
        for other in others:
            stack.admin(other).config_set("replica-priority", 0)
        stack.sentinel(stack.ledger_host).execute_command("SENTINEL", "FAILOVER", stack.master_name)
        wait_for(lambda: stack.primary() == node and replicating(stack), 60, interval=0.5,
                 what=f"{node} to be the primary")
    finally:
        for other, priority in saved.items():
            stack.admin(other).config_set("replica-priority", priority)
            stack.admin(other, timeout=5).execute_command("CONFIG", "REWRITE")


@pytest.fixture(autouse=True)
def all_nodes_replicating(stack):
    """Every test begins and ends with one primary and every other node its replica, link up."""
    wait_for(lambda: replicating(stack), 90, interval=1, what="every data node replicating from the primary")
    yield
    wait_for(lambda: replicating(stack), 90, interval=1, what="every data node replicating again after the test")


def replicating(stack: Stack) -> bool:
    try:
        primary = stack.primary()
    except (redis.RedisError, StopIteration):
        return False
    for node in stack.nodes:
        info = stack.replication(node)
        if info is None:
            return False
        if node == primary:
            if info["role"] != "master" or info["connected_slaves"] != len(stack.nodes) - 1:
                return False
        elif info["role"] != "slave" or info.get("master_link_status") != "up" \
                or int(info["master_port"]) != stack.nodes[primary]:
            return False
    return True


@dataclass
class Watch:
    """INFO replication of every data node every SAMPLE_SECONDS (a round: one reply per node
    that answered), and every event of the ledger host's sentinel, on the controller's clock."""

    stack: Stack
    rounds: list[tuple[float, dict[str, dict]]] = field(default_factory=list)
    events: list[tuple[float, str, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Watch:
        clients = {node: self.stack.admin(node, timeout=0.2) for node in self.stack.nodes}
        pubsub = self.stack.sentinel(self.stack.ledger_host).pubsub()
        pubsub.psubscribe("*")

        def sample():
            while not self._stop.is_set():
                began, replies = time.time(), {}
                for node, client in clients.items():
                    try:
                        replies[node] = client.info("replication")
                    except redis.RedisError:
                        pass
                self.rounds.append((began, replies))
                time.sleep(SAMPLE_SECONDS)

        def listen():
            while not self._stop.is_set():
                try:
                    message = pubsub.get_message(timeout=0.2)
                except redis.RedisError:
                    continue
                if message and message["type"] == "pmessage":
                    self.events.append((time.time(), message["channel"].decode(), message["data"].decode()))
            pubsub.close()

        self._threads = [threading.Thread(target=sample, daemon=True), threading.Thread(target=listen, daemon=True)]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)

    def event_time(self, channel: str, after: float) -> float | None:
        return next((t for t, ch, _data in self.events if ch == channel and t >= after), None)

    def promoted(self, old: str, after: float) -> tuple[str, float] | None:
        """The node the sentinels switched to, and when the ledger host's sentinel said so."""
        for t, channel, data in self.events:
            if channel == "+switch-master" and t >= after:
                # "<master name> <old ip> <old port> <new ip> <new port>"
                new = self.stack.node_at(int(data.split()[4]))
                if new != old:
                    return new, t
        return None

    def window(self, old: str, new: str, lost_at: float, switched_at: float) -> dict:
        """What the old primary may have acknowledged that the new one never received.

        The new primary's offset at its promotion is its second_repl_offset - 1 (Redis keeps the
        old replication ID valid up to there). The window opens at the last sample in which the old
        primary's offset was not beyond that, and closes when the old primary went: at the loss,
        or at its last answer when it still answered after (a clean shutdown first waits for
        its replicas)."""
        old_samples = [(t, r[old]) for t, r in self.rounds if r.get(old, {}).get("role") == "master" and t < switched_at]
        new_samples = [r[new] for t, r in self.rounds if r.get(new, {}).get("role") == "master" and t > lost_at]
        assert old_samples and new_samples, "the watch saw the old primary before or the new one after the loss"
        promoted_at = int(new_samples[0]["second_repl_offset"]) - 1
        last_t, last = old_samples[-1]
        covered = [t for t, i in old_samples if int(i["master_repl_offset"]) <= promoted_at]
        opens = covered[-1] if covered else old_samples[0][0]
        # How far the replicas trailed the old primary, each read right after it in one round.
        lag = [max(0, int(r[old]["master_repl_offset"]) - int(i["slave_repl_offset"]))
               for t, r in self.rounds if t < lost_at and r.get(old, {}).get("role") == "master"
               for n, i in r.items() if n != old and i.get("role") == "slave" and "slave_repl_offset" in i]
        return {
            "old_primary_last_offset_seen": int(last["master_repl_offset"]),
            "old_primary_last_seen_s_after_loss": round(last_t - lost_at, 3),
            "new_primary_offset_at_promotion": promoted_at,
            "new_primary_continues_old_history": new_samples[0]["master_replid2"] == last["master_replid"],
            "unreplicated_bytes_seen": max(0, int(last["master_repl_offset"]) - promoted_at),
            "replica_lag_bytes_max_before": max(lag, default=0),
            "replica_lag_bytes_mean_before": round(sum(lag) / len(lag)) if lag else 0,
            "opens": opens,
            "closes": max(lost_at, last_t),
            "seconds": round(max(lost_at, last_t) - opens, 3),
        }


def start_producer(host, rate: float = RATE) -> str:
    run = uuid.uuid4().hex[:10]
    started = host.run(
        f"systemd-run --unit demo-producer-{run} -p User=celery -p Group=celery -p EnvironmentFile=/etc/celery/demo.env"
        f" -p WorkingDirectory=/srv/celery/app /opt/celery/venv/bin/python -m demo.producer {run} {rate}")
    assert started.rc == 0, started.stderr
    return run


def send_long_task(host, run: str, name: str = "long") -> None:
    job = f"{run}-{name}"
    ledger(host, f"""
import time
from demo.tasks import work
db.hset("demo:run:{run}:sent", "{job}", json.dumps(
    {{"seconds": {LONG_SECONDS}, "countdown": 0, "queue": "celery", "sent": time.time(), "eta": None}}))
work.apply_async(("{job}", {LONG_SECONDS}), queue="celery")
print(json.dumps(1))
""")
    wait_for(lambda: ledger(host, f'print(json.dumps(db.llen("demo:started:{job}")))'), 30,
             what="the long task to start")


def stop_producer(host, run: str) -> bool:
    """Tell the producer to stop; whether it did (false: it died, of a publish that failed after
    its retries, say)."""
    ledger(host, f'print(json.dumps(db.set("demo:run:{run}:stop", 1)))')
    try:
        wait_for(lambda: ledger(host, f'print(json.dumps(db.get("demo:run:{run}:done") is not None))'), 20,
                 what="the producer to stop")
        return True
    except AssertionError:
        print(host.run(f"journalctl --no-pager -n 15 -u demo-producer-{run}").stdout)
        return False


def read_jobs(host, run: str) -> dict:
    return ledger(host, f"""
sent = {{k.decode(): json.loads(v) for k, v in db.hgetall("demo:run:{run}:sent").items()}}
def stamps(kind, job):
    return [s.decode().split() for s in db.lrange(f"demo:{{kind}}:{{job}}", 0, -1)]
def attempts(job):
    return [[int(s.split()[0]), float(s.split()[1])] for s in db.lrange(f"demo:attempts:{{job}}", 0, -1)]
print(json.dumps({{job: dict(meta, starts=[float(s[0]) for s in stamps("started", job)],
                            nodes=[s[1] for s in stamps("started", job)],
                            finishes=[float(s[0]) for s in stamps("finished", job)], attempts=attempts(job))
                  for job, meta in sent.items()}}))
""")


def broker_left(stack: Stack) -> dict:
    """The jobs whose messages are still in a queue or in kombu's `unacked` hash on the primary:
    one left in `unacked` runs (again) once the visibility timeout has passed."""
    db = stack.admin(stack.primary(), timeout=2)

    def job(raw: bytes) -> str:
        message = json.loads(raw)
        message = message[0] if isinstance(message, list) else message  # unacked: [message, exchange, key]
        args = json.loads(base64.b64decode(message["body"]))[0]
        return str(args[0]) if args else "?"

    left = {queue: [job(m) for m in db.lrange(queue, 0, -1)] for queue in ("celery", "slow")}
    left["unacked"] = [job(m) for m in db.hvals("unacked")]
    return {k: v for k, v in left.items() if v}


def consuming_nodes(host) -> list[str]:
    """The worker nodes that consume a queue, as the broker's remote control reaches them
    (none when it reaches no broker)."""
    try:
        return sorted(node for node, queues in active_queues(host).items() if queues)
    except AssertionError as error:
        print(error)
        return []


def load_across_failover(stack: Stack, c, take_away, settle_seconds: float = VISIBILITY_TIMEOUT + 20) -> dict:
    """Load before, during and after `take_away(run)`, which takes the primary away and returns
    the node it took, when it was gone and what happened; count what the tasks saw."""
    nodes_before = consuming_nodes(c)
    view_before = stack.sentinel_view()
    with Watch(stack) as watch:
        run = start_producer(c)
        try:
            time.sleep(WARMUP_SECONDS)
            send_long_task(c, run)
            time.sleep(BEFORE_SECONDS)
            old, lost_at, outcome = take_away(run)
            new, switched_at = wait_for(lambda: watch.promoted(old, lost_at), 60, interval=0.2,
                                        what="the sentinels to promote a replica")
            # The workers follow: a task starts after the switch (not in the naive variant).
            try:
                wait_for(lambda: any(s > switched_at for j in read_jobs(c, run).values() for s in j["starts"]),
                         30, interval=0.5, what="a task to start after the switch")
            except AssertionError as error:
                print(error)
            time.sleep(AFTER_SECONDS)
        finally:
            producer_stopped = stop_producer(c, run)
        window = watch.window(old, new, lost_at, switched_at)

    def settled():
        jobs = read_jobs(c, run)
        return jobs if all(j["finishes"] for j in jobs.values()) else None

    try:
        wait_for(settled, settle_seconds, interval=2, what="every sent task to finish")
    except AssertionError as error:
        print(error)
    time.sleep(2)  # a message the failover left behind and redelivered would show now
    jobs = read_jobs(c, run)
    try:
        nodes_after = wait_for(lambda: (n := consuming_nodes(c)) == nodes_before and n, 30, interval=2,
                               what="every worker node to consume again")
    except AssertionError:
        nodes_after = consuming_nodes(c)

    # Every task but one the producer died on was acknowledged by the broker.
    unacknowledged = set() if producer_stopped else {max(jobs, key=lambda k: jobs[k]["sent"])}
    lost = {k: j for k, j in jobs.items() if not j["finishes"] and k not in unacknowledged}

    def published(job: dict) -> float:
        """When its last message went out: a retried task's retry is published again."""
        return max([job["sent"], *(t for _n, t in job["attempts"])])

    opens, closes = window["opens"] - PUBLISH_SLACK, window["closes"]
    starts = sorted(s for j in jobs.values() for s in task_starts(j))
    pause_from, pause_to = longest_gap(starts, lost_at - BEFORE_SECONDS, time.time())
    last_old = max((s for s in starts if s <= switched_at), default=None)
    first_new = min((s for s in starts if s > switched_at), default=None)
    odown = watch.event_time("+odown", lost_at)
    counts = {
        "sent": len(jobs),
        "acknowledged": len(jobs) - len(unacknowledged),
        "executed": sum(1 for j in jobs.values() if j["finishes"]),
        "lost": len(lost),
        "run_twice": sum(1 for j in jobs.values() if ran_twice(j)),
        # Ran, but waited more than LATE_SECONDS past when it was due.
        "started_late": sum(1 for j in jobs.values() if j["starts"]
                            and j["starts"][0] > published(j) + (j["countdown"] or 0) + LATE_SECONDS),
        "sent_inside_window": sum(1 for j in jobs.values() if opens <= published(j) <= closes),
        "lost_outside_window": sorted(k for k, j in lost.items() if not opens <= published(j) <= closes),
        "sent_before_loss": sum(1 for j in jobs.values() if j["sent"] < lost_at),
        "producer_followed": producer_stopped,
        "sent_after_switch": sum(1 for j in jobs.values() if j["sent"] > switched_at),
        "started_after_switch": sum(1 for s in starts if s > switched_at),
        "old_primary": old,
        "new_primary": new,
        # Detection and election: from the loss to the sentinels' verdict and switch.
        "loss_to_odown_s": round(odown - lost_at, 2) if odown else None,
        "loss_to_switch_s": round(switched_at - lost_at, 2),
        # The failover as the tasks saw it: the last task started before the switch (from the old
        # primary) to the first started after it (from the new one).
        "failover_s": round(first_new - last_old, 2) if last_old and first_new else None,
        "longest_pause_s": round(pause_to - pause_from, 2),
        "long_task_ran_across": any(j["seconds"] >= LONG_SECONDS and j["starts"] and j["finishes"]
                                    and j["starts"][0] < lost_at < j["finishes"][-1] for j in jobs.values()),
        "broker_left": broker_left(stack),
        "nodes_consuming_before": nodes_before,
        "nodes_consuming_after": nodes_after,
        "window": {k: v for k, v in window.items() if k not in ("opens", "closes")},
        "lost_jobs": {k: {"sent": j["sent"], "queue": j["queue"], "attempts": j["attempts"]} for k, j in lost.items()},
        "twice_jobs": {k: {"starts": j["starts"], "nodes": j["nodes"], "attempts": j["attempts"]}
                       for k, j in jobs.items() if ran_twice(j)},
    }
    events = [[round(t - lost_at, 2), ch, data] for t, ch, data in watch.events if t >= lost_at - 1]
    print(f"\nfailover ({outcome}){' NAIVE' if NAIVE else ''}: {json.dumps(counts)}\n"
          f"sentinel view before: {json.dumps(view_before)}\nafter: {json.dumps(stack.sentinel_view())}\n"
          f"sentinel events (s after the loss): {json.dumps(events[:30])}")
    for worker in stack.workers:
        journal = testinfra.get_host(f"docker://{worker}").run(
            f"journalctl --no-pager -o short-precise -u 'celery-demo-worker@*' --since @{int(lost_at) - 1}"
            f" | grep -E '{WORKER_LOG}' | cut -c1-220 | head -n 25").stdout
        print(f"{worker} worker journal from the loss:\n{journal}")
    return counts


def assert_followed(counts: dict) -> None:
    """The load proves something, a replica took over, the workers and the producer followed."""
    assert counts["sent_before_loss"] >= 10, "too little load to prove anything"
    assert counts["producer_followed"], "the producer died of the failover: its publish never reached the new primary"
    assert counts["sent_after_switch"] > 0 and counts["started_after_switch"] > 0, "nothing ran after the switch"
    assert counts["nodes_consuming_after"] == counts["nodes_consuming_before"], "not every worker node came back"
    assert counts["long_task_ran_across"], "no long task ran across the failover"
    assert counts["failover_s"] is not None and counts["failover_s"] <= FOLLOW_SECONDS, (
        f"the workers took {counts['failover_s']} s from the last task on the old primary to the first on the new"
        f" one, the sentinels switched {counts['loss_to_switch_s']} s after the loss (the journal excerpt says why)")


def assert_lost_at_most_the_window(counts: dict) -> None:
    """A lost task was sent inside the replication window, and no more were lost than sent there."""
    assert counts["lost_outside_window"] == [], counts["lost_jobs"]
    assert counts["lost"] <= counts["sent_inside_window"], counts["lost_jobs"]


def hard_kill(node: str) -> None:
    """SIGKILL to Redis with systemd's Restart=always held off (it would be back before
    down-after-milliseconds, and no failover would happen)."""
    killed = testinfra.get_host(f"docker://{node}").run(
        f"mkdir -p {Path(NO_RESTART_DROPIN).parent} && printf '[Service]\\nRestart=no\\n' > {NO_RESTART_DROPIN}"
        " && systemctl daemon-reload && systemctl kill -s SIGKILL redis-server.service")
    assert killed.rc == 0, killed.stderr


def bring_back(node: str) -> None:
    back = testinfra.get_host(f"docker://{node}").run(
        f"rm -f {NO_RESTART_DROPIN} && systemctl daemon-reload && systemctl reset-failed redis-server.service;"
        " systemctl start redis-server.service")
    assert back.rc == 0, back.stderr


def back_as_replica(stack: Stack, node: str) -> None:
    """Sentinel makes the old primary a replica of the new one once it answers again."""
    info = wait_for(lambda: (i := stack.replication(node)) and i["role"] == "slave"
                    and i.get("master_link_status") == "up" and i, 90, interval=1,
                    what=f"{node} to come back as a replica")
    print(f"{node} is back, a replica of port {info['master_port']}")


def test_primary_container_killed_loses_at_most_the_replication_window(stack, c):
    """docker kill of the primary's container (docker stop would let systemd shut Redis down
    cleanly, which is the next test): a replica is promoted, the producer and the workers follow,
    and every task acknowledged to the producer runs, except those sent inside the window."""
    victim = stack.primary()
    # A whole host can go only where neither the ledger nor a worker lives; elsewhere the same
    # hard loss is Redis's own SIGKILL.
    whole_host = victim != stack.ledger_host and victim not in stack.workers

    def primary_container_killed(_run):
        if whole_host:
            subprocess.run(["docker", "kill", victim], check=True, capture_output=True)
        else:
            hard_kill(victim)
        return victim, time.time(), "docker kill" if whole_host else "kill -9, Restart= held off"

    try:
        counts = load_across_failover(stack, c, primary_container_killed)
    finally:
        if whole_host:
            subprocess.run(["docker", "start", victim], check=True, capture_output=True)
            subprocess.run(["docker", "exec", victim, "systemctl", "is-system-running", "--wait"],
                           capture_output=True, timeout=180, check=False)
        else:
            bring_back(victim)
    back_as_replica(stack, victim)
    assert_followed(counts)
    assert_lost_at_most_the_window(counts)


def test_primary_stopped_cleanly_fails_over_losing_nothing(stack, c):
    """`systemctl stop redis-server` on the primary: Redis's shutdown waits for its replicas to
    catch up, so the promoted replica holds every acknowledged task: nothing lost, nothing run
    twice, nothing left in the broker to run again later."""
    victim = stack.primary()

    def primary_stopped(_run):
        began = time.time()
        stopped = testinfra.get_host(f"docker://{victim}").run("systemctl stop redis-server.service")
        assert stopped.rc == 0, stopped.stderr
        return victim, began, f"systemctl stop, {time.time() - began:.1f} s"

    try:
        counts = load_across_failover(stack, c, primary_stopped)
    finally:
        bring_back(victim)
    back_as_replica(stack, victim)
    assert_followed(counts)
    assert counts["window"]["unreplicated_bytes_seen"] == 0, counts["window"]
    assert (counts["lost"], counts["run_twice"], counts["broker_left"]) == (0, 0, {}), \
        (counts["lost_jobs"], counts["twice_jobs"])


def test_drain_deploy_during_which_the_primary_dies_ends_cleanly_losing_at_most_the_window(stack, c):
    """playbooks/deploy.yml (drain) under load, with a long task running when its drain begins;
    then the primary dies (SIGKILL). The deploy completes, or fails saying so with its lock
    released; every worker node consumes again and no task is lost beyond the window."""
    victim = stack.primary()
    seen: dict = {}

    def primary_dies_in_the_drain(run):
        with tempfile.TemporaryDirectory(prefix="taskstack-deploy-") as tmp:
            report = Path(tmp) / "report.json"
            cmd = ["ansible-playbook", "-i", str(inventory_dir()), "-e",
                   json.dumps({"celery_deploy_report": str(report), "celery_deploy_drain_timeout": 30}), str(DEPLOY)]
            lines: list[str] = []
            began = time.time()
            with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
                for line in proc.stdout:
                    lines.append(line)
                    if line.startswith(WORKERS_PLAY) and "long_sent" not in seen:
                        send_long_task(c, run, "long-drain")
                        seen["long_sent"] = True
                    elif line.startswith(DRAIN_TASK) and "lost_at" not in seen:
                        hard_kill(victim)
                        seen["lost_at"] = time.time()
                proc.wait(timeout=600)
            seen["run"] = PlaybookRun(proc.returncode, "".join(lines))
            seen["report"] = json.loads(report.read_text()) if report.exists() else {}
        assert "lost_at" in seen, "the deploy never reached its drain:\n" + seen["run"].output[-3000:]
        return victim, seen["lost_at"], (f"deploy rc={seen['run'].rc} in {time.time() - began:.0f} s,"
                                         f" result {seen['report'].get('result')}")

    try:
        counts = load_across_failover(stack, c, primary_dies_in_the_drain)
    finally:
        bring_back(victim)
    back_as_replica(stack, victim)
    run, report = seen["run"], seen["report"]
    print("\n".join(line for line in run.output.splitlines() if line.startswith(("fatal:", "celery_drain ["))))
    assert_followed(counts)
    if run.rc == 0:
        assert report.get("result") == "ok", report
    else:
        assert report.get("result") == "failed", run.output[-3000:]
    for worker in stack.workers:
        assert testinfra.get_host(f"docker://{worker}").run(f"test -e {LOCK}").rc != 0, \
            f"the deploy left its lock on {worker}: the next one would refuse to run"
    assert_lost_at_most_the_window(counts)
