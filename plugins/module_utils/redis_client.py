# Copyright: taskstack.celery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Connections to Redis through redis-py, for modules on the Redis host and on worker hosts.

redis-py comes from the distribution (Debian: python3-redis; the redis role installs it), so
modules run with the host's system python. A password travels inside the protocol (AUTH),
never on a command line, and never appears in an Endpoint's repr.

redis-py is imported under a guard: a module that needs it calls `require_redis(module)`
first, which fails with Ansible's "missing required library" message. Everything else in
this file can be imported (and unit-tested) without it.
"""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.exceptions import AuthenticationError, RedisError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import ResponseError
    from redis.retry import Retry
except ImportError:
    HAS_REDIS = False
    REDIS_IMPORT_ERROR: Optional[str] = traceback.format_exc()

    class RedisError(Exception):  # type: ignore[no-redef]
        """Stands in for redis.exceptions.RedisError so except clauses work without redis-py."""

    class RedisConnectionError(RedisError):  # type: ignore[no-redef]
        """Stands in for redis.exceptions.ConnectionError."""

    class AuthenticationError(RedisConnectionError):  # type: ignore[no-redef]
        """Stands in for redis.exceptions.AuthenticationError."""

    class ResponseError(RedisError):  # type: ignore[no-redef]
        """Stands in for redis.exceptions.ResponseError."""

else:
    HAS_REDIS = True
    REDIS_IMPORT_ERROR = None

# The exception classes are exported for the modules, whether redis-py is installed or not.
__all__ = [
    "HAS_REDIS", "REDIS_IMPORT_ERROR", "REDIS_LIBRARY", "AuthenticationError", "Endpoint",
    "RedisConnectionError", "RedisError", "ResponseError", "client_options", "config_get",
    "flat_info", "is_refused_login", "open_client", "require_redis",
]

# What to install when redis-py is missing, for missing_required_lib's message.
REDIS_LIBRARY = "redis (redis-py; Debian: apt-get install python3-redis)"


@dataclass(frozen=True)
class Endpoint:
    """Where and as whom to connect: unix_socket when set, otherwise host and port."""

    host: str = "127.0.0.1"
    port: int = 6379
    unix_socket: Optional[str] = None
    username: Optional[str] = None
    password: Optional[str] = field(default=None, repr=False)
    tls: bool = False
    tls_ca_file: Optional[str] = None
    timeout: float = 10.0
    # The database number (the /N at the end of a redis:// URL); a Celery broker may use any.
    db: int = 0

    def without_auth(self) -> "Endpoint":
        return Endpoint(self.host, self.port, self.unix_socket, None, None, self.tls,
                        self.tls_ca_file, self.timeout, self.db)

    def describe(self) -> str:
        """Where, for messages: never the password."""
        where = self.unix_socket or "%s:%d%s" % (self.host, self.port, " (TLS)" if self.tls else "")
        if self.db:
            where += " db %d" % self.db
        return "%s as %s" % (where, self.username or "default") if self.password else where


def login_argument_spec() -> dict[str, dict[str, Any]]:
    """The login options of every module that talks to Redis (doc fragment redis_login)."""
    return {
        "login_unix_socket": {"type": "path"},
        "login_host": {"type": "str", "default": "127.0.0.1"},
        "login_port": {"type": "int", "default": 6379},
        "login_user": {"type": "str"},
        "login_password": {"type": "str", "no_log": True},
        "login_tls": {"type": "bool", "default": False},
        "login_tls_ca_file": {"type": "path"},
    }


def endpoint_from_params(params: Mapping[str, Any], db: int = 0,
                         socket_exists: Callable[[str], bool] = os.path.exists) -> Endpoint:
    """The Endpoint the login options name: the unix socket when it exists, else host and port;
    credentials only with a password."""
    sock = params["login_unix_socket"]
    with_auth = params["login_password"] is not None
    return Endpoint(
        host=params["login_host"],
        port=params["login_port"],
        unix_socket=sock if sock and socket_exists(sock) else None,
        username=params["login_user"] if with_auth else None,
        password=params["login_password"] if with_auth else None,
        tls=params["login_tls"],
        tls_ca_file=params["login_tls_ca_file"],
        db=db,
    )


def client_options(endpoint: Endpoint) -> dict[str, Any]:
    """Keyword arguments of redis.Redis for the endpoint (redis-py 4.3, Debian 12, and newer).

    One attempt per command: redis-py 6 and newer retry a broken connection by default and
    would send a command twice, or hide that the server dropped us after ACL LOAD.
    """
    options: dict[str, Any] = {
        "username": endpoint.username,
        "password": endpoint.password,
        "socket_timeout": endpoint.timeout,
        "socket_connect_timeout": endpoint.timeout,
        "decode_responses": True,
        "db": endpoint.db,
    }
    if endpoint.unix_socket:
        options["unix_socket_path"] = endpoint.unix_socket
    else:
        options.update(host=endpoint.host, port=endpoint.port)
        if endpoint.tls:
            options.update(ssl=True, ssl_ca_certs=endpoint.tls_ca_file, ssl_cert_reqs="required",
                           ssl_check_hostname=True)
    return options


def open_client(endpoint: Endpoint) -> "redis.Redis":
    """A client that has connected, authenticated and answered PING.

    redis-py connects lazily; the PING makes a refused password or an unreachable server an
    error here rather than at the first real command.
    """
    if not HAS_REDIS:
        raise RedisError("redis-py is not installed: %s" % REDIS_LIBRARY)
    client = redis.Redis(retry=Retry(NoBackoff(), 0), **client_options(endpoint))
    try:
        client.ping()
    except BaseException:
        client.close()
        raise
    return client


def flat_info(client: Any, section: Optional[str] = None) -> dict[str, str]:
    """INFO as {field: text}: the form redis.conf and `redis-cli INFO` show.

    redis-py turns numbers into int and float; the callers compare with the server's text.
    Nested values (the keyspace lines) are left out.
    """
    info = client.info(section) if section else client.info()
    return {str(k): v if isinstance(v, str) else str(v) for k, v in info.items()
            if not isinstance(v, (dict, list))}


def config_get(client: Any, name: str) -> Optional[str]:
    """The live value of one directive, None when the server does not know it."""
    live = client.config_get(name)
    value = live.get(name)
    return None if value is None else str(value)


def is_refused_login(exc: BaseException) -> bool:
    """Whether the server refused the credentials (not: could not be reached)."""
    return isinstance(exc, AuthenticationError) or "WRONGPASS" in str(exc)


def require_redis(module: Any) -> None:
    """Fail the Ansible module with the install hint when redis-py is missing."""
    if not HAS_REDIS:
        from ansible.module_utils.basic import missing_required_lib

        module.fail_json(msg=missing_required_lib(REDIS_LIBRARY), exception=REDIS_IMPORT_ERROR)
