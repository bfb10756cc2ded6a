"""Threat events: building them from findings, and aggregating repeats over a short window.

`threat_event` turns a finding into a `threat` event of the one schema (`core.events.make_event`): the
flow, the group whose settings applied, the action actually taken, the threat id and a bounded excerpt.
Fields of a threat event (those from the DPI hooks are the same, with `message` for `detail`, `app`,
and `configured_action`):

    name, threat_id, severity      the catalogue's (`dlp_sensor` findings add `sensor` and `rule`)
    action                         what was done: alert | drop | reset | block-source (alert unless Protect)
    flow                           {family, proto, src, sport, dst, dport} (core.events.flow_fields)
    group, mode                    the group whose threat settings applied, and its mode
    detail, excerpt                a short reason; at most 256 bytes of evidence (sensor matches masked)
    evidence                       id of the packet capture (ThreatEngine.evidence_pcap), when kept
    count                          1, or the number of repeats in an aggregated summary, which also has
    aggregated, first_time, last_time

`EventAggregator` sits in front of any event sink (`emit`): the first threat event of a kind passes at
once; identical ones within `window` seconds are counted, not sent, and `flush(now)` sends one summary
per kind with the count when its window closes. "Identical" means same threat (and sensor rule), same
action and group, and the same endpoints, except for volume threats where the attacker varies what it
can: floods are keyed by their destination (spoofed sources would otherwise make one event each),
per-source threats (scans, session floods, brute force) by their source. Non-threat events pass
through untouched. The table is bounded (`max_keys`): a key evicted with repeats pending is flushed
early rather than lost.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from core.events import EventType, flow_fields, make_event
from threats.catalogue import Finding, ThreatAction

# Threats keyed by destination only / by source only when aggregating.
BY_DESTINATION = frozenset({"syn_flood", "icmp_flood", "udp_flood", "dns_flood"})
BY_SOURCE = frozenset(
    {"source_session_flood", "port_scan", "mysql_access_denied", "dns_tunneling", "ssh_brute_force",
     "http_brute_force"}
)  # fmt: skip
DEFAULT_WINDOW = 5.0
DEFAULT_MAX_KEYS = 4096


def threat_event(
    node: str,
    finding: Finding,
    action: ThreatAction,
    group: str,
    now: float,
    mode: str = "",
    workload: str = "",
    evidence: str = "",
) -> dict[str, Any]:
    """The `threat` event for one finding (`action` is what was actually done, after the mode)."""
    threat = finding.threat
    src, dst = finding.src, finding.dst
    if len(src) in (4, 16) and len(dst) in (4, 16):
        family = 6 if len(src) == 16 else 4
        flow = flow_fields(family, finding.proto, src, finding.sport, dst, finding.dport)
    else:  # a packet too broken to name its endpoints
        flow = {"family": 0, "proto": finding.proto, "src": "", "sport": 0, "dst": "", "dport": 0}
    fields: dict[str, Any] = {
        "name": threat.name,
        "threat_id": threat.id,
        "severity": str(threat.severity),
        "action": str(action),
        "flow": flow,
        "group": group,
        "detail": finding.detail,
        "excerpt": finding.excerpt,
        "count": 1,
    }
    if finding.sensor:
        fields["sensor"] = finding.sensor
    if mode:
        fields["mode"] = mode
    if workload:
        fields["workload"] = workload
    if evidence:
        fields["evidence"] = evidence  # id of the packet capture (ThreatEngine.evidence_pcap)
    return make_event(EventType.THREAT, node, now, **fields)


def finding_key(finding: Finding, action: ThreatAction, group: str) -> tuple[Any, ...]:
    """The aggregation key of a finding, without building its event (raw addresses)."""
    name = finding.threat.name
    src, dst, dport = finding.src, finding.dst, finding.dport
    if name in BY_DESTINATION:
        src, dport = b"", 0
    elif name in BY_SOURCE:
        dst, dport = b"", 0
    return (name, finding.sensor, "", str(action), group, src, dst, dport, finding.proto)


def _key(event: Mapping[str, Any]) -> tuple[Any, ...]:
    name = event.get("name", "")
    flow = event.get("flow") or {}
    src, dst = flow.get("src", ""), flow.get("dst", "")
    dport, proto = flow.get("dport", 0), flow.get("proto", 0)
    if name in BY_DESTINATION:
        src = ""
        dport = 0
    elif name in BY_SOURCE:
        dst = ""
        dport = 0
    return (
        name,
        event.get("sensor", ""),
        event.get("rule", ""),
        event.get("action", ""),
        event.get("group", ""),
        src,
        dst,
        dport,
        proto,
    )


class _Slot:
    __slots__ = ("start", "last", "repeats", "template")

    def __init__(self, start: float, template: dict[str, Any]) -> None:
        self.start = start
        self.last = start
        self.repeats = 0
        self.template = template


class EventAggregator:
    """Wraps an event sink; threat events are aggregated, others pass straight through."""

    def __init__(
        self,
        emit: Callable[[dict[str, Any]], None],
        node: str,
        window: float = DEFAULT_WINDOW,
        max_keys: int = DEFAULT_MAX_KEYS,
    ) -> None:
        self._emit = emit
        self.node = node
        self.window = window
        self.max_keys = max_keys
        self._slots: OrderedDict[tuple[Any, ...], _Slot] = OrderedDict()  # oldest window first
        self.suppressed = 0  # events folded into a count
        self.evicted = 0  # keys flushed early because the table was full

    def emit(self, event: dict[str, Any]) -> None:
        if event.get("type") != EventType.THREAT.value:
            self._emit(event)
            return
        self.emit_lazy(_key(event), float(event.get("time", 0.0)), lambda: event)

    def emit_lazy(self, key: tuple[Any, ...], now: float, build: Callable[[], dict[str, Any]]) -> bool:
        """Count a threat under `key`; build and send its event only when it opens a new window (the hot
        path of a flood builds one event per window, not one per packet). True if it was sent."""
        slot = self._slots.get(key)
        if slot is not None and now - slot.start < self.window:
            slot.repeats += 1
            slot.last = now
            self.suppressed += 1
            return False
        if slot is not None:
            self._summary(self._slots.pop(key))
        elif len(self._slots) >= self.max_keys:
            _, oldest = self._slots.popitem(last=False)
            self.evicted += 1
            self._summary(oldest)
        event = build()
        self._slots[key] = _Slot(now, event)
        self._emit(event)
        return True

    def flush(self, now: float, force: bool = False) -> None:
        """Send the summaries of windows that have closed (all of them with `force`)."""
        while self._slots:
            key, slot = next(iter(self._slots.items()))
            if not force and now - slot.start < self.window:
                break
            del self._slots[key]
            self._summary(slot)

    def _summary(self, slot: _Slot) -> None:
        if not slot.repeats:
            return
        fields = {k: v for k, v in slot.template.items() if k not in ("type", "time", "node", "id")}
        fields["count"] = slot.repeats
        fields["aggregated"] = True
        fields["first_time"] = slot.start
        fields["last_time"] = slot.last
        self._emit(make_event(EventType.THREAT, self.node, slot.last, **fields))

    def __len__(self) -> int:
        return len(self._slots)
