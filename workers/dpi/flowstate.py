"""The DPI engine's per-flow state: the flow (context, reassembly, parsers) and a hired parser."""

from __future__ import annotations

from workers.dpi.context import FlowContext
from workers.dpi.events import ParserEvent
from workers.dpi.parsers.base import Parser, ParserSpec
from workers.dpi.settings import DpiSettings
from workers.dpi.stream import TcpStream


class Candidate:
    """A parser hired for a flow, with the bytes and events it holds until it finalizes."""

    __slots__ = ("spec", "parser", "pending", "events")

    def __init__(self, spec: ParserSpec, parser: Parser) -> None:
        self.spec = spec
        self.parser = parser
        # per Side: unconsumed bytes at [side]; at [2 + side] the length pending must reach before the
        # next feed call is useful (one list: small idle flows)
        self.pending: list = [b"", b"", 0, 0]
        self.events: list[ParserEvent] = []  # held until this candidate finalizes


class DpiFlow:
    """One flow's DPI state: its context, reassembly per side, the parsers hired and the active one."""

    __slots__ = (
        "tcp",
        "ctx",
        "client_stream",
        "server_stream",
        "candidates",
        "active",
        "inspect",
        "fin",
        "probed",
        "rst",
        "payload_packets",
        "payload_bytes",
        "server_answered",
        "awaiting_server",
        "requests",
        "ssh_auth_over",
    )

    def __init__(self, ctx: FlowContext, tcp: bool, s: DpiSettings) -> None:
        self.tcp = tcp
        self.ctx = ctx
        # TCP reassembly per side (None for other transports, and once the flow's state is released)
        self.client_stream = TcpStream(s.max_buffered_bytes, s.max_ooo_segments) if tcp else None
        self.server_stream = TcpStream(s.max_buffered_bytes, s.max_ooo_segments) if tcp else None
        self.candidates: list[Candidate] | None = None  # None: not hired yet
        self.active: Candidate | None = None
        self.inspect = True  # parsers still run
        self.fin = 0  # bit per Side: FIN seen
        self.probed = 0  # bit per Side: candidates probed with that side's first bytes
        self.rst = False
        self.payload_packets = 0
        self.payload_bytes = 0
        self.server_answered = False  # an HTTP response head was seen (its server software is known)
        self.awaiting_server = False  # the rule needs that server software: decide on the response
        self.requests = 0  # requests / messages the parser saw (the inspection window counts them)
        self.ssh_auth_over = False  # SSH: the authentication phase is over (the window closes)
