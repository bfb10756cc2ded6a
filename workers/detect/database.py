"""Database-protocol threats on plain values: SQL injection in query text and MySQL access-denied bursts.

The DPI parsers hand over the SQL text of MySQL COM_QUERY, PostgreSQL simple/extended queries, TDS SQL
batches and TNS; `check_query` runs the structural SQL-injection rules on it. `AccessDeniedTracker`
counts MySQL authentication failures per client address in a window (brute force).
"""

from __future__ import annotations

from threats.catalogue import MYSQL_ACCESS_DENIED, Hit
from threats.settings import ThreatSettings
from workers.detect.injection import check_sql_query
from workers.detect.shared_counts import Counts, LocalCounts

# ER_ACCESS_DENIED_ERROR, ER_ACCESS_DENIED_NO_PASSWORD_ERROR: the codes of a failed login.
MYSQL_DENIED_CODES = frozenset({1045, 1698})


def check_query(text: str) -> Hit | None:
    """SQL injection in a statement sent on a database protocol."""
    return check_sql_query(text)


def mysql_error_code(packet: bytes) -> int:
    """The error code of a MySQL ERR packet payload (0xff, code LE16, …), or 0 if it is not one."""
    if len(packet) >= 3 and packet[0] == 0xFF:
        return packet[1] | (packet[2] << 8)
    return 0


class AccessDeniedTracker:
    """MySQL access-denied replies per client in a window (bounded by `max_clients`); `counts` may be the
    node's workers' table (`workers.detect.shared_counts`), counted over every worker."""

    def __init__(self, max_clients: int = 65536) -> None:
        self.counts: Counts = LocalCounts(max_clients)

    def on_error(self, client: bytes, code: int, now: float, settings: ThreatSettings) -> Hit | None:
        if code not in MYSQL_DENIED_CODES or MYSQL_ACCESS_DENIED.id not in settings.on:
            return None
        window = settings.threshold(MYSQL_ACCESS_DENIED, "window")
        count = self.counts.add(MYSQL_ACCESS_DENIED.id, client, now, window)
        if count >= settings.threshold(MYSQL_ACCESS_DENIED, "denials_per_window"):
            return Hit(MYSQL_ACCESS_DENIED, f"{count:.0f} access-denied replies in {window:g}s")
        return None
