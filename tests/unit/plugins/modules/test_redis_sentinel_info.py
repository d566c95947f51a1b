"""redis_sentinel_info: a sentinel's replies, as Redis 7.0's sentinel sends them, made a view."""

from __future__ import annotations

import pytest

from ansible_collections.taskstack.celery.plugins.module_utils.redis_client import ResponseError
from ansible_collections.taskstack.celery.plugins.modules.redis_sentinel_info import (
    pairs,
    read_sentinel,
)

MASTER = ["name", "taskstack", "ip", "127.0.0.1", "port", "6411", "runid", "4e1c", "flags", "master",
          "num-slaves", "2", "num-other-sentinels", "2", "quorum", "2", "failover-timeout", "60000"]
REPLICA_B = ["name", "127.0.0.1:6412", "ip", "127.0.0.1", "port", "6412", "flags", "slave",
             "master-link-status", "ok", "slave-repl-offset", "10466"]
REPLICA_C_DOWN = ["name", "127.0.0.1:6413", "ip", "127.0.0.1", "port", "6413", "flags", "s_down,slave,disconnected",
                  "master-link-status", "err", "slave-repl-offset", "9000"]
OTHER = ["name", "a1b2", "ip", "127.0.0.1", "port", "26412", "flags", "sentinel"]
CKQUORUM_OK = "OK 3 usable Sentinels. Quorum and failover authorization can be reached"


class FakeSentinel:
    def __init__(self, master=None, replicas=(REPLICA_B,), others=(OTHER, OTHER), ckquorum=CKQUORUM_OK):
        self.replies = {"MASTER": master or MASTER, "REPLICAS": list(replicas), "SENTINELS": list(others)}
        self.ckquorum = ckquorum
        self.sent = []

    def execute_command(self, *args):
        self.sent.append(args)
        assert args[0] == "SENTINEL" and args[2] == "taskstack"
        if args[1] == "CKQUORUM":
            if isinstance(self.ckquorum, Exception):
                raise self.ckquorum
            return self.ckquorum
        return self.replies[args[1]]


def test_a_healthy_group_names_the_primary_its_replicas_and_the_sentinels():
    view = read_sentinel(FakeSentinel(), "taskstack")
    assert view == {"healthy": True, "problems": [],
                    "primary": {"address": "127.0.0.1:6411", "flags": "master"},
                    "replicas": [{"address": "127.0.0.1:6412", "flags": "slave", "link": "ok", "offset": 10466}],
                    "sentinels": 3, "quorum": 2, "ckquorum": CKQUORUM_OK}


def test_a_replica_down_and_a_primary_down_are_problems():
    master = MASTER[:9] + ["s_down,o_down,master"] + MASTER[10:]
    view = read_sentinel(FakeSentinel(master=master, replicas=(REPLICA_B, REPLICA_C_DOWN)), "taskstack")
    assert view["problems"] == ["primary 127.0.0.1:6411 is s_down and o_down",
                                "replica 127.0.0.1:6413 is s_down and disconnected"]
    assert not view["healthy"]


def test_no_quorum_is_a_problem_not_a_failure():
    refused = ResponseError("NOQUORUM 1 usable Sentinels. Not enough available Sentinels to reach the "
                            "specified quorum for this master")
    view = read_sentinel(FakeSentinel(others=(), ckquorum=refused), "taskstack")
    assert view["sentinels"] == 1
    assert view["problems"] == ["no failover possible: " + str(refused)]


def test_only_sentinel_reads_are_sent():
    fake = FakeSentinel()
    read_sentinel(fake, "taskstack")
    assert [args[1] for args in fake.sent] == ["MASTER", "REPLICAS", "SENTINELS", "CKQUORUM"]


@pytest.mark.parametrize("reply", [[], ["flags", "master"]])
def test_pairs(reply):
    assert pairs(reply) == dict(zip(reply[0::2], reply[1::2]))
