"""The visibility-timeout check of the worker pools (plugins/filter/visibility_check.py)."""

from __future__ import annotations

import pytest

from ansible_collections.taskstack.celery.plugins.filter.visibility_check import (
    FilterModule,
    visibility_check,
)

# The worker role's defaults (celery_worker_*), as roles/celery_worker/vars/main.yml hands them over.
DEFAULTS = {"concurrency": 2, "pool": "prefork", "time_limit": 300, "prefetch_multiplier": 1,
            "autoscale": "", "extra_args": []}
POOLS = [{"name": "default", "queues": ["celery"]}]


def app_config(**changes):
    """What the celery role's probe prints for an app like tests/demo_app (acks_late, prefetch 1)."""
    config = {"main": "demo", "visibility_timeout": 3600, "task_acks_late": True,
              "worker_prefetch_multiplier": 1, "worker_disable_prefetch": False,
              "tasks": ["demo.tasks.add", "demo.tasks.work"],
              "task_time_limits": {"demo.tasks.add": None, "demo.tasks.work": None}}
    config.update(changes)
    return config


def old_check(config, pools, defaults):
    """The check this filter replaces (roles/celery_worker/tasks/configure.yml before it): the
    pools' --time-limit alone against the visibility timeout."""
    return max(int(pool.get("time_limit", defaults["time_limit"])) for pool in pools) < int(config["visibility_timeout"])


def test_the_defaults_pass_and_report_their_bounds():
    result = visibility_check(app_config(), POOLS, DEFAULTS)
    assert result["checked"] is True
    assert result["problems"] == []
    assert result["pools"] == [{
        "name": "default", "time_limit": 300, "longest_task": None, "processes": 2, "prefetch": 2,
        "bound": 300, "eta_bound": None, "longest_safe_eta": 2999,
    }]


def test_a_task_whose_own_time_limit_outlasts_the_visibility_timeout_is_refused():
    # @app.task(time_limit=4000): the worker runs it for up to 4000 s whatever --time-limit says.
    config = app_config(task_time_limits={"demo.tasks.add": None, "demo.tasks.report": 4000})
    assert old_check(config, POOLS, DEFAULTS), "the old check let this app through"
    problems = visibility_check(config, POOLS, DEFAULTS)["problems"]
    assert len(problems) == 1
    assert "Task 'demo.tasks.report' has its own time_limit of 4000 s" in problems[0]
    assert "visibility_timeout of 3600 s" in problems[0]


def test_a_task_limit_set_by_task_annotations_counts_like_its_own():
    # The probe reads task.time_limit after Celery applied task_annotations: the same field.
    config = app_config(visibility_timeout=600, task_time_limits={"demo.tasks.work": 700})
    assert old_check(config, POOLS, DEFAULTS)
    assert "Task 'demo.tasks.work' has its own time_limit of 700 s" in visibility_check(config, POOLS, DEFAULTS)["problems"][0]


def test_a_task_limit_below_the_pool_limit_does_not_lower_the_pool_bound():
    config = app_config(task_time_limits={"demo.tasks.add": 10, "demo.tasks.work": None})
    assert visibility_check(config, POOLS, DEFAULTS)["pools"][0]["time_limit"] == 300


def test_a_pool_time_limit_past_the_timeout_names_its_variable():
    problems = visibility_check(app_config(), POOLS, {**DEFAULTS, "time_limit": 4000})["problems"]
    assert problems == [p for p in problems if "celery_worker_time_limit is 4000 s" in p]
    assert len(problems) == 1
    pools = [{"name": "slow", "queues": ["slow"], "time_limit": 3600}]
    assert "celery_worker_pools[slow].time_limit is 3600 s" in visibility_check(app_config(), pools, DEFAULTS)["problems"][0]


def test_messages_waiting_behind_the_prefetch_are_counted():
    # 4 x 2 = 8 messages reserved, 2 run at once: the last waits 3 rounds of 1000 s, runs 1000 s.
    defaults = {**DEFAULTS, "prefetch_multiplier": 4, "time_limit": 1000}
    assert old_check(app_config(), POOLS, defaults)
    result = visibility_check(app_config(), POOLS, defaults)
    assert result["pools"][0]["bound"] == 4000
    assert len(result["problems"]) == 1
    problem = result["problems"][0]
    for part in ("Pool 'default'", "ceil(8 / 2) x 1000 s = 4000 s", "celery_worker_prefetch_multiplier 4",
                 "celery_worker_concurrency 2", "celery_worker_time_limit is 1000 s", "visibility_timeout of 3600 s"):
        assert part in problem, (part, problem)


def test_the_bound_uses_the_longest_task_of_the_pool_and_names_it():
    config = app_config(task_time_limits={"demo.tasks.add": None, "demo.tasks.export": 1200})
    result = visibility_check(config, POOLS, {**DEFAULTS, "prefetch_multiplier": 3})
    assert result["pools"][0]["bound"] == 3600
    assert "task 'demo.tasks.export' has its own time_limit of 1200 s" in result["problems"][0]


def test_prefetch_one_with_a_limit_just_below_the_timeout_passes():
    # prefetch 1 with acks_late: a process is idle whenever a message arrives.
    assert visibility_check(app_config(), POOLS, {**DEFAULTS, "time_limit": 3599, "concurrency": 8})["problems"] == []


def test_the_solo_pool_runs_one_task_whatever_its_concurrency():
    pools = [{"name": "solo", "queues": ["q"], "pool": "solo", "concurrency": 4}]
    result = visibility_check(app_config(), pools, {**DEFAULTS, "time_limit": 1000})
    assert result["pools"][0]["prefetch"] == 4
    assert result["pools"][0]["processes"] == 1
    assert result["pools"][0]["bound"] == 4000
    assert "celery_worker_pools[solo].concurrency 4" in result["problems"][0]
    assert "does not enforce hard time limits" in result["notes"][0]


def test_autoscale_reserves_for_its_maximum_and_runs_that_many():
    pools = [{"name": "io", "queues": ["q"], "autoscale": "8,2", "prefetch_multiplier": 2}]
    report = visibility_check(app_config(), pools, DEFAULTS)["pools"][0]
    assert (report["prefetch"], report["processes"], report["bound"]) == (16, 8, 600)


def test_disable_prefetch_holds_one_message_per_process():
    defaults = {**DEFAULTS, "prefetch_multiplier": 8, "time_limit": 1000}
    assert visibility_check(app_config(), POOLS, defaults)["problems"]
    for config, args in ((app_config(worker_disable_prefetch=True), []), (app_config(), ["--disable-prefetch"])):
        result = visibility_check(config, POOLS, {**defaults, "extra_args": args})
        assert result["problems"] == []
        assert result["pools"][0]["bound"] == 1000


def test_an_unlimited_prefetch_is_refused():
    pools = [{"name": "default", "queues": ["q"], "prefetch_multiplier": 0}]
    problems = visibility_check(app_config(worker_prefetch_multiplier=0), pools, DEFAULTS)["problems"]
    assert "the prefetch multiplier is 0" in problems[0]
    assert "celery_worker_pools[default].prefetch_multiplier" in problems[0]
    # 0 on the command line falls back to the app's setting, as `celery worker` does.
    assert visibility_check(app_config(worker_prefetch_multiplier=2), pools, DEFAULTS)["pools"][0]["prefetch"] == 4
    # -e celery_worker_prefetch_multiplier=0 arrives as the string "0": still no limit.
    assert visibility_check(app_config(worker_prefetch_multiplier=0), POOLS,
                            {**DEFAULTS, "prefetch_multiplier": "0"})["problems"]


def test_a_countdown_past_what_the_pool_leaves_is_refused():
    result = visibility_check(app_config(), POOLS, DEFAULTS, 3000)
    assert result["pools"][0]["eta_bound"] == 3600
    problem = result["problems"][0]
    for part in ("celery_worker_max_eta_seconds is 3000 s", "3000 s + 300 s + 300 s = 3600 s",
                 "The longest countdown this pool can take is 2999 s"):
        assert part in problem, (part, problem)
    assert visibility_check(app_config(), POOLS, DEFAULTS, 2999)["problems"] == []


def test_no_countdown_means_no_eta_bound():
    assert visibility_check(app_config(), POOLS, DEFAULTS, 0)["pools"][0]["eta_bound"] is None


def test_values_given_as_strings_are_numbers():
    # -e celery_worker_time_limit=4000 reaches the role as a string.
    result = visibility_check(app_config(visibility_timeout="3600"), POOLS,
                              {**DEFAULTS, "time_limit": "4000", "concurrency": "2"}, "10")
    assert "celery_worker_time_limit is 4000 s" in result["problems"][0]


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        (None, "the celery role's configure step did not run"),
        ({"unavailable": "the virtualenv /opt/celery/venv does not exist yet"}, "does not exist yet"),
        ({}, "holds no visibility_timeout"),
        ({"visibility_timeout": 3600, "tasks": []}, "holds no task_time_limits"),
    ],
    ids=["not-set", "no-virtualenv", "empty", "older-probe"],
)
def test_an_app_that_was_not_probed_is_not_checked_and_says_why(config, reason):
    result = visibility_check(config, POOLS, {**DEFAULTS, "time_limit": 99999})
    assert result["checked"] is False
    assert reason in result["reason"]
    assert result["problems"] == []


def test_the_filter_is_registered():
    assert FilterModule().filters()["visibility_check"] is visibility_check
