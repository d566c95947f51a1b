# Copyright: taskstack.celery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Options every module that talks to Redis shares: where the server is and who logs in."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  login_unix_socket:
    description:
      - Unix socket of the server. Used when it exists; otherwise O(login_host):O(login_port).
    type: path
  login_host:
    description: Address to connect to when the unix socket is absent.
    type: str
    default: 127.0.0.1
  login_port:
    description: TCP port to connect to when the unix socket is absent.
    type: int
    default: 6379
  login_user:
    description: ACL user to authenticate as.
    type: str
  login_password:
    description: Password of O(login_user). Never logged or returned.
    type: str
  login_tls:
    description: Use TLS for the TCP connection.
    type: bool
    default: false
  login_tls_ca_file:
    description: CA bundle that signed the server's certificate.
    type: path
"""
