"""celery_health: kombu's key names, queue depth over priorities, and every threshold."""

from __future__ import annotations

import pytest

from ansible_collections.taskstack.celery.plugins.module_utils.celery_control import (
    summarize_inspection,
)
from ansible_collections.taskstack.celery.plugins.module_utils.celery_health import (
    NODE_FACTS,
    KombuKeys,
    Thresholds,
    collect_info,
    collect_queues,
    collect_replication,
    collect_unacked,
    evaluate,
    memory_ratio,
    sum_lengths,
)
from ansible_collections.taskstack.celery.tests.unit.plugins.recorded_health import (
    BLUE,
    GREEN,
    INFO_MEMORY,
    INFO_MEMORY_NO_LIMIT,
    INFO_PERSISTENCE_AOF,
    INFO_PERSISTENCE_RDB_ONLY,
    INFO_REPLICATION_ALONE,
    INFO_REPLICATION_PRIMARY,
    INFO_REPLICATION_REPLICA_DOWN,
    INSPECT_BLUE_ONLY,
    INSPECT_NOBODY,
    FakeRedis,
)

PREFIXED = KombuKeys(prefix="proj:")


def facts(server, keys=KombuKeys(), queues=("default",)):
    return {"queues": collect_queues(server, queues, keys), "unacked": collect_unacked(server, keys),
            "info": collect_info(server), "keys": keys}


def healthy_run(thresholds=Thresholds(), server=None, **kwargs):
    return evaluate(thresholds=thresholds, **dict(facts(server or FakeRedis()), **kwargs))


# -- where kombu keeps things -------------------------------------------------------------------


def test_queue_keys_are_the_bare_name_then_one_per_priority_step():
    assert KombuKeys().queue_keys("default") == {
        0: "default", 3: "default\x06\x163", 6: "default\x06\x166", 9: "default\x06\x169"}


def test_global_key_prefix_goes_before_every_key():
    assert list(PREFIXED.queue_keys("q").values()) == [
        "proj:q", "proj:q\x06\x163", "proj:q\x06\x166", "proj:q\x06\x169"]
    assert (PREFIXED.unacked(), PREFIXED.unacked_index()) == ("proj:unacked", "proj:unacked_index")


def test_custom_priority_steps_and_unacked_key_are_followed():
    keys = KombuKeys(priority_steps=[9, 0, 5, 5], unacked_key="celery_unacked")
    assert keys.queue_keys("q") == {0: "q", 5: "q\x06\x165", 9: "q\x06\x169"}
    assert keys.unacked() == "celery_unacked"


def test_depth_sums_the_lengths_and_skips_what_is_not_a_number():
    assert sum_lengths([2, "1", 0, None, RuntimeError("pipeline error"), 2]) == 5


def test_depth_counts_every_priority_list_of_the_recorded_queue():
    server = FakeRedis()
    depth = collect_queues(server, ["default"], KombuKeys())["default"]
    assert depth == {"depth": 5, "by_priority": {0: 2, 3: 1, 6: 0, 9: 2}}
    assert [key for command, key in server.asked if command == "LLEN"] == list(
        KombuKeys().queue_keys("default").values())


def test_prefixed_queue_and_unacked_are_read_under_the_prefix():
    server = FakeRedis()
    assert collect_queues(server, ["default"], PREFIXED)["default"]["depth"] == 4
    assert collect_unacked(server, PREFIXED) == 1
    assert collect_unacked(server, KombuKeys()) == 0
    assert ("HLEN", "proj:unacked") in server.asked


def test_info_reads_persistence_and_memory():
    server = FakeRedis()
    info = collect_info(server)
    assert server.asked == [("INFO", "persistence"), ("INFO", "memory")]
    assert info["aof_last_write_status"] == "ok" and info["maxmemory"] == 67108864


# -- the recorded server is healthy; each broken limit is named --------------------------------


def test_recorded_server_is_healthy_and_reports_its_figures():
    result = healthy_run()
    assert result["healthy"] is True and result["problems"] == []
    assert result["queues"]["default"] == {
        "depth": 5, "by_priority": {"0": 2, "3": 1, "6": 0, "9": 2}, "max_depth": None}
    assert result["unacked"] == {"count": 0, "key": "unacked", "max": None}
    assert result["persistence"] == {
        "aof_enabled": True, "aof_delayed_fsync": 0, "used_memory": 1542888,
        "maxmemory": 67108864, "memory_ratio": 0.023, "aof_last_write_status": "ok",
        "aof_last_bgrewrite_status": "ok", "rdb_last_bgsave_status": "ok"}
    assert result["nodes"] == {}


def test_queue_over_the_default_maximum_is_a_problem_with_value_and_limit():
    result = healthy_run(Thresholds(max_queue_depth=4))
    assert result["healthy"] is False
    assert result["problems"] == ["queue default: depth 5 > max 4"]


def test_per_queue_maximum_overrides_the_default():
    server = FakeRedis(keys={"default": 2, "bulk": 50})
    thresholds = Thresholds(max_queue_depth=10, queue_max_depth={"bulk": 100})
    result = evaluate(thresholds=thresholds, **facts(server, queues=("default", "bulk")))
    assert result["healthy"] is True
    assert result["queues"]["bulk"]["max_depth"] == 100
    assert result["queues"]["default"]["max_depth"] == 10
    thresholds = Thresholds(max_queue_depth=100, queue_max_depth={"bulk": 10})
    result = evaluate(thresholds=thresholds, **facts(server, queues=("default", "bulk")))
    assert result["problems"] == ["queue bulk: depth 50 > max 10"]


def test_depth_equal_to_the_maximum_is_still_healthy():
    assert healthy_run(Thresholds(max_queue_depth=5))["healthy"] is True


def test_unacked_over_its_maximum_is_a_problem():
    result = evaluate(thresholds=Thresholds(max_unacked=0), **facts(FakeRedis(), keys=PREFIXED))
    assert result["problems"] == ["unacked: 1 > max 0"]
    assert result["unacked"] == {"count": 1, "key": "proj:unacked", "max": 0}


@pytest.mark.parametrize("status", ["aof_last_write_status", "aof_last_bgrewrite_status",
                                    "rdb_last_bgsave_status"])
def test_failed_write_to_disk_is_a_problem(status):
    server = FakeRedis(persistence=dict(INFO_PERSISTENCE_AOF, **{status: "err"}))
    result = healthy_run(server=server)
    assert result["healthy"] is False
    assert result["problems"] == ["redis %s: err (want ok)" % status]
    assert result["persistence"][status] == "err"


def test_memory_above_the_ratio_is_a_problem():
    server = FakeRedis(memory=dict(INFO_MEMORY, used_memory=62914560))
    result = healthy_run(Thresholds(max_memory_ratio=0.9), server=server)
    assert result["persistence"]["memory_ratio"] == 0.9375
    assert result["problems"] == [
        "redis memory: used_memory/maxmemory 0.94 > max 0.90 (62914560 of 67108864 bytes)"]


def test_maxmemory_zero_means_no_limit_and_no_ratio():
    assert memory_ratio(10 ** 12, 0) is None
    server = FakeRedis(memory=dict(INFO_MEMORY_NO_LIMIT, used_memory=10 ** 12))
    result = healthy_run(Thresholds(max_memory_ratio=0.01), server=server)
    assert result["healthy"] is True and result["persistence"]["memory_ratio"] is None


def test_delayed_fsyncs_over_their_maximum_are_a_problem():
    server = FakeRedis(persistence=dict(INFO_PERSISTENCE_AOF, aof_delayed_fsync=7))
    assert healthy_run(Thresholds(max_aof_delayed_fsync=7), server=server)["healthy"] is True
    result = healthy_run(Thresholds(max_aof_delayed_fsync=3), server=server)
    assert result["problems"] == ["redis aof_delayed_fsync: 7 > max 3"]


def test_rdb_only_server_is_healthy_unless_aof_is_required():
    server = FakeRedis(persistence=INFO_PERSISTENCE_RDB_ONLY, memory=INFO_MEMORY_NO_LIMIT)
    result = healthy_run(Thresholds(max_aof_delayed_fsync=0), server=server)
    assert result["healthy"] is True
    assert result["persistence"]["aof_enabled"] is False
    assert result["persistence"]["aof_delayed_fsync"] is None
    result = healthy_run(Thresholds(require_aof=True), server=server)
    assert result["problems"] == ["redis aof_enabled: 0 (want 1: AOF required)"]


def test_info_as_text_is_read_like_the_parsed_numbers():
    # flat_info() and redis-cli give text; the thresholds must hold the same way.
    text = {k: str(v) for k, v in dict(INFO_PERSISTENCE_AOF, **INFO_MEMORY).items()}
    text.update(used_memory="62914560", aof_delayed_fsync="7")
    result = evaluate({}, 0, text, Thresholds(max_aof_delayed_fsync=3))
    assert len(result["problems"]) == 2 and result["persistence"]["aof_enabled"] is True


def test_every_broken_limit_is_listed_not_only_the_first():
    server = FakeRedis(persistence=dict(INFO_PERSISTENCE_AOF, aof_last_write_status="err"),
                       memory=dict(INFO_MEMORY, used_memory=67108864))
    result = evaluate(thresholds=Thresholds(max_queue_depth=1, max_unacked=0),
                      **facts(server, keys=PREFIXED))
    assert [problem.split(":")[0] for problem in result["problems"]] == [
        "queue default", "unacked", "redis aof_last_write_status", "redis memory"]


# -- worker nodes ------------------------------------------------------------------------------


def test_expected_node_without_a_ping_is_a_problem_and_its_counts_unknown():
    inspection = summarize_inspection([BLUE, GREEN], INSPECT_BLUE_ONLY)
    result = healthy_run(expected_nodes=[BLUE, GREEN], inspection=inspection)
    assert result["nodes"][BLUE] == {"ping": True, "active": 1, "reserved": 1, "scheduled": 1}
    assert result["nodes"][GREEN] == {"ping": False, "active": None, "reserved": None,
                                      "scheduled": None}
    assert result["problems"] == ["node %s: no answer to ping" % GREEN]


def test_all_expected_nodes_answering_is_healthy():
    inspection = summarize_inspection([BLUE], INSPECT_BLUE_ONLY)
    assert healthy_run(expected_nodes=[BLUE], inspection=inspection)["healthy"] is True


def test_nobody_answering_or_no_inspection_at_all_fails_every_node():
    for inspection in (summarize_inspection([BLUE, GREEN], INSPECT_NOBODY), None):
        result = healthy_run(expected_nodes=[BLUE, GREEN], inspection=inspection)
        assert result["problems"] == ["node %s: no answer to ping" % BLUE,
                                      "node %s: no answer to ping" % GREEN]


def test_node_facts_are_what_the_helper_may_ask():
    from ansible_collections.taskstack.celery.plugins.module_utils.celery_control import (
        INSPECT_FACTS,
    )

    assert set(NODE_FACTS) <= set(INSPECT_FACTS)


def replication_of(info):
    server = FakeRedis()
    server.sections["replication"] = info
    return evaluate(thresholds=Thresholds(), replication=collect_replication(server), **facts(server))


def test_a_primary_lists_its_replicas_and_one_not_online_is_a_problem():
    result = replication_of(INFO_REPLICATION_PRIMARY)
    assert result["replication"] == {"role": "primary", "offset": 10466, "replicas": [
        {"address": "127.0.0.1:6412", "state": "online", "behind_bytes": 14, "lag_seconds": 0},
        {"address": "127.0.0.1:6413", "state": "wait_bgsave", "behind_bytes": 10466, "lag_seconds": 1}]}
    assert result["problems"] == ["replica 127.0.0.1:6413 is wait_bgsave (want online)"]
    assert not result["healthy"]


def test_a_replica_whose_link_is_down_is_a_problem():
    result = replication_of(INFO_REPLICATION_REPLICA_DOWN)
    assert result["replication"] == {"role": "replica", "primary": "127.0.0.1:6411", "link": "down",
                                     "offset": 10466, "last_io_seconds": -1}
    assert result["problems"] == ["link to the primary 127.0.0.1:6411 is down (want up)"]


def test_a_single_server_is_a_primary_without_replicas_and_healthy():
    result = replication_of(INFO_REPLICATION_ALONE)
    assert result["replication"] == {"role": "primary", "offset": 0, "replicas": []}
    assert result["healthy"]


def test_replication_is_not_reported_unless_read():
    assert "replication" not in evaluate(thresholds=Thresholds(), **facts(FakeRedis()))
