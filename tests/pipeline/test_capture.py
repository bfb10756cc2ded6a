"""`enforcer capture`'s parts without a running enforcer: the command line's flow and evidence id, the
readers' capture sessions (filter, byte budget, chunks), the wire messages' checks, the output file and
the pcap writer shared with replay's evidence."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import dpkt
import pytest

from core import messages as M
from core.capture import CHUNK_BYTES, RECORD_OVERHEAD, CaptureFilter, CaptureSession
from core.packet import decode
from core.pcapfile import pcap_bytes
from node.capture_client import OutputExists, open_output, write_output
from node.capture_spec import SpecError, parse_evidence_id, parse_flow, parse_group
from tests.pipeline.packets import a4, a6, tcp4, tcp6, udp4
from workers.detect.evidence import EvidenceStore

NO_GROUPS = lambda meta: ("", "")  # noqa: E731


def test_flows_parse_in_both_families_with_wildcards_and_bad_ones_are_named() -> None:
    f = parse_flow("tcp 198.18.1.11:* 198.18.2.11:80")
    assert f == CaptureFilter(6, a4("198.18.1.11"), 0, a4("198.18.2.11"), 80)
    assert parse_flow("udp,[fd00::1]:53,*") == CaptureFilter(17, a6("fd00::1"), 53, b"", 0)
    assert parse_flow("any fd00::1 fd00::2").a_addr == a6("fd00::1")
    for bad, why in (("tcp 198.18.1.11", "expected"), ("gre 1.2.3.4 *", "unknown protocol"),
                     ("xtp 198.18.1.1 *", "unknown protocol"), ("tcp 198.18.1.300:1 *", "not an IP address"),
                     ("tcp 198.18.1.1:70000 *", "bad port"), ("tcp * *", "at least one address"),
                     ("tcp 198.18.1.1 fd00::1", "one IPv4 and one IPv6")):  # fmt: skip
        with pytest.raises(SpecError, match=why):
            parse_flow(bad)


def test_evidence_ids_name_their_worker_and_others_are_refused() -> None:
    ref = parse_evidence_id("w1-3fa9c2-ev17")
    assert (ref.worker, ref.evidence_id) == (1, "w1-3fa9c2-ev17")
    for bad in ("ev1", "w1-3fa9c2-ev", "../w1-3fa9c2-ev1", "w1-3FA9C2-ev1", "w1-3fa9c2-ev1 x"):
        with pytest.raises(SpecError, match="not the evidence id"):
            parse_evidence_id(bad)
    with pytest.raises(SpecError):
        parse_group("web; rm")


def test_a_flow_filter_matches_both_directions_and_nothing_else() -> None:
    f = parse_flow("tcp 198.18.1.11:* 198.18.2.11:80")
    assert f.matches(decode(tcp4()), NO_GROUPS)
    assert f.matches(decode(tcp4(src="198.18.2.11", dst="198.18.1.11", sport=80, dport=40000)), NO_GROUPS)
    assert not f.matches(decode(tcp4(dport=81)), NO_GROUPS)
    assert not f.matches(decode(tcp4(src="198.18.1.12")), NO_GROUPS)
    assert not f.matches(decode(udp4(dport=80)), NO_GROUPS)
    assert not f.matches(decode(tcp6()), NO_GROUPS)
    web = CaptureFilter(group="web")
    assert web.matches(decode(tcp4()), lambda m: ("clients", "web"))
    assert not web.matches(decode(tcp4()), lambda m: ("clients", "api"))
    assert CaptureFilter().problem() == "the filter matches everything"
    assert CaptureFilter(a_addr=b"\x01" * 5).problem()


def test_a_session_keeps_to_its_byte_budget_and_hands_out_bounded_chunks() -> None:
    big = tcp4(data=b"x" * 1400)
    budget = 10 * (len(big) + RECORD_OVERHEAD)
    s = CaptureSession("a" * 16, CaptureFilter(proto=6), deadline=5.0, max_bytes=budget)
    meta = decode(big)
    for i in range(15):
        s.offer(big, meta, 100.0 + i, NO_GROUPS)
    s.offer(udp4(), decode(udp4()), 200.0, NO_GROUPS)  # not matched: not counted anywhere
    assert (s.copied, s.over_budget, len(s.pending)) == (10, 5, 10)
    assert s.take_chunk() == [(100.0 + i, len(big), big) for i in range(10)] and s.take_chunk() == []
    assert not s.expired(4.9) and s.expired(5.0)
    huge = CaptureSession("b" * 16, CaptureFilter(proto=6), 5.0, 64 << 20)
    for _ in range(2000):
        huge.offer(big, meta, 1.0, NO_GROUPS)
    sizes = []
    while chunk := huge.take_chunk():
        sizes.append(sum(len(r[2]) for r in chunk))
    assert sum(sizes) == 2000 * len(big) and max(sizes) <= CHUNK_BYTES + len(big)


def test_capture_messages_refuse_foreign_sockets_and_unbounded_requests() -> None:
    start = M.CaptureStart("ab" * 8, 6, a4("198.18.1.1"), 0, b"", 80, "", 3.0, 1000)
    assert M.decode(M.encode(start)) == start
    for bad in (
        M.CaptureStart("../../tmp/x", 6, b"", 0, b"", 80, "", 3.0, 1000),  # a path, not a token
        M.CaptureStart("ab" * 8, 6, b"", 0, b"", 80, "", 86400.0, 1000),  # too long
        M.CaptureStart("ab" * 8, 6, b"", 0, b"", 80, "", 3.0, 1 << 40),  # too many bytes
        M.EvidenceRequest("ab" * 8, "x" * 1000),
    ):
        with pytest.raises(M.MessageError):
            M.decode(M.encode(bad))
    reply = M.EvidenceReply(0, "w0-abcdef-ev1", [(1.5, 2000, b"\x45" * 20)])
    assert M.decode(M.encode(reply)) == reply
    with pytest.raises(M.MessageError):  # a record claiming fewer bytes than it carries
        M.decode(M.encode(M.EvidenceReply(0, "e", [(1.5, 10, b"\x45" * 20)])))


def test_the_output_is_new_private_and_never_followed_through_a_link(tmp_path: Path) -> None:
    out = tmp_path / "f.pcap"
    count = write_output(open_output(str(out)), [(1.25, 60, tcp4()), (1.5, 1500, tcp6()[:40])])
    assert count == 2 and stat.S_IMODE(out.stat().st_mode) == 0o600
    reader = dpkt.pcap.Reader(io.BytesIO(out.read_bytes()))
    assert reader.datalink() == 101 and [ts for ts, _ in reader] == [1.25, 1.5]
    with pytest.raises(OutputExists, match="refusing to overwrite"):
        open_output(str(out))
    (tmp_path / "link").symlink_to(tmp_path / "target")
    with pytest.raises(OutputExists):
        open_output(str(tmp_path / "link"))
    assert not os.path.lexists(tmp_path / "target")


def test_evidence_ids_carry_the_workers_prefix_and_the_pcap_keeps_original_lengths() -> None:
    store = EvidenceStore()
    store.id_prefix = "w1-abcdef-"
    long = tcp4(data=b"y" * 1000)
    store.record("flow", 10.0, long)
    evidence = store.snapshot("flow")
    assert evidence == "w1-abcdef-ev1" and parse_evidence_id(evidence).worker == 1
    records = store.records(evidence)
    assert records is not None and records[0][1] == len(long) and len(records[0][2]) == 512
    raw = store.pcap(evidence)
    assert raw == pcap_bytes(records)
    hdrs = dpkt.pcap.Reader(io.BytesIO(raw))
    ((_, kept),) = list(hdrs)
    assert len(kept) == 512
    assert raw[24 + 12 : 24 + 16] == len(long).to_bytes(4, "little")  # the record's original length
    assert store.records("w1-abcdef-ev2") is None
