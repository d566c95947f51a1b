"""celery_consumer changes only what differs, proves it, and sends nothing in check mode."""

from __future__ import annotations

import json

import pytest

from ansible.module_utils.testing import patch_module_args
from ansible_collections.taskstack.celery.plugins.module_utils import celery_control
from ansible_collections.taskstack.celery.plugins.modules import celery_consumer

BLUE = "default-blue@web1"


@pytest.fixture
def target(app_target):
    return {**app_target(), "node": BLUE}


class FakeWorker:
    """Answers like one Celery worker: active_queues, add/cancel_consumer, then the re-read."""

    def __init__(self, queues, answers=True, applies=True, reply="ok"):
        self.queues, self.answers, self.applies, self.reply = list(queues), answers, applies, reply
        self.requests = []

    def _queues_reply(self):
        return {BLUE: [{"name": q} for q in self.queues]} if self.answers else None

    def run(self, target, request, runner=None):
        self.requests.append(request)
        document = {"ok": True, "inspect": {}, "control": [], "after": None}
        for fact in request["inspect"]:
            document["inspect"][fact] = self._queues_reply()
        for item in request["control"]:
            if self.applies:
                if item["command"] == "add_consumer":
                    self.queues.append(item["queue"])
                else:
                    self.queues.remove(item["queue"])
            reply = {self.reply: "done"} if self.reply else None
            document["control"].append(dict(item, replies=[{BLUE: reply}] if reply else None))
        if request["await_queues"]:
            document["after"] = {"active_queues": self._queues_reply(), "settled": self.applies}
        return document

    @property
    def commands(self):
        return [(c["command"], c["queue"]) for r in self.requests for c in r["control"]]


@pytest.fixture
def worker(monkeypatch):
    holder = {}

    def install(*args, **kwargs):
        holder["worker"] = FakeWorker(*args, **kwargs)
        monkeypatch.setattr(celery_control.HelperTarget, "run",
                            lambda self, request, runner=None: holder["worker"].run(self, request))
        return holder["worker"]

    return install


def run_module(args, capsys, check_mode=False):
    if check_mode:
        args = dict(args, _ansible_check_mode=True)
    with patch_module_args(args), pytest.raises(SystemExit):
        celery_consumer.main()
    return json.loads(capsys.readouterr().out)


def test_cancel_sends_only_for_consumed_queues_and_reports_them(target, worker, capsys):
    fake = worker(["default", "mail"])
    result = run_module(dict(target, queues=["mail", "other"], state="absent"), capsys)
    assert result["changed"] is True
    assert fake.commands == [("cancel_consumer", "mail")]
    assert result["cancelled"] == ["mail"] and result["added"] == []
    assert (result["queues_before"], result["queues_after"]) == (["default", "mail"], ["default"])
    assert fake.requests[1]["await_queues"]["absent"] == {BLUE: ["mail"]}


def test_second_run_changes_nothing(target, worker, capsys):
    fake = worker(["default"])
    result = run_module(dict(target, queues=["default"], state="present"), capsys)
    assert result["changed"] is False
    assert fake.commands == [] and len(fake.requests) == 1


def test_check_mode_reports_the_change_and_sends_no_command(target, worker, capsys):
    fake = worker(["default"])
    result = run_module(dict(target, queues=["default", "mail"], state="present"), capsys,
                        check_mode=True)
    assert result["changed"] is True
    assert result["added"] == ["mail"] and result["queues_after"] == ["default", "mail"]
    assert fake.commands == [] and fake.queues == ["default"]


def test_silent_node_fails_and_nothing_is_sent(target, worker, capsys):
    fake = worker(["default"], answers=False)
    result = run_module(dict(target, queues=["default"], state="absent"), capsys)
    assert result["failed"] is True and result["reason"] == "no_reply"
    assert "must match exactly" in result["msg"]
    assert fake.commands == [] and result["changed"] is False


def test_change_that_never_shows_fails_and_says_what_was_sent(target, worker, capsys):
    worker(["default", "mail"], applies=False)
    result = run_module(dict(target, queues=["default", "mail"], state="absent"), capsys)
    assert result["failed"] is True and result["reason"] == "not_applied"
    assert result["cancelled"] == ["default", "mail"]
    assert result["queues_after"] == ["default", "mail"]


def test_error_reply_from_the_worker_fails(target, worker, capsys):
    worker([], reply="error")
    result = run_module(dict(target, queues=["mail"], state="present"), capsys)
    assert result["failed"] is True and "add_consumer mail: done" in result["msg"]


def test_lost_reply_but_visible_change_succeeds_with_a_warning(target, worker, capsys, monkeypatch):
    # Where warnings go depends on whether controller code was imported in this process, so
    # record the call itself.
    warned = []
    monkeypatch.setattr(celery_consumer.AnsibleModule, "warn", lambda self, msg: warned.append(msg))
    worker(["mail"], reply=None)
    result = run_module(dict(target, queues=["mail"], state="absent"), capsys)
    assert result.get("failed") is not True
    assert result["queues_after"] == []
    assert any("did not reply to cancel_consumer mail" in w for w in warned)
