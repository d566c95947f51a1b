"""The status playbook's table (plugins/filter/stack_status.py)."""

from __future__ import annotations

from ansible_collections.taskstack.celery.plugins.filter import stack_status as st

SHOW = """Id=celery-demo-worker@default-blue.service
LoadState=loaded
ActiveState=active
SubState=running
MainPID=4317

Id=celery-demo-worker@slow-blue.service
LoadState=loaded
ActiveState=inactive
SubState=dead
MainPID=0

Id=prometheus-redis-exporter.service
LoadState=not-found
ActiveState=inactive
SubState=dead
MainPID=0
"""

HEALTHY = {"healthy": True, "problems": [],
           "nodes": {"default-blue@web1": {"ping": True, "active": 1, "reserved": 0, "scheduled": 0}},
           "queues": {"celery": {"depth": 3, "max_depth": 1000}}, "unacked": {"count": 1},
           "persistence": {"aof_enabled": True, "aof_last_write_status": "ok",
                           "rdb_last_bgsave_status": "ok", "aof_delayed_fsync": 0,
                           "used_memory": 100, "maxmemory": 1000, "memory_ratio": 0.1}}


def test_systemctl_show_gives_units_with_pids_and_leaves_unknown_units_out():
    assert st.systemctl_show_units(SHOW) == [
        {"unit": "celery-demo-worker@default-blue.service", "active": "active", "sub": "running",
         "pid": 4317},
        {"unit": "celery-demo-worker@slow-blue.service", "active": "inactive", "sub": "dead",
         "pid": None},
    ]


def test_a_healthy_worker_host_is_one_block_without_problems():
    hostvars = {"web1": {"celery_worker_status": {"colour": "blue", "health": HEALTHY,
                                                  "units": st.systemctl_show_units(SHOW)[:1]}}}
    status = st.stack_status(["web1"], hostvars)
    assert status["unhealthy"] == []
    text = "\n".join(status["lines"])
    assert "web1: healthy" in text and "pid 4317" in text and "queue celery: depth 3 (max 1000)" in text
    assert "live colour blue" in text and "10% of maxmemory" in text


def test_problems_of_the_health_command_and_an_inactive_redis_make_hosts_unhealthy():
    sick = dict(HEALTHY, healthy=False, problems=["queue celery: depth 5 > max 4"])
    hostvars = {
        "web1": {"celery_worker_status": {"colour": "blue", "health": sick, "units": []}},
        "redis1": {"redis_status": {"health": HEALTHY, "units": [
            {"unit": "redis-server.service", "active": "failed", "sub": "failed", "pid": None}]}},
    }
    status = st.stack_status(["redis1", "web1"], hostvars)
    assert status["unhealthy"] == ["redis1", "web1"]
    assert "  PROBLEM: queue celery: depth 5 > max 4" in status["lines"]
    assert "  PROBLEM: unit redis-server.service is failed" in status["lines"]


def test_a_host_that_published_nothing_is_unhealthy():
    assert st.stack_status(["gone"], {"gone": {}})["unhealthy"] == ["gone"]


def test_replication_shows_the_primary_with_each_replica_and_a_replica_with_its_link():
    primary = {"role": "primary", "offset": 10466, "replicas": [
        {"address": "127.0.0.1:6412", "state": "online", "behind_bytes": 14, "lag_seconds": 0}]}
    replica = {"role": "replica", "primary": "127.0.0.1:6411", "link": "up", "offset": 10466,
               "last_io_seconds": 1}
    hostvars = {name: {"redis_status": {"units": [], "health": {"healthy": True, "problems": [],
                                                                "replication": r}}}
                for name, r in (("a", primary), ("b", replica))}
    lines = st.stack_status(["a", "b"], hostvars)["lines"]
    assert lines == ["a: healthy", "  redis: none", "    primary, replication offset 10466",
                     "    replica 127.0.0.1:6412 online, 14 bytes behind, lag 0s",
                     "b: healthy", "  redis: none", "    replica of 127.0.0.1:6411, link up, offset 10466, last io 1s ago"]


def test_a_sentinel_shows_the_primary_it_names_and_its_problems():
    view = {"healthy": False, "problems": ["replica 127.0.0.1:6413 is s_down and disconnected"],
            "primary": {"address": "127.0.0.1:6412", "flags": "master"}, "sentinels": 3, "quorum": 2,
            "replicas": [{"address": "127.0.0.1:6413", "flags": "s_down,slave,disconnected", "link": "err",
                          "offset": 0}]}
    status = st.stack_status(["a"], {"a": {"sentinel_status": {"units": [], "view": view}}})
    assert status == {"unhealthy": ["a"], "lines": [
        "a: UNHEALTHY", "  sentinel: none", "    primary 127.0.0.1:6412 (master), 3 sentinels, quorum 2",
        "    replica 127.0.0.1:6413 (s_down,slave,disconnected), link err, offset 0",
        "  PROBLEM: replica 127.0.0.1:6413 is s_down and disconnected"]}
