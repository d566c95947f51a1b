"""Replies recorded for the celery_health tests, and a Redis stand-in that serves them.

INFO: redis-server 7.0.15 (Debian 12's), read with redis-py 8.1 (decode_responses=True), so
numbers are int and float as redis-py parses them. Started with --appendonly yes --maxmemory 64mb;
INFO_PERSISTENCE_RDB_ONLY and INFO_MEMORY_NO_LIMIT after CONFIG SET appendonly no, maxmemory 0.

Keys: kombu 5.7.0 published to queue "default" (max_priority 10) five messages with priorities
0, 2, 5, 9, 9, once without and once with global_keyprefix "proj:"; then a consumer with
prefetch 2 took one message of the prefixed queue and had not acknowledged it. LLEN/HLEN as read
from the server afterwards (step 0 is the bare name and is read first by the workers).

Inspect: Celery 5 replies to ping, active, reserved and scheduled, in the shape the helper
program passes on (celery.app.control.Inspect: {nodename: answer}, None when nobody answered).
"""

from __future__ import annotations

INFO_PERSISTENCE_AOF = {
    "aof_base_size": 0, "aof_buffer_length": 0, "aof_current_rewrite_time_sec": -1,
    "aof_current_size": 6136, "aof_delayed_fsync": 0, "aof_enabled": 1,
    "aof_last_bgrewrite_status": "ok", "aof_last_cow_size": 0, "aof_last_rewrite_time_sec": -1,
    "aof_last_write_status": "ok", "aof_pending_bio_fsync": 0, "aof_pending_rewrite": 0,
    "aof_rewrite_in_progress": 0, "aof_rewrite_scheduled": 0, "aof_rewrites": 0,
    "aof_rewrites_consecutive_failures": 0, "async_loading": 0, "current_cow_peak": 0,
    "current_cow_size": 0, "current_cow_size_age": 0, "current_fork_perc": 0.0,
    "current_save_keys_processed": 0, "current_save_keys_total": 0, "loading": 0,
    "module_fork_in_progress": 0, "module_fork_last_cow_size": 0, "rdb_bgsave_in_progress": 0,
    "rdb_changes_since_last_save": 26, "rdb_current_bgsave_time_sec": -1,
    "rdb_last_bgsave_status": "ok", "rdb_last_bgsave_time_sec": -1, "rdb_last_cow_size": 0,
    "rdb_last_load_keys_expired": 0, "rdb_last_load_keys_loaded": 0,
    "rdb_last_save_time": 1796063292, "rdb_saves": 0,
}

# AOF off: the aof_* size and fsync fields are gone, the statuses stay.
INFO_PERSISTENCE_RDB_ONLY = {
    key: value for key, value in INFO_PERSISTENCE_AOF.items()
    if key not in ("aof_base_size", "aof_buffer_length", "aof_current_size", "aof_delayed_fsync",
                   "aof_pending_bio_fsync", "aof_pending_rewrite")
}
INFO_PERSISTENCE_RDB_ONLY.update(aof_enabled=0, rdb_changes_since_last_save=32)

INFO_MEMORY = {
    "active_defrag_running": 0, "allocator_active": 1880064, "allocator_allocated": 1735904,
    "allocator_frag_bytes": 144160, "allocator_frag_ratio": 1.08, "allocator_resident": 4550656,
    "allocator_rss_bytes": 2670592, "allocator_rss_ratio": 2.42, "lazyfree_pending_objects": 0,
    "lazyfreed_objects": 0, "maxmemory": 67108864, "maxmemory_human": "64.00M",
    "maxmemory_policy": "noeviction", "mem_allocator": "jemalloc-5.3.0", "mem_aof_buffer": 768,
    "mem_clients_normal": 0, "mem_clients_slaves": 0, "mem_cluster_links": 0,
    "mem_fragmentation_bytes": 11411152, "mem_fragmentation_ratio": 13.66,
    "mem_not_counted_for_evict": 768, "mem_replication_backlog": 0,
    "mem_total_replication_buffers": 0, "number_of_cached_scripts": 0, "number_of_functions": 0,
    "number_of_libraries": 0, "rss_overhead_bytes": 7761920, "rss_overhead_ratio": 2.71,
    "total_system_memory": 25276514304, "total_system_memory_human": "23.54G",
    "used_memory": 1542888, "used_memory_dataset": 665048, "used_memory_dataset_perc": "99.78%",
    "used_memory_functions": 200, "used_memory_human": "1.47M", "used_memory_lua": 32768,
    "used_memory_lua_human": "32.00K", "used_memory_overhead": 877840,
    "used_memory_peak": 1542888, "used_memory_peak_human": "1.47M",
    "used_memory_peak_perc": "100.01%", "used_memory_rss": 12312576,
    "used_memory_rss_human": "11.74M", "used_memory_scripts": 200, "used_memory_scripts_eval": 0,
    "used_memory_scripts_human": "200B", "used_memory_startup": 876344,
    "used_memory_vm_eval": 32768, "used_memory_vm_functions": 33792,
    "used_memory_vm_total": 66560, "used_memory_vm_total_human": "65.00K",
}

INFO_MEMORY_NO_LIMIT = dict(INFO_MEMORY, used_memory=1463808, maxmemory=0, maxmemory_human="0B")

# LLEN of every list and HLEN of every hash kombu left (no priority-6 message was sent).
KEYS = {
    "default": 2, "default\x06\x163": 1, "default\x06\x169": 2,
    "proj:default": 1, "proj:default\x06\x163": 1, "proj:default\x06\x169": 2,
    "proj:unacked": 1,
}

BLUE, GREEN = "default-blue@web1", "default-green@web1"
RUNNING = {
    "id": "0b1c5e2a-1f5e-4f7e-9f59-2f4b3d1a8c11", "name": "proj.tasks.resize",
    "args": [42], "kwargs": {}, "type": "proj.tasks.resize", "hostname": BLUE,
    "time_start": 1796063301.25, "acknowledged": True,
    "delivery_info": {"exchange": "", "routing_key": "default", "priority": 0,
                      "redelivered": False},
    "worker_pid": 4317,
}
WAITING = dict(RUNNING, id="5d0c7a9e-03a4-4c53-9d2e-8f8a4c1e0b27", time_start=None,
               acknowledged=False, worker_pid=None)
SCHEDULED = {"eta": "2026-11-30T19:00:00+00:00", "priority": 6,
             "request": dict(RUNNING, id="9e8f1c2b-4a5d-4e6f-8a7b-1c2d3e4f5a6b",
                             time_start=None, acknowledged=False, worker_pid=None)}

# Blue answered everything; green (expected, not running) answered nothing.
INSPECT_BLUE_ONLY = {
    "ping": {BLUE: {"ok": "pong"}},
    "active": {BLUE: [RUNNING]},
    "reserved": {BLUE: [WAITING]},
    "scheduled": {BLUE: [SCHEDULED]},
}
# Nobody answered within the timeout: Celery's Inspect returns None for each fact.
INSPECT_NOBODY = {"ping": None, "active": None, "reserved": None, "scheduled": None}


class FakeRedis:
    """redis.Redis as the collectors use it: INFO by section, LLEN and HLEN by key (0 when the
    key does not exist, as Redis answers). Records the keys asked for."""

    def __init__(self, persistence=None, memory=None, keys=None):
        self.sections = {"persistence": dict(persistence or INFO_PERSISTENCE_AOF),
                         "memory": dict(memory or INFO_MEMORY),
                         "replication": dict(INFO_REPLICATION_ALONE)}
        self.keys = dict(KEYS if keys is None else keys)
        self.asked = []

    def info(self, section=None):
        self.asked.append(("INFO", section))
        return dict(self.sections[section])

    def llen(self, key):
        self.asked.append(("LLEN", key))
        return self.keys.get(key, 0)

    def hlen(self, key):
        self.asked.append(("HLEN", key))
        return self.keys.get(key, 0)


def _parsed(text: str) -> dict:
    """INFO text as Redis 7.0 prints it, parsed by redis-py as the collectors get it."""
    from redis._parsers.helpers import parse_info

    return parse_info(text.replace("\n", "\r\n"))


# INFO replication of a primary with one replica online and one still syncing.
INFO_REPLICATION_PRIMARY = _parsed("""# Replication
role:master
connected_slaves:2
slave0:ip=127.0.0.1,port=6412,state=online,offset=10452,lag=0
slave1:ip=127.0.0.1,port=6413,state=wait_bgsave,offset=0,lag=1
master_failover_state:no-failover
master_replid:0f8c0d7a53e5e1bdd8e8b1b1a1a9b1c2d3e4f5a6
master_replid2:0000000000000000000000000000000000000000
master_repl_offset:10466
second_repl_offset:-1
repl_backlog_active:1
repl_backlog_size:1048576
repl_backlog_first_byte_offset:1
repl_backlog_histlen:10466
""")

# INFO replication of a replica whose primary went away.
INFO_REPLICATION_REPLICA_DOWN = _parsed("""# Replication
role:slave
master_host:127.0.0.1
master_port:6411
master_link_status:down
master_last_io_seconds_ago:-1
master_sync_in_progress:0
slave_read_repl_offset:10466
slave_repl_offset:10466
master_link_down_since_seconds:4
slave_priority:100
slave_read_only:1
replica_announced:1
connected_slaves:0
master_failover_state:no-failover
master_repl_offset:10466
""")

# A single server.
INFO_REPLICATION_ALONE = _parsed("""# Replication
role:master
connected_slaves:0
master_failover_state:no-failover
master_repl_offset:0
""")
