"""The worker hosts' health command (plugins/module_utils/celery_health_command.py), on the
recorded replies of recorded_health.py: Redis and Celery stood in for, everything else real."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ansible_collections.taskstack.celery.plugins.module_utils import celery_health_command as cmd
from ansible_collections.taskstack.celery.tests.unit.plugins import recorded_health as rec

PASSWORD = "MonitorPassw0rdThatMustNotLeak"
BROKER_URL = "redis://celery:CeleryPassw0rdThatMustNotLeak@127.0.0.1:6380/0"
ENV_FILE = (
    '# Ansible managed\n'
    f'CELERY_BROKER_URL="{BROKER_URL}"\n'
    'DEMO_QUOTED="say \\"hi\\" \\\\o/"\n'
)


@pytest.fixture(name="config")
def config_fixture(tmp_path):
    (tmp_path / "demo.env").write_text(ENV_FILE)
    (tmp_path / "celery_demo.fact").write_text('{"live_colour": "blue"}\n')
    config = {
        "redis": {"host": "127.0.0.1", "port": 6380, "db": 0, "tls": False, "user": "monitor",
                  "password": PASSWORD},
        "queues": ["default"], "key_prefix": "", "pools": ["default"],
        "thresholds": {"max_queue_depth": 1000, "queue_max_depth": {}, "max_unacked": None,
                       "max_memory_ratio": 0.9, "max_aof_delayed_fsync": None,
                       "require_aof": True},
        "fact_file": str(tmp_path / "celery_demo.fact"), "env_file": str(tmp_path / "demo.env"),
        "run_as": "", "node_timeout": 1.0,
    }
    path = tmp_path / "demo-health.json"
    path.write_text(json.dumps(config))
    return path


@pytest.fixture(name="world")
def world_fixture(monkeypatch):
    """Redis answers from the recorded server; the node web1's pools answer as recorded."""
    world = {"redis": rec.FakeRedis(), "inspect": rec.INSPECT_BLUE_ONLY, "asked": []}
    monkeypatch.setattr(cmd.socket, "gethostname", lambda: "web1")

    def read_redis(config, keys):
        client = world["redis"]
        if world.get("error"):
            raise world["error"]
        return {"queues": cmd.health.collect_queues(client, config["queues"], keys),
                "unacked": cmd.health.collect_unacked(client, keys),
                "info": cmd.health.collect_info(client)}

    def ask_nodes(broker_url, config, nodes, options):
        world["asked"].append((broker_url, list(nodes)))
        world["options"] = dict(options)
        replies = world["inspect"]
        counts = {fact: replies[fact] for fact in ("active", "reserved", "scheduled")}
        return cmd.inspection_from_replies(replies["ping"] or {}, counts)

    monkeypatch.setattr(cmd, "read_redis", read_redis)
    monkeypatch.setattr(cmd, "ask_nodes", ask_nodes)
    return world


def run_main(config, capsys):
    rc = cmd.main([str(config)])
    out = capsys.readouterr().out
    assert out.count("\n") == 1, "exactly one line: %r" % out
    return rc, json.loads(out), out


def test_healthy_host_exits_0_with_one_line_of_json(config, world, capsys):
    rc, report, _out = run_main(config, capsys)
    assert rc == 0, report
    assert report["healthy"] is True and report["problems"] == []
    assert report["nodes"] == {rec.BLUE: {"ping": True, "active": 1, "reserved": 1, "scheduled": 1}}
    assert report["queues"]["default"]["depth"] == 5
    assert report["persistence"]["aof_last_write_status"] == "ok"
    assert report["colour"] == "blue"


def test_the_live_colour_from_the_local_fact_names_the_nodes(config, world, capsys, tmp_path):
    (tmp_path / "celery_demo.fact").write_text('{"live_colour": "green"}')
    rc, report, _out = run_main(config, capsys)
    assert world["asked"][0][1] == [rec.GREEN]
    assert rc == 1 and report["problems"] == ["node %s: no answer to ping" % rec.GREEN]


def test_a_stopped_pool_makes_the_host_unhealthy(config, world, capsys):
    world["inspect"] = rec.INSPECT_NOBODY
    rc, report, _out = run_main(config, capsys)
    assert rc == 1
    assert report["problems"] == ["node %s: no answer to ping" % rec.BLUE]


def test_a_queue_over_its_threshold_makes_the_host_unhealthy(config, world, capsys):
    data = json.loads(config.read_text())
    data["thresholds"]["queue_max_depth"] = {"default": 4}
    config.write_text(json.dumps(data))
    rc, report, _out = run_main(config, capsys)
    assert rc == 1 and report["problems"] == ["queue default: depth 5 > max 4"]


def test_a_failed_aof_write_makes_the_host_unhealthy(config, world, capsys):
    world["redis"] = rec.FakeRedis(persistence=dict(rec.INFO_PERSISTENCE_AOF,
                                                    aof_last_write_status="err"))
    rc, report, _out = run_main(config, capsys)
    assert rc == 1 and report["problems"] == ["redis aof_last_write_status: err (want ok)"]


def test_an_unreachable_redis_is_an_answer_and_no_secret_is_printed(config, world, capsys):
    world["error"] = ConnectionError("Error 111 connecting to 127.0.0.1:6380 as monitor:%s" % PASSWORD)
    rc, report, out = run_main(config, capsys)
    assert rc == 1 and report["problems"][0].startswith("cannot read Redis as monitor")
    assert PASSWORD not in out and "CeleryPassw0rd" not in out and cmd.MASK in out


def test_the_broker_url_comes_from_the_environment_file_not_the_command_line(config, world, capsys):
    run_main(config, capsys)
    assert world["asked"][0][0] == BROKER_URL


def test_an_unreadable_configuration_is_unhealthy_not_a_traceback(tmp_path, capsys):
    rc = cmd.main([str(tmp_path / "missing.json")])
    out = capsys.readouterr().out
    assert rc == 1 and json.loads(out)["problems"][0].startswith("health check failed: FileNotFoundError")


def test_the_environment_file_is_read_as_the_celery_role_writes_it():
    assert cmd.read_env_file(ENV_FILE) == {"CELERY_BROKER_URL": BROKER_URL,
                                           "DEMO_QUOTED": 'say "hi" \\o/'}


@pytest.mark.parametrize(("text", "colour"), [(None, "blue"), ("{}", "blue"), ("not json", "blue"),
                                              ('{"live_colour": "green"}', "green"),
                                              ('{"live_colour": "red"}', "blue")])
def test_live_colour_is_blue_unless_the_fact_says_green(text, colour):
    assert cmd.live_colour(text) == colour


def test_the_nodes_are_asked_with_the_transport_options_of_the_environment_file(config, world, capsys):
    """A sentinel:// broker URL is useless without master_name and the sentinels' password: the
    bare app gets what the celery role's loader gives the app."""
    env_file = Path(json.loads(config.read_text())["env_file"])
    env_file.write_text(env_file.read_text()
                        + 'TASKSTACK_CELERY_TRANSPORT_OPTIONS="{\\"master_name\\": \\"taskstack\\"}"\n')
    run_main(config, capsys)
    assert world["options"] == {"master_name": "taskstack"}


class FakeSentinel:
    def __init__(self, sentinels, sentinel_kwargs=None, **kwargs):
        self.sentinels, self.sentinel_kwargs = sentinels, sentinel_kwargs

    def discover_master(self, name):
        assert name == "taskstack" and self.sentinel_kwargs["password"] == "spw"
        return ("10.0.0.3", 6413)


def test_with_sentinels_redis_is_read_on_the_primary_they_name():
    login = {"host": "10.0.0.1", "port": 6411, "sentinels": [["127.0.0.1", 26411], ["127.0.0.1", 26412]],
             "master_name": "taskstack", "sentinel_password": "spw"}
    assert cmd.primary_address(login, FakeSentinel) == ("10.0.0.3", 6413)


def test_without_sentinels_redis_is_read_where_configured():
    assert cmd.primary_address({"host": "10.0.0.1", "port": 6411}, FakeSentinel) == ("10.0.0.1", 6411)
