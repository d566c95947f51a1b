"""celery_adopt: what a runbook-made stack looks like in systemctl, ps, ss and CLIENT LIST text,
and the plan made from it. The text in recorded_adopt/ has the format Debian 12 (systemd 252,
iproute2 6.1, procps, Redis 7.0.15) prints, for a host set up the way the runbook describes."""

from __future__ import annotations

from pathlib import Path

import pytest

from ansible_collections.taskstack.celery.plugins.module_utils.celery_adopt import (
    AdoptError,
    anonymous_clients,
    attribute_unseen_holders,
    build_plan,
    celery_nodename,
    exec_start_argvs,
    find_celery_units,
    keyspace_keys,
    mask_url_passwords,
    nodename_from_process,
    parse_celery_command,
    parse_client_list,
    parse_ps,
    parse_ss_listeners,
    parse_systemctl_show,
    port_holders,
    resp_command,
    resp_parse,
    unit_from_cgroup,
    venv_of_program,
)

HOST = "web1.example.com"
RECORDED = Path(__file__).parent / "recorded_adopt"

SHOW = (RECORDED / "systemctl_show.txt").read_text()

SS = (RECORDED / "ss_ltnp.txt").read_text()

PS = (RECORDED / "ps.txt").read_text()

CLIENT_LIST = (RECORDED / "client_list.txt").read_text()

OWN = ["celery-qventory-worker@*.service", "celery-qventory-beat.service", "celery-qventory-flower.service"]


def found():
    return {u["unit"]: u for u in find_celery_units(parse_systemctl_show(SHOW), "qventory.celery:app", HOST, OWN)}


def test_show_output_becomes_one_dict_per_unit():
    units = parse_systemctl_show(SHOW)
    assert [u["Id"] for u in units][:2] == ["celery-qventory.service", "flower.service"]
    assert units[0]["MainPID"] == "812" and units[0]["User"] == ""


def test_a_show_line_without_equals_is_an_error_not_a_guess():
    with pytest.raises(AdoptError):
        parse_systemctl_show("Id=x.service\nthis is not systemctl show\n")


def test_exec_start_argv_is_read_from_the_show_format():
    argvs = exec_start_argvs(parse_systemctl_show(SHOW)[0]["ExecStart"])
    assert argvs == [["/opt/qventory/venv/bin/celery", "-A", "qventory", "worker", "--concurrency=4", "-B",
                      "--loglevel", "INFO"]]


def test_the_runbook_worker_flower_and_a_disabled_beat_are_found_for_the_same_app():
    units = found()
    assert sorted(units) == ["celery-qventory.service", "celerybeat-old.service", "flower.service"]
    worker = units["celery-qventory.service"]
    assert worker["kind"] == "worker" and worker["embedded_beat"] is True
    assert worker["active"] and worker["enabled"] and worker["user"] == "root"
    assert worker["nodename"] == "celery@" + HOST
    assert units["celerybeat-old.service"]["kind"] == "beat" and not units["celerybeat-old.service"]["active"]


def test_an_old_worker_is_asked_with_its_own_venv_directory_and_environment_file():
    helper = found()["celery-qventory.service"]["helper"]
    assert helper == {"venv": "/opt/qventory/venv", "app_dir": "/srv/qventory",
                      "environment_file": "/etc/qventory/celery.env"}


@pytest.mark.parametrize("program, venv", [
    ("/opt/app/venv/bin/celery", "/opt/app/venv"),
    ("/opt/app/venv/bin/python3", "/opt/app/venv"),
    ("celery", None),
    ("/usr/local/celery", None),
])
def test_the_venv_is_the_directory_above_the_programs_bin(program, venv):
    assert venv_of_program(program) == venv


def test_the_collections_own_units_and_another_apps_worker_are_not_found():
    units = found()
    assert "celery-qventory-worker@default-blue.service" not in units
    assert "celery-billing.service" not in units
    # Without the exclusion, the collection's worker would be found: the filter is what keeps it out.
    everything = find_celery_units(parse_systemctl_show(SHOW), "qventory", HOST)
    assert "celery-qventory-worker@default-blue.service" in {u["unit"] for u in everything}


def test_flower_port_address_and_the_broker_password_on_its_command_line():
    flower = found()["flower.service"]
    assert (flower["kind"], flower["port"], flower["address"]) == ("flower", 5555, "0.0.0.0")
    assert flower["broker_on_command_line"] is True
    assert "hunter2" not in flower["command"] and "redis://:********@localhost" in flower["command"]


@pytest.mark.parametrize("argv, kind, app, beat", [
    (["celery", "-A", "proj", "worker"], "worker", "proj", False),
    (["/v/bin/celery", "--app=proj.celery:app", "worker", "-B"], "worker", "proj.celery:app", True),
    (["/v/bin/celery", "-Aproj", "worker", "--beat"], "worker", "proj", True),
    (["celery", "worker", "-A", "proj", "-BE"], "worker", "proj", True),  # celery 4 order
    (["/usr/bin/python3", "-u", "-m", "celery", "-A", "proj", "beat"], "beat", "proj", False),
    (["/usr/bin/env", "PYTHONPATH=/srv", "celery", "-A", "proj", "flower"], "flower", "proj", False),
    (["/v/bin/flower", "-A", "proj", "--port=5556"], "flower", "proj", False),
    (["celery", "worker"], "worker", None, False),
])
def test_celery_command_lines(argv, kind, app, beat):
    command = parse_celery_command(argv)
    assert (command.kind, command.app, command.embedded_beat) == (kind, app, beat)


@pytest.mark.parametrize("argv", [
    ["celery", "-A", "proj", "inspect", "ping"],
    ["celery", "-A", "proj", "multi", "start", "w1"],
    ["/usr/bin/python3", "-m", "demo.producer"],
    ["/usr/sbin/sshd", "-D"],
    ["/usr/bin/python3", "manage.py", "worker"],
])
def test_other_commands_are_not_workers(argv):
    assert parse_celery_command(argv) is None


def test_the_app_option_value_is_never_taken_for_the_subcommand():
    # "-A worker" is an app called worker; the subcommand is beat.
    assert parse_celery_command(["celery", "-A", "worker", "beat"]).kind == "beat"


@pytest.mark.parametrize("option, expected", [
    (None, "celery@web1.example.com"),
    ("w1@%h", "w1@web1.example.com"),
    ("w1@%n", "w1@web1"),
    ("w1@%n.%d", "w1@web1.example.com"),
    ("w1", "celery@w1"),
    ("x%%y@%h", "x%y@web1.example.com"),
])
def test_nodenames_follow_celerys_rules(option, expected):
    assert celery_nodename(option, HOST) == expected


def test_a_running_workers_nodename_comes_from_its_process():
    assert nodename_from_process("/v/bin/python /v/bin/celery -A proj worker -n old@%h", HOST) == "old@" + HOST
    assert nodename_from_process("/v/bin/python /v/bin/celery -A proj flower", HOST) is None


def test_ss_listeners_with_pids():
    listeners = parse_ss_listeners(SS)
    assert {(x["address"], x["port"]) for x in listeners} >= {("0.0.0.0", 5555), ("::", 5555), ("::1", 6379)}
    assert [x["pids"] for x in listeners if x["port"] == 5555] == [[901], [901]]


def test_cgroup_v1_and_v2_name_the_unit():
    assert unit_from_cgroup("0::/system.slice/flower.service\n") == "flower.service"
    assert unit_from_cgroup("12:cpu:/docker/abc\n1:name=systemd:/system.slice/redis-server.service\n") == \
        "redis-server.service"
    assert unit_from_cgroup("0::/user.slice/user-0.slice/session-3.scope\n") == "session-3.scope"
    assert unit_from_cgroup("0::/\n") is None


def test_ps_lines():
    processes = parse_ps(PS)
    assert processes[813]["ppid"] == 812 and processes[901]["user"] == "root"
    assert processes[300]["args"].startswith("sshd: ")


def holders(units_of_pids=None):
    return port_holders(parse_ss_listeners(SS), {"flower": 5555, "redis": 6379},
                        units_of_pids or {901: "flower.service", 455: "redis-server.service"}, parse_ps(PS))


def test_port_holders_are_one_per_unit_and_mask_passwords():
    found_holders = holders()
    flower = [h for h in found_holders if h["service"] == "flower"]
    assert len(flower) == 1 and flower[0]["unit"] == "flower.service" and flower[0]["user"] == "root"
    assert flower[0]["address"] == "0.0.0.0, ::"
    assert "hunter2" not in flower[0]["command"]


def plan(adopt, units=None, found_holders=None, kept=()):
    return build_plan(list((found() if units is None else units).values()), found_holders if found_holders is not None else holders(),
                      adopt, list(kept), {"flower": ["celery-qventory-flower.service"],
                                          "redis": ["redis-server.service"]}, "/etc/systemd/system/taskstack-adopted")


def test_a_running_unit_not_named_is_refused_by_name():
    outcome = plan(["flower.service"])
    assert outcome["unnamed"] == ["celery-qventory.service"]
    assert any("celery-qventory.service" in line and "not in celery_adopt_units" in line for line in outcome["plan"])


def test_an_inactive_disabled_unit_is_left_alone_without_refusing():
    outcome = plan(["celery-qventory.service", "flower.service"])
    assert outcome["unnamed"] == [] and outcome["conflicts"] == []
    assert any(line.startswith("celerybeat-old.service") and "left alone" in line for line in outcome["plan"])


def test_the_plan_says_drain_then_stop_for_the_worker_and_its_beat():
    lines = plan(["celery-qventory.service", "flower.service"])["plan"]
    worker = next(line for line in lines if line.startswith("celery-qventory.service"))
    assert "drain celery@web1.example.com" in worker and "embedded beat" in worker
    assert "move /etc/systemd/system/celery-qventory.service (and its drop-ins) to /etc/systemd/system/taskstack-adopted" in worker
    assert "runs as root" in worker
    assert any("broker URL on its command line" in line for line in lines)
    assert any(line.startswith("port 5555 (flower) is held by flower.service") and "freed" in line for line in lines)


def test_before_a_broker_restart_the_plan_drains_the_old_worker_first():
    lines = build_plan(list(found().values()), holders(), ["celery-qventory.service", "flower.service"], [],
                       {"flower": ["celery-qventory-flower.service"]}, "/etc/systemd/system/taskstack-adopted",
                       broker_restart=True)["plan"]
    worker = next(line for line in lines if line.startswith("celery-qventory.service"))
    assert "drain celery@web1.example.com (stop consuming, wait for its tasks) before Redis restarts" in worker
    assert "once the collection's workers consume" not in worker
    without = next(line for line in plan(["celery-qventory.service", "flower.service"])["plan"]
                   if line.startswith("celery-qventory.service"))
    assert "before Redis restarts" not in without and "once the collection's workers consume" in without


def test_a_port_held_by_a_unit_not_taken_over_is_a_conflict():
    outcome = plan(["celery-qventory.service"])
    assert [h["unit"] for h in outcome["conflicts"]] == ["flower.service"]
    # The collection's own units on their ports are no conflict (redis-server on 6379 here).
    assert all(h["service"] == "flower" for h in outcome["conflicts"])


def test_a_port_held_outside_any_unit_is_a_conflict_naming_the_pid():
    outcome = plan(["celery-qventory.service", "flower.service"], found_holders=holders({901: None, 455: None}))
    assert {h["pid"] for h in outcome["conflicts"]} == {901, 455}
    assert any("pid 901" in line for line in outcome["plan"])


def test_a_second_run_finds_the_units_kept_aside():
    outcome = plan(["celery-qventory.service", "flower.service"], units={}, found_holders=[],
                   kept=["celery-qventory.service", "flower.service"])
    assert outcome["unnamed"] == [] and outcome["conflicts"] == []
    assert all("taken over by an earlier run" in line for line in outcome["plan"])


def test_resp_round_trip_of_the_questions_and_replies():
    assert resp_command("CLIENT", "ID") == b"*2\r\n$6\r\nCLIENT\r\n$2\r\nID\r\n"
    data = b"+PONG\r\n:9\r\n$14\r\ndb0:keys=3,x=1\r\n-NOAUTH Authentication required.\r\n*2\r\n$1\r\na\r\n$-1\r\n"
    values = []
    while data:
        value, data = resp_parse(data)
        values.append(value)
    assert values[:3] == ["PONG", 9, "db0:keys=3,x=1"]
    assert isinstance(values[3], Exception) and "NOAUTH" in str(values[3])
    assert values[4] == ["a", None]


def test_an_incomplete_reply_asks_for_more():
    with pytest.raises(EOFError):
        resp_parse(b"$10\r\nabc")


def test_clients_connected_without_credentials_except_the_asking_one():
    clients = anonymous_clients(parse_client_list(CLIENT_LIST), own_id="9")
    assert [c["addr"] for c in clients] == ["127.0.0.1:40412"]
    assert clients[0]["cmd"] == "brpop"


def test_keyspace_counts():
    assert keyspace_keys("# Keyspace\r\ndb0:keys=12,expires=0,avg_ttl=0\r\ndb2:keys=3,expires=1,avg_ttl=5\r\n") == \
        {"db0": 12, "db2": 3}


def test_url_passwords_are_masked_wherever_they_are():
    assert mask_url_passwords("--broker=redis://u:p@h:1/0 x rediss://:pw@h/1") == \
        "--broker=redis://u:********@h:1/0 x rediss://:********@h/1"


def test_a_packaged_unit_file_is_left_where_it_is():
    units = found()
    units["flower.service"] = dict(units["flower.service"], fragment_path="/lib/systemd/system/flower.service")
    lines = plan(["celery-qventory.service", "flower.service"], units=units)["plan"]
    flower = next(line for line in lines if line.startswith("flower.service (celery flower"))
    assert "leave /lib/systemd/system/flower.service in place" in flower and "move" not in flower


def test_a_listener_ss_cannot_name_is_the_collections_active_unit_or_a_conflict():
    unseen = parse_ss_listeners("LISTEN 0 511 127.0.0.1:6384 0.0.0.0:*\n")
    holders = port_holders(unseen, {"redis": 6384}, {}, {})
    assert holders[0]["pid"] is None and holders[0]["unit"] is None
    attribute_unseen_holders(holders, {"redis": []})
    assert plan([], units={}, found_holders=holders)["conflicts"] == holders
    attribute_unseen_holders(holders, {"redis": ["redis-server.service"]})
    assert holders[0]["unit"] == "redis-server.service" and holders[0]["assumed"]
    assert plan([], units={}, found_holders=holders)["conflicts"] == []
