"""The controller's server: one ZeroMQ ROUTER socket over CURVE, the ZAP handler that admits enforcers,
the peers, policy pushes and the acknowledgements of event batches.

One thread runs the loop (`serve`); reading and validating a changed policy directory runs aside in a
loader thread, so a large YAML file never stalls the answers to enforcers. The ZAP handler runs in the
same loop and admits only enforcers whose public key file is in the clients directory (a refused key is
logged, counted and stored as an audit event); the key rides with every message (the ZAP user id), and
a HELLO naming another node than the one its key is bound to is refused the same way
(`controller/node_keys.py`). An enforcer of another software version is refused, with the reason, on
both sides.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.utils import z85

from controller.membership import NODE_GRACE_S, ClusterMembership, PeerMembership
from controller.node_keys import NodeKeys
from controller.policy_dir import PolicyDirectory, ServedPolicy
from controller.store import EventStore
from core import anomalies as A
from core import control as C
from core.events import EventType, make_event
from core.messages import MessageError
from policy.delta import make_delta
from policy.model import PolicyError

log = logging.getLogger(__name__)

DEFAULT_LISTEN = "tcp://*:18400"
ZAP_ENDPOINT = "inproc://zeromq.zap.01"
ZAP_DOMAIN = b"enforcer"
MAX_PEERS = 10_000  # connected enforcers tracked (identities beyond it are forgotten oldest first)
MAX_MESSAGES_PER_LOOP = 1000
MAX_ZAP_REQUESTS_PER_LOOP = 100  # handshakes answered before the enforcers' messages get a turn
SETTLE_S = 0.2  # a changed policy directory is read once it has not changed for this long
PEER_FORGET_AFTER_S = 600.0  # an enforcer silent this long is forgotten (it will say HELLO again)
NODE_REFUSED = "control.node_refused"  # a HELLO naming a node its key is not bound to
MEMBERSHIP_INTERVAL_S = 0.1  # workload changes are batched into one membership update at most this often
# After a (re)start the controller knows no node's workloads until each reconnects and reports: it
# sends no membership for this many heartbeats, so enforcers keep what they hold instead of flapping.
MEMBERSHIP_SETTLE_HEARTBEATS = 3


@dataclass
class Peer:
    """A connected enforcer, by its ROUTER identity."""

    identity: bytes
    key: bytes = b""  # its CURVE public key (Z85), as the ZAP handler admitted it
    node: str = ""
    version: str = ""
    ready: bool = False  # said HELLO and was welcomed
    applied: int = 0  # the policy version it runs
    sent: int = 0  # the policy version last sent to it
    capabilities: list[str] = field(default_factory=list)
    connected: bool = True
    last_seen: float = 0.0
    counters: dict[str, int] = field(default_factory=dict)
    membership: PeerMembership = field(default_factory=PeerMembership)

    @property
    def takes_workloads(self) -> bool:
        return "workloads" in self.capabilities


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
        node_grace_s: float = NODE_GRACE_S,
    ) -> None:
        from core import __version__

        self.directory = PolicyDirectory(policy_dir)
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
        self.node_keys = NodeKeys(self.clients_dir)
        self.policy = ServedPolicy(self.store)
        self.membership = ClusterMembership(self.counters, node_grace_s)
        self.policy_error = ""
        self._push_frames: tuple[int, list[bytes]] = (-1, [])
        self._delta_frames: dict[tuple[int, int], list[bytes]] = {}
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
        router.setsockopt(zmq.MAXMSGSIZE, C.MAX_CONTROL_HEADER_BYTES)
        router.curve_server = True
        router.curve_publickey = self.public
        router.curve_secretkey = self.secret
        router.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN)
        router.bind(self.listen)
        last = router.getsockopt(zmq.LAST_ENDPOINT)
        self.bound = last.decode() if isinstance(last, bytes) else str(last)
        self.router = router
        log.info(
            "controller %s listening on %s, policy version %d", self.version, self.bound, self.policy.version
        )

    def close(self) -> None:
        if self.ctx is not None:
            self.ctx.destroy(linger=0)
            self.ctx = None
        self.store.close()

    def reload_clients(self) -> None:
        self.node_keys.reload()

    # ---- policy ----------------------------------------------------------------------------------

    def _accept(self, load: Callable[[], dict[str, Any]]) -> bool:
        """Serve the outcome of a directory load; True when a new version is to be pushed."""
        try:
            doc = load()
        except (OSError, PolicyError) as exc:
            self.policy_error = str(exc)
            self.counters[A.POLICY_REJECTED] += 1
            log.error(
                "policy directory %s not served (the previous policy stays): %s", self.directory.path, exc
            )
            self._store_audit("policy not served", reason=str(exc))
            return False
        self.policy_error = ""
        before = self.policy.version
        changed = self.policy.offer(doc)
        self.membership.set_policy(self.policy.doc)
        if self.policy.version != before:
            log.info("serving policy version %d", self.policy.version)
        self._forget_frames()
        return changed

    def check_policy_dir(self, force: bool = False) -> bool:
        """Reload the policy directory now if it changed; True when a new version is to be served."""
        sig = self.directory.signature()
        if sig == self._dir_signature and not force:
            return False
        self._dir_signature = sig
        return self._accept(self.directory.load)

    def set_policy(self, doc: dict[str, Any]) -> int:
        """Serve `doc` as the next version without validating it (tests of enforcer-side rejection)."""
        version = self.policy.force(doc)
        self.membership.set_policy(self.policy.doc)
        self._forget_frames()
        self.push_policy()
        return version

    def _forget_frames(self) -> None:
        """Drop the encoded snapshot and deltas: they belong to the policy served before."""
        self._push_frames = (-1, [])
        self._delta_frames.clear()

    def push_policy(self) -> int:
        """Send the current snapshot to every ready enforcer that does not run it; returns how many."""
        version = self.policy.version
        self.last_push = (version, time.monotonic())
        n = 0
        for peer in list(self.peers.values()):
            if peer.ready and peer.applied != version and peer.sent != version:
                self._send_policy(peer)
                n += 1
        return n

    def _send_policy(self, peer: Peer, full: bool = False) -> None:
        """The current policy to `peer`: a delta from the version it runs when it takes deltas and that
        version is still held, else the full snapshot."""
        doc, version = self.policy.doc, self.policy.version
        if doc is None:
            return
        base = self.policy.base(peer.applied)
        if not full and base is not None and peer.applied != version and "policy.delta" in peer.capabilities:
            key = (peer.applied, version)
            frames = self._delta_frames.get(key)
            if frames is None:
                delta = make_delta(base, doc)
                frames = C.encode_control(C.PolicyDelta(peer.applied, version, delta))
                self._delta_frames[key] = frames
            if self._send_frames(peer.identity, frames):
                self.counters["policy.deltas_sent"] += 1
            peer.sent = version
            return
        if self._push_frames[0] != version:
            # Encoded once per version, sent to every enforcer.
            self._push_frames = (version, C.encode_control(C.PolicyPush(version, doc)))
        self._send_frames(peer.identity, self._push_frames[1])
        peer.sent = version

    # ---- messages --------------------------------------------------------------------------------

    def _send_frames(self, identity: bytes, frames: list[bytes]) -> bool:
        """Send without blocking the loop; a full queue to one enforcer drops the message (counted)."""
        assert self.router is not None
        try:
            self.router.send_multipart([identity, *frames], zmq.NOBLOCK)
        except zmq.Again:
            self.counters["control.send_dropped"] += 1
            return False
        return True

    def _send(self, identity: bytes, msg: C.ControlMessage) -> None:
        self._send_frames(identity, C.encode_control(msg))

    def _store_audit(self, what: str, **fields: Any) -> None:
        event = make_event(EventType.AUDIT, "controller", what=what, **fields)
        self.store.add_events("controller", [event])

    def _handle_zap(self) -> None:
        """Answer one ZAP request: admit a CURVE key listed in the clients directory, refuse any other."""
        assert self.zap is not None
        frames = self.zap.recv_multipart()
        if len(frames) < 6:
            self.counters[A.CONTROL_MALFORMED] += 1
            return
        version, request_id, _domain, address, _identity, mechanism = frames[:6]
        status, text, user = b"400", b"key not allowed", b""
        if mechanism == b"CURVE" and len(frames) >= 7 and len(frames[6]) == 32:
            key = z85.encode(frames[6])
            enrolled = self.node_keys.get(key)
            if enrolled is None:
                self.reload_clients()  # a key file may have been added since
                enrolled = self.node_keys.get(key)
            if enrolled is not None:
                # The key itself is the user id: every message of this connection carries it.
                status, text, user = b"200", b"OK", key
            else:
                self.counters[A.CONTROL_AUTH_FAILED] += 1
                log.warning(
                    "refused an enforcer with an unknown CURVE key %s from %s", key.decode(), address.decode()
                )
                self._store_audit("enforcer refused", reason="unknown CURVE key", key=key.decode(),
                                  address=address.decode(errors="replace"))  # fmt: skip
        self.zap.send_multipart([version, request_id, status, text, user, b""])

    def _peer(self, identity: bytes, now: float, key: bytes = b"") -> Peer:
        """The peer of `identity`, new if unknown (the oldest is forgotten beyond MAX_PEERS)."""
        peer = self.peers.get(identity)
        if peer is None:
            if len(self.peers) >= MAX_PEERS:
                oldest = min(self.peers.values(), key=lambda p: p.last_seen)
                del self.peers[oldest.identity]
            peer = self.peers[identity] = Peer(identity, key)
        peer.last_seen = now
        if not peer.connected and peer.ready:
            peer.connected = True
            self.membership.node_back(peer.node)
            self.store.upsert_node(peer.node, status="connected", last_seen=time.time())
        return peer

    def _handle(self, identity: bytes, frames: list[bytes], now: float, key: bytes = b"") -> None:
        try:
            msg = C.decode_control(frames)
        except MessageError as exc:
            self.counters[exc.anomaly] += 1
            log.warning("bad message from an enforcer: %s", exc)
            return
        peer = self._peer(identity, now, key)
        if isinstance(msg, C.Hello):
            self._hello(peer, msg)
        elif not peer.ready:
            self.counters["control.before_hello"] += 1
        elif isinstance(msg, C.PolicyAck):
            self._policy_ack(peer, msg)
        elif isinstance(msg, C.EventBatch):
            self.counters["events.received"] += len(msg.events)
            self.counters["events.stored"] += self.store.add_events(peer.node, msg.events)
            self._send(identity, C.EventAck([msg.seq]))
        elif isinstance(msg, C.WorkloadReport):
            ok = self.membership.take_report(peer.node, msg)
            self._send(identity, C.WorkloadReportAck(msg.seq, ok))
        elif isinstance(msg, C.MembershipAck):
            if not msg.ok:  # the enforcer missed a delta: it gets the whole membership next
                self.counters["membership.resyncs"] += 1
                peer.membership = PeerMembership()
        elif isinstance(msg, C.ControlHeartbeat):
            peer.counters = msg.counters
            self.store.upsert_node(peer.node, last_seen=time.time(), counters=msg.counters)
            self._send(identity, C.ControlHeartbeat("controller", {"policy.version": self.policy.version}))
        else:
            self.counters[A.CONTROL_UNKNOWN_TYPE] += 1

    def _hello(self, peer: Peer, msg: C.Hello) -> None:
        identity = peer.identity
        refusal = self.node_keys.claim(peer.key, msg.node)
        if refusal:
            # Neither the claimed node's session nor its record is touched: the real node stays connected.
            self.counters[NODE_REFUSED] += 1
            enrolled = self.node_keys.get(peer.key)
            log.error("refusing a HELLO as node %r: %s", msg.node, refusal)
            self._store_audit("enforcer refused", node_name=msg.node, reason=refusal,
                              key=peer.key.decode(errors="replace"),
                              bound_node=enrolled.node if enrolled else "")  # fmt: skip
            self._send(identity, C.Welcome(False, self.version, self.heartbeat_s, refusal))
            del self.peers[identity]
            return
        peer.node, peer.version, peer.applied = msg.node, msg.version, msg.policy_version
        peer.capabilities = list(msg.capabilities)
        if msg.version != self.version:
            reason = f"enforcer version {msg.version} does not match controller version {self.version}"
            self.counters[A.CONTROL_BAD_VERSION] += 1
            log.error("refusing node %s: %s", msg.node, reason)
            self._send(identity, C.Welcome(False, self.version, self.heartbeat_s, reason))
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
        peer.membership = PeerMembership()  # a new session holds nothing: a full membership is due
        self.membership.node_back(msg.node)
        self._send(identity, C.Welcome(True, self.version, self.heartbeat_s, ""))
        self.store.upsert_node(
            msg.node, version=msg.version, policy_version=msg.policy_version, status="connected",
            last_seen=time.time(),
        )  # fmt: skip
        if self.policy.doc is not None and msg.policy_version != self.policy.version:
            self._send_policy(peer)

    def send_memberships(self) -> int:
        """Bring every ready enforcer's membership up to date; returns the messages sent."""
        n = 0
        for peer in list(self.peers.values()):
            if not (peer.ready and peer.connected and peer.takes_workloads):
                continue
            for msg in self.membership.updates_for(peer.node, peer.membership):
                if not self._send_frames(peer.identity, C.encode_control(msg)):
                    peer.membership = PeerMembership()  # lost on the way: resend it all
                    break
                n += 1
        self.counters["membership.sent"] += n
        return n

    def _policy_ack(self, peer: Peer, msg: C.PolicyAck) -> None:
        if msg.ok:
            peer.applied = msg.version
            status = "connected"
        elif msg.reasons and msg.reasons[0].startswith("resync"):
            # A delta that did not fit what the enforcer holds: send the full snapshot.
            self.counters["policy.resyncs"] += 1
            if msg.version == self.policy.version:
                self._send_policy(peer, full=True)
            status = "resync"
        else:
            status = f"rejected policy {msg.version}"
            log.error(
                "node %s rejected policy version %d: %s", peer.node, msg.version, "; ".join(msg.reasons)
            )
            self._store_audit("policy rejected by node", node_name=peer.node, version=msg.version,
                              reasons=msg.reasons)  # fmt: skip
        self.store.upsert_node(peer.node, policy_version=peer.applied, status=status, last_seen=time.time())

    # ---- loop ------------------------------------------------------------------------------------

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
        next_membership = time.monotonic() + MEMBERSHIP_SETTLE_HEARTBEATS * self.heartbeat_s
        settling: object = None  # the directory's signature at the previous check
        loading: Future[dict[str, Any]] | None = None
        while not stop.is_set():
            ready = dict(poller.poll(poll_ms))
            now = time.monotonic()
            if self.zap in ready:
                for _ in range(MAX_ZAP_REQUESTS_PER_LOOP):
                    self._handle_zap()
                    if not self.zap.poll(0):
                        break
            if self.router in ready:
                for _ in range(MAX_MESSAGES_PER_LOOP):
                    try:
                        parts = self.router.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    if len(parts) < 2:
                        self.counters[A.CONTROL_MALFORMED] += 1
                        continue
                    try:
                        key = parts[-1].get("User-Id")
                    except zmq.ZMQError:
                        key = None  # no ZAP user id: no enrolled key, so no HELLO is accepted
                    key_bytes = key.encode() if isinstance(key, str) else b""
                    self._handle(parts[0].bytes, [p.bytes for p in parts[1:]], now, key_bytes)
            if now >= next_watch:
                next_watch = now + self.watch_interval_s
                if loading is None:
                    sig = self.directory.signature()
                    if sig != self._dir_signature:
                        if sig == settling:
                            # Unchanged since the last look (not being written); parsing a large YAML
                            # file takes seconds, so it is done aside and the loop keeps answering.
                            self._dir_signature = sig
                            loading = loader.submit(self.directory.load)
                        else:
                            next_watch = now + min(SETTLE_S, self.watch_interval_s)  # look again soon
                    settling = sig
                self._expire_peers(now)
            if loading is not None and loading.done():
                if self._accept(loading.result):
                    self.push_policy()
                loading = None
            if now >= next_membership:
                next_membership = now + MEMBERSHIP_INTERVAL_S
                self.membership.expire(now)
                self.send_memberships()

    def _expire_peers(self, now: float) -> None:
        """Mark silent enforcers disconnected (they come back with their next message, or with a new
        HELLO after they reconnect); forget them only after a long silence."""
        limit = max(3 * self.heartbeat_s, 5.0)
        for peer in list(self.peers.values()):
            silent = now - peer.last_seen
            if silent > PEER_FORGET_AFTER_S:
                self.membership.node_lost(peer.node, now)
                del self.peers[peer.identity]
            elif silent > limit and peer.connected:
                peer.connected = False
                self.membership.node_lost(peer.node, now)
                if peer.node:
                    self.store.upsert_node(peer.node, status="disconnected")


def run_controller(controller: Controller, stop: threading.Event | None = None) -> int:
    """Serve until SIGTERM or SIGINT (when called in the main thread) or until `stop` is set."""
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
