"""The reader's guard: floods and scans among the connections a reader decides without a worker."""

from __future__ import annotations

import dpkt
import pytest

from node.config import config_from_dict
from pipeline.guard import WATCH_SAMPLE
from pipeline.judge import Act, Judge
from policy.loader import parse_policy_text
from policy.tables import DictTables, compile_policy
from tests.pipeline.packets import tcp4
from threats.settings import compile_group_settings
from workers.detect.engine import threat_settings_from_snapshot

SYN, ACK = dpkt.tcp.TH_SYN, dpkt.tcp.TH_ACK
WEB, API = "198.18.2.11", "198.18.2.12"
POLICY = """
version: 1
groups:
  - {name: clients, mode: monitor, members: [198.18.128.0/17]}
  - {name: web, mode: protect, members: [198.18.2.11/32]}
  - {name: api, mode: monitor, members: [198.18.2.12/32]}
rules:
  - {id: 10, from: clients, to: web, ports: [tcp/80], action: allow}
  - {id: 12, from: clients, to: web, ports: [tcp/8080], applications: [HTTP], action: allow}
  - {id: 20, from: clients, to: api, ports: [tcp/80], action: allow}
"""
CLIENT, SCANNER = "198.18.200.1", "198.18.201.50"


def judge(threats: dict | None = None, **sections: dict[str, object]) -> Judge:
    tables = DictTables(compile_policy(parse_policy_text(POLICY)))
    sections.setdefault("workers", {}).setdefault("inspect", "app")  # the L4 path unless a test says so
    j = Judge(config_from_dict(sections, {}), tables, seed=1, node="n")
    if threats is not None:
        assert j.guard is not None
        j.guard.set_threat_settings(compile_group_settings({"default": threats}))
    return j


def spoofed(i: int) -> str:
    return f"198.18.{128 + i // 250}.{1 + i % 250}"  # in `clients`


def threat_events(j: Judge, name: str) -> list[dict]:
    return [e for e in j.take_events() if e["type"] == "threat" and e["name"] == name]


class Flood:
    """Spoofed SYNs to one server at `rate` per second, sent up to the time asked for."""

    def __init__(self, j: Judge, dst: str, start: float, rate: float = 200.0) -> None:
        self.j, self.dst, self.t, self.step, self.i = j, dst, start, 1.0 / rate, 0
        self.acts: list[Act] = []

    def until(self, end: float) -> None:
        while self.t < end:
            self.acts.append(
                self.j.judge(tcp4(spoofed(self.i), self.dst, 1024 + self.i % 60000, 80), self.t)[0]
            )
            self.i += 1
            self.t += self.step


def test_syn_flood_on_a_protected_server_drops_unknown_sources_and_real_clients_prove_themselves() -> None:
    j = judge({"syn_flood": {"syns_per_window": 50, "window": 1.0}})
    flood = Flood(j, WEB, 10.0)
    flood.until(11.0)
    assert flood.acts[:50] == [Act.ALLOW] * 50  # under the limit: ordinary connections, offloaded at once
    # over it, one connection in four is followed (kept in user space, PASS) until its handshake
    # completes, the others offloaded; forged SYNs never complete, and once about 50 are half-open the
    # unknown sources are dropped
    watched = flood.acts[50:100]
    assert set(watched) == {Act.PASS, Act.ALLOW} and watched.count(Act.PASS) == len(watched) // WATCH_SAMPLE
    first_drop = flood.acts.index(Act.DROP)
    assert 95 <= first_drop <= 105 and set(flood.acts[first_drop:]) == {Act.DROP}
    (event,) = threat_events(j, "syn_flood")
    assert (event["action"], event["group"], event["mode"], event["flow"]["dst"]) == (
        "drop",
        "web",
        "protect",
        WEB,
    )
    assert len(j.flows) == first_drop  # dropped SYNs leave no flow behind
    client = CLIENT
    assert j.judge(tcp4(client, WEB, 40000, 80), 11.0)[0] is Act.DROP  # first SYN: who is this?
    flood.until(11.01)
    assert j.judge(tcp4(client, WEB, 40000, 80), 11.01)[0] is Act.DROP  # resent at once: a tool, not a stack
    flood.until(11.4)
    assert j.judge(tcp4(client, WEB, 40000, 80), 11.4)[0] is Act.DROP  # within the pause of the last one
    flood.until(12.5)
    assert j.judge(tcp4(client, WEB, 40000, 80, seq=7), 12.5)[0] is Act.DROP  # another SYN, not a resend
    flood.until(13.6)
    served = (Act.PASS, Act.ALLOW)  # followed (kept in user space) or offloaded at once
    assert j.judge(tcp4(client, WEB, 40000, 80, seq=7), 13.6)[0] in served  # the kernel's retransmission
    assert j.judge(tcp4(client, WEB, 40000, 80, flags=ACK, seq=8), 13.6)[0] is Act.ALLOW  # handshake done
    assert j.judge(tcp4(client, WEB, 40001, 80), 13.7)[0] in served  # proved: its next connections pass
    assert j.stats()["guard.syn_flood.source_proved"] == 1
    flood.until(14.0)
    assert set(flood.acts[first_drop:]) == {Act.DROP}  # the flood never got through
    # the flood ends: a window later unknown sources pass again (watched for a while, then offloaded)
    assert j.judge(tcp4(spoofed(999), WEB, 999, 80), 20.0)[0] in (Act.PASS, Act.ALLOW)
    assert j.judge(tcp4(spoofed(998), WEB, 998, 80), 40.0)[0] is Act.ALLOW


def test_real_clients_prove_themselves_through_more_forged_syns_than_an_oldest_first_table_holds() -> None:
    # 100,000 forged SYNs between a client's refused SYN and its retransmission one second later: what a
    # reader of a fast node judges in a flood from random sources.
    j = judge({"syn_flood": {"syns_per_window": 50, "window": 1.0}})
    Flood(j, WEB, 10.0).until(11.0)  # the server is flooded: unknown sources are refused
    clients = [f"198.18.{240 + i // 250}.{1 + i % 250}" for i in range(1000)]
    assert {j.judge(tcp4(c, WEB, 40000, 80), 11.0)[0] for c in clients} == {Act.DROP}
    forged = 100_000
    for i in range(forged):
        src = f"198.18.{128 + i // 250 % 112}.{1 + i % 250}"  # not one of the clients
        assert j.judge(tcp4(src, WEB, 2000 + i % 60000, 80), 11.0 + i * 1e-5)[0] is Act.DROP
    served = sum(j.judge(tcp4(c, WEB, 40000, 80), 12.0)[0] in (Act.PASS, Act.ALLOW) for c in clients)
    # each client's SYN outlives the flood with probability exp(-forged / 2**20) = 0.91: about 909 of
    # 1,000, with a binomial spread of 9 (an oldest-first table of 65,536 forgot all of them)
    assert served >= 800, served
    assert j.stats()["guard.syn_flood.source_proved"] == served


def test_a_busy_service_is_no_flood() -> None:
    """Thousands of connections a second from real clients: watched, all completed, none dropped."""
    j = judge({"syn_flood": {"syns_per_window": 50}})
    acts = []
    for i in range(600):
        src, port, t = spoofed(i % 7), 2000 + i, 1.0 + i * 1e-3
        acts.append(j.judge(tcp4(src, WEB, port, 80), t)[0])
        j.judge(tcp4(WEB, src, 80, port, flags=SYN | ACK), t)
        acts.append(j.judge(tcp4(src, WEB, port, 80, flags=ACK, seq=1001), t)[0])
    assert Act.DROP not in acts
    assert threat_events(j, "syn_flood") == []


def test_syn_flood_from_one_source_drops_that_source_and_spares_the_others() -> None:
    j = judge({"syn_flood": {"syns_per_window": 50}})
    flood = [j.judge(tcp4("198.18.199.66", WEB, 1024 + i, 80), 5.0 + i * 1e-4)[0] for i in range(160)]
    first_drop = flood.index(Act.DROP)
    assert flood[:50] == [Act.ALLOW] * 50 and Act.PASS in flood[50:first_drop]
    assert 95 <= first_drop <= 105 and set(flood[first_drop:]) == {Act.DROP}
    # the source is the flood: a resent SYN does not bring it back, and it is dropped in the kernel too
    assert j.judge(tcp4("198.18.199.66", WEB, 1024 + 120, 80), 5.6)[0] is Act.DROP
    assert (
        j.guard is not None and j.guard.new_blocks and j.guard.new_blocks[0][0] == bytes([198, 18, 199, 66])
    )
    assert j.judge(tcp4(CLIENT, WEB, 40000, 80), 5.5)[0] in (Act.PASS, Act.ALLOW)  # another client: served


def test_syn_flood_on_a_monitored_server_is_reported_and_passes() -> None:
    j = judge({"syn_flood": {"syns_per_window": 50}})
    acts = {j.judge(tcp4(spoofed(i), API, 1024 + i, 80), 1.0 + i * 1e-4)[0] for i in range(200)}
    assert Act.DROP not in acts
    (event,) = threat_events(j, "syn_flood")
    assert (event["action"], event["group"], event["mode"]) == ("alert", "api", "monitor")
    j.sweep(100.0)  # the aggregation window closes: the count of what followed the first event
    (summary,) = threat_events(j, "syn_flood")
    assert summary["aggregated"] is True and summary["count"] >= 90


def test_port_scan_blocks_the_source_for_the_block_time_in_protect() -> None:
    j = judge()  # catalogue defaults: 100 ports in 10 s, block-source for 60 s
    scanner, other = SCANNER, CLIENT
    acts = [j.judge(tcp4(scanner, WEB, 50000, port), 1.0 + port * 1e-3)[0] for port in range(1000, 1100)]
    assert Act.DROP in acts and acts[-1] is Act.DROP
    (event,) = threat_events(j, "port_scan")
    assert (event["action"], event["flow"]["src"]) == ("block-source", scanner)
    assert j.judge(tcp4(scanner, WEB, 50001, 80), 2.2)[0] is Act.DROP  # blocked, even where rules allow
    assert j.judge(tcp4(other, WEB, 40000, 80), 2.2)[0] is Act.ALLOW
    assert j.judge(tcp4(scanner, WEB, 50002, 80), 63.0)[0] is Act.ALLOW  # the block time (60 s) is over
    assert j.stats()["guard.dropped.blocked_source"] >= 1


def test_a_block_shorter_than_the_scan_window_is_not_renewed_by_the_next_connection() -> None:
    j = judge({"port_scan": {"block_seconds": 4}})  # the window stays 10 s
    acts = [j.judge(tcp4(SCANNER, WEB, 50000, port), 1.0 + port * 1e-3)[0] for port in range(1000, 1100)]
    assert acts[-1] is Act.DROP and j.judge(tcp4(SCANNER, WEB, 50001, 80), 3.0)[0] is Act.DROP
    # the block is over while the scan's window (opened at 2.0) still runs: an ordinary connection is
    # no new evidence of a scan, and it is let through
    assert j.judge(tcp4(SCANNER, WEB, 50002, 80), 6.5)[0] is Act.ALLOW
    assert j.judge(tcp4(SCANNER, WEB, 50003, 80), 6.6)[0] is Act.ALLOW
    # a new scan is blocked again
    acts = [j.judge(tcp4(SCANNER, WEB, 50004, port), 7.0 + port * 1e-4)[0] for port in range(2000, 2100)]
    assert acts[-1] is Act.DROP


def test_port_scan_of_a_monitored_server_alerts_only() -> None:
    j = judge()
    acts = {j.judge(tcp4(SCANNER, API, 50000, port), 1.0)[0] for port in range(1000, 1200)}
    assert Act.DROP not in acts
    (event,) = threat_events(j, "port_scan")
    assert event["action"] == "alert"
    assert j.judge(tcp4(SCANNER, API, 50001, 80), 2.0)[0] is Act.ALLOW


def test_source_session_flood_and_group_settings_from_the_policy() -> None:
    doc = POLICY + "group_threats: {web: {source_session_flood: {thresholds: {sessions_per_window: 20}}}}\n"
    j = judge()
    assert j.guard is not None
    j.guard.set_threat_settings(threat_settings_from_snapshot(parse_policy_text(doc)))
    acts = [j.judge(tcp4("198.18.199.70", WEB, 2000 + i, 80), 1.0 + i * 1e-3)[0] for i in range(30)]
    assert acts[:20] == [Act.ALLOW] * 20 and acts[20] is Act.DROP
    (event,) = threat_events(j, "source_session_flood")
    assert event["action"] == "block-source" and event["group"] == "web"
    # api keeps the catalogue's 3,000: the same rate toward it is fine
    acts = {j.judge(tcp4("198.18.199.71", API, 2000 + i, 80), 1.0)[0] for i in range(30)}
    assert acts == {Act.ALLOW}


def test_connections_that_go_to_a_worker_are_counted_by_the_guard_too() -> None:
    # Every connection's first packet reaches a reader: the guard counts the attempts of flows its worker
    # inspects as well (the worker does not count them again), and a flood of them is refused at once.
    j = judge({"syn_flood": {"syns_per_window": 5}})
    acts = [j.judge(tcp4(spoofed(i), WEB, 1024 + i, 8080), 1.0)[0] for i in range(50)]  # an app rule
    # (a SYN carries no payload: let through by the reader while its worker learns of it)
    assert acts[:5] == [Act.PASS_LEARN] * 5 and Act.DROP in acts and set(acts) == {Act.PASS_LEARN, Act.DROP}
    assert threat_events(j, "syn_flood")


def test_guard_can_be_switched_off() -> None:
    j = judge(guard={"enabled": False})
    assert j.guard is None
    acts = {j.judge(tcp4(spoofed(i), WEB, 1024 + i, 80), 1.0)[0] for i in range(3000)}
    assert acts == {Act.ALLOW}


@pytest.mark.parametrize("cap", [64])
def test_a_flood_of_distinct_sources_costs_bounded_memory(cap: int) -> None:
    j = judge({"syn_flood": {"syns_per_window": 10}}, guard={"max_hosts": cap, "max_challenges": cap})
    for i in range(2000):
        j.judge(tcp4(spoofed(i), WEB, 1024 + i % 60000, 80), 1.0 + i * 1e-5)
    sizes = j.stats()
    assert sizes["guard.challenges"] <= cap and sizes["guard.good_sources"] <= cap
    assert j.guard is not None and len(j.guard.attempts._half_src) <= cap


def test_icmp_flood_keeps_pings_in_user_space_and_drops_the_flood_in_protect() -> None:
    from tests.pipeline.packets import icmp4_echo

    doc = POLICY + "  - {id: 11, from: clients, to: web, ports: [icmp], action: allow}\n"
    doc += "  - {id: 21, from: clients, to: api, ports: [icmp], action: allow}\n"
    tables = DictTables(compile_policy(parse_policy_text(doc)))
    j = Judge(config_from_dict({"workers": {"inspect": "app"}}, {}), tables, seed=1, node="n")
    assert j.guard is not None
    j.guard.set_threat_settings(compile_group_settings({"default": {"icmp_flood": {"echo_per_window": 100}}}))
    # one ping session (one ICMP id, as `ping -f` and hping3 send): never offloaded, every request counted
    acts = [j.judge(icmp4_echo(CLIENT, WEB, ident=7, seq=i), 1.0 + i * 1e-3)[0] for i in range(300)]
    # the flood's own session is blocked in the kernel from the packet that crosses the limit
    assert acts[:100] == [Act.PASS] * 100 and acts[100] is Act.BLOCK
    assert set(acts[101:]) <= {Act.BLOCK, Act.RESET}  # in flight before the mark took: still blocked
    # while the destination is flooded, a new ping session to it is dropped at its first request
    assert j.judge(icmp4_echo("198.18.200.2", WEB, ident=70), 1.35)[0] is Act.DROP
    (event,) = threat_events(j, "icmp_flood")
    assert (event["action"], event["group"], event["flow"]["dst"]) == ("drop", "web", WEB)
    # the same toward the monitored server: reported, passed
    acts = [j.judge(icmp4_echo(CLIENT, API, ident=8, seq=i), 1.0 + i * 1e-3)[0] for i in range(300)]
    assert set(acts) == {Act.PASS}
    assert threat_events(j, "icmp_flood")[0]["action"] == "alert"
    # with the check off (in the policy) pings are offloaded like any allowed flow
    j.guard.set_threat_settings(compile_group_settings({"default": {"icmp_flood": {"enabled": False}}}))
    assert j.judge(icmp4_echo(CLIENT, WEB, ident=9, seq=1), 5.0)[0] is Act.ALLOW


def _syn_with_options(src: str, dst: str, opts: bytes, data: bytes = b"") -> bytes:
    from tests.pipeline.packets import a4

    t = dpkt.tcp.TCP(sport=41000, dport=80, flags=SYN, seq=1, opts=opts, data=data)
    t.off = (20 + len(opts)) // 4
    ip = dpkt.ip.IP(src=a4(src), dst=a4(dst), p=dpkt.ip.IP_PROTO_TCP, data=t)
    ip.len = len(ip)
    return bytes(ip)


FIN_PSH_URG = dpkt.tcp.TH_FIN | dpkt.tcp.TH_PUSH | dpkt.tcp.TH_URG


@pytest.mark.parametrize(
    ("name", "build"),
    [
        ("bad_packet", lambda dst: tcp4(CLIENT, dst, 41000, 80, flags=FIN_PSH_URG)),  # nmap -sX
        ("bad_packet", lambda dst: tcp4(CLIENT, dst, 41000, 80, flags=0)),  # nmap -sN
        ("bad_packet", lambda dst: tcp4(CLIENT, dst, 41000, 80, flags=SYN | dpkt.tcp.TH_FIN)),
        ("bad_packet", lambda dst: tcp4(dst, dst, 80, 80)),  # land
        ("tcp_syn_data", lambda dst: tcp4(CLIENT, dst, 41000, 80, data=b"GET / HTTP/1.0\r\n\r\n")),
        ("tcp_small_mss", lambda dst: _syn_with_options(CLIENT, dst, b"\x02\x04\x00\x30")),  # MSS 48
        ("bad_packet", lambda dst: _syn_with_options(CLIENT, dst, b"\x02\x07\x00\x30\x01\x01\x00\x00")),
    ],
)
def test_first_packet_anomalies_are_dropped_in_protect_and_reported_in_monitor(name: str, build) -> None:
    j = judge()
    assert j.judge(build(WEB), 1.0)[0] is Act.DROP
    (event,) = threat_events(j, name)
    assert event["action"] in ("drop", "reset") and event["group"] == "web"
    assert j.judge(build(API), 1.0)[0] is not Act.DROP  # the monitored server: reported, passed
    (event,) = threat_events(j, name)
    assert event["action"] == "alert" and event["group"] == "api"


def test_ordinary_syns_raise_nothing() -> None:
    j = judge()
    mss_1460 = b"\x02\x04\x05\xb4\x04\x02\x08\x0a\x00\x00\x00\x01\x00\x00\x00\x00\x01\x03\x03\x07"
    assert j.judge(_syn_with_options(CLIENT, WEB, mss_1460), 1.0)[0] is Act.ALLOW
    assert j.judge(tcp4(CLIENT, WEB, 41001, 80), 1.0)[0] is Act.ALLOW
    assert [e for e in j.take_events() if e["type"] == "threat"] == []


@pytest.mark.parametrize(
    ("flags", "first_threat"),
    [
        (dpkt.tcp.TH_FIN, "bad_packet"),  # FIN scan
        (0, "bad_packet"),  # null scan
        (dpkt.tcp.TH_FIN | dpkt.tcp.TH_PUSH | dpkt.tcp.TH_URG, "bad_packet"),  # Xmas scan
        (ACK, ""),  # ACK scan: no stack sends a lone ACK to open a connection, but it is no bad packet
        (dpkt.tcp.TH_FIN | ACK, ""),  # Maimon scan: a FIN/ACK closing a connection that never was
    ],
)
def test_fin_null_xmas_ack_and_maimon_probes_count_toward_a_port_scan(flags: int, first_threat: str) -> None:
    j = judge({"port_scan": {"ports_per_window": 20}})
    for port in range(1000, 1030):
        j.judge(tcp4(SCANNER, API, 50000, port, flags), 1.0 + port * 1e-4)
    j.sweep(100.0)
    events = [e for e in j.take_events() if e["type"] == "threat"]
    scans = [e for e in events if e["name"] == "port_scan"]
    assert sum(e["count"] for e in scans) == 11  # ports 20..30 of the window
    assert {e["name"] for e in events} == {"port_scan", first_threat} - {""}


def test_a_followed_connection_that_goes_to_a_worker_completes_its_handshake_in_the_guard() -> None:
    j = judge({"syn_flood": {"syns_per_window": 5}})
    assert j.guard is not None
    done: list[bytes] = []
    follow = j.guard.attempts.handshake_done
    j.guard.attempts.handshake_done = lambda c, s, now: (done.append(c), follow(c, s, now))  # type: ignore[method-assign]
    acts = [j.judge(tcp4(spoofed(i), WEB, 1024 + i, 8080), 1.0)[0] for i in range(WATCH_SAMPLE + 5)]
    assert set(acts) == {
        Act.PASS_LEARN
    }  # the destination is watched after 5; one SYN in WATCH_SAMPLE is followed
    followed = WATCH_SAMPLE + 4  # the WATCH_SAMPLE-th SYN after the destination is watched
    act = j.judge(tcp4(spoofed(followed), WEB, 1024 + followed, 8080, ACK), 1.1)[0]
    # still its worker's (which learns of it): the guard only takes its SYN back, and once the handshake is
    # done the flow is followed no more, so the kernel may pass its later bare ACKs
    assert act is Act.LEARN_QUIET
    assert done == [bytes(int(x) for x in spoofed(followed).split("."))]
    assert (
        j.judge(tcp4(spoofed(followed), WEB, 1024 + followed, 8080, ACK, b"GET"), 1.2)[0] is Act.INSPECT
        and len(done) == 1
    )
