"""The enforcer's side of the controller protocol: a DEALER socket over CURVE, driven by the policy loop.

States: idle (waiting for the next attempt) → hello (connected, HELLO sent) → ready (WELCOME received).
In `ready`, spooled event batches flow to the controller (at most `inflight_batches` unacknowledged),
policy snapshots are applied through `on_policy` and acknowledged (or rejected with reasons), and
heartbeats go both ways. A controller silent for `controller_timeout_s`, a refused handshake or a
refused HELLO (version mismatch) closes the socket and schedules a new attempt with exponential backoff;
all the while the enforcer keeps enforcing its last-known-good policy and spooling events.

Keys are zmq.auth certificate files: `server_key` holds the controller's public key, `client_key` this
enforcer's secret certificate (`keys.py` writes both kinds).
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

import zmq
import zmq.auth
from zmq.utils.monitor import recv_monitor_message

from core import anomalies as A
from core import control as C
from core.messages import MessageError
from policy.events_relay import EventSpool

log = logging.getLogger(__name__)

DEFAULT_CONTROLLER_PORT = 18400
CAPABILITIES = ["policy.full", "policy.delta", "events.batch", "events.spool", "workloads"]
MAX_MESSAGES_PER_POLL = 256  # messages handled per loop iteration, so events keep flowing meanwhile
_MONITOR_EVENTS = (
    zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_DISCONNECTED
)


def controller_endpoint(join_addr: str) -> str:
    """`host:port`, `host` (port 18400), `[v6]:port`, `[v6]` or `v6` → a ZeroMQ TCP endpoint."""
    addr = join_addr.strip()
    if addr.startswith("tcp://"):
        return addr
    if addr.startswith("["):
        return f"tcp://{addr}" if "]:" in addr else f"tcp://{addr}:{DEFAULT_CONTROLLER_PORT}"
    if addr.count(":") == 1:
        return f"tcp://{addr}"
    if ":" in addr:
        return f"tcp://[{addr}]:{DEFAULT_CONTROLLER_PORT}"
    return f"tcp://{addr}:{DEFAULT_CONTROLLER_PORT}"


class MembershipSync(Protocol):
    """The node's side of groups across nodes (`policy.members.Members`)."""

    def link_ready(self) -> None: ...
    def link_lost(self, now: float) -> None: ...
    def reports(self) -> list[C.WorkloadReport]: ...
    def resync_report(self) -> None: ...
    def take_membership(self, msg: C.Membership) -> bool: ...


class LinkError(RuntimeError):
    """The link cannot be set up (missing or unreadable keys)."""


def load_keys(server_key: str, client_key: str) -> tuple[bytes, bytes, bytes]:
    """(controller public, our public, our secret) from certificate files."""
    try:
        server_public, _ = zmq.auth.load_certificate(server_key)
        public, secret = zmq.auth.load_certificate(client_key)
    except (OSError, ValueError) as exc:
        raise LinkError(f"cannot load CURVE keys: {exc}") from None
    if secret is None:
        raise LinkError(f"{client_key}: no secret key in this certificate")
    return server_public, public, secret


class ControllerLink:
    def __init__(
        self,
        ctx: zmq.Context,
        settings: Any,
        version: str,
        spool: EventSpool,
        counters: Counter[str],
        on_policy: Callable[[int, dict[str, Any]], Any],
        applied_version: Callable[[], int],
        on_ready: Callable[[], None] = lambda: None,
        on_delta: Callable[[int, int, dict[str, Any]], Any] | None = None,
        members: MembershipSync | None = None,
    ) -> None:
        self.on_delta = on_delta
        self.members = members
        self.ctx = ctx
        self.settings = settings
        self.version = version
        self.spool = spool
        self.counters = counters
        self.on_policy = on_policy
        self.applied_version = applied_version
        self.on_ready = on_ready
        self.endpoint = controller_endpoint(settings.join_addr)
        self.server_public, self.public, self.secret = load_keys(settings.server_key, settings.client_key)
        self.sock: zmq.Socket | None = None
        self.monitor: zmq.Socket | None = None
        self.state = "idle"
        self.next_attempt = 0.0
        self.backoff = 0.25
        self.last_rx = 0.0
        self.next_heartbeat = 0.0
        self.inflight: set[int] = set()
        self.refusal = ""  # the controller's last reason for refusing us

    # ---- connection ------------------------------------------------------------------------------

    def _connect(self, now: float) -> None:
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 1000)
        sock.setsockopt(zmq.RCVHWM, 1000)
        sock.setsockopt(zmq.MAXMSGSIZE, C.MAX_POLICY_BLOB_BYTES + C.MAX_CONTROL_HEADER_BYTES)
        sock.curve_serverkey = self.server_public
        sock.curve_publickey = self.public
        sock.curve_secretkey = self.secret
        self.monitor = sock.get_monitor_socket(_MONITOR_EVENTS)
        sock.connect(self.endpoint)
        self.sock = sock
        self.state = "hello"
        self.last_rx = now
        self.inflight.clear()
        self._send(
            C.Hello(self.settings.node, self.version, CAPABILITIES, self.applied_version()), force=True
        )
        log.info("connecting to the controller at %s", self.endpoint)

    def _disconnect(self, now: float, reason: str, backoff_max: bool = False) -> None:
        if self.sock is not None:
            try:
                self.sock.disable_monitor()
            except zmq.ZMQError:
                pass
            self.sock.close(linger=0)
        if self.monitor is not None:
            self.monitor.close(linger=0)
        self.sock = self.monitor = None
        was = self.state
        self.state = "idle"
        if was == "ready" and self.members is not None:
            self.members.link_lost(now)
        self.inflight.clear()
        delay = self.settings.reconnect_max_s if backoff_max else self.backoff
        self.backoff = min(self.backoff * 2, self.settings.reconnect_max_s)
        self.next_attempt = now + delay * random.uniform(0.8, 1.2)
        if was == "ready":
            log.warning("controller link lost (%s); enforcing the last-known-good policy", reason)
        else:
            log.info("controller not reached (%s); retrying in %.1f s", reason, delay)

    def close(self) -> None:
        if self.sock is not None:
            self._disconnect(0.0, "closing")

    def register(self, poller: zmq.Poller) -> None:
        if self.sock is not None:
            poller.register(self.sock, zmq.POLLIN)
        if self.monitor is not None:
            poller.register(self.monitor, zmq.POLLIN)

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    def _send(self, msg: C.ControlMessage, force: bool = False) -> bool:
        if self.sock is None or (self.state != "ready" and not force):
            return False
        try:
            self.sock.send_multipart(C.encode_control(msg), zmq.NOBLOCK)
        except zmq.Again:
            return False
        return True

    # ---- loop ------------------------------------------------------------------------------------

    def handle(self, ready: dict[Any, int], now: float) -> None:
        if self.state == "idle":
            if now >= self.next_attempt:
                self._connect(now)
            return
        if self.monitor is not None and self.monitor in ready:
            self._monitor_events(now)
        if self.sock is not None and self.sock in ready:
            for _ in range(MAX_MESSAGES_PER_POLL):
                try:
                    frames = self.sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                self.last_rx = now
                try:
                    msg = C.decode_control(frames)
                except MessageError as exc:
                    self.counters[exc.anomaly] += 1
                    log.warning("bad message from the controller: %s", exc)
                    continue
                self._dispatch(msg, now)
                if self.sock is None:
                    return
        if self.state != "idle" and now - self.last_rx > self.settings.controller_timeout_s:
            self.counters[A.CONTROL_TIMEOUT] += 1
            self._disconnect(now, f"silent for {self.settings.controller_timeout_s:.0f} s")
            return
        if self.state == "ready" and self.members is not None:
            self.send_reports()
        if self.state == "ready" and now >= self.next_heartbeat:
            self.next_heartbeat = now + self.settings.controller_heartbeat_s
            stats = {k: int(v) for k, v in self.counters.items()}
            stats["policy.version"] = self.applied_version()
            stats["spool.batches"] = len(self.spool.pending())
            self._send(C.ControlHeartbeat(self.settings.node, stats))

    def _monitor_events(self, now: float) -> None:
        assert self.monitor is not None
        while True:
            try:
                event = recv_monitor_message(self.monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            except zmq.ZMQError:
                return
            kind = event.get("event")
            if kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                self.counters[A.CONTROL_AUTH_FAILED] += 1
                log.error("the controller at %s refused our CURVE key", self.endpoint)
                self._disconnect(now, "authentication refused", backoff_max=True)
                return
            if kind in (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL):
                self.counters[A.CONTROL_AUTH_FAILED] += 1
                log.error("CURVE handshake with the controller at %s failed", self.endpoint)
            if kind == zmq.EVENT_DISCONNECTED and self.state == "ready":
                self._disconnect(now, "disconnected")
                return

    def _dispatch(self, msg: C.ControlMessage, now: float) -> None:
        if isinstance(msg, C.Welcome):
            if not msg.ok:
                self.refusal = msg.reason
                self.counters[A.CONTROL_REFUSED] += 1
                log.error("the controller refused this enforcer: %s", msg.reason)
                self._disconnect(now, f"refused: {msg.reason}", backoff_max=True)
                return
            self.state = "ready"
            self.refusal = ""
            self.backoff = 0.25
            self.next_heartbeat = now
            log.info("controller link ready (controller %s)", msg.version)
            if self.members is not None:
                self.members.link_ready()
            self.on_ready()
            self.pump()
        elif isinstance(msg, C.PolicyPush | C.PolicyDelta):
            if isinstance(msg, C.PolicyDelta) and self.on_delta is None:
                self._send(C.PolicyAck(msg.version, False, ["resync: deltas not supported"]), force=True)
                return
            try:
                if isinstance(msg, C.PolicyPush):
                    result = self.on_policy(msg.version, msg.policy)
                else:
                    assert self.on_delta is not None
                    result = self.on_delta(msg.base, msg.version, msg.delta)
                ok, reasons = bool(result.ok), list(result.reasons)
            except Exception as exc:  # the network boundary: a bug must not take the policy process down
                log.exception("applying policy version %d failed", msg.version)
                self.counters["policy.apply_failed"] += 1
                ok, reasons = False, [f"internal error: {exc!r}"]
            self._send(C.PolicyAck(msg.version, ok, reasons), force=True)
        elif isinstance(msg, C.EventAck):
            self.spool.ack(msg.seqs)
            self.inflight.difference_update(msg.seqs)
            self.pump()
        elif isinstance(msg, C.ControlHeartbeat):
            pass
        elif isinstance(msg, C.WorkloadReportAck):
            if not msg.ok and self.members is not None:
                self.counters["control.report_resyncs"] += 1
                self.members.resync_report()
        elif isinstance(msg, C.Membership):
            ok = self.members is not None and self.members.take_membership(msg)
            self._send(C.MembershipAck(msg.generation, ok))
        else:
            self.counters[A.CONTROL_UNKNOWN_TYPE] += 1

    def send_reports(self) -> None:
        """The node's workload changes since the last report (a full report after a resync)."""
        assert self.members is not None
        for report in self.members.reports():
            if not self._send(report):
                self.counters["control.report_dropped"] += 1
                self.members.resync_report()  # the next report is the full inventory
                return

    def pump(self) -> None:
        """Send spooled batches, oldest first, while the window allows."""
        if self.state != "ready":
            return
        limit = self.settings.inflight_batches
        for seq in self.spool.pending():
            if len(self.inflight) >= limit:
                return
            if seq in self.inflight:
                continue
            events = self.spool.read(seq)
            if events is None:
                log.error("spooled event batch %d is unreadable; dropping it", seq)
                self.spool.ack([seq])
                self.counters[A.EVENTS_SPOOL_DROPPED] += 1
                continue
            if not self._send(C.EventBatch(seq, events)):
                return
            self.inflight.add(seq)
