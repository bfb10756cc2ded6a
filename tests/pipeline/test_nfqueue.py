"""The netlink binding's wire format (parsing and verdict messages), and a real queue in a namespace."""

from __future__ import annotations

import socket
import struct
import subprocess
import sys

from pipeline import nfqueue as Q


def _attr(t: int, data: bytes) -> bytes:
    return struct.pack("=HH", 4 + len(data), t) + data + b"\0" * ((4 - len(data) % 4) % 4)


def _packet_msg(packet_id: int, payload: bytes, mark: int | None = None) -> bytearray:
    attrs = _attr(Q.NFQA_PACKET_HDR, struct.pack("!IHB", packet_id, 0x0800, 2) + b"\0")
    if mark is not None:
        attrs += _attr(Q.NFQA_MARK, struct.pack("!I", mark))
    attrs += _attr(Q.NFQA_PAYLOAD, payload)
    body = struct.pack("!BBH", 2, 0, 0) + attrs
    return bytearray(struct.pack("=IHHII", 16 + len(body), (3 << 8) | 0, 0, 0, 0) + body)


def test_parse_packet_message() -> None:
    buf = _packet_msg(42, b"\x45" + bytes(39), mark=0x10)
    (msg,) = list(Q._messages(memoryview(buf), len(buf)))
    pkt = Q._parse_packet(buf, msg[2] + 20, msg[2] + msg[3])
    assert pkt is not None and (pkt.packet_id, pkt.hw_protocol, pkt.mark, len(pkt.payload)) == (
        42,
        0x0800,
        0x10,
        40,
    )


def test_truncated_attributes_are_rejected() -> None:
    buf = _packet_msg(1, b"abcd")
    end = len(buf) - 2  # the payload attribute claims more than there is
    assert Q._parse_packet(buf, 20, end) is None
    assert Q._parse_packet(bytearray(_attr(Q.NFQA_PAYLOAD, b"x")), 0, 8) is None  # no packet header


def test_verdict_messages() -> None:
    plain = Q._verdict_msg(Q.NFQNL_MSG_VERDICT, 3, 99, Q.NF_ACCEPT, None)
    length, mtype, flags = struct.unpack_from("=IHH", plain)
    assert (length, mtype, flags) == (len(plain), (3 << 8) | 1, Q.NLM_F_REQUEST)
    assert struct.unpack_from("!H", plain, 18)[0] == 3  # queue number, big-endian
    assert struct.unpack_from("!II", plain, 24) == (Q.NF_ACCEPT, 99)
    marked = Q._verdict_msg(Q.NFQNL_MSG_VERDICT_BATCH, 0, 7, Q.NF_REPEAT, 0x100000)
    assert struct.unpack_from("=H", marked, 4)[0] == (3 << 8) | 3
    assert (
        struct.unpack_from("=HH", marked, 32) == (8, Q.NFQA_MARK)
        and struct.unpack_from("!I", marked, 36)[0] == 0x100000
    )


REAL_QUEUE = r"""
import socket, time
from pipeline.nfqueue import *
q = NfQueue(5); q.bind(3800, 64, fail_open=True, gso=True)
rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); rx.bind(("127.0.0.1", 9999)); rx.settimeout(2)
tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(6): tx.sendto(b"m%d" % i, ("127.0.0.1", 9999))
got = []
deadline = time.time() + 2
while len(got) < 6 and time.time() < deadline:
    got += q.receive(100)[0]
ids = [p.packet_id for p in got]
q.verdict_batch(ids[2], NF_ACCEPT)          # first three in one message
q.verdict(ids[3], NF_DROP)
q.verdict(ids[4], NF_ACCEPT, 0x42)
q.verdict(ids[5], NF_ACCEPT)
q.flush()
out = []
try:
    while True: out.append(rx.recv(100))
except OSError: pass
print(sorted(out))
try:
    NfQueue(5).bind(3800, 64, True, True)
except QueueError as e:
    print("busy", e.errno)
"""


def test_real_queue_with_batch_and_single_verdicts() -> None:
    ns = "nfq-unit"
    subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        ex = ["ip", "netns", "exec", ns]
        subprocess.run([*ex, "ip", "link", "set", "lo", "up"], check=True)
        subprocess.run([*ex, "iptables", "-A", "OUTPUT", "-o", "lo", "-p", "udp", "--dport", "9999", "-j", "NFQUEUE",
                        "--queue-num", "5"], check=True)  # fmt: skip
        out = subprocess.run(
            [*ex, sys.executable, "-c", REAL_QUEUE], capture_output=True, text=True, timeout=30
        )
        lines = out.stdout.splitlines()
        assert lines[0] == repr([b"m0", b"m1", b"m2", b"m4", b"m5"]), out.stderr
        assert lines[1].startswith("busy"), out.stdout  # a queue bound elsewhere is refused
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    assert socket  # the module is used by the script above
