"""The purge helper that runs in the app's venv (plugins/module_utils/celery_queue_program.py),
against a fake Redis that keeps lists as kombu uses them (LPUSH new, consume from the right)."""

from __future__ import annotations

import pytest

from ansible_collections.taskstack.celery.plugins.module_utils import celery_queue_program as program


class WatchError(Exception):
    pass


class FakeRedis:
    def __init__(self, lists):
        self.lists = {k: list(v) for k, v in lists.items()}  # index 0 = left (newest)
        self.calls = []

    def pipeline(self, transaction=True):
        return FakePipe(self)

    def lpush(self, key, value):
        self.lists.setdefault(key, []).insert(0, value)

    def rpop(self, key, count=1):
        items = self.lists.get(key, [])
        taken, self.lists[key] = items[len(items) - count:], items[:len(items) - count]
        return taken


class FakePipe:
    """redis-py's transaction pipeline: buffered, immediate after watch() until multi()."""

    def __init__(self, db):
        self.db, self.buffer, self.immediate = db, [], False

    def _lrange(self, key, start, end):
        items = self.db.lists.get(key, [])
        start = len(items) + start if start < 0 else start
        end = len(items) + end if end < 0 else end
        return items[max(start, 0):end + 1]

    def lrange(self, key, start, end):
        if self.immediate:
            return self._lrange(key, start, end)
        self.buffer.append(("lrange", key, start, end))
        return self

    def rpop(self, key, count):
        self.buffer.append(("rpop", key, count))
        return self

    def watch(self, *keys):
        self.immediate = True

    def multi(self):
        self.immediate = False

    def execute(self):
        self.db.calls.extend(cmd[0] for cmd in self.buffer)
        out = [self._lrange(*cmd[1:]) if cmd[0] == "lrange" else self.db.rpop(*cmd[1:]) for cmd in self.buffer]
        self.buffer = []
        return out

    def reset(self):
        self.buffer, self.immediate = [], False


class FakeChannel:
    priority_steps = [0, 3, 6, 9]
    sep = "\x06\x16"

    def _q_for_pri(self, queue, pri):
        return f"{queue}{self.sep}{pri}" if pri else queue


KEYS = program.queue_keys(FakeChannel(), "mail")


def test_the_queue_keys_are_the_channels_own_with_every_priority_step():
    assert KEYS == [(0, "mail"), (3, "mail\x06\x163"), (6, "mail\x06\x166"), (9, "mail\x06\x169")]


def test_a_read_returns_every_message_of_every_priority_and_changes_nothing():
    db = FakeRedis({"mail": [b"m2", b"m1"], "mail\x06\x169": [b"urgent"], "other": [b"x"]})
    read = program.read(db, KEYS)
    assert {k: [m["body"] for m in v["messages"]] for k, v in read.items()} == {
        "mail": ["m2", "m1"], "mail\x06\x163": [], "mail\x06\x166": [], "mail\x06\x169": ["urgent"]}
    assert read["mail"]["sha256"] == program.digest([b"m2", b"m1"])
    assert db.calls == ["lrange"] * 4 and db.lists["other"] == [b"x"]


def test_the_removal_takes_exactly_what_was_read_and_keeps_what_came_since():
    db = FakeRedis({"mail": [b"m2", b"m1"], "mail\x06\x169": [b"urgent"], "other": [b"x"]})
    read = program.read(db, KEYS)
    db.lpush("mail", b"new")
    removed = program.remove(db, KEYS, read, check=False, watch_error=WatchError)
    assert {k: v["purged"] for k, v in removed.items()} == {
        "mail": 2, "mail\x06\x163": 0, "mail\x06\x166": 0, "mail\x06\x169": 1}
    assert db.lists["mail"] == [b"new"] and db.lists["mail\x06\x169"] == [] and db.lists["other"] == [b"x"]


def test_the_removal_changes_nothing_when_a_worker_took_a_saved_message():
    db = FakeRedis({"mail": [b"m2", b"m1"]})
    read = program.read(db, KEYS)
    db.rpop("mail")
    with pytest.raises(program.Failure, match="nothing was removed"):
        program.remove(db, KEYS, read, check=False, watch_error=WatchError)
    assert db.lists["mail"] == [b"m2"]


def test_check_mode_removes_nothing():
    db = FakeRedis({"mail": [b"m1"]})
    read = program.read(db, KEYS)
    assert program.remove(db, KEYS, read, check=True, watch_error=WatchError)["mail"]["purged"] == 1
    assert db.lists["mail"] == [b"m1"]


def test_a_message_that_is_not_text_is_kept_as_base64():
    assert program.as_text(b"\xff\x00") == {"base64": "/wA="}
