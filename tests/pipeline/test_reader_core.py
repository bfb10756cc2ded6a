"""The reader's sans-io core (shared by the reader process and replay): held packets, worker verdicts,
failure actions, the bits a verdict re-injects a packet with."""

from __future__ import annotations

import pytest

from core import anomalies as A
from core.verdict import WorkerVerdict
from lab.enforcer import LAB_POLICY
from node.config import config_from_dict
from pipeline.judge import Act, Judge
from pipeline.reader_core import OFFLOADING, ReaderCore
from policy.tables import load_policy_tables
from tests.pipeline.packets import tcp4

# A request (ACK|PSH with payload): an inspected flow's payload waits for its worker (payload-less
# packets do not).
GET = b"GET / HTTP/1.1\r\n"


def core(**sections: dict[str, object]) -> ReaderCore[str]:
    """Every new flow to a worker (`inspect = "new"`), so packets are held."""
    sections.setdefault("workers", {})["inspect"] = "new"
    reader = config_from_dict(sections, {}).reader()
    return ReaderCore(reader, Judge(reader, load_policy_tables(LAB_POLICY), seed=1, node="n"))


def test_a_final_worker_verdict_settles_the_flow_and_its_bit_offloads_it() -> None:
    c = core()
    act, meta, flow = c.admit(tcp4(dport=80, flags=0x18, data=GET), 0.0)
    assert act is Act.INSPECT and flow is not None
    assert c.hold(7, "packet 7", meta, flow, 0.0) == flow.worker
    answered = c.answer(7, WorkerVerdict.ALLOW_FLOW)
    assert answered is not None and answered[0] is Act.ALLOW and answered[1].packet == "packet 7"
    assert not c.inflight and Act.ALLOW in OFFLOADING
    assert c.verdict_bits(Act.ALLOW) == c.bits[Act.ALLOW] and c.counters["verdict.allow"] == 1
    # the flow is settled: its next packet is allowed by the reader without its worker
    assert c.admit(tcp4(dport=80, flags=0x10), 0.1)[0] is Act.ALLOW


def test_reset_and_drop_bits() -> None:
    c = core()
    assert c.verdict_bits(Act.RESET) == c.verdict_bits(Act.BLOCK) == c.bits[Act.BLOCK]
    assert c.verdict_bits(Act.DROP) is None and c.counters["verdict.drop"] == 1
    assert Act.PASS not in OFFLOADING and Act.DROP not in OFFLOADING


@pytest.mark.parametrize(("setting", "act"), [("pass", Act.PASS), ("drop", Act.DROP)])
def test_a_full_inflight_table_takes_the_memory_cap_action(setting: str, act: Act) -> None:
    c = core(workers={"inflight_max": 1}, failure={"memory_cap": setting})
    _, meta, flow = c.admit(tcp4(sport=40001, flags=0x18, data=GET), 0.0)
    assert c.hold(1, "a", meta, flow, 0.0) is not None
    _, meta2, flow2 = c.admit(tcp4(sport=40002, flags=0x18, data=GET), 0.0)
    assert c.hold(2, "b", meta2, flow2, 0.0) is None
    assert c.memory_cap_act is act and c.counters[A.READER_INFLIGHT_FULL] == 1


def test_late_verdicts_time_out_oldest_first_and_unknown_answers_are_counted() -> None:
    c = core(workers={"verdict_timeout_ms": 250}, failure={"verdict_timeout": "drop"})
    for ref, sport, sent in ((1, 40001, 0.0), (2, 40002, 0.2)):
        _, meta, flow = c.admit(tcp4(sport=sport, flags=0x18, data=GET), sent)
        c.hold(ref, f"p{ref}", meta, flow, sent)
    assert c.timed_out(0.1) == []
    expired = c.timed_out(0.3)
    assert [p.packet for p in expired] == ["p1"] and list(c.inflight) == [2]
    assert c.counters[A.WORKER_VERDICT_TIMEOUT] == 1 and c.timeout_act is Act.DROP
    assert c.answer(1, WorkerVerdict.PASS) is None and c.counters[A.WORKER_UNKNOWN_REF] == 1
    unsent = c.unsent(2)
    assert unsent is not None and unsent.packet == "p2" and not c.inflight


def test_a_judging_bug_costs_the_packet_the_malformed_action(monkeypatch: pytest.MonkeyPatch) -> None:
    c = core(failure={"malformed": "drop"})

    def broken(payload: bytes, now: float) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(c.judge, "judge", broken)
    act, meta, flow = c.admit(tcp4(flags=0x18, data=GET), 0.0)
    assert act is Act.DROP and flow is None and meta.dport == 80
    assert c.counters[A.READER_JUDGE_ERROR] == 1


def test_a_packet_cut_short_takes_the_truncated_action_counted() -> None:
    c = core()
    assert c.cut_short() is Act.DROP and c.counters[A.READER_TRUNCATED] == 1  # the default: drop
    c = core(failure={"truncated": "pass"})
    assert c.cut_short() is Act.PASS and c.counters[A.READER_TRUNCATED] == 1
