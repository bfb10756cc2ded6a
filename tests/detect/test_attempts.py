"""The connection-attempt core (`threats.attempts`) is one implementation: the readers' guard and a
detector without a reader in front (replay) count the same first packets alike."""

from __future__ import annotations

from collections import Counter

from core.packet import TCP_ACK, TCP_FIN, TCP_SYN
from threats.attempts import DROP, WATCH, AttemptLimits, ConnectionAttempts
from threats.catalogue import Threat
from threats.context import PacketContext
from threats.packets import PacketDetector
from threats.settings import compile_threat_settings

from .build import CLIENT, SERVER, icmp, ipv4, packet, tcp4, udp


class Collect:
    def __init__(self, drop: bool = False) -> None:
        self.names: Counter[str] = Counter()
        self.drop = drop
        self.blocked: list[bytes] = []

    def report(self, threat: Threat, ctx: PacketContext, detail: str) -> bool:
        self.names[threat.name] += 1
        return self.drop

    def block_source(self, src: bytes, seconds: float, now: float) -> None:
        self.blocked.append(src)


SETTINGS = compile_threat_settings(
    {
        "port_scan": {"ports_per_window": 10, "hosts_per_window": 15},
        "source_session_flood": {"sessions_per_window": 30},
        "icmp_flood": {"echo_per_window": 5},
    }
)
FIRST_PACKETS = (
    [tcp4(CLIENT, 40000 + i, SERVER, 1000 + i, TCP_SYN) for i in range(20)]
    + [tcp4(CLIENT, 41000 + i, SERVER, 2000 + i, TCP_FIN) for i in range(5)]  # FIN probes: bad packets too
    + [tcp4(CLIENT, 42000 + i, SERVER, 3000 + i, TCP_ACK) for i in range(5)]  # ACK probes
    + [tcp4(CLIENT, 42100 + i, SERVER, 3100 + i, TCP_FIN | TCP_ACK) for i in range(3)]  # Maimon probes
    + [ipv4(CLIENT, f"198.18.7.{i + 1}", 17, udp(5000 + i, 53, b"q")) for i in range(20)]
    + [ipv4(CLIENT, SERVER, 1, icmp(8, ident=i, payload=b"p" * 8)) for i in range(8)]
    + [tcp4(CLIENT, 43000, SERVER, 80, TCP_SYN, payload=b"early")]
)


def test_the_guard_and_a_replay_detector_count_first_packets_alike() -> None:
    reader, detector = ConnectionAttempts(AttemptLimits(sample=4)), PacketDetector()
    by_reader = Collect()
    by_detector: Counter[str] = Counter()
    for i, buf in enumerate(FIRST_PACKETS):
        meta, raw, key, direction = packet(buf)
        now = 1000.0 + i * 0.001
        reader.first_packet(PacketContext(meta, raw, key, None, now, SETTINGS), by_reader)
        by_detector.update(
            f.threat.name for f in detector.inspect(PacketContext(meta, raw, key, direction, now, SETTINGS))
        )
    assert by_reader.names == by_detector
    assert {"port_scan", "source_session_flood", "bad_packet", "icmp_flood", "tcp_syn_data"} <= set(
        by_detector
    )


def test_a_refused_syn_during_a_flood_is_challenged_and_a_retransmission_proves_its_source() -> None:
    settings = compile_threat_settings({"syn_flood": {"syns_per_window": 5}, "port_scan": {"enabled": False}})
    core = ConnectionAttempts(AttemptLimits(watch_all=True))
    protect = Collect(drop=True)

    def syn(src: str, sport: int, now: float, seq: int = 1) -> int:
        meta, raw, key, _ = packet(tcp4(src, sport, SERVER, 80, TCP_SYN, seq=seq))
        return core.first_packet(PacketContext(meta, raw, key, None, now, settings), protect)

    verdicts = [syn(f"203.0.113.{i + 1}", 2000, 1000.0 + i * 0.001) for i in range(20)]
    assert verdicts[:5] == [WATCH] * 5 and set(verdicts[5:]) == {DROP}  # followed, then the flood
    client = "198.18.9.9"
    assert syn(client, 5000, 1000.05, seq=77) == DROP  # a suspect while the destination is flooded
    assert syn(client, 5000, 1000.06, seq=77) == DROP  # resent at once: no proof
    assert syn(client, 5000, 1000.9, seq=77) == WATCH  # retransmitted after a pause, as stacks do: let in
    assert core.sources_proved == 1 and core.is_good_source(bytes([198, 18, 9, 9]), 1000.95)
