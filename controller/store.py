"""The controller's SQLite store: events (idempotent on node + event id), known enforcers, and the
controller's own state (the served policy version and digest).

One connection, autocommit, WAL: the server thread writes, and the `events` / `nodes` / `learned`
queries of the CLI read the same file from another process.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from core.apps import canonical_app
from core.events import jsonable

DEFAULT_DB = "controller.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    node TEXT NOT NULL,
    event_id TEXT NOT NULL,
    type TEXT NOT NULL,
    time REAL NOT NULL,
    count INTEGER NOT NULL DEFAULT 1,
    body TEXT NOT NULL,
    UNIQUE (node, event_id)
);
CREATE INDEX IF NOT EXISTS events_type_time ON events (type, time);
CREATE TABLE IF NOT EXISTS nodes (
    node TEXT PRIMARY KEY,
    version TEXT,
    policy_version INTEGER,
    status TEXT,
    last_seen REAL,
    counters TEXT
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class EventStore:
    """SQLite storage of events, nodes and the controller's own state."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    def add_events(self, node: str, events: list[dict[str, Any]]) -> int:
        """Store events (idempotent on node + id); returns how many were new."""
        rows = []
        for e in events:
            event_id = e.get("id")
            etype = e.get("type")
            if not isinstance(event_id, str) or not isinstance(etype, str):
                continue
            t = e.get("time")
            count = e.get("count", 1)
            rows.append(
                (
                    node,  # the authenticated connection's node, whatever the event claims
                    event_id,
                    etype,
                    float(t) if isinstance(t, int | float) else time.time(),
                    count if isinstance(count, int) else 1,
                    json.dumps(e, default=jsonable, separators=(",", ":")),
                )
            )
        before = self.db.total_changes
        self.db.execute("BEGIN")
        self.db.executemany(
            "INSERT OR IGNORE INTO events (node, event_id, type, time, count, body) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )
        self.db.execute("COMMIT")
        return self.db.total_changes - before

    def upsert_node(self, node: str, **fields: Any) -> None:
        cols = ["node", *fields]
        values = [node, *(json.dumps(v) if isinstance(v, dict) else v for v in fields.values())]
        updates = ", ".join(f"{c} = excluded.{c}" for c in fields) or "node = node"
        self.db.execute(
            f"INSERT INTO nodes ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
            f"ON CONFLICT (node) DO UPDATE SET {updates}",
            values,
        )

    def get_meta(self, key: str, default: str = "") -> str:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def events(
        self, type_: str | None = None, since: float | None = None, node: str | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        where: list[str] = []
        args: list[Any] = []
        if type_:
            where.append("type = ?")
            args.append(type_)
        if since is not None:
            where.append("time >= ?")
            args.append(since)
        if node:
            where.append("node = ?")
            args.append(node)
        sql = "SELECT body FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq LIMIT ?"
        args.append(limit)
        return [json.loads(row[0]) for row in self.db.execute(sql, args)]

    def count(self, type_: str | None = None) -> int:
        if type_:
            return int(self.db.execute("SELECT COUNT(*) FROM events WHERE type = ?", (type_,)).fetchone()[0])
        return int(self.db.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def nodes(self) -> list[dict[str, Any]]:
        cur = self.db.execute(
            "SELECT node, version, policy_version, status, last_seen, counters FROM nodes ORDER BY node"
        )
        out = []
        for node, version, pver, status, seen, counters in cur:
            out.append(
                {
                    "node": node,
                    "version": version,
                    "policy_version": pver,
                    "status": status,
                    "last_seen": seen,
                    "counters": json.loads(counters) if counters else {},
                }
            )
        return out

    def learned_rules(self, first_id: int = 100_000) -> dict[str, Any]:
        """Learned connections (Discover) turned into proposed allow rules, as a native policy mapping."""
        seen: dict[tuple[str, str, str, str], int] = {}
        for (body,) in self.db.execute("SELECT body FROM events WHERE type = 'connection' ORDER BY seq"):
            e = json.loads(body)
            client, server = e.get("client_group"), e.get("server_group")
            if not isinstance(client, str) or not isinstance(server, str):
                continue
            flow = e.get("flow") if isinstance(e.get("flow"), dict) else {}
            proto_num = e.get("proto", flow.get("proto", 6))
            port = e.get("port", 0)
            proto = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmp"}.get(proto_num, "any")
            spec = proto if proto in ("icmp", "any") else f"{proto}/{port}"
            app = canonical_app(str(e.get("app") or "")) or "any"
            key = (client, server, spec, app)
            seen[key] = seen.get(key, 0) + int(e.get("count", 1) or 1)
        rules = []
        for i, ((client, server, spec, app), hits) in enumerate(sorted(seen.items())):
            rules.append(
                {
                    "id": first_id + i,
                    "from": client,
                    "to": server,
                    "ports": [spec],
                    "applications": [app] if app != "any" else "any",
                    "action": "allow",
                    "comment": f"learned from {hits} connection(s)",
                }
            )
        return {"rules": rules}
