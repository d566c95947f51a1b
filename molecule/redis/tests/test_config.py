"""The converged server: configuration on disk and live agree, persistence is healthy,
access needs a password, only loopback listens, files holding secrets are closed."""

from __future__ import annotations

import re
import stat

import pytest
import redis
from conftest import client, credentials_dir, password, PASSWORD_NAMES, PORT

UNITS = {"": 1, "k": 1000, "kb": 1024, "m": 1000 ** 2, "mb": 1024 ** 2, "g": 1000 ** 3, "gb": 1024 ** 3}


def redis_conf(host) -> dict[str, str]:
    conf = {}
    for line in host.file("/etc/redis/redis.conf").content_string.splitlines():
        if line.strip() and not line.startswith("#"):
            name, _blank, value = line.partition(" ")
            conf[name] = value.strip().strip('"')
    return conf


def same(conf_value: str, live: str) -> bool:
    mem = re.fullmatch(r"(\d+)(k|kb|m|mb|g|gb)?", conf_value, re.I)
    if mem and live.isdigit():
        return int(mem.group(1)) * UNITS[(mem.group(2) or "").lower()] == int(live)
    return conf_value == live


def test_redis_conf_holds_the_configured_values(host):
    conf = redis_conf(host)
    assert conf["appendonly"] == "yes"
    assert conf["appendfsync"] == "everysec"
    assert conf["save"] == "900 1 300 10 60 10000"
    assert conf["no-appendfsync-on-rewrite"] == "no"
    assert conf["aof-use-rdb-preamble"] == "yes"
    assert conf["maxmemory-policy"] == "noeviction"
    assert conf["maxmemory"] != "0"
    assert conf["bind"] == "127.0.0.1 -::1"
    assert conf["port"] == str(PORT)
    assert conf["aclfile"] == "/etc/redis/users.acl"
    assert int(conf["databases"]) >= 2


def test_live_config_agrees_with_redis_conf(host, admin):
    conf = redis_conf(host)
    differ = {}
    for name, value in conf.items():
        live = admin.config_get(name)[name]
        if not same(value, live):
            differ[name] = (value, live)
    print(f"compared {len(conf)} directives with CONFIG GET")
    assert differ == {}


def test_persistence_is_aof_and_healthy(admin):
    info = admin.info("persistence")
    print({k: info[k] for k in ("aof_enabled", "aof_last_write_status", "aof_last_bgrewrite_status",
                                "rdb_last_bgsave_status", "loading")})
    assert info["aof_enabled"] == 1
    assert info["aof_last_write_status"] == "ok"
    assert info["aof_last_bgrewrite_status"] == "ok"
    assert info["rdb_last_bgsave_status"] == "ok"
    assert info["loading"] == 0


@pytest.mark.parametrize("path", ["/etc/redis/redis.conf", "/etc/redis/users.acl"])
def test_files_holding_secrets_are_0640_root_redis(host, path):
    f = host.file(path)
    assert (f.user, f.group) == ("root", "redis")
    assert f.mode & 0o037 == 0, f"{path} is {oct(f.mode)}"


def test_config_rewrite_cannot_touch_the_role_owned_file(host, admin):
    """The layout settled for Sentinel (docs/redis.md): the role alone writes redis.conf and the
    ACL file. Redis cannot write under /etc (Debian's unit opens /etc/redis; the role's drop-in
    closes it), so CONFIG REWRITE (Sentinel sends one with every failover, in the same
    MULTI/EXEC as REPLICAOF NO ONE, which still applies) and ACL SAVE fail, and both files stay
    as templated."""
    files = ("/etc/redis/redis.conf", "/etc/redis/users.acl")
    before = [host.file(f).sha256sum for f in files]
    with pytest.raises(redis.ResponseError, match="Permission denied|Read-only file system"):
        admin.config_rewrite()
    with pytest.raises(redis.ResponseError):
        admin.execute_command("ACL", "SAVE")
    assert [host.file(f).sha256sum for f in files] == before
    assert host.file("/etc/redis/redis.conf").user == "root"


def test_acl_file_holds_hashes_not_passwords(host):
    acl = host.file("/etc/redis/users.acl").content_string
    for name in PASSWORD_NAMES:
        assert password(name) not in acl
    assert len(re.findall(r" #[0-9a-f]{64} ", acl)) == 3
    assert re.search(r"^user default reset off ~\* &\* \+@all$", acl, re.M)


def test_generated_passwords_are_0600_on_the_controller():
    assert stat.S_IMODE(credentials_dir().stat().st_mode) == 0o700
    for name in PASSWORD_NAMES:
        path = credentials_dir() / f"{name}.txt"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert re.fullmatch(r"[A-Za-z0-9]{32}", path.read_text().strip())


def test_unauthenticated_commands_are_refused():
    anonymous = client(None)
    for command in (("PING",), ("GET", "x"), ("LPUSH", "q", "x"), ("INFO",)):
        with pytest.raises(redis.AuthenticationError):
            anonymous.execute_command(*command)


def test_default_user_is_off_and_has_no_password(admin):
    rules = admin.acl_getuser("default")
    print(rules)
    assert "off" in rules["flags"]
    assert "nopass" not in rules["flags"]
    assert rules["passwords"] == []
    with pytest.raises(redis.AuthenticationError):
        client(None).execute_command("AUTH", "default", "")


def test_only_loopback_listens_on_the_redis_port(host):
    # Host networking: this lists every socket of the machine; keep the Redis port's.
    lines = [l for l in host.check_output("ss -Hltn").splitlines() if re.search(rf":{PORT}\s", l)]
    addresses = {l.split()[3].rsplit(":", 1)[0] for l in lines}
    print(addresses)
    assert addresses and addresses <= {"127.0.0.1", "[::1]"}


def test_unit_keeps_debians_hardening_and_adds_the_drop_in(host):
    props = dict(line.split("=", 1) for line in host.check_output(
        "systemctl show redis-server -p ProtectSystem -p NoNewPrivileges -p PrivateUsers "
        "-p LimitNOFILE -p ProtectHome -p PrivateDevices -p ActiveState -p DropInPaths").splitlines())
    print(props)
    assert props["ActiveState"] == "active"
    assert props["ProtectSystem"] == "strict"
    assert props["NoNewPrivileges"] == "yes"
    assert props["ProtectHome"] == "yes"
    assert props["PrivateDevices"] == "yes"
    assert props["LimitNOFILE"] == "65535"
    assert props["PrivateUsers"] == "no", "the scenario sets redis_systemd_disable_private_users"
    assert "redis-server.service.d/taskstack.conf" in props["DropInPaths"]


def test_kernel_settings_are_written_persistently(host, admin):
    # /proc/sys is read-only in the container: test the written configuration, not the kernel.
    sysctl = host.file("/etc/sysctl.d/60-redis.conf").content_string
    assert re.search(r"^vm.overcommit_memory = 1$", sysctl, re.M)
    somaxconn = int(re.search(r"^net.core.somaxconn = (\d+)$", sysctl, re.M).group(1))
    assert somaxconn >= int(admin.config_get("tcp-backlog")["tcp-backlog"])
    assert host.service("redis-disable-thp").is_enabled
    assert "transparent_hugepage/enabled" in host.file("/etc/systemd/system/redis-disable-thp.service").content_string
