"""The reference controller (`enforcer controller`): serves policy from files, stores events in SQLite.

Small and solid, not a UI. One process, one ZeroMQ ROUTER socket over CURVE (port 18400 by default),
one ZAP handler in the same loop that admits only enforcers whose public key file is in the clients
directory (a refused key is logged, counted and stored as an audit event). It:

- serves the policy of a directory of YAML files (native format and NeuVector CRD exports, merged),
  validated before it is served; the version it serves increases on every change of content and is
  persisted, so it stays monotonic across controller restarts;
- watches the directory and pushes the new snapshot to every connected enforcer on change;
- refuses an enforcer of another software version, with the reason, on both sides;
- stores every event in SQLite (idempotent on node + event id, so a batch sent twice is stored once)
  and acknowledges each batch by its sequence number;
- answers `events`, `nodes` and `learned --export` (learned connections as proposed native rules).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import logging
import sqlite3
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
import zmq
import zmq.auth
from zmq.utils import z85

from core import anomalies as A
from core import messages as M
from core.apps import canonical_app
from core.events import EventType, make_event
from policy.crd import CrdError, crd_to_native, is_crd_document
from policy.delta import make_delta
from policy.keys import generate_keypair, load_public_keys
from policy.loader import MAX_POLICY_FILE_BYTES, parse_policy, policy_to_dict, yaml_load_all
from policy.model import PolicyError

log = logging.getLogger(__name__)

DEFAULT_LISTEN = "tcp://*:18400"
DEFAULT_DB = "controller.db"
ZAP_ENDPOINT = "inproc://zeromq.zap.01"
ZAP_DOMAIN = b"enforcer"
MAX_POLICY_FILES = 1000  # YAML files in the policy directory
MAX_PEERS = 10_000  # connected enforcers tracked (identities beyond it are forgotten oldest first)
MAX_MESSAGES_PER_LOOP = 1000
SETTLE_S = 0.2  # a changed policy directory is read once it has not changed for this long
PEER_FORGET_AFTER_S = 600.0  # an enforcer silent this long is forgotten (it will say HELLO again)
MAX_DELTA_HISTORY = 8  # served versions kept to send deltas from (older enforcers get a full snapshot)


# ---- policy directory ---------------------------------------------------------------------------


def _merge_into(
    merged: dict[str, Any], doc: dict[str, Any], origin: str, owners: dict[str, tuple[str, Any]]
) -> None:
    for key in ("groups", "rules", "process_profiles", "file_rules", "sensors"):
        items = doc.get(key) or []
        if not isinstance(items, list):
            raise PolicyError(f"{origin}: {key} is not a list")
        for item in items:
            if key in ("groups", "sensors", "rules") and isinstance(item, dict):
                ident = item.get("id") if key == "rules" else item.get("name")
                name = f"{key}:{ident}"
                if name in owners:
                    # The same group or rule in several files (CRD exports repeat them) is fine if identical.
                    first, content = owners[name]
                    if content != item:
                        what = f"rule id {ident}" if key == "rules" else f"{key[:-1]} {ident!r}"
                        raise PolicyError(f"{origin}: {what} is also defined, differently, in {first}")
                    continue
                owners[name] = (origin, item)
            elif item in merged.get(key, ()):
                continue  # an identical profile or file rule repeated by another file
            merged.setdefault(key, []).append(item)
    threats = doc.get("threats") or {}
    if not isinstance(threats, dict):
        raise PolicyError(f"{origin}: threats is not a mapping")
    merged.setdefault("threats", {}).update(threats)
    if "default_mode" in doc:
        if "default_mode" in merged and merged["default_mode"] != doc["default_mode"]:
            raise PolicyError(f"{origin}: default_mode differs from another file's")
        merged["default_mode"] = doc["default_mode"]


def load_policy_dir(directory: str | Path, cache: dict[str, Any] | None = None) -> dict[str, Any]:
    """Merge every *.yaml / *.yml file of `directory` (native policies and CRD exports) into one
    native mapping (version 0: the controller assigns versions). Raises PolicyError naming the file.
    `cache` (path → (mtime, size, documents)) spares re-parsing files that did not change."""
    d = Path(directory)
    files = sorted(p for p in d.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    if len(files) > MAX_POLICY_FILES:
        raise PolicyError(f"{d}: more than {MAX_POLICY_FILES} policy files")
    merged: dict[str, Any] = {"version": 0}
    owners: dict[str, tuple[str, Any]] = {}
    for path in files:
        st = path.stat()
        cached = cache.get(str(path)) if cache is not None else None
        if cached is not None and cached[:2] == (st.st_mtime_ns, st.st_size):
            docs = cached[2]
        else:
            data = path.read_bytes()
            if len(data) > MAX_POLICY_FILE_BYTES:
                raise PolicyError(f"{path.name}: larger than {MAX_POLICY_FILE_BYTES} bytes")
            try:
                docs = [doc for doc in yaml_load_all(data) if doc is not None]
            except yaml.YAMLError as exc:
                raise PolicyError(f"{path.name}: not valid YAML: {exc}") from None
            if cache is not None:
                cache[str(path)] = (st.st_mtime_ns, st.st_size, docs)
        docs = copy.deepcopy(docs) if cache is not None else docs
        for i, doc in enumerate(docs):
            origin = path.name if len(docs) == 1 else f"{path.name}#{i}"
            if is_crd_document(doc):
                try:
                    doc = crd_to_native(doc)
                except CrdError as exc:
                    raise PolicyError(f"{origin}: {exc}") from None
            if not isinstance(doc, dict):
                raise PolicyError(f"{origin}: not a mapping")
            _merge_into(merged, doc, origin, owners)
    return merged


def _digest(doc: dict[str, Any]) -> str:
    body = {k: v for k, v in doc.items() if k != "version"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


# ---- event store --------------------------------------------------------------------------------

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


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    return str(value)


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
                    json.dumps(e, default=_jsonable, separators=(",", ":")),
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


# ---- the controller -----------------------------------------------------------------------------


@dataclass
class Peer:
    identity: bytes
    node: str = ""
    version: str = ""
    ready: bool = False
    applied: int = 0
    sent: int = 0
    capabilities: list[str] = field(default_factory=list)
    connected: bool = True
    last_seen: float = 0.0
    counters: dict[str, int] = field(default_factory=dict)


class Controller:
    def __init__(
        self,
        policy_dir: str | Path,
        db: str | Path,
        secret_key: str | Path,
        clients_dir: str | Path,
        listen: str = DEFAULT_LISTEN,
        version: str | None = None,
        heartbeat_s: float = 2.0,
        watch_interval_s: float = 1.0,
    ) -> None:
        from core import __version__

        self.policy_dir = Path(policy_dir)
        self.store = EventStore(db)
        self.clients_dir = Path(clients_dir)
        self.listen = listen
        self.version = version or __version__
        self.heartbeat_s = heartbeat_s
        self.watch_interval_s = watch_interval_s
        public, secret = zmq.auth.load_certificate(str(secret_key))
        if secret is None:
            raise ValueError(f"{secret_key}: no secret key in this certificate")
        self.public, self.secret = public, secret
        self.counters: Counter[str] = Counter()
        self.peers: dict[bytes, Peer] = {}
        self.client_keys: dict[bytes, str] = {}
        self.policy_doc: dict[str, Any] | None = None
        self.policy_version = int(self.store.get_meta("policy_version", "0"))
        self.policy_digest = self.store.get_meta("policy_digest", "")
        self.policy_error = ""
        self._push_frames: tuple[int, list[bytes]] = (-1, [])
        self._delta_frames: dict[tuple[int, int], list[bytes]] = {}
        self.history: dict[int, dict[str, Any]] = {}
        self._file_cache: dict[str, Any] = {}
        self.last_push = (0, 0.0)  # (version, monotonic time) of the last push to the enforcers
        self._dir_signature: object = None
        self.ctx: zmq.Context | None = None
        self.router: zmq.Socket | None = None
        self.zap: zmq.Socket | None = None
        self.bound: str = ""

    # ---- set-up ----------------------------------------------------------------------------------

    def start(self) -> None:
        self.reload_clients()
        self.check_policy_dir(force=True)
        self.ctx = zmq.Context(1)
        self.zap = self.ctx.socket(zmq.REP)
        self.zap.setsockopt(zmq.LINGER, 0)
        self.zap.bind(ZAP_ENDPOINT)
        router = self.ctx.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        router.setsockopt(zmq.ROUTER_MANDATORY, 0)
        router.setsockopt(zmq.SNDHWM, 1000)
        router.setsockopt(zmq.RCVHWM, 10000)
        router.setsockopt(zmq.MAXMSGSIZE, M.MAX_CONTROL_HEADER_BYTES)
        router.curve_server = True
        router.curve_publickey = self.public
        router.curve_secretkey = self.secret
        router.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN)
        router.bind(self.listen)
        last = router.getsockopt(zmq.LAST_ENDPOINT)
        self.bound = last.decode() if isinstance(last, bytes) else str(last)
        self.router = router
        log.info(
            "controller %s listening on %s, policy version %d", self.version, self.bound, self.policy_version
        )

    def close(self) -> None:
        if self.ctx is not None:
            self.ctx.destroy(linger=0)
            self.ctx = None
        self.store.close()

    def reload_clients(self) -> None:
        self.client_keys = load_public_keys(self.clients_dir)

    # ---- policy ----------------------------------------------------------------------------------

    def _signature(self) -> object:
        try:
            return tuple(
                sorted((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in self.policy_dir.iterdir())
            )
        except OSError:
            return None

    def _load_dir(self) -> dict[str, Any]:
        """Read, merge, validate and normalize the policy directory (runs in the loader thread).

        Validated before serving (the enforcer validates again), and served in the normalized form the
        enforcer itself produces, so deltas apply to exactly what it holds.
        """
        return policy_to_dict(parse_policy(load_policy_dir(self.policy_dir, self._file_cache)))

    def _accept(self, load: Callable[[], dict[str, Any]]) -> bool:
        """Serve the outcome of a directory load; True when a new version is to be pushed."""
        try:
            doc = load()
        except (OSError, PolicyError) as exc:
            self.policy_error = str(exc)
            self.counters[A.POLICY_REJECTED] += 1
            log.error("policy directory %s not served (the previous policy stays): %s", self.policy_dir, exc)
            self._store_audit("policy not served", reason=str(exc))
            return False
        self.policy_error = ""
        digest = _digest(doc)
        if digest != self.policy_digest or self.policy_version == 0:
            self.policy_version += 1
            self.policy_digest = digest
            self.store.set_meta("policy_version", str(self.policy_version))
            self.store.set_meta("policy_digest", digest)
            changed = True
            log.info("serving policy version %d", self.policy_version)
        else:
            changed = self.policy_doc is None
        doc["version"] = self.policy_version
        self._serve(doc)
        return changed

    def check_policy_dir(self, force: bool = False) -> bool:
        """Reload the policy directory now if it changed; True when a new version is to be served."""
        sig = self._signature()
        if sig == self._dir_signature and not force:
            return False
        self._dir_signature = sig
        return self._accept(self._load_dir)

    def set_policy(self, doc: dict[str, Any]) -> int:
        """Serve `doc` as the next version without validating it (tests of enforcer-side rejection)."""
        self.policy_version += 1
        doc = dict(doc)
        doc["version"] = self.policy_version
        self._serve(doc)
        self.push_policy()
        return self.policy_version

    def _serve(self, doc: dict[str, Any]) -> None:
        self.policy_doc = doc
        self.history[doc["version"]] = doc
        while len(self.history) > MAX_DELTA_HISTORY:
            del self.history[min(self.history)]
        self._push_frames = (-1, [])
        self._delta_frames.clear()

    def push_policy(self) -> int:
        """Send the current snapshot to every ready enforcer that does not run it; returns how many."""
        self.last_push = (self.policy_version, time.monotonic())
        n = 0
        for peer in list(self.peers.values()):
            if peer.ready and peer.applied != self.policy_version and peer.sent != self.policy_version:
                self._send_policy(peer)
                n += 1
        return n

    def _send_policy(self, peer: Peer, full: bool = False) -> None:
        if self.policy_doc is None:
            return
        base = self.history.get(peer.applied)
        if (
            not full
            and base is not None
            and peer.applied != self.policy_version
            and "policy.delta" in peer.capabilities
        ):
            key = (peer.applied, self.policy_version)
            frames = self._delta_frames.get(key)
            if frames is None:
                delta = make_delta(base, self.policy_doc)
                frames = M.encode_control(M.PolicyDelta(peer.applied, self.policy_version, delta))
                self._delta_frames[key] = frames
            assert self.router is not None
            try:
                self.router.send_multipart([peer.identity, *frames], zmq.NOBLOCK)
                self.counters["policy.deltas_sent"] += 1
            except zmq.Again:
                self.counters["control.send_dropped"] += 1
            peer.sent = self.policy_version
            return
        if self._push_frames[0] != self.policy_version:
            # Encoded once per version, sent to every enforcer.
            self._push_frames = (
                self.policy_version,
                M.encode_control(M.PolicyPush(self.policy_version, self.policy_doc)),
            )
        assert self.router is not None
        try:
            self.router.send_multipart([peer.identity, *self._push_frames[1]], zmq.NOBLOCK)
        except zmq.Again:
            self.counters["control.send_dropped"] += 1
        peer.sent = self.policy_version

    # ---- loop ------------------------------------------------------------------------------------

    def _send(self, identity: bytes, msg: M.ControlMessage) -> None:
        assert self.router is not None
        try:
            self.router.send_multipart([identity, *M.encode_control(msg)], zmq.NOBLOCK)
        except zmq.Again:
            self.counters["control.send_dropped"] += 1

    def _store_audit(self, what: str, **fields: Any) -> None:
        event = make_event(EventType.AUDIT, "controller", what=what, **fields)
        self.store.add_events("controller", [event])

    def _handle_zap(self) -> None:
        assert self.zap is not None
        frames = self.zap.recv_multipart()
        if len(frames) < 6:
            self.counters[A.CONTROL_MALFORMED] += 1
            return
        version, request_id, _domain, address, _identity, mechanism = frames[:6]
        status, text, user = b"400", b"key not allowed", b""
        if mechanism == b"CURVE" and len(frames) >= 7 and len(frames[6]) == 32:
            key = z85.encode(frames[6])
            name = self.client_keys.get(key)
            if name is None:
                self.reload_clients()  # a key file may have been added since
                name = self.client_keys.get(key)
            if name is not None:
                status, text, user = b"200", b"OK", name.encode()
            else:
                self.counters[A.CONTROL_AUTH_FAILED] += 1
                log.warning(
                    "refused an enforcer with an unknown CURVE key %s from %s", key.decode(), address.decode()
                )
                self._store_audit("enforcer refused", reason="unknown CURVE key", key=key.decode(),
                                  address=address.decode(errors="replace"))  # fmt: skip
        self.zap.send_multipart([version, request_id, status, text, user, b""])

    def _handle(self, identity: bytes, frames: list[bytes], now: float) -> None:
        try:
            msg = M.decode_control(frames)
        except M.MessageError as exc:
            self.counters[exc.anomaly] += 1
            log.warning("bad message from an enforcer: %s", exc)
            return
        peer = self.peers.get(identity)
        if peer is None:
            if len(self.peers) >= MAX_PEERS:
                oldest = min(self.peers.values(), key=lambda p: p.last_seen)
                del self.peers[oldest.identity]
            peer = self.peers[identity] = Peer(identity)
        peer.last_seen = now
        if not peer.connected and peer.ready:
            peer.connected = True
            self.store.upsert_node(peer.node, status="connected", last_seen=time.time())
        if isinstance(msg, M.Hello):
            peer.node, peer.version, peer.applied = msg.node, msg.version, msg.policy_version
            peer.capabilities = list(msg.capabilities)
            if msg.version != self.version:
                reason = f"enforcer version {msg.version} does not match controller version {self.version}"
                self.counters[A.CONTROL_BAD_VERSION] += 1
                log.error("refusing node %s: %s", msg.node, reason)
                self._send(identity, M.Welcome(False, self.version, self.heartbeat_s, reason))
                self.store.upsert_node(
                    msg.node, version=msg.version, status="refused: version", last_seen=time.time()
                )
                self._store_audit("enforcer refused", node_name=msg.node, reason=reason)
                del self.peers[identity]
                return
            # An enforcer reconnecting under a new identity replaces its old one.
            for other in [p for p in self.peers.values() if p.node == msg.node and p.identity != identity]:
                del self.peers[other.identity]
            peer.ready = True
            self._send(identity, M.Welcome(True, self.version, self.heartbeat_s, ""))
            self.store.upsert_node(
                msg.node, version=msg.version, policy_version=msg.policy_version, status="connected",
                last_seen=time.time(),
            )  # fmt: skip
            if self.policy_doc is not None and msg.policy_version != self.policy_version:
                self._send_policy(peer)
            return
        if not peer.ready:
            self.counters["control.before_hello"] += 1
            return
        if isinstance(msg, M.PolicyAck):
            if msg.ok:
                peer.applied = msg.version
                status = "connected"
            elif msg.reasons and msg.reasons[0].startswith("resync"):
                # A delta that did not fit what the enforcer holds: send the full snapshot.
                self.counters["policy.resyncs"] += 1
                if msg.version == self.policy_version:
                    self._send_policy(peer, full=True)
                status = "resync"
            else:
                status = f"rejected policy {msg.version}"
                log.error(
                    "node %s rejected policy version %d: %s", peer.node, msg.version, "; ".join(msg.reasons)
                )
                self._store_audit("policy rejected by node", node_name=peer.node, version=msg.version,
                                  reasons=msg.reasons)  # fmt: skip
            self.store.upsert_node(
                peer.node, policy_version=peer.applied, status=status, last_seen=time.time()
            )
        elif isinstance(msg, M.EventBatch):
            self.counters["events.received"] += len(msg.events)
            self.counters["events.stored"] += self.store.add_events(peer.node, msg.events)
            self._send(identity, M.EventAck([msg.seq]))
        elif isinstance(msg, M.ControlHeartbeat):
            peer.counters = msg.counters
            self.store.upsert_node(peer.node, last_seen=time.time(), counters=msg.counters)
            self._send(identity, M.ControlHeartbeat("controller", {"policy.version": self.policy_version}))
        else:
            self.counters[A.CONTROL_UNKNOWN_TYPE] += 1

    def serve(self, stop: threading.Event, poll_ms: int = 50) -> None:
        assert self.router is not None and self.zap is not None
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(self.zap, zmq.POLLIN)
        loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="policy-loader")
        try:
            self._loop(stop, poller, poll_ms, loader)
        finally:
            loader.shutdown(wait=True, cancel_futures=True)

    def _loop(
        self, stop: threading.Event, poller: zmq.Poller, poll_ms: int, loader: ThreadPoolExecutor
    ) -> None:
        assert self.router is not None and self.zap is not None
        next_watch = 0.0
        settling: object = None  # the directory's signature at the previous check
        loading: Future[dict[str, Any]] | None = None
        while not stop.is_set():
            ready = dict(poller.poll(poll_ms))
            now = time.monotonic()
            if self.zap in ready:
                for _ in range(100):
                    self._handle_zap()
                    if not self.zap.poll(0):
                        break
            if self.router in ready:
                for _ in range(MAX_MESSAGES_PER_LOOP):
                    try:
                        frames = self.router.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    if len(frames) < 2:
                        self.counters[A.CONTROL_MALFORMED] += 1
                        continue
                    self._handle(frames[0], frames[1:], now)
            if now >= next_watch:
                next_watch = now + self.watch_interval_s
                if loading is None:
                    sig = self._signature()
                    if sig != self._dir_signature:
                        if sig == settling:
                            # Unchanged since the last look (not being written); parsing a large YAML
                            # file takes seconds, so it is done aside and the loop keeps answering.
                            self._dir_signature = sig
                            loading = loader.submit(self._load_dir)
                        else:
                            next_watch = now + min(SETTLE_S, self.watch_interval_s)  # look again soon
                    settling = sig
                self._expire_peers(now)
            if loading is not None and loading.done():
                if self._accept(loading.result):
                    self.push_policy()
                loading = None

    def _expire_peers(self, now: float) -> None:
        """Mark silent enforcers disconnected (they come back with their next message, or with a new
        HELLO after they reconnect); forget them only after a long silence."""
        limit = max(3 * self.heartbeat_s, 5.0)
        for peer in list(self.peers.values()):
            silent = now - peer.last_seen
            if silent > PEER_FORGET_AFTER_S:
                del self.peers[peer.identity]
            elif silent > limit and peer.connected:
                peer.connected = False
                if peer.node:
                    self.store.upsert_node(peer.node, status="disconnected")


def run_controller(controller: Controller, stop: threading.Event | None = None) -> int:
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        import signal

        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
    controller.start()
    try:
        controller.serve(stop)
    finally:
        controller.close()
    return 0


# ---- CLI ----------------------------------------------------------------------------------------


def _since(text: str) -> float:
    """`300` / `300s` / `5m` / `2h` ago, or an absolute UNIX time (> 10^9)."""
    t = text.strip().lower()
    scale = {"s": 1, "m": 60, "h": 3600, "d": 86400}.get(t[-1:], 0)
    value = float(t[:-1] if scale else t)
    if not scale and value > 1e9:
        return value
    return time.time() - value * (scale or 1)


def _cmd_serve(args: argparse.Namespace) -> int:
    for name in ("policy_dir", "secret_key", "clients"):
        if not getattr(args, name):
            print(f"enforcer controller: --{name.replace('_', '-')} is required to serve", file=sys.stderr)
            return 2
    if not Path(args.policy_dir).is_dir():
        print(f"enforcer controller: --policy-dir {args.policy_dir}: not a directory", file=sys.stderr)
        return 2
    try:
        controller = Controller(
            args.policy_dir, args.db, args.secret_key, args.clients, listen=args.listen,
            heartbeat_s=args.heartbeat, watch_interval_s=args.watch,
        )  # fmt: skip
    except (OSError, ValueError) as exc:
        print(f"enforcer controller: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s controller %(levelname)s %(message)s")
    return run_controller(controller)


def _db(args: argparse.Namespace) -> EventStore | None:
    path = getattr(args, "sub_db", None) or args.db
    if not Path(path).exists():
        print(f"enforcer controller: database {path} does not exist", file=sys.stderr)
        return None
    return EventStore(path)


def _cmd_events(args: argparse.Namespace) -> int:
    store = _db(args)
    if store is None:
        return 2
    try:
        since = _since(args.since) if args.since else None
    except ValueError:
        print(
            f"enforcer controller events: --since {args.since!r} is not a duration or time", file=sys.stderr
        )
        store.close()
        return 2
    for event in store.events(args.type, since, args.node, args.limit):
        print(json.dumps(event, sort_keys=True))
    store.close()
    return 0


def _cmd_nodes(args: argparse.Namespace) -> int:
    store = _db(args)
    if store is None:
        return 2
    for node in store.nodes():
        print(json.dumps(node, sort_keys=True))
    store.close()
    return 0


def _cmd_learned(args: argparse.Namespace) -> int:
    store = _db(args)
    if store is None:
        return 2
    doc = store.learned_rules()
    store.close()
    text = yaml.safe_dump(doc, sort_keys=False, width=110)
    if args.export and args.export != "-":
        Path(args.export).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def _cmd_keys(args: argparse.Namespace) -> int:
    for name in args.names:
        try:
            public, secret = generate_keypair(args.dir, name)
        except (OSError, ValueError) as exc:
            print(f"enforcer controller keys: {exc}", file=sys.stderr)
            return 2
        print(f"{public}\n{secret}")
    return 0


def register(subparsers: Any) -> None:
    """Add `enforcer controller ...` to the `enforcer` command."""
    p = subparsers.add_parser("controller", help="reference controller: serve policy, store events")
    p.add_argument("--policy-dir", help="directory of policy YAML files (native and NeuVector CRDs)")
    p.add_argument("--db", default=DEFAULT_DB, help=f"SQLite event store (default {DEFAULT_DB})")
    p.add_argument("--listen", default=DEFAULT_LISTEN, help=f"ZeroMQ endpoint (default {DEFAULT_LISTEN})")
    p.add_argument("--secret-key", help="the controller's CURVE secret certificate (NAME.key_secret)")
    p.add_argument("--clients", help="directory of accepted enforcers' public certificates (*.key)")
    p.add_argument("--heartbeat", type=float, default=2.0, help="heartbeat interval told to enforcers (s)")
    p.add_argument("--watch", type=float, default=1.0, help="policy directory check interval (s)")
    p.set_defaults(func=_cmd_serve)
    sub = p.add_subparsers(dest="controller_command", metavar="ACTION")
    ev = sub.add_parser("events", help="print stored events as JSON lines")
    ev.add_argument("--db", dest="sub_db", help="SQLite event store")
    ev.add_argument("--type", choices=[t.value for t in EventType])
    ev.add_argument("--since", help="events newer than this: 300, 5m, 2h, 1d ago, or a UNIX time")
    ev.add_argument("--node")
    ev.add_argument("--limit", type=int, default=1000)
    ev.set_defaults(func=_cmd_events)
    nodes = sub.add_parser("nodes", help="print known enforcers as JSON lines")
    nodes.add_argument("--db", dest="sub_db", help="SQLite event store")
    nodes.set_defaults(func=_cmd_nodes)
    learned = sub.add_parser("learned", help="learned connections as proposed native rules (YAML)")
    learned.add_argument("--db", dest="sub_db", help="SQLite event store")
    learned.add_argument("--export", nargs="?", const="-", default="-", help="write to FILE (default stdout)")
    learned.set_defaults(func=_cmd_learned)
    keys = sub.add_parser("keys", help="generate CURVE certificates (NAME.key, NAME.key_secret)")
    keys.add_argument("--dir", required=True, help="directory for the certificate files (created 0700)")
    keys.add_argument("names", nargs="+", help="certificate names, e.g. controller node-1")
    keys.set_defaults(func=_cmd_keys)


__all__ = ["Controller", "EventStore", "load_policy_dir", "policy_to_dict", "register", "run_controller"]
