"""The inspection window of an allowed flow: how long its worker keeps inspecting it for threats and
sensors before the flow is offloaded to the kernel (ALLOW_FLOW, the connection's accept bit).

A flow the policy allows stays under inspection while what an attacker could still send in it is worth
checking, and no longer: every byte inspected is a byte through a reader and a worker in Python.

| application | window closes | why |
|---|---|---|
| HTTP, HTTP2, GRPC, SQL and other request/response protocols | after `request_window_requests` requests or `request_window_bytes` bytes | every request on a keep-alive connection may carry the injection (request 5 as well as request 1) |
| TLS/SSL | after `tls_window_bytes` | the handshake (versions, SSLv2) and the early heartbeats; the rest is encrypted |
| SSH | once the authentication phase is over, or `ssh_window_bytes` | the banners, and the refused logins of a password guesser (`workers.dpi.parsers.ssh`); the session after it is encrypted |
| DNS | after `request_window_bytes` only | each query and answer (tunnels, zone transfers, FQDN learning), and a flood on one socket (a resolver or dnsperf asks thousands of queries on one 5-tuple) |
| anything else, not identified, or parsing ended (a gap) | after `unknown_window_bytes` | the first bytes (SSLv2 hellos, sensors on the opening bytes) |

Exceeding a request cap is counted (`dpi.window.request_cap`): those flows were cut short, not done.
"""

from __future__ import annotations

from core import anomalies as A
from workers.dpi.flowstate import DpiFlow
from workers.dpi.settings import DpiSettings

# Applications whose every request (message) is checked: a transaction on a long connection is as
# dangerous as the first one.
REQUEST_APPS = frozenset(
    (
        "HTTP", "HTTP2", "GRPC", "RTSP", "SIP", "MySQL", "PostgreSQL", "Redis", "MongoDB",
        "Cassandra", "Oracle", "MSSQL", "Memcached", "Couchbase", "Kafka", "ZooKeeper", "Spark",
    )
)  # fmt: skip
# DNS messages are counted per source and per server (floods, tunnels): a window closed by message count
# would let a flood on one socket go unseen after it.
DNS_APPS = frozenset(("DNS",))
TLS_APPS = frozenset(("TLS/SSL",))
SSH_APPS = frozenset(("SSH",))


def window_closed(flow: DpiFlow, s: DpiSettings) -> str | None:
    """None while the flow's window is open; else the counter naming how it closed."""
    app = flow.ctx.app
    size = flow.payload_bytes
    if not flow.inspect:
        # Parsing ended (no parser wanted the bytes, or a stream gap): only packet hooks still look, at
        # the opening bytes as for an unknown protocol.
        return A.DPI_WINDOW_CLOSED if size > s.unknown_window_bytes else None
    if app in REQUEST_APPS:
        if flow.requests > s.request_window_requests or size > s.request_window_bytes:
            return A.DPI_WINDOW_REQUEST_CAP
        return None
    if app in DNS_APPS:
        return A.DPI_WINDOW_REQUEST_CAP if size > s.request_window_bytes else None
    if app in TLS_APPS:
        return A.DPI_WINDOW_CLOSED if size > s.tls_window_bytes else None
    if app in SSH_APPS:
        return A.DPI_WINDOW_CLOSED if flow.ssh_auth_over or size > s.ssh_window_bytes else None
    return A.DPI_WINDOW_CLOSED if size > s.unknown_window_bytes else None
