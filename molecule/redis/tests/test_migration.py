"""Turning AOF on for a server that so far had only RDB, with a BGSAVE running, loses
nothing; the naive way (template appendonly yes + restart) and the role without its
migration step both lose everything, and these negative checks stay in the suite."""

from __future__ import annotations

from conftest import NAIVE_PORT, NAIVE_UNIT, client, run_playbook, sh, wait_ready, write_naive_config

N = 10000
FILLER = 3000
QUEUE = "taskstack:test:migration"


def seed_and_start_bgsave(c) -> None:
    """N queued items plus filler keys; a per-key save delay keeps the BGSAVE running ~3 s,
    so the AOF rewrite that enabling AOF starts must wait behind it."""
    c.delete(QUEUE)
    for start in range(0, N, 1000):
        c.rpush(QUEUE, *range(start + 1, start + 1001))
    c.mset({f"taskstack:test:filler:{i}": i for i in range(FILLER)})
    c.config_set("rdb-key-save-delay", 1000)
    c.bgsave()
    info = c.info("persistence")
    assert info["rdb_bgsave_in_progress"] == 1, "the BGSAVE must still run when the change starts"
    assert c.llen(QUEUE) == N


def cleanup(c) -> None:
    c.config_set("rdb-key-save-delay", 0)
    c.delete(QUEUE, *[f"taskstack:test:filler:{i}" for i in range(FILLER)])


def rdb_only_role_server():
    """The role's server with appendonly off and no AOF on disk: a server that only had RDB."""
    run = run_playbook(extra_vars={"redis_appendonly": False})
    assert run.rc == 0, run.output[-3000:]
    admin = client("admin")
    assert admin.info("persistence")["aof_enabled"] == 0
    sh("rm -rf /var/lib/redis/appendonlydir")
    return admin


def test_naive_template_and_restart_loses_the_queue(naive_redis):
    """Negative check: what the most used Redis role does (template + restart) empties the queue."""
    c = naive_redis("appendonly no\nsave 900 1\n")
    seed_and_start_bgsave(c)
    write_naive_config("appendonly yes\nsave 900 1\n")
    sh(f"systemctl restart {NAIVE_UNIT}")
    c = client(None, NAIVE_PORT)
    wait_ready(c)
    print(f"naive template+restart: queued={N} after={c.llen(QUEUE)}")
    assert c.llen(QUEUE) == 0


def test_role_without_its_migration_step_loses_the_queue():
    """Negative check: the same role with the runtime switch skipped is the naive variant."""
    admin = rdb_only_role_server()
    seed_and_start_bgsave(admin)
    run = run_playbook("--skip-tags", "redis_aof_migration")
    assert run.rc == 0, run.output[-3000:]
    admin = client("admin")
    wait_ready(admin)
    after = admin.llen(QUEUE)
    print(f"role with --skip-tags redis_aof_migration: queued={N} after={after}")
    cleanup(admin)
    assert after == 0, "skipping the migration step should have shown the loss"


def test_role_enables_aof_with_a_bgsave_running_and_loses_nothing():
    admin = rdb_only_role_server()
    seed_and_start_bgsave(admin)
    run = run_playbook()
    assert run.rc == 0, run.output[-3000:]
    assert "Switch the persistence mode of the running server" in run.output
    admin = client("admin")
    info = admin.info("persistence")
    print(f"after converge: queued={N} present={admin.llen(QUEUE)} aof_enabled={info['aof_enabled']} "
          f"aof_last_bgrewrite_status={info['aof_last_bgrewrite_status']}")
    assert admin.llen(QUEUE) == N
    assert info["aof_enabled"] == 1 and info["aof_last_bgrewrite_status"] == "ok"
    admin.config_set("rdb-key-save-delay", 0)
    # The AOF alone must now hold the queue: restart and crash the server and count again.
    sh("systemctl restart redis-server")
    wait_ready(admin)
    print(f"after systemctl restart: present={admin.llen(QUEUE)}")
    assert admin.llen(QUEUE) == N
    sh("systemctl kill --kill-whom=main --signal=SIGKILL redis-server; sleep 1")
    wait_ready(admin)
    print(f"after kill -9: present={admin.llen(QUEUE)}")
    assert admin.llen(QUEUE) == N
    cleanup(admin)


def test_role_migrates_a_stopped_rdb_only_server_without_loss():
    """A stopped server whose queue is only in dump.rdb would start EMPTY on appendonly yes:
    the role starts it on its old configuration first and switches it at runtime."""
    admin = rdb_only_role_server()
    admin.delete(QUEUE)
    for start in range(0, N, 1000):
        admin.rpush(QUEUE, *range(start + 1, start + 1001))
    sh("systemctl stop redis-server")  # shutdown saves dump.rdb
    run = run_playbook()
    assert run.rc == 0, run.output[-3000:]
    assert "Start a stopped server on its current configuration" in run.output
    admin = client("admin")
    wait_ready(admin)
    print(f"stopped RDB-only server after converge: queued={N} present={admin.llen(QUEUE)} "
          f"aof_enabled={admin.info('persistence')['aof_enabled']}")
    assert admin.llen(QUEUE) == N and admin.info("persistence")["aof_enabled"] == 1
    sh("systemctl restart redis-server")
    wait_ready(admin)
    assert admin.llen(QUEUE) == N
    admin.delete(QUEUE)
