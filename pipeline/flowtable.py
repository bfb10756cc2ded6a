"""A reader's flow table: bounded, with per-protocol idle timeouts and counted evictions."""

from __future__ import annotations

import enum
from collections.abc import Callable, ItemsView

from core.config import FlowsConfig
from core.flow import Direction, FlowKey
from core.packet import (
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_TCP,
    IPPROTO_UDP,
    TCP_ACK,
    TCP_FIN,
    TCP_RST,
    TCP_SYN,
    PacketMeta,
)

NO_WORKER = -1  # Flow.worker of a flow that has not gone to a worker yet (chosen when it first does)


class FlowState(enum.IntEnum):
    INSPECT = 0  # packets go to the flow's worker, which will decide
    ALLOWED = 1  # final: allowed (offloaded to the kernel)
    BLOCKED = 2  # final: blocked (dropped in the kernel)


class Flow:
    """Mutable per-flow state owned by one reader."""

    __slots__ = (
        "client_dir",
        "closing",
        "watch",
        "generation",
        "isn",
        "judged",
        "last_seen",
        "packets",
        "rule_id",
        "state",
        "worker",
    )

    def __init__(self, client_dir: Direction, worker: int, now: float, isn: int = -1) -> None:
        self.client_dir = client_dir  # direction of the packet that opened the flow (client → server)
        # the sequence number of the SYN that opened a TCP flow (-1: picked up otherwise): a SYN with
        # another one on a decided flow is a new connection reusing its ports, a SYN with this one a
        # retransmission (`reopens`)
        self.isn = isn
        self.state = FlowState.INSPECT
        # blocked by its worker (a threat in what it carried, or its application denied): a verdict on
        # this flow's content that no policy generation undoes (the policy alone would let it go on)
        self.judged = False
        self.generation = -1  # policy generation the state was decided at
        self.rule_id = 0
        self.worker = worker
        self.last_seen = now
        self.packets = 0
        self.closing = False  # a FIN or RST was seen
        # allowed, but kept in user space for the guard: a ping (each request counts) or a TCP connection
        # to a watched destination (offloaded once its handshake completes)
        self.watch = False


# The TCP flags that tell a connection's opening SYN from everything else.
_OPENING_FLAGS = TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN


def opening_isn(meta: PacketMeta) -> int:
    """The initial sequence number if the packet opens a TCP connection (a bare SYN), else -1."""
    if meta.proto == IPPROTO_TCP and meta.tcp_flags & _OPENING_FLAGS == TCP_SYN:
        return meta.seq
    return -1


def reopens(flow: Flow, isn: int) -> bool:
    """Does a packet opening a TCP connection with `isn` (see `opening_isn`) start a new connection on the
    ports of this decided flow? Conntrack hands such a SYN the old entry, and the old verdict must not
    carry over: an injection reset, or a flow allowed before a policy change, says nothing about the
    next connection from the same client port. A flow still being inspected is its worker's to follow,
    and a SYN repeating the opening one is a retransmission of the same connection."""
    return isn >= 0 and flow.state is not FlowState.INSPECT and isn != flow.isn


class FlowTable:
    """Flows by key. When full, the oldest-inserted flow is evicted; `sweep()` forgets idle flows a slice at a
    time (a rotating scan, so one call costs a bounded amount of work however large the table is)."""

    def __init__(self, config: FlowsConfig) -> None:
        self._flows: dict[FlowKey, Flow] = {}
        # `get` without a Python frame: the judge looks up every packet's flow
        self.lookup: Callable[[FlowKey], Flow | None] = self._flows.get
        self.max_flows = config.max_flows
        self._timeouts = {
            IPPROTO_TCP: float(config.tcp_timeout_s),
            IPPROTO_UDP: float(config.udp_timeout_s),
            IPPROTO_ICMP: float(config.icmp_timeout_s),
            IPPROTO_ICMPV6: float(config.icmp_timeout_s),
        }
        self._other_timeout = float(config.other_timeout_s)
        self._closed_timeout = float(config.tcp_closed_timeout_s)
        self.evicted_full = 0
        self.expired = 0

    def __len__(self) -> int:
        return len(self._flows)

    def get(self, key: FlowKey) -> Flow | None:
        return self._flows.get(key)

    def items(self) -> ItemsView[FlowKey, Flow]:
        return self._flows.items()

    def add(self, key: FlowKey, flow: Flow) -> None:
        flows = self._flows
        if len(flows) >= self.max_flows:
            del flows[next(iter(flows))]
            self.evicted_full += 1
        flows[key] = flow

    def remove(self, key: FlowKey) -> None:
        self._flows.pop(key, None)

    def timeout_of(self, key: FlowKey, flow: Flow) -> float:
        if flow.closing:
            return self._closed_timeout
        return self._timeouts.get(key.proto, self._other_timeout)

    def sweep(self, now: float, budget: int) -> int:
        """Examine up to `budget` flows from the front: forget the idle ones, move the others to the back.
        Returns how many were forgotten."""
        flows = self._flows
        forgotten = 0
        for _ in range(min(budget, len(flows))):
            key = next(iter(flows))
            flow = flows.pop(key)
            if now - flow.last_seen > self.timeout_of(key, flow):
                forgotten += 1
            else:
                flows[key] = flow
        self.expired += forgotten
        return forgotten
