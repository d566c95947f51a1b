"""The names the roles, the deploy and the tests share (plugins/filter/celery_names.py)."""

from __future__ import annotations

import pytest

from ansible_collections.taskstack.celery.plugins.filter import celery_names as names


def test_a_pool_instance_unit_and_its_nodename_name_the_same_pool_and_colour():
    assert names.worker_unit("demo", "default", "blue") == "celery-demo-worker@default-blue.service"
    assert names.worker_nodename("default", "blue", "web1") == "default-blue@web1"
    assert names.worker_dropin_dir("demo", "slow", "green") == (
        "/etc/systemd/system/celery-demo-worker@slow-green.service.d"
    )


def test_without_a_pool_the_worker_unit_is_the_template():
    assert names.worker_unit("demo") == "celery-demo-worker@.service"
    assert names.worker_dropin_dir("demo") == "/etc/systemd/system/celery-demo-worker@.service.d"


@pytest.mark.parametrize("colour", ["red", "", "Blue"])
def test_an_unknown_colour_is_refused(colour):
    with pytest.raises(ValueError, match="colour must be one of blue, green"):
        names.worker_unit("demo", "default", colour)


def test_the_health_command_and_its_configuration_are_named_by_the_app():
    assert names.health_command("demo") == "/usr/local/bin/celery-health-demo"
    assert names.health_config_file("demo", "/etc/celery/") == "/etc/celery/demo-health.json"


def test_a_pool_instance_needs_its_colour():
    with pytest.raises(ValueError, match="needs its colour"):
        names.worker_unit("demo", "default")


@pytest.mark.parametrize(
    ("celery_app", "short"),
    [("demo.app", "demo"), ("proj.celery:app", "proj"), ("proj", "proj"), ("my proj", "my-proj")],
)
def test_the_short_app_name_is_the_module_before_any_dot_or_colon(celery_app, short):
    assert names.app_short_name(celery_app) == short


def test_the_fact_and_lock_names_are_safe_for_files():
    assert names.local_fact_name("my-app") == "celery_my_app"
    assert names.local_fact_file("my-app") == "/etc/ansible/facts.d/celery_my_app.fact"
    assert names.deploy_lock_path("proj.celery:app") == "/run/lock/taskstack-celery-deploy-proj.celery_app"
    assert names.deploy_safety_net("proj") == "celery-proj-deploy-safety-net"
    assert names.env_file("demo", "/etc/celery/") == "/etc/celery/demo.env"


def test_the_other_colour_of_blue_is_green_and_back():
    assert names.other_colour("blue") == "green"
    assert names.other_colour("green") == "blue"


def test_every_function_is_registered_as_a_filter():
    filters = names.FilterModule().filters()
    assert filters["worker_unit"]("demo", "default", "blue") == "celery-demo-worker@default-blue.service"
    assert set(filters) >= {"beat_unit", "flower_unit", "worker_nodename", "deploy_lock_path", "deploy_safety_net"}


def test_the_units_of_several_pools_keep_the_pools_order():
    assert names.worker_units("demo", ["slow", "default"], "green") == [
        "celery-demo-worker@slow-green.service",
        "celery-demo-worker@default-green.service",
    ]


@pytest.mark.parametrize(
    ("ansible_local", "colour"),
    [(None, "blue"), ({}, "blue"), ({"celery_demo": {}}, "blue"), ({"celery_demo": {"live_colour": "green\n"}}, "green"),
     ({"celery_other": {"live_colour": "green"}}, "blue")],
)
def test_the_live_colour_is_read_from_the_apps_local_fact_and_is_blue_before_it_exists(ansible_local, colour):
    assert names.live_colour(ansible_local, "demo") == colour


def test_a_live_colour_fact_naming_no_colour_is_refused():
    with pytest.raises(ValueError, match="celery_demo.fact names the live colour 'red'"):
        names.live_colour({"celery_demo": {"live_colour": "red"}}, "demo")


def test_blue_runs_from_the_first_path_and_green_from_the_second():
    assert names.colour_path("blue", "/srv/app", "/srv/app-green") == "/srv/app"
    assert names.colour_path("green", "/srv/app", "/srv/app-green") == "/srv/app-green"
    with pytest.raises(ValueError, match="colour must be one of"):
        names.colour_path("", "/srv/app", "/srv/app-green")


def test_every_unit_has_its_drop_in_directory_beside_it():
    assert names.dropin_dir(names.beat_unit("demo")) == "/etc/systemd/system/celery-demo-beat.service.d"
    assert names.worker_dropin_dir("demo") == names.dropin_dir(names.worker_unit("demo"))


def test_a_temporary_pool_is_never_matched_by_the_clean_up_of_configured_pools():
    # site.yml's clean-up finds /etc/systemd/system/<worker_unit('*', live colour)>.d
    import fnmatch

    unit = names.temporary_worker_unit("demo", "backlog")
    assert unit == "celery-demo-worker@backlog-temporary.service"
    dropins = names.temporary_worker_dropin_dir("demo", "backlog")
    assert not dropins.startswith(names.SYSTEMD_DIR + "/")
    for colour in names.COLOURS:
        assert not fnmatch.fnmatch(unit, names.worker_unit("demo", "*", colour))
    assert names.temporary_worker_marker("demo", "backlog") == dropins + "/" + names.TEMPORARY_MARKER
    assert names.temporary_worker_nodename("backlog", "%%h") == "backlog-temporary@%%h"
