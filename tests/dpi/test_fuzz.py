"""Hypothesis on every parser entry point: probes return bools, feeds never raise and always return a
declared outcome with a consumed count inside the data; the stream, DNS and defragmentation layers
never raise and keep their bounds."""

from __future__ import annotations

import os
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.flow import flow_key
from core.packet import decode
from tests.dpi.conftest import load_generator
from tests.dpi.drive import check_result
from tests.dpi.drive import settings as dpi_settings
from tests.dpi.test_parsers import SESSIONS
from workers.dpi.engine import DpiEngine
from workers.dpi.parsers import dns
from workers.dpi.parsers.base import Outcome, Side
from workers.dpi.registry import PARSERS
from workers.dpi.stream import TcpStream

gen = load_generator()
FUZZ = settings(
    max_examples=int(os.environ.get("DPI_FUZZ_EXAMPLES", "80")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
SMALL = dpi_settings(max_event_bytes=64, max_header_bytes=256, max_buffered_bytes=4096)
sides = st.sampled_from([Side.CLIENT, Side.SERVER])
chunks = st.lists(st.tuples(sides, st.binary(max_size=300)), max_size=12)


def _seeded(parser_index: int) -> st.SearchStrategy[list[tuple[Side, bytes]]]:
    """Mutations of a real session of the parser's protocol, to get past the first checks."""
    spec = PARSERS[parser_index]
    session = SESSIONS[(spec.name, spec.transport)]

    @st.composite
    def mutate(draw: st.DrawFn) -> list[tuple[Side, bytes]]:
        out = []
        for side, data in session:
            b = bytearray(data)
            for _ in range(draw(st.integers(0, 4))):
                if b:
                    b[draw(st.integers(0, len(b) - 1))] = draw(st.integers(0, 255))
            cut = draw(st.integers(0, len(b)))
            out.append((side, bytes(b[:cut])))
            out.append((side, bytes(b[cut:])))
        return out

    return mutate()


def _feed_all(spec_index: int, session: list[tuple[Side, bytes]]) -> None:
    spec = PARSERS[spec_index]
    for side, data in session[:1]:
        assert isinstance(spec.probe(side, data), bool)
    parser = spec.factory(SMALL)
    pending = {Side.CLIENT: b"", Side.SERVER: b""}
    for side, data in session:
        buf = pending[side] + data
        res = parser.feed(side, buf)
        check_result(res, len(buf))
        assert res.outcome in (Outcome.KEEP, Outcome.FINAL, Outcome.GIVE_UP)
        if res.outcome is Outcome.GIVE_UP:
            return
        pending[side] = b"" if spec.transport == "udp" else buf[res.consumed :]


@FUZZ
@given(st.integers(0, len(PARSERS) - 1), chunks)
def test_feed_random_bytes(index: int, session: list[tuple[Side, bytes]]) -> None:
    _feed_all(index, session)


@FUZZ
@given(st.data())
def test_feed_mutated_sessions(data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(PARSERS) - 1))
    _feed_all(index, data.draw(_seeded(index)))


@FUZZ
@given(sides, st.binary(max_size=80))
def test_probes_return_bool(side: Side, head: bytes) -> None:
    for spec in PARSERS:
        assert isinstance(spec.probe(side, head), bool)


@FUZZ
@given(st.binary(max_size=600))
def test_dns_parse_message_never_raises(msg: bytes) -> None:
    out = dns.parse_message(msg, dpi_settings(max_dns_records=8))
    assert out is None or len(out.answers) <= 8


@FUZZ
@given(st.data())
def test_dns_mutated_messages(data: st.DataObject) -> None:
    b = bytearray(gen.dns_response_cname(3))
    for _ in range(data.draw(st.integers(1, 6))):
        b[data.draw(st.integers(0, len(b) - 1))] = data.draw(st.integers(0, 255))
    out = dns.parse_message(bytes(b), dpi_settings(max_dns_records=2))
    assert out is None or len(out.answers) <= 2


@FUZZ
@given(st.binary(min_size=1, max_size=2000), st.integers(1, 200), st.randoms(use_true_random=False))
def test_stream_reassembles_any_order(payload: bytes, mss: int, rnd: random.Random) -> None:
    """Segments in any order, with duplicates: the stream delivers exactly the payload, once."""
    base = 0xFFFFFF00  # sequence numbers wrap inside the payload
    segs = [(base + i, payload[i : i + mss]) for i in range(0, len(payload), mss)]
    segs += rnd.sample(segs, k=min(3, len(segs)))  # retransmissions
    rnd.shuffle(segs)
    stream = TcpStream(max_bytes=1 << 20, max_segments=1 << 12)
    stream.syn(base - 1)
    out = b"".join(stream.segment(seq % (1 << 32), data) for seq, data in segs)
    assert out == payload
    assert stream.buffered() == 0


@FUZZ
@given(st.lists(st.tuples(st.integers(0, (1 << 32) - 1), st.binary(max_size=300)), max_size=40))
def test_stream_bounds_hold(segments: list[tuple[int, bytes]]) -> None:
    stream = TcpStream(max_bytes=1024, max_segments=8)
    for seq, data in segments:
        stream.segment(seq, data)
        assert stream.buffered() <= 1024 + 300
        assert stream.ooo is None or len(stream.ooo) <= 9


@FUZZ
@given(st.lists(st.binary(min_size=20, max_size=120), min_size=1, max_size=20))
def test_engine_survives_random_ip_packets(bodies: list[bytes]) -> None:
    """Random bytes behind valid-looking IPv4/TCP and UDP headers go through the whole engine."""
    engine = DpiEngine(SMALL, None, lambda _e: None, "fuzz")
    for i, body in enumerate(bodies):
        if i % 2:
            pkt = gen.tcp_segment(
                gen.C4, gen.S4, 40000, 80, int.from_bytes(body[:4], "big"), 0, body[4], body[5:]
            )
        else:
            pkt = gen.udp_datagram(gen.C4, gen.S4, 40000, 53, body)
        meta = decode(pkt)
        key, direction = flow_key(meta)
        verdict, _ = engine.on_packet(pkt, meta, key, direction, float(i))
        assert int(verdict) in range(5)
    engine.expire(1e9)
    assert engine.stats()["flows"] == 0
