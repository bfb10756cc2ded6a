"""The per-flow context the DPI engine keeps and hands to detector hooks.

Detector hooks (built in `workers/detect/`, passed to `DpiEngine(detectors=...)`) have these shapes:

    on_packet_hook(ctx: FlowContext, meta: PacketMeta, packet: bytes, now: float) -> list[Finding]
        called for every packet of a tracked flow (after defragmentation, before reassembly), with the
        IP packet and its decoded meta; payload is packet[meta.payload_offset:meta.ip_len].

    on_event_hook(ctx: FlowContext, event: ParserEvent, now: float) -> list[Finding]
        called for every parser event (workers.dpi.events), in stream order.

A hook keeps its per-flow state in `ctx.detector_state[<its name>]` (the engine drops it with the flow)
and must bound it itself. Hooks must not raise; the engine catches an exception once per call, counts
`dpi.detector.exception` and carries on without that hook's findings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from core.flow import Direction, FlowKey
from core.packet import PacketMeta
from core.verdict import WorkerVerdict
from workers.dpi.events import Finding, ParserEvent
from workers.dpi.parsers.base import Side


@dataclass(slots=True, eq=False)
class FlowContext:
    key: FlowKey
    family: int
    client_direction: Direction  # the canonical direction that goes client → server
    client_addr: bytes
    client_port: int
    server_addr: bytes
    server_port: int
    started: float
    last_seen: float
    midstream: bool = False  # picked up without seeing the handshake (direction guessed)
    direction: Direction = Direction.A_TO_B  # direction of the packet being processed
    side: Side = Side.CLIENT  # side of the packet being processed
    app: str = ""  # identified application ("" until identified)
    server_app: str = ""  # server software from HTTP headers ("nginx", "Apache" …)
    host: bytes = b""  # HTTP Host of the first request
    sni: bytes = b""  # TLS SNI of the client hello
    server_names: tuple[str, ...] = ()  # names the server address had in the FQDN cache at flow start
    rule_id: int = 0
    mode: int = -1  # core.lookup.Mode of the deciding group; -1 with no policy
    decided: bool = False  # the app-aware decision was made (or the fallback applied)
    decision: str = "pending"  # "allow" | "block" | "reset" | "pending"; why in `reason`
    reason: str = ""  # "app" | "unidentified" | "threat:<name>" | an anomaly name
    verdict: WorkerVerdict = WorkerVerdict.PASS  # the flow's current verdict
    packets: list[int] = field(default_factory=lambda: [0, 0])  # per Side
    bytes: list[int] = field(default_factory=lambda: [0, 0])  # payload bytes per Side
    detector_state: dict[str, object] = field(default_factory=dict)


PacketHook = Callable[[FlowContext, PacketMeta, bytes, float], list[Finding]]
EventHook = Callable[[FlowContext, ParserEvent, float], list[Finding]]


@dataclass(frozen=True, slots=True)
class Detector:
    """A detector as the engine takes it: a name (for counters and state) and one or both hooks."""

    name: str
    on_packet: PacketHook | None = None
    on_event: EventHook | None = None
