"""Fuzz targets: every protocol parser of the DPI registry, the packet decoder, the node-internal message
decoders and the controller protocol.

Each target takes the fuzzer's bytes and raises only when the code under test breaks its contract: a
decoder may raise its documented error (`MessageError`) and nothing else; the packet decoder and the
parsers never raise (a parser's result must also be one the DPI driver accepts). Anything else
propagates and is a crash. The targets are plain functions of `bytes`, so a crashing input found by
`scripts/fuzz.py` is replayed as a byte literal in `tests/fuzz/test_regressions.py`.

Structured inputs: a decoder input whose first byte is odd is built from the bytes as a msgpack array
with the right schema version and a message type, so the fuzzer reaches the body decoders at once
instead of rediscovering the envelope.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack

from core import control as C
from core import messages as M
from core import packet
from core import policy_input as P
from workers.dpi.parsers.base import FeedResult, Outcome, ParserSpec, Side
from workers.dpi.registry import PARSERS
from workers.dpi.settings import DpiSettings

MAX_CHUNK = 1600  # bytes of one segment or datagram handed to a parser
MAX_DEPTH = 4  # nesting of generated msgpack values


class Reader:
    """Consumes the fuzzer's bytes as small integers and byte strings (libFuzzer-friendly: a
    mutation of one byte changes one decision)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def u16(self) -> int:
        return self.byte() << 8 | self.byte()

    def take(self, n: int) -> bytes:
        chunk = self.data[self.pos : self.pos + n]
        self.pos += len(chunk)
        return chunk

    def value(self, depth: int = 0) -> Any:
        """A msgpack-able value: scalars, strings, bytes, and (shallow) arrays and maps of them."""
        kind = self.byte() % (9 if depth < MAX_DEPTH else 6)
        if kind == 0:
            return None
        if kind == 1:
            return bool(self.byte() & 1)
        if kind == 2:
            return self.byte() - 128 if self.byte() & 1 else self.u16() << 16 | self.u16()
        if kind == 3:
            return self.take(self.byte() % 40).decode("latin-1")
        if kind == 4:
            return self.take(self.byte() % 40)
        if kind == 5:
            return float(self.u16()) / 7.0
        n = self.byte() % 6
        if kind in (6, 7):
            return [self.value(depth + 1) for _ in range(n)]
        return {self.take(self.byte() % 12).decode("latin-1"): self.value(depth + 1) for _ in range(n)}


def _structured(data: bytes, version: int, kinds: list[int]) -> bytes:
    r = Reader(data)
    r.byte()
    body = [version, kinds[r.byte() % len(kinds)]]
    body += [r.value() for _ in range(r.byte() % 7)]
    return bytes(msgpack.packb(body, use_bin_type=True))


def _frame(data: bytes, version: int, kinds: list[int]) -> bytes:
    return _structured(data, version, kinds) if data[:1] and data[0] & 1 else data[1:]


def fuzz_packet(data: bytes) -> None:
    assert isinstance(packet.decode(data), packet.PacketMeta)


def fuzz_messages(data: bytes) -> None:
    try:
        M.decode(_frame(data, M.SCHEMA_VERSION, [int(t) for t in M.MessageType]))
    except M.MessageError:
        pass


def fuzz_policy_input(data: bytes) -> None:
    try:
        P.decode_policy_input(_frame(data, M.SCHEMA_VERSION, [int(t) for t in P.PolicyInputType]))
    except M.MessageError:
        pass


def fuzz_control(data: bytes) -> None:
    """Raw: [mode (even), split u16, frames' bytes]; structured (mode odd): a generated header, and
    with mode bit 2 a second frame (a policy-like mapping or any value)."""
    r = Reader(data)
    mode = r.byte()
    if mode & 1:
        frames = [_structured(data[1:], C.CONTROL_PROTOCOL, [int(t) for t in C.ControlType])]
        if mode & 2:
            second = r.value() if mode & 4 else {"groups": [r.value()], "rules": [r.value()]}
            frames.append(bytes(msgpack.packb(second, use_bin_type=True)))
    else:
        split = r.u16()
        rest = data[3:]
        frames = [rest[:split], rest[split:]] if mode & 2 else [rest]
    try:
        C.decode_control(frames)
    except M.MessageError:
        pass


def _check_result(res: object, buf: bytes) -> FeedResult:
    """What the DPI driver (`workers/dpi/parsing.py`) accepts; anything else it counts as an exception."""
    assert isinstance(res, FeedResult), f"feed returned {type(res).__name__}"
    assert 0 <= res.consumed <= len(buf), f"consumed {res.consumed} of {len(buf)}"
    assert isinstance(res.outcome, Outcome) and res.needed >= 0, res
    assert isinstance(res.events, list), res
    return res


def parser_target(spec: ParserSpec, settings: DpiSettings | None = None) -> Callable[[bytes], None]:
    """A flow's segments (TCP) or datagrams (UDP) fed to one parser as the DPI driver feeds them: probe on
    each side's first bytes, the unconsumed tail kept and re-presented, `needed` honoured, the buffer
    bounded, stopped on GIVE_UP."""
    s = settings or DpiSettings()
    datagram = spec.transport == "udp"

    def run(data: bytes) -> None:
        r = Reader(data)
        parser = spec.factory(s)
        pending = [b"", b""]
        needed = [0, 0]
        probed = [False, False]
        while r.remaining():
            side = Side(r.byte() & 1)
            chunk = r.take(1 + r.u16() % MAX_CHUNK)
            if not probed[side]:
                probed[side] = True
                assert isinstance(spec.probe(side, chunk), bool), "probe must answer a bool"
            buf = pending[side] + chunk
            if len(buf) < needed[side]:
                pending[side] = buf
                continue
            res = _check_result(parser.feed(side, buf), buf)
            rest = b"" if datagram or res.consumed == len(buf) else buf[res.consumed :]
            pending[side] = rest
            needed[side] = len(rest) + res.needed if res.needed > 0 else 0
            if res.outcome is Outcome.GIVE_UP or len(rest) > s.max_buffered_bytes:
                return

    return run


def _target_name(spec: ParserSpec) -> str:
    return "parser." + re.sub(r"[^a-z0-9]+", "_", spec.name.lower()).strip("_") + "." + spec.transport


def session_input(session: list[tuple[Side, bytes]]) -> bytes:
    """A parser target's input that replays `session` (side, bytes) chunk by chunk."""
    out = bytearray()
    for side, data in session:
        for i in range(0, len(data), MAX_CHUNK):
            chunk = data[i : i + MAX_CHUNK]
            out += bytes([int(side)]) + (len(chunk) - 1).to_bytes(2, "big") + chunk
    return bytes(out)


def _control_seeds() -> list[bytes]:
    flow = {"family": 4, "proto": 6, "src": "198.18.1.5", "sport": 1, "dst": "198.18.2.5", "dport": 80}
    event = {"type": "violation", "time": 1.5, "node": "n", "id": "x1", "rule_id": 3, "flow": flow}
    policy = {"version": 2, "groups": [{"name": "g", "members": ["198.18.0.0/16"]}], "rules": []}
    msgs: list[C.ControlMessage] = [
        C.Hello("node-1", "0.1.0", ["policy.delta"], 3), C.Welcome(False, "0.1.0", 2.0, "no"),
        C.PolicyPush(2, policy), C.PolicyDelta(1, 2, {"groups": {"g": None}}), C.PolicyAck(2, False, ["r"]),
        C.EventBatch(7, [event]), C.EventAck([7, 8]), C.ControlHeartbeat("node-1", {"packets": 3}),
    ]  # fmt: skip
    seeds = []
    for msg in msgs:
        frames = C.encode_control(msg)
        mode = 2 if len(frames) == 2 else 0
        seeds.append(bytes([mode]) + len(frames[0]).to_bytes(2, "big") + b"".join(frames))
    return seeds


def seeds(name: str) -> list[bytes]:
    """Valid inputs of a target, so the fuzzer starts from real structure."""
    from tests.dpi.test_parsers import SESSIONS

    if name == "packet":
        from tests.fuzz.samples import PACKETS

        return list(PACKETS)
    if name == "messages":
        msgs: list[M.Message] = [
            M.Inspect(0, [(1, b"E" + bytes(19)), (2, b"`" + bytes(39))]), M.Verdicts(1, [(1, 2, 10)]),
            M.Events("worker 0", [{"type": "audit", "what": "x", "id": "1", "time": 1.0, "node": "n"}]),
            M.Heartbeat("reader", 0, 99, {"packets": 1}), M.BlockSources("reader 0", [(bytes(4), 5.0)]),
            M.EvidenceRequest("ab" * 8, "w0-abcdef-ev1"), M.EvidenceReply(0, "w0-abcdef-ev1", [(1.0, 40, b"E")]),
            M.CaptureStart("ab" * 8, 6, bytes(4), 0, b"", 80, "web", 3.0, 1000),
            M.CaptureChunk(1, "ab" * 8, [(1.0, 20, b"E" + bytes(19))], True, 0, ""),
        ]  # fmt: skip
        return [b"\x00" + M.encode(m) for m in msgs]
    if name == "policy_input":
        inputs: list[P.PolicyInput] = [
            P.WorkloadUpdate("runtime", True, [("w1", [bytes(4), bytes(16)], {"app": "web"})], ["w0"]),
            P.DnsAnswers("worker 1", [("example.com", [bytes(4)], 30)]),
        ]
        return [b"\x00" + P.encode_policy_input(i) for i in inputs]
    if name == "control":
        return _control_seeds()
    for spec in PARSERS:
        if _target_name(spec) == name:
            session = SESSIONS.get((spec.name, spec.transport), [])
            return [session_input(session)] if session else []
    return []


@dataclass(frozen=True)
class Target:
    name: str
    run: Callable[[bytes], None]
    errors: str  # what the target may raise without it counting as a crash


def all_targets() -> dict[str, Target]:
    targets = [
        Target("packet", fuzz_packet, "nothing (anomalies are returned)"),
        Target("messages", fuzz_messages, "MessageError"),
        Target("policy_input", fuzz_policy_input, "MessageError"),
        Target("control", fuzz_control, "MessageError"),
    ]
    targets += [Target(_target_name(spec), parser_target(spec), "nothing") for spec in PARSERS]
    by_name = {t.name: t for t in targets}
    assert len(by_name) == len(targets), "two targets share a name"
    return by_name
