"""Identification through the whole engine: every protocol's session is named correctly on a port no
parser claims, on every other protocol's default port, and with its segments out of order."""

from __future__ import annotations

import pytest

from core.flow import flow_key
from core.packet import decode
from tests.dpi.conftest import load_generator
from tests.dpi.drive import settings
from tests.dpi.test_parsers import SESSIONS
from workers.dpi.context import FlowContext
from workers.dpi.engine import DpiEngine
from workers.dpi.events import ParserEvent
from workers.dpi.parsers.base import Side
from workers.dpi.registry import PARSERS

gen = load_generator()
PORTS = sorted({p for spec in PARSERS if spec.transport == "tcp" for p in spec.ports})
TCP_KEYS = sorted(k for k in SESSIONS if k[1] == "tcp" and k[0] != "ECHO")  # Echo is only tried on its port
UDP_KEYS = sorted(k for k in SESSIONS if k[1] == "udp" and k[0] != "ECHO")


def packets(
    key: tuple[str, str], port: int, mss: int = 1400, swap: bool = False
) -> list[tuple[float, bytes]]:
    out: list[tuple[float, bytes]] = []
    if key[1] == "udp":
        msgs = [(0 if side is Side.CLIENT else 1, data) for side, data in SESSIONS[key]]
        gen.udp_exchange(out, 1.0, msgs, gen.C4, 40000, gen.S4, port)
        return out
    c = gen.TcpConversation(out, gen.C4, 40000, gen.S4, port, 1.0).handshake()
    for side, data in SESSIONS[key]:
        start = len(out)
        c.send(0 if side is Side.CLIENT else 1, data, mss=mss)
        if swap:  # deliver each message's segments pairwise swapped: 2,1,4,3 …
            seg = out[start:]
            for i in range(0, len(seg) - 1, 2):
                seg[i], seg[i + 1] = seg[i + 1], seg[i]
            out[start:] = seg
    return out


def replay(pkts: list[tuple[float, bytes]]) -> tuple[list[str], list[ParserEvent]]:
    apps: list[str] = []
    events: list[ParserEvent] = []

    def on_event(ctx: FlowContext, ev: ParserEvent) -> None:
        events.append(ev)

    engine = DpiEngine(settings(), None, lambda e: None, "t", on_event=on_event,
                       on_flow_end=lambda ctx: apps.append(ctx.app))  # fmt: skip
    for ts, pkt in pkts:
        meta = decode(pkt)
        k, direction = flow_key(meta)
        engine.on_packet(pkt, meta, k, direction, ts)
    engine.close_all()
    return apps, events


@pytest.mark.parametrize("key", TCP_KEYS + UDP_KEYS)
def test_identified_on_a_port_nobody_claims(key: tuple[str, str]) -> None:
    assert replay(packets(key, 47777))[0] == [key[0]]


@pytest.mark.parametrize("port", PORTS)
@pytest.mark.parametrize("key", TCP_KEYS)
def test_not_mistaken_on_another_protocols_port(key: tuple[str, str], port: int) -> None:
    assert replay(packets(key, port))[0] == [key[0]]


@pytest.mark.parametrize("key", TCP_KEYS)
def test_out_of_order_segments_give_the_same_events(key: tuple[str, str]) -> None:
    in_order = replay(packets(key, 47777, mss=5))
    swapped = replay(packets(key, 47777, mss=5, swap=True))
    assert swapped == in_order
    assert in_order[0] == [key[0]]
