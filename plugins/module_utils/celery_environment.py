# Copyright: taskstack.celery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The environment a Celery worker unit sees, rebuilt for a helper process.

The worker units read their broker URL (with the Redis ACL password) from a systemd
EnvironmentFile. The control helpers must load the app with the very same variables, so this
file is parsed with systemd's own rules (src/basic/env-file.c), not a shell's: no `export`, no
variable expansion, quotes only where a value starts, a backslash-newline continues a line.

Values are secrets. Nothing here puts a value in an exception message; `secret_values` lists
what a caller must mask before it shows any text that a library produced.
"""

from __future__ import annotations

import os
import re
from typing import Mapping, Optional
from urllib.parse import unquote, urlsplit

_NEWLINE = "\n\r"
_WHITESPACE = " \t\n\r"
_COMMENT_STARTS = "#;"
# In a double-quoted value a backslash keeps only these characters (POSIX shell rules).
_DOUBLE_QUOTE_ESCAPABLE = '"\\`$'
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_SECRET_NAME = re.compile(r"PASS|SECRET|TOKEN|KEY|CREDENTIAL|AUTH", re.IGNORECASE)

# What a systemd service gets when its unit sets no PATH (systemd >= 240, split /usr/sbin).
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class EnvironmentFileError(ValueError):
    """The file holds a line systemd would not turn into the variable its author meant."""


def _assignments(text: str) -> list[tuple[int, str, str]]:
    """Run systemd's env-file state machine; yield (line number, raw key, value)."""
    out: list[tuple[int, str, str]] = []
    state = "pre_key"
    key: list[str] = []
    value: list[str] = []
    key_trailing_ws: Optional[int] = None
    value_trailing_ws: Optional[int] = None
    line = 1
    key_line = 1

    def push() -> None:
        k = "".join(key[:key_trailing_ws] if key_trailing_ws is not None else key)
        v = "".join(value[:value_trailing_ws] if value_trailing_ws is not None else value)
        out.append((key_line, k, v))

    for c in text:
        if state == "pre_key":
            if c in _COMMENT_STARTS:
                state = "comment"
            elif c not in _WHITESPACE:
                state, key, value, key_trailing_ws, key_line = "key", [c], [], None, line
        elif state == "key":
            if c in _NEWLINE:
                state = "pre_key"  # a line without "=" is ignored, as systemd does
            elif c == "=":
                state, value_trailing_ws = "pre_value", None
            else:
                if c not in _WHITESPACE:
                    key_trailing_ws = None
                elif key_trailing_ws is None:
                    key_trailing_ws = len(key)
                key.append(c)
        elif state == "pre_value":
            if c in _NEWLINE:
                push()
                state = "pre_key"
            elif c == "'":
                state = "single_quote"
            elif c == '"':
                state = "double_quote"
            elif c == "\\":
                state = "value_escape"
            elif c not in _WHITESPACE:
                state = "value"
                value.append(c)
        elif state == "value":
            if c in _NEWLINE:
                push()
                state = "pre_key"
            elif c == "\\":
                state, value_trailing_ws = "value_escape", None
            else:
                if c not in _WHITESPACE:
                    value_trailing_ws = None
                elif value_trailing_ws is None:
                    value_trailing_ws = len(value)
                value.append(c)
        elif state == "value_escape":
            state = "value"
            if c not in _NEWLINE:  # backslash-newline continues the line
                value.append(c)
        elif state == "single_quote":
            if c == "'":
                state = "pre_value"
            else:
                value.append(c)
        elif state == "double_quote":
            if c == '"':
                state = "pre_value"
            elif c == "\\":
                state = "double_quote_escape"
            else:
                value.append(c)
        elif state == "double_quote_escape":
            state = "double_quote"
            if c in _DOUBLE_QUOTE_ESCAPABLE:
                value.append(c)
            elif c != "\n":
                value.extend(("\\", c))
        elif state == "comment":
            if c == "\\":
                state = "comment_escape"
            elif c in _NEWLINE:
                state = "pre_key"
        elif state == "comment_escape":
            state = "pre_key" if c in _NEWLINE else "comment"
        if c == "\n":
            line += 1

    if state in ("pre_value", "value", "value_escape", "single_quote", "double_quote",
                 "double_quote_escape"):
        push()
    return out


def parse_environment_file(text: str) -> dict[str, str]:
    """Parse the text of a systemd EnvironmentFile into {name: value}.

    A later assignment of a name wins, as in systemd. A name systemd would silently drop
    (`export NAME=...`, `NAME-X=...`) is an error here: the unit would run without that
    variable, which is never what the file's author wanted.
    """
    env: dict[str, str] = {}
    for line, key, value in _assignments(text):
        if key.startswith("export") and key[6:7] in (" ", "\t"):
            name = key[7:].strip()
            raise EnvironmentFileError(
                "line %d: 'export %s=...' is shell syntax; systemd ignores the whole line, so "
                "the service would run without %s. Write it without 'export'." % (line, name, name)
            )
        if not _NAME.match(key):
            raise EnvironmentFileError(
                "line %d: %r is not a valid variable name (letters, digits, '_'; not starting "
                "with a digit); systemd would ignore this line" % (line, key)
            )
        env[key] = value
    return env


def read_environment_file(path: str) -> dict[str, str]:
    """Read and parse an EnvironmentFile from disk (UTF-8, as systemd requires)."""
    with open(path, encoding="utf-8") as handle:
        return parse_environment_file(handle.read())


def secret_values(env: Mapping[str, str]) -> list[str]:
    """Values that must never be shown: URL passwords (raw and decoded) and secret-named variables.

    Broker URLs themselves stay showable once their password is masked; a value whose name says
    it is a secret (..._PASSWORD, SECRET_KEY, ..._TOKEN) is masked whole.
    """
    found: set[str] = set()
    for name, value in env.items():
        if not value:
            continue
        if _SECRET_NAME.search(name):
            found.add(value)
        # A Sentinel or failover broker URL lists several URLs separated by ';'.
        for url in value.split(";"):
            try:
                password = urlsplit(url.strip()).password
            except ValueError:
                continue
            if password:
                found.update((password, unquote(password)))
    # Longest first, so a password that contains another is masked whole.
    return sorted((s for s in found if s), key=len, reverse=True)


def redact(text: str, secrets: list[str], mask: str = "********") -> str:
    """Replace every secret in text by a mask."""
    for secret in secrets:
        text = text.replace(secret, mask)
    return text


def helper_process_environment(app_dir: str, file_env: Mapping[str, str],
                               extra_env: Optional[Mapping[str, str]] = None,
                               home: Optional[str] = None) -> dict[str, str]:
    """The environment of the helper process: what a worker unit would get, plus PYTHONPATH.

    Starts from systemd's default PATH instead of the Ansible module's own environment, so the
    helper sees what the unit sees and nothing of the Ansible run. PYTHONDONTWRITEBYTECODE keeps
    a helper running as root from leaving root-owned .pyc files in the app's directory.
    """
    env = {"PATH": DEFAULT_PATH, "LANG": "C.UTF-8"}
    if home:
        env["HOME"] = home
    env.update(file_env)
    if extra_env:
        env.update({str(k): str(v) for k, v in extra_env.items()})
    env["PYTHONPATH"] = os.pathsep.join(p for p in (app_dir, env.get("PYTHONPATH", "")) if p)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env
