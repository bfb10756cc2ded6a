"""The policy process and the reference controller over real ZeroMQ sockets with CURVE (loopback, 0700 dir).

Scenarios: policy pushed and changed under a reader of the shared tables; events aggregated, batched,
stored once; controller killed and restarted (enforcement continues on the last policy, events spool
and are delivered exactly once); a wrong key and a wrong version are refused on both sides; an invalid
snapshot is rejected whole and audited; hostile frames harm neither side.
"""

from __future__ import annotations

import ipaddress
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import msgpack
import pytest
import zmq

from controller.server import Controller
from core import anomalies as A
from core import control as C
from core import messages as M
from core.events import EventType, make_event
from core.lookup import Action, Mode
from policy.keys import generate_keypair
from policy.service import PolicyService, ServiceSettings, run_policy_service
from policy.table_reader import open_shared_tables

POLICY = """
version: 1
groups:
  - {name: clients, members: [198.18.1.0/24]}
  - {name: servers, mode: %s, members: [198.18.2.0/24]}
rules:
  - {id: 10, from: clients, to: servers, ports: [tcp/80], action: allow}
"""


def ip(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


def wait_for(cond: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class Lab:
    """Keys, a policy directory, a controller thread and policy-service threads, all torn down."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.keys = root / "keys"
        generate_keypair(self.keys, "controller")
        self.clients = root / "clients"
        self.clients.mkdir(mode=0o700)
        for node in ("node-1", "node-2", "node-3"):
            generate_keypair(self.keys, node)
        for node in ("node-1", "node-3"):  # node-2 is not accepted
            (self.clients / f"{node}.key").write_bytes((self.keys / f"{node}.key").read_bytes())
        self.policy_dir = root / "policies"
        self.policy_dir.mkdir(mode=0o700)
        (self.policy_dir / "lab.yaml").write_text(POLICY % "protect")
        self.db = root / "controller.db"
        self.controller: Controller | None = None
        self._cstop = threading.Event()
        self._cthread: threading.Thread | None = None
        self.port = 0
        self.services: list[tuple[threading.Event, threading.Thread, list[PolicyService]]] = []

    def start_controller(self, version: str | None = None) -> Controller:
        listen = f"tcp://127.0.0.1:{self.port}" if self.port else "tcp://127.0.0.1:*"
        c = Controller(
            self.policy_dir, self.db, self.keys / "controller.key_secret", self.clients,
            listen=listen, version=version, heartbeat_s=0.2, watch_interval_s=0.1,
        )  # fmt: skip
        c.start()
        self.port = int(c.bound.rsplit(":", 1)[1])
        self._cstop = threading.Event()
        self._cthread = threading.Thread(target=c.serve, args=(self._cstop,), daemon=True)
        self._cthread.start()
        self.controller = c
        return c

    def stop_controller(self) -> None:
        if self._cthread is not None:
            self._cstop.set()
            self._cthread.join(10)
            assert not self._cthread.is_alive()
            self._cthread = None
        if self.controller is not None:
            self.controller.close()
            self.controller = None

    def settings(self, node: str, **kw: object) -> ServiceSettings:
        base = self.root / node
        base.mkdir(mode=0o700, exist_ok=True)
        s = ServiceSettings(
            node=node,
            run_dir=str(base / "run"),
            state_dir=str(base / "state"),
            join_addr=f"127.0.0.1:{self.port}",
            server_key=str(self.keys / "controller.key"),
            client_key=str(self.keys / f"{node}.key_secret"),
            aggregate_window_s=0.1,
            heartbeat_s=0.2,
            controller_heartbeat_s=0.2,
            controller_timeout_s=1.0,
            reconnect_max_s=0.5,
            table_bytes=1 << 19,
        )
        return replace(s, **kw)  # type: ignore[arg-type]

    def start_service(self, settings: ServiceSettings, version: str | None = None) -> PolicyService:
        stop = threading.Event()
        box: list[PolicyService] = []

        def main() -> None:
            if version is not None:
                import core

                # the service reads core.__version__ at construction; a wrong one is simulated here
                old = core.__version__
                core.__version__ = version
                try:
                    run_policy_service(settings, stop, box.append)
                finally:
                    core.__version__ = old
            else:
                run_policy_service(settings, stop, box.append)

        t = threading.Thread(target=main, daemon=True)
        t.start()
        wait_for(lambda: box, what="service start")
        self.services.append((stop, t, box))
        return box[0]

    def stop_service(self, service: PolicyService) -> None:
        for stop, t, box in self.services:
            if box and box[0] is service:
                stop.set()
                t.join(10)
                assert not t.is_alive()

    def close(self) -> None:
        for stop, t, _ in self.services:
            stop.set()
            t.join(10)
        self.stop_controller()


@pytest.fixture
def lab(private_dir: Path) -> Iterator[Lab]:
    lab = Lab(private_dir)
    try:
        yield lab
    finally:
        lab.close()


def send_events(settings: ServiceSettings, events: list[dict]) -> None:
    ctx = zmq.Context()
    try:
        push = ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 2000)
        push.connect(M.events_endpoint(settings.run_dir))
        push.send(M.encode(M.Events("test", events)))
        push.close()
    finally:
        ctx.term()


def test_policy_push_change_events_and_controller_restart(lab: Lab) -> None:
    controller = lab.start_controller()
    settings = lab.settings("node-1")
    service = lab.start_service(settings)
    tables = open_shared_tables(settings.run_dir, slot=0)
    try:
        # before the controller's policy: the start-up policy (monitor) is already published
        wait_for(lambda: service.applier.version == 1, what="policy version 1 applied")
        d = tables.decide(4, ip("198.18.1.5"), ip("198.18.2.5"), 6, 22)
        assert (d.action, d.mode) == (Action.DENY, Mode.PROTECT)
        assert tables.decide(4, ip("198.18.1.5"), ip("198.18.2.5"), 6, 80).action == Action.ALLOW
        wait_for(lambda: any(n["policy_version"] == 1 for n in controller.store.nodes()), what="ack stored")

        # the controller's policy changes under the reader: protect → monitor, then back
        t0 = time.monotonic()
        (lab.policy_dir / "lab.yaml").write_text(POLICY % "monitor")
        wait_for(lambda: tables.decide(4, ip("198.18.1.5"), ip("198.18.2.5"), 6, 22).action == Action.ALLOW)
        assert time.monotonic() - t0 < 1.5
        assert service.applier.version == 2
        (lab.policy_dir / "lab.yaml").write_text(POLICY % "protect")
        wait_for(lambda: tables.decide(4, ip("198.18.1.5"), ip("198.18.2.5"), 6, 22).action == Action.DENY)
        lkg = Path(settings.state_dir) / "policy" / "last-known-good.yaml"
        wait_for(lambda: "version: 3" in lkg.read_text(), what="last-known-good persisted")
        assert controller.counters["policy.deltas_sent"] == 2  # changes travel as deltas
        assert service.counters["policy.deltas"] == 2

        # events: 5 identical + 2 distinct → 3 stored, one with count 5
        flow = {"family": 4, "proto": 6, "src": "198.18.1.5", "sport": 4000, "dst": "198.18.2.5", "dport": 22}
        same = [
            make_event(EventType.VIOLATION, "node-1", rule_id=0, flow=flow, action="deny") for _ in range(5)
        ]
        other = [make_event(EventType.THREAT, "node-1", name="x", severity="high", action="drop", flow=flow)]
        other.append(make_event(EventType.VIOLATION, "node-1", rule_id=11, flow=flow, action="deny"))
        send_events(settings, same + other)
        wait_for(lambda: controller.store.count("violation") == 2 and controller.store.count("threat") == 1)
        counts = sorted(e["count"] for e in controller.store.events("violation"))
        assert counts == [1, 5]

        # controller dies: enforcement continues on the last policy, events spool
        lab.stop_controller()
        assert service.spool is not None
        more = [
            make_event(EventType.VIOLATION, "node-1", rule_id=i, flow=flow, action="deny")
            for i in range(100, 130)
        ]
        send_events(settings, more)
        wait_for(lambda: len(service.spool.pending()) > 0, what="events spooled")  # type: ignore[union-attr]
        assert tables.decide(4, ip("198.18.1.5"), ip("198.18.2.5"), 6, 22).action == Action.DENY
        wait_for(lambda: service.link is not None and not service.link.ready, what="link down")

        # controller back on the same port and database: every spooled event delivered exactly once
        controller = lab.start_controller()
        wait_for(
            lambda: controller.store.count("violation") == 32, timeout=15, what="spooled events delivered"
        )
        wait_for(lambda: not service.spool.pending(), what="spool drained")  # type: ignore[union-attr]
        time.sleep(0.5)
        assert controller.store.count("violation") == 32
        assert service.applier.version == 3  # same content: no new version after the restart
        audits = [e["what"] for e in controller.store.events("audit")]
        assert "policy applied" in audits
    finally:
        tables.close()


def test_wrong_key_and_wrong_version_are_refused(lab: Lab) -> None:
    controller = lab.start_controller()
    intruder = lab.start_service(lab.settings("node-2"))  # key not in the clients directory
    wait_for(lambda: intruder.counters[A.CONTROL_AUTH_FAILED] > 0, what="enforcer sees auth failure")
    wait_for(lambda: controller.counters[A.CONTROL_AUTH_FAILED] > 0, what="controller refuses")
    assert intruder.applier.version == 0  # still on the start-up policy
    assert any(e["what"] == "enforcer refused" for e in controller.store.events("audit"))

    old = lab.start_service(lab.settings("node-3"), version="0.0.9")
    wait_for(lambda: old.counters[A.CONTROL_REFUSED] > 0, what="enforcer sees version refusal")
    assert controller.counters[A.CONTROL_BAD_VERSION] > 0
    assert old.link is not None and "does not match" in old.link.refusal
    assert old.applier.version == 0
    nodes = {n["node"]: n for n in controller.store.nodes()}
    assert nodes["node-3"]["status"] == "refused: version"


def test_invalid_snapshot_is_rejected_whole_and_audited(lab: Lab) -> None:
    controller = lab.start_controller()
    settings = lab.settings("node-1")
    service = lab.start_service(settings)
    wait_for(lambda: service.applier.version == 1)
    bad = {
        "groups": [{"name": "a", "members": ["198.18.0.0/16"]}, {"name": "b", "mode": "protect",
                                                                 "members": ["198.18.1.0/24"]}],
        "rules": [{"id": 1, "from": "a", "to": "b", "action": "allow", "applications": ["Gopher"]}],
    }  # fmt: skip
    version = controller.set_policy(bad)
    wait_for(
        lambda: any(e["what"] == "policy rejected by node" for e in controller.store.events("audit")),
        what="rejection stored",
    )
    wait_for(
        lambda: any(e["what"] == "policy rejected" for e in controller.store.events("audit")),
        what="the enforcer's own audit event",
    )
    rejected = [e for e in controller.store.events("audit") if e["what"] == "policy rejected by node"][0]
    assert rejected["version"] == version
    assert "unknown application 'Gopher'" in rejected["reasons"][0]
    assert service.applier.version == 1
    assert service.counters[A.POLICY_REJECTED] == 1
    tables = open_shared_tables(settings.run_dir, slot=0)
    assert tables.version() == 1
    tables.close()


def test_hostile_frames_harm_neither_side(lab: Lab) -> None:
    controller = lab.start_controller()
    settings = lab.settings("node-1")
    service = lab.start_service(settings)
    wait_for(lambda: service.applier.version == 1)
    from zmq.auth import load_certificate

    server_public, _ = load_certificate(str(lab.keys / "controller.key"))
    public, secret = load_certificate(str(lab.keys / "node-3.key_secret"))
    ctx = zmq.Context()
    try:
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = server_public, public, secret
        sock.connect(f"tcp://127.0.0.1:{lab.port}")
        rnd = os.urandom
        hostile = [
            [rnd(64)],
            [b"\xdd\xff\xff\xff\xff"],  # array32 announcing 4 billion items
            [b"\xc6\xff\xff\xff\xf0" + b"x" * 10],  # bin32 claiming ~4 GiB
            [msgpack.packb([1, 5, "seq", {"not": "a list"}])],
            [msgpack.packb([1, 99])],
            [msgpack.packb([7, 1, "x", "y", [], 0])],
            [msgpack.packb([1, 3, 1]), b"\x01\x02"],
            [msgpack.packb([1, 5, 1, [{"type": "x"}]])] * 3,
            [b""],
        ]
        for frames in hostile:
            sock.send_multipart(frames)
        sock.send_multipart(C.encode_control(C.Hello("node-3", controller.version, [], 0)))
        assert sock.poll(5000)
        welcome = C.decode_control(sock.recv_multipart())
        assert isinstance(welcome, C.Welcome) and welcome.ok
        assert controller.counters[A.CONTROL_MALFORMED] + controller.counters[A.CONTROL_BAD_VERSION] >= 6
        assert controller.counters[A.CONTROL_UNKNOWN_TYPE] >= 1
        sock.close()
    finally:
        ctx.term()
    # the real enforcer is unaffected: a policy change still arrives
    (lab.policy_dir / "lab.yaml").write_text(POLICY % "monitor")
    wait_for(lambda: service.applier.version == 2, what="policy after hostile traffic")


def test_controller_answers_one_enforcer_message_by_message(lab: Lab) -> None:
    """The server alone, with a hand-driven enforcer socket: nothing before HELLO counts, each event batch
    is acknowledged (a resent one is stored once), heartbeats are answered with the served version, a
    change travels as a delta, and a delta the enforcer cannot apply is followed by the full snapshot."""
    from zmq.auth import load_certificate

    controller = lab.start_controller()
    server_public, _ = load_certificate(str(lab.keys / "controller.key"))
    public, secret = load_certificate(str(lab.keys / "node-1.key_secret"))
    ctx = zmq.Context()
    try:
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = server_public, public, secret
        sock.connect(f"tcp://127.0.0.1:{lab.port}")

        def ask(msg: C.ControlMessage | None) -> C.ControlMessage:
            if msg is not None:
                sock.send_multipart(C.encode_control(msg))
            assert sock.poll(5000), f"no answer to {msg}"
            return C.decode_control(sock.recv_multipart())

        flow = {"family": 4, "proto": 6, "src": "198.18.1.5", "sport": 1, "dst": "198.18.2.5", "dport": 22}
        batch = [
            make_event(EventType.VIOLATION, "node-1", rule_id=i, flow=flow, action="deny") for i in range(3)
        ]
        sock.send_multipart(C.encode_control(C.EventBatch(1, batch)))
        wait_for(lambda: controller.counters["control.before_hello"] == 1, what="batch before HELLO counted")
        assert controller.store.count("violation") == 0

        assert ask(C.Hello("node-1", controller.version, ["policy.delta"], 1)) == C.Welcome(
            True, controller.version, 0.2, ""
        )  # version 1 is what it runs: no snapshot follows
        assert ask(C.EventBatch(2, batch)) == C.EventAck([2])
        assert ask(C.EventBatch(3, batch)) == C.EventAck([3])  # a batch resent after a lost ack
        assert controller.store.count("violation") == 3
        assert ask(C.ControlHeartbeat("node-1", {"packets": 9})) == C.ControlHeartbeat(
            "controller", {"policy.version": 1}
        )
        wait_for(lambda: controller.store.nodes()[0]["counters"] == {"packets": 9}, what="counters stored")

        (lab.policy_dir / "lab.yaml").write_text(POLICY % "monitor")
        delta = ask(None)
        assert isinstance(delta, C.PolicyDelta) and (delta.base, delta.version) == (1, 2)
        full = ask(C.PolicyAck(2, False, ["resync: have version 0"]))
        assert isinstance(full, C.PolicyPush) and full.version == 2
        modes = {g["name"]: g.get("mode") for g in full.policy["groups"]}
        assert full.policy["version"] == 2 and modes["servers"] == "monitor"
        assert controller.counters["policy.resyncs"] == 1
        sock.send_multipart(C.encode_control(C.PolicyAck(2, True, [])))
        wait_for(lambda: controller.store.nodes()[0]["policy_version"] == 2, what="ack stored")
    finally:
        ctx.destroy(linger=0)  # closes the socket too, also when an assertion failed


def test_enforcer_survives_a_hostile_controller(lab: Lab) -> None:
    """A peer holding the controller's key sends garbage to the enforcer: counted, no harm."""
    from zmq.auth import load_certificate

    public, secret = load_certificate(str(lab.keys / "controller.key_secret"))
    ctx = zmq.Context()
    try:
        router = ctx.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        router.curve_server = True
        router.curve_publickey, router.curve_secretkey = public, secret
        lab.port = router.bind_to_random_port("tcp://127.0.0.1")
        service = lab.start_service(lab.settings("node-1"))
        assert router.poll(5000)
        identity, *frames = router.recv_multipart()
        hello = C.decode_control(frames)
        assert isinstance(hello, C.Hello) and hello.node == "node-1"
        for junk in ([os.urandom(32)], [msgpack.packb([1, 3, 1]), b"\xdd\xff\xff\xff\xff"],
                     [msgpack.packb([1, 2, "yes", "v", 1, ""])]):  # fmt: skip
            router.send_multipart([identity, *junk])
        router.send_multipart([identity, *C.encode_control(C.Welcome(True, "x", 1.0, ""))])
        router.send_multipart([identity, *C.encode_control(C.PolicyDelta(7, 8, {"base": 7, "version": 8}))])
        router.send_multipart(
            [identity, *C.encode_control(C.PolicyPush(5, {"version": 5, "groups": "not a list"}))]
        )
        deadline = time.monotonic() + 5
        ack = None
        while time.monotonic() < deadline and ack is None:
            if router.poll(200):
                _, *frames = router.recv_multipart()
                msg = C.decode_control(frames)
                if isinstance(msg, C.PolicyAck) and msg.version == 8:
                    assert not msg.ok and msg.reasons == ["resync: have version 0"]  # a gap: full wanted
                elif isinstance(msg, C.PolicyAck):
                    ack = msg
        assert ack is not None and not ack.ok and "groups" in ack.reasons[0]
        wait_for(lambda: service.counters[A.CONTROL_MALFORMED] >= 3, what="malformed counted")
        assert service.applier.version == 0
        router.close()
    finally:
        ctx.term()


def _curve_dealer(ctx: zmq.Context, lab: Lab, key_name: str) -> zmq.Socket:
    from zmq.auth import load_certificate

    server_public, _ = load_certificate(str(lab.keys / "controller.key"))
    public, secret = load_certificate(str(lab.keys / f"{key_name}.key_secret"))
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = server_public, public, secret
    sock.connect(f"tcp://127.0.0.1:{lab.port}")
    return sock


def _hello(sock: zmq.Socket, node: str, version: str) -> C.ControlMessage:
    sock.send_multipart(C.encode_control(C.Hello(node, version, [], 0)))
    assert sock.poll(5000), f"no answer to HELLO as {node}"
    return C.decode_control(sock.recv_multipart())


def test_a_key_enrolled_for_one_node_cannot_speak_for_another(lab: Lab) -> None:
    from controller.node_keys import enrol

    enrol(lab.clients, "node-1", lab.keys / "node-1.key")  # node-1.key already there: bound to node-1
    assert (lab.clients / "node-1.node").read_text().strip() == "node-1"
    controller = lab.start_controller()
    real = lab.start_service(lab.settings("node-1"))
    wait_for(lambda: real.applier.version == 1, what="the real node-1 is served")
    ctx = zmq.Context()
    try:
        # node-3's key (enrolled, bound to node-3 on first use) claims node-1: refused, audited, counted.
        impostor = _curve_dealer(ctx, lab, "node-3")
        assert _hello(impostor, "node-3", controller.version) == C.Welcome(True, controller.version, 0.2, "")
        assert (lab.clients / "node-3.node").read_text().strip() == "node-3"  # first use, recorded
        other = _curve_dealer(ctx, lab, "node-3")
        refused = _hello(other, "node-1", controller.version)
        assert isinstance(refused, C.Welcome) and not refused.ok
        assert "enrolled for node 'node-3', not 'node-1'" in refused.reason
        assert controller.counters["control.node_refused"] == 1
        audit = [e for e in controller.store.events("audit") if e["what"] == "enforcer refused"]
        assert audit and audit[-1]["node_name"] == "node-1" and audit[-1]["bound_node"] == "node-3"
        # Nothing the impostor sends is filed under node-1: it is not a peer.
        flow = {"family": 4, "proto": 6, "src": "198.18.1.5", "sport": 1, "dst": "198.18.2.5", "dport": 22}
        other.send_multipart(C.encode_control(C.EventBatch(1, [make_event(EventType.VIOLATION, "node-1", rule_id=1,
                                                                          flow=flow, action="deny")])))  # fmt: skip
        wait_for(lambda: controller.counters["control.before_hello"] >= 1, what="batch after refusal ignored")
        assert controller.store.count("violation") == 0
    finally:
        ctx.destroy(linger=0)
    # The real node-1 keeps its session: a policy change still reaches it.
    (lab.policy_dir / "lab.yaml").write_text(POLICY % "monitor")
    wait_for(lambda: real.applier.version == 2, what="the real node-1 still served")
    wait_for(lambda: {n["node"]: n["status"] for n in controller.store.nodes()}.get("node-1") == "connected",
             what="node-1 connected")  # fmt: skip
    assert real.counters[A.CONTROL_REFUSED] == 0 and real.link is not None and real.link.refusal == ""


def test_an_older_enrolment_is_bound_to_the_first_name_it_uses(lab: Lab) -> None:
    controller = lab.start_controller()
    assert not (lab.clients / "node-3.node").exists()  # enrolled before bindings: a bare public key
    service = lab.start_service(replace(lab.settings("node-3"), node="worker-a"))
    wait_for(lambda: service.applier.version == 1, what="the first name is accepted")
    assert (lab.clients / "node-3.node").read_text().strip() == "worker-a"
    lab.stop_service(service)
    renamed = lab.start_service(replace(lab.settings("node-3"), node="worker-b"))
    wait_for(lambda: renamed.link is not None and renamed.link.refusal != "", what="the second name refused")
    assert renamed.link is not None and "enrolled for node 'worker-a'" in renamed.link.refusal
    assert "worker-b" not in {n["node"] for n in controller.store.nodes()}  # nothing filed under it
    assert renamed.counters[A.CONTROL_REFUSED] >= 1 and renamed.counters[A.CONTROL_BAD_VERSION] == 0
    assert controller.counters["control.node_refused"] >= 1
    # A restarted controller reads the recorded binding.
    lab.stop_controller()
    lab.stop_service(renamed)
    controller = lab.start_controller()
    ctx = zmq.Context()
    try:
        refused = _hello(_curve_dealer(ctx, lab, "node-3"), "worker-c", controller.version)
        assert isinstance(refused, C.Welcome) and "enrolled for node 'worker-a'" in refused.reason
        accepted = _hello(_curve_dealer(ctx, lab, "node-3"), "worker-a", controller.version)
        assert isinstance(accepted, C.Welcome) and accepted.ok
    finally:
        ctx.destroy(linger=0)
