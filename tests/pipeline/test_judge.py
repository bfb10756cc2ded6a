"""The reader's core, packet by packet: policy verdicts, caching per generation, failure actions."""

from __future__ import annotations

import dpkt
import pytest

from core.lookup import Action, Decision, Mode, Report
from core.packet import decode
from core.verdict import WorkerVerdict
from lab.enforcer import LAB_POLICY
from node.config import config_from_dict
from pipeline.judge import Act, Judge
from policy.tables import load_policy_tables
from tests.pipeline.packets import tcp4, tcp6, udp4

SYN, ACK, FIN, RST = dpkt.tcp.TH_SYN, dpkt.tcp.TH_ACK, dpkt.tcp.TH_FIN, dpkt.tcp.TH_RST


def judge(**sections: dict[str, object]) -> Judge:
    """A judge of the L4 path (`inspect = "app"`) unless a test asks for another mode."""
    sections.setdefault("workers", {}).setdefault("inspect", "app")
    return Judge(config_from_dict(sections, {}).reader(), load_policy_tables(LAB_POLICY), seed=1, node="n")


def test_allowed_flow_is_offloaded_and_both_directions_share_it() -> None:
    j = judge()
    act, _, key, flow = j.judge(tcp4(dport=80), 0.0)
    assert act is Act.ALLOW and flow is not None
    act2, _, key2, _ = j.judge(tcp4("198.18.2.11", "198.18.1.11", 80, 40000, flags=SYN | ACK), 0.1)
    assert act2 is Act.ALLOW and key2 == key and len(j.flows) == 1


def test_denied_flow_is_reset_and_reported_once_with_a_count() -> None:
    j = judge()
    for i in range(3):
        assert j.judge(tcp4(dport=22, sport=40000 + i), 0.0)[0] is Act.RESET
    assert j.judge(tcp6(dport=22), 0.0)[0] is Act.RESET
    events = j.take_events()
    # Three connections from one client to one server port are one event with a count.
    v4 = [e for e in events if e["flow"]["family"] == 4]
    assert len(v4) == 1 and v4[0]["count"] == 3 and v4[0]["rule_id"] == 11 and v4[0]["action"] == "deny"
    assert len(events) == 2
    j.judge(tcp4(dport=22, sport=40000), 0.0)  # a known flow: no new decision, no new event
    assert j.take_events() == []
    assert j.judge(tcp4(dport=22, sport=50000), 0.0)[0] is Act.RESET
    assert j.take_events()[0]["count"] == 1


def test_reject_tcp_off_blocks_silently() -> None:
    assert judge(netfilter={"reject_tcp": False}).judge(tcp4(dport=22), 0.0)[0] is Act.BLOCK


def test_monitor_mode_allows_and_reports() -> None:
    j = judge()
    assert j.judge(tcp4(dst="198.18.2.12", dport=22), 0.0)[0] is Act.ALLOW
    (event,) = j.take_events()
    assert (event["type"], event["action"], event["server_group"], event["mode"]) == (
        "violation",
        "allow",
        "api",
        "monitor",
    )


def test_inspect_modes_send_flows_to_workers() -> None:
    j = judge(workers={"inspect": "new"})
    act, _, _, flow = j.judge(tcp4(dport=80), 0.0)
    assert act is Act.PASS_LEARN  # a SYN carries no payload: passed at once, its worker learns from it
    act, _, _, flow = j.judge(tcp4(dport=80, flags=ACK, data=b"GET / HTTP/1.1\r\n"), 0.05)
    assert act is Act.INSPECT  # payload: it waits for the worker
    assert j.on_worker_verdict(flow, WorkerVerdict.ALLOW_FLOW) is Act.ALLOW
    assert j.judge(tcp4(dport=80, flags=ACK), 0.1)[0] is Act.ALLOW  # settled by the worker
    j = judge(workers={"inspect": "all"})
    act, _, _, flow = j.judge(tcp4(dport=80), 0.0)
    assert act is Act.INSPECT  # capacity-test mode: every packet, payload or not, waits for a worker
    assert j.on_worker_verdict(flow, WorkerVerdict.ALLOW_FLOW) is Act.PASS  # never offloaded
    assert j.judge(tcp4(dport=80, flags=ACK), 0.1)[0] is Act.INSPECT
    assert j.on_worker_verdict(flow, 99) is Act.PASS and j.counters["worker.bad_verdict"] == 1


@pytest.mark.parametrize(
    ("flags", "data", "act"),
    [
        (SYN, b"", Act.PASS_LEARN),
        (SYN | ACK, b"", Act.PASS_LEARN),
        (ACK, b"", Act.LEARN_QUIET),  # and the kernel passes the connection's later bare ACKs
        (ACK | dpkt.tcp.TH_PUSH, b"", Act.LEARN_QUIET),
        (FIN | ACK, b"", Act.PASS_LEARN),
        (RST, b"", Act.PASS_LEARN),
        (RST | ACK, b"", Act.PASS_LEARN),
        (ACK, b"x", Act.INSPECT),  # one byte of payload waits for the worker
        (FIN | ACK, b"bye", Act.INSPECT),
    ],
)
def test_packets_without_payload_of_inspected_flows_are_verdicted_in_the_reader(
    flags: int, data: bytes, act: Act
) -> None:
    j = judge(workers={"inspect": "new"})
    j.judge(tcp4(dport=80, data=b"GET"), 0.0)  # the flow exists and is inspected
    assert j.judge(tcp4(dport=80, flags=flags, data=data), 0.1)[0] is act


def test_bare_acks_only_learn_when_quiet_acks_are_off() -> None:
    j = judge(workers={"inspect": "new"}, netfilter={"quiet_acks": False})
    j.judge(tcp4(dport=80, data=b"GET"), 0.0)
    assert j.judge(tcp4(dport=80, flags=ACK), 0.1)[0] is Act.PASS_LEARN


def test_malformed_and_no_policy_follow_the_failure_table() -> None:
    assert judge().judge(b"\x45\x00", 0.0)[0] is Act.DROP
    assert judge(failure={"malformed": "pass"}).judge(b"\x45\x00", 0.0)[0] is Act.PASS

    class Empty:
        def generation(self) -> int:
            return 0

    for action, act in (("pass", Act.PASS), ("drop", Act.DROP)):
        j = Judge(config_from_dict({"failure": {"no_policy": action}}, {}).reader(), Empty(), 1, "n")  # type: ignore[arg-type]
        assert j.judge(udp4(), 0.0)[0] is act and j.counters["policy.none"] == 1


class Switchable:
    """Tables whose answer the test changes, bumping the generation (as a policy swap does)."""

    def __init__(self) -> None:
        self.gen, self.action = 1, Action.ALLOW

    def generation(self) -> int:
        return self.gen

    def decide(self, *_: object) -> Decision:
        report = Report.VIOLATION if self.action is Action.DENY else Report.NONE
        return Decision(self.action, True, 5, Mode.PROTECT, report, "a", "b", self.gen)

    decide_app = decide


def test_new_generation_revalidates_cached_flows() -> None:
    tables = Switchable()
    j = Judge(config_from_dict({"workers": {"inspect": "app"}}, {}).reader(), tables, 1, "n")  # type: ignore[arg-type]
    assert j.judge(udp4(), 0.0)[0] is Act.ALLOW
    tables.action = Action.DENY
    assert j.judge(udp4(), 0.1)[0] is Act.ALLOW  # same generation: the cached verdict stands
    tables.gen = 2
    assert j.judge(udp4(), 0.2)[0] is Act.RESET  # new generation: decided again (UDP: reset = block)


def test_flow_table_is_bounded_and_idle_flows_expire() -> None:
    j = judge(flows={"max_flows": 1024, "udp_timeout_s": 5})
    for port in range(2000):
        j.judge(udp4(sport=10000 + port), 0.0)
    assert len(j.flows) == 1024 and j.flows.evicted_full == 2000 - 1024
    j.judge(udp4(sport=1), 4.0)
    for _ in range(3):
        j.sweep(10.0)
    assert len(j.flows) == 0 and j.flows.expired == 1024


def test_decode_reply_orientation_uses_the_client() -> None:
    # The reply of an allowed flow would be "web → clients", which no rule allows: the flow's client decides.
    j = judge()
    j.judge(tcp4(dport=80), 0.0)
    meta = decode(tcp4("198.18.2.11", "198.18.1.11", 80, 40000, flags=ACK))
    assert meta.sport == 80
    assert j.judge(tcp4("198.18.2.11", "198.18.1.11", 80, 40000, flags=ACK), 1.0)[0] is Act.ALLOW


def test_revalidation_finds_offloaded_flows_whose_fate_changed() -> None:
    tables = Switchable()
    j = Judge(config_from_dict({"workers": {"inspect": "app"}}, {}).reader(), tables, 1, "n")  # type: ignore[arg-type]
    for port in range(10):
        assert j.judge(udp4(sport=2000 + port), 0.0)[0] is Act.ALLOW
    assert j.revalidate(100) == []  # same generation: nothing to do
    tables.gen = 2  # a new generation that changes nothing
    assert j.revalidate(100) == [] and all(f.generation == 2 for _, f in j.flows.items())
    tables.gen, tables.action = 3, Action.DENY
    first = j.revalidate(4)  # bounded work per call
    rest = j.revalidate(100)
    assert len(first) == 4 and len(rest) == 6
    assert {k.port_a for k, _, _ in first + rest} | {k.port_b for k, _, _ in first + rest} >= {
        2000 + p for p in range(10)
    }
    assert all(family == 4 for _, _, family in first)


def test_a_new_connection_on_the_ports_of_a_reset_one_is_judged_afresh() -> None:
    # inspect = "new": the worker resets the first connection (an injection); the client reuses its port.
    j = judge(workers={"inspect": "new"})
    # a SYN carries no payload: passed by the reader, learned by the worker (no verdict waited for)
    act, _, key, flow = j.judge(tcp4(dport=80, seq=1000), 0.0)
    assert act is Act.PASS_LEARN and flow is not None and flow.isn == 1000
    assert j.on_worker_verdict(flow, WorkerVerdict.RESET_FLOW) is Act.RESET
    assert (
        j.judge(tcp4(dport=80, flags=ACK, seq=1001), 0.2)[0] is Act.RESET
    )  # the old connection stays blocked
    assert (
        j.judge(tcp4(dport=80, seq=1000), 0.3)[0] is Act.RESET
    )  # its SYN retransmitted: the same connection
    act, _, key2, flow2 = j.judge(tcp4(dport=80, seq=777_000), 1.0)  # a new ISN: a new connection
    assert act is Act.PASS_LEARN and key2 == key and flow2 is not flow and flow2 is not None
    assert flow2.isn == 777_000 and j.counters["flow.reopened"] == 1 and len(j.flows) == 1
    assert j.on_worker_verdict(flow2, WorkerVerdict.ALLOW_FLOW) is Act.ALLOW


def test_only_a_bare_syn_reopens_a_decided_flow() -> None:
    j = judge()
    _, _, _, flow = j.judge(tcp4(dport=22, seq=5), 0.0)  # denied by rule 11
    assert flow is not None
    for flags in (SYN | ACK, ACK, SYN | dpkt.tcp.TH_RST, SYN | dpkt.tcp.TH_FIN):
        assert j.judge(tcp4(dport=22, flags=flags, seq=99), 0.1)[0] is Act.RESET
    assert j.counters["flow.reopened"] == 0
    # a flow allowed at L3/L4 (offloaded) is decided afresh too: the policy may have changed meanwhile
    j.judge(tcp4(dport=80, sport=41000, seq=1), 0.0)
    assert j.judge(tcp4(dport=80, sport=41000, seq=2), 1.0)[0] is Act.ALLOW
    assert j.counters["flow.reopened"] == 1
    # a flow still being inspected belongs to its worker, which follows a reused port itself
    j = judge(workers={"inspect": "new"})
    _, _, _, inspected = j.judge(tcp4(dport=80, seq=1), 0.0)
    assert j.judge(tcp4(dport=80, seq=2), 0.1)[3] is inspected and j.counters["flow.reopened"] == 0


def test_a_flow_its_worker_blocked_stays_blocked_over_new_generations() -> None:
    # inspect = "new": the worker blocks a UDP flow on its first datagram (a DNS tunnel's NULL query);
    # the kernel keeps no connmark for it (the dropped packet's conntrack entry is never confirmed), so
    # the flow's next datagrams reach the reader: a policy republish must not let them through
    tables = Switchable()
    j = Judge(config_from_dict({"workers": {"inspect": "new"}}, {}).reader(), tables, 1, "n")  # type: ignore[arg-type]
    act, _, _, flow = j.judge(udp4(dport=53), 0.0)
    assert act is Act.INSPECT and flow is not None
    assert j.on_worker_verdict(flow, WorkerVerdict.BLOCK_FLOW) is Act.BLOCK
    tables.gen = 2  # the same policy again (a controller's sync)
    blocked = (Act.BLOCK, Act.RESET)  # (RESET for UDP: the same drop, `reject_tcp` aside)
    assert j.judge(udp4(dport=53), 0.5)[0] in blocked
    assert j.revalidate(100) == []  # nothing for revalidation to hand back from the kernel
    assert j.judge(udp4(dport=53), 1.0)[0] in blocked
    # a flow the policy alone decided is decided again
    other = judge(workers={"inspect": "app"})
    assert other.judge(udp4(dport=53, sport=41000), 0.0)[3].judged is False  # type: ignore[union-attr]


def test_a_new_generation_that_denies_an_inspected_flow_cuts_it_at_its_next_packet() -> None:
    tables = Switchable()
    j = Judge(config_from_dict({"workers": {"inspect": "new"}}, {}).reader(), tables, 1, "n")  # type: ignore[arg-type]
    assert j.judge(tcp4(dport=80, flags=ACK, data=b"GET"), 0.0)[0] is Act.INSPECT
    tables.gen = 2  # still allowed: the worker keeps deciding
    assert j.judge(tcp4(dport=80, flags=ACK, data=b"GET"), 0.1)[0] is Act.INSPECT
    tables.gen, tables.action = 3, Action.DENY
    assert j.judge(tcp4(dport=80, flags=ACK), 0.2)[0] is Act.RESET


def test_a_udp_flow_over_the_kernels_rate_is_cut_in_protect_and_late_verdicts_never_reopen_it() -> None:
    j = judge(workers={"inspect": "new"})
    datagram = udp4(sport=40000, dport=53)
    act, _, _, flow = j.judge(datagram, 0.0)
    assert act is Act.INSPECT and flow is not None
    assert j.on_worker_verdict(flow, WorkerVerdict.ALLOW_FLOW) is Act.ALLOW  # offloaded
    # the kernel's rate check queued a later datagram with the flood bit: web is in Protect
    act, _, _, flooded = j.judge_flooded(datagram, 1.0)
    assert act is Act.BLOCK and flooded is flow and flow.judged
    j.sweep(10.0, final=True)
    (event,) = [e for e in j.take_events() if e["type"] == "threat"]
    assert (event["name"], event["action"], event["flow"]["sport"]) == ("udp_flood", "drop", 40000)
    # a datagram that was out at the worker meanwhile comes back allowed: the flow stays cut
    assert j.on_worker_verdict(flow, WorkerVerdict.ALLOW_FLOW) is Act.BLOCK
    assert j.judge(datagram, 1.1)[0] is Act.RESET  # and its next datagrams are refused
    assert j.counters["flow.udp_rate_exceeded"] == 1


def test_a_udp_flow_over_the_kernels_rate_is_reported_and_offloaded_again_in_monitor() -> None:
    j = judge()
    datagram = udp4(dst="198.18.2.12", sport=40000, dport=53)  # api: Monitor
    assert j.judge(datagram, 0.0)[0] is Act.ALLOW
    assert j.judge_flooded(datagram, 1.0)[0] is Act.ALLOW
    # a flow this reader forgot while the kernel carried it is reported all the same
    assert j.judge_flooded(udp4(dst="198.18.2.12", sport=40001, dport=53), 1.0)[0] is Act.ALLOW
    j.sweep(10.0, final=True)
    found = [e for e in j.take_events() if e["type"] == "threat"]
    assert sum(e["count"] for e in found) == 2 and {e["action"] for e in found} == {"alert"}


def test_the_flood_bit_on_anything_but_an_offloaded_udp_flow_takes_the_usual_path() -> None:
    j = judge(workers={"inspect": "new"})
    act, _, _, flow = j.judge_flooded(tcp4(dport=80), 0.0)  # TCP: the usual first-packet path
    assert act is Act.PASS_LEARN and flow is not None
    assert j.judge(udp4(sport=40000), 0.0)[0] is Act.INSPECT
    act, _, _, flow = j.judge_flooded(udp4(sport=40000), 0.1)  # a UDP flow still at its worker
    assert act is Act.INSPECT and j.counters["flow.udp_rate_exceeded"] == 0
