"""Our chains: what they contain, and installing/removing them for real inside a throwaway namespace."""

from __future__ import annotations

import struct
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from node.config import config_from_dict
from node.netfilter import ChainSpec, chain_rules, restore_script
from tests.pipeline.packets import a4, a6

NS = "nft-unit"


def spec(**sections: dict[str, object]) -> ChainSpec:
    return ChainSpec.from_config(config_from_dict(sections, {}))


def test_rules_mask_our_bits_and_balance_the_queues() -> None:
    rules = chain_rules(spec(queues={"readers": 3, "first": 4}))
    # a verdict's quiet-ACK bit is saved before the judged packet leaves by its pass bit
    assert rules[0] == (
        "-A ENFORCER -m mark --mark 0x800000/0x800000 -j CONNMARK --save-mark --nfmask 0x800000 --ctmask 0x800000"
    )
    assert rules[1] == "-A ENFORCER -m mark --mark 0x400000/0x400000 -j RETURN"
    assert chain_rules(spec(netfilter={"quiet_acks": False}))[0] == rules[1]
    assert "-A ENFORCER -m connmark --mark 0x200000/0x200000 -j DROP" in rules
    assert (
        "-A ENFORCER -m mark --mark 0x100000/0x100000 -j CONNMARK --save-mark --nfmask 0x100000 --ctmask 0x100000"
        in rules
    )
    assert rules[-1] == "-A ENFORCER -j NFQUEUE --queue-balance 4:6 --queue-bypass"
    closed = chain_rules(spec(queues={"readers": 1}, failure={"no_reader": "drop"}))
    assert closed[-1] == "-A ENFORCER -j NFQUEUE --queue-num 0"


def test_a_bare_syn_reopening_a_connection_we_decided_loses_our_bits_before_they_are_matched() -> None:
    for family in (4, 6):
        rules = chain_rules(spec(), family=family)
        clear = (
            "-A ENFORCER -p tcp --tcp-flags SYN,ACK,RST,FIN SYN -m conntrack --ctstate ESTABLISHED "
            "-m connmark ! --mark 0x0/0xb00000 -j CONNMARK --set-xmark 0x0/0xb00000"
        )  # accept, drop and quiet-ACK bits
        assert clear in rules
        # before the connmark matches, so the new connection is queued instead of inheriting a verdict
        assert rules.index(clear) < rules.index("-A ENFORCER -m connmark --mark 0x200000/0x200000 -j DROP")
        assert rules.index(clear) < rules.index("-A ENFORCER -m connmark --mark 0x100000/0x100000 -j RETURN")
        # a SYN retransmitted for a connection refused at its first SYN (never answered) is not NEW-matched
        assert not any("--ctstate NEW" in r for r in rules)


def test_offloaded_udp_flows_over_the_rate_go_to_a_reader_once_with_the_flood_bit() -> None:
    from node.netfilter import flood_chain_rules

    s = spec(queues={"readers": 2})
    rules = chain_rules(s)
    rate = (
        "-A ENFORCER -p udp -m length --length 0:1200 -m connmark --mark 0x100000/0x1100000 "
        "-m hashlimit --hashlimit-above 50000/sec "
        "--hashlimit-burst 5000 --hashlimit-mode srcip,srcport,dstip,dstport --hashlimit-name ENFORCER-FLOOD "
        "-g ENFORCER-FLOOD"
    )  # accepted and not yet flagged, counted per direction of each flow
    assert rate in rules
    # a reader's drop bit is saved before anything lets the packet on: a block wins over an accept bit
    # saved meanwhile (a flow cut while its packets were out)
    drop = "-A ENFORCER -m mark --mark 0x200000/0x200000 -j DROP"
    assert (
        rules.index(drop)
        < rules.index(rate)
        < rules.index("-A ENFORCER -m connmark --mark 0x100000/0x100000 -j RETURN")
    )
    assert flood_chain_rules(s) == [
        "-A ENFORCER-FLOOD -j CONNMARK --set-xmark 0x1000000/0x1100000",  # flagged, no longer offloaded
        "-A ENFORCER-FLOOD -j MARK --set-xmark 0x1000000/0x1000000",
        "-A ENFORCER-FLOOD -j NFQUEUE --queue-balance 0:1 --queue-bypass",
    ]
    off = spec(netfilter={"udp_flow_rate": 0})
    assert not any("hashlimit" in r for r in chain_rules(off)) and "ENFORCER-FLOOD" not in restore_script(off)


def test_replay_models_the_udp_rate_check_as_our_chain_does() -> None:
    from core.flow import flow_key
    from core.packet import decode
    from node.replay_kernel import ACCEPTED, DROPPED, FLOODED, QUEUE, Kernel
    from tests.pipeline.packets import udp4

    n = config_from_dict({"netfilter": {"udp_flow_rate": 1000}}, {}).netfilter
    kernel = Kernel(n, lambda conn: None)

    def step(packet: bytes, now: float) -> int:
        meta = decode(packet)
        key, direction = flow_key(meta)
        return kernel.step(meta, key, direction, now)[0]

    datagram = udp4(sport=40000)
    assert step(datagram, 0.0) == QUEUE
    kernel.verdict(kernel.connections[next(iter(kernel.connections))], "ALLOW", n.accept_mark)
    # 1,000/s with a burst of 100: 100 datagrams at once pass, the 101st is shown to a reader
    fates = [step(datagram, 1.0) for _ in range(101)]
    assert fates[:100] == [ACCEPTED] * 100 and fates[100] == FLOODED
    conn = kernel.connections[next(iter(kernel.connections))]
    assert step(datagram, 1.0) == QUEUE  # no longer offloaded until a reader answers
    kernel.verdict(conn, "ALLOW", n.accept_mark)  # Monitor: offloaded again, never checked again
    assert [step(datagram, 1.0) for _ in range(500)] == [ACCEPTED] * 500
    # at the rate itself a flow is never flagged; Protect's drop bit cuts a flagged one, and stays
    other = udp4(sport=40001)
    assert step(other, 2.0) == QUEUE
    conn = kernel.connections[next(reversed(list(kernel.connections)))]
    kernel.verdict(conn, "ALLOW", n.accept_mark)
    assert all(step(other, 2.0 + i / 1000) == ACCEPTED for i in range(1, 3000))
    fates = [step(other, 5.0) for _ in range(101)]  # then a burst: flagged within it
    assert fates[:99] == [ACCEPTED] * 99 and fates.count(FLOODED) == 1
    kernel.verdict(conn, "BLOCK", n.drop_mark)
    kernel.verdict(conn, "ALLOW", n.accept_mark)  # a late verdict of a datagram that was out
    assert step(other, 5.0) == DROPPED
    assert kernel.counters["kernel.udp_rate_exceeded"] == 2
    # a bulk flow's full-size datagrams are not counted, however fast
    bulk = udp4(sport=40002, data=b"\x00" * 1400)
    assert step(bulk, 6.0) == QUEUE
    kernel.verdict(kernel.connections[next(reversed(list(kernel.connections)))], "ALLOW", n.accept_mark)
    assert [step(bulk, 6.0) for _ in range(5000)] == [ACCEPTED] * 5000


def test_interfaces_and_hooks() -> None:
    s = spec(
        netfilter={
            "hooks": ["FORWARD", "INPUT"],
            "in_interfaces": ["eth0", "eth1"],
            "out_interfaces": ["cali+"],
        }
    )
    queue_rules = [r for r in chain_rules(s) if "NFQUEUE" in r]
    assert queue_rules == [
        "-A ENFORCER -i eth0 -o cali+ -j NFQUEUE --queue-balance 0:1 --queue-bypass",
        "-A ENFORCER -i eth1 -o cali+ -j NFQUEUE --queue-balance 0:1 --queue-bypass",
    ]
    script = restore_script(s)
    assert "-I FORWARD 1 -j ENFORCER" in script and "-I INPUT 1 ! -i lo -j ENFORCER" in script


def test_ipv6_chain_never_queues_neighbour_discovery() -> None:
    rules6 = chain_rules(spec(), family=6)
    assert "-A ENFORCER -p ipv6-icmp -m icmp6 --icmpv6-type 135 -j RETURN" in rules6
    assert not any("icmp6" in r for r in chain_rules(spec(), family=4))


@pytest.fixture
def netns() -> Iterator[list[str]]:
    subprocess.run(["ip", "netns", "del", NS], capture_output=True)
    subprocess.run(["ip", "netns", "add", NS], check=True)
    try:
        yield ["ip", "netns", "exec", NS]
    finally:
        subprocess.run(["ip", "netns", "del", NS], capture_output=True)


def _listing(prefix: list[str]) -> str:
    return "".join(
        subprocess.run([*prefix, t, "-S"], capture_output=True, text=True).stdout
        for t in ("iptables", "ip6tables")
    )


def test_install_replaces_stale_rules_and_remove_leaves_nothing(netns: list[str]) -> None:
    # Other people's rules, and a stale chain of ours with a duplicate jump (a crashed run).
    run = lambda *a: subprocess.run([*netns, *a], check=True, capture_output=True)  # noqa: E731
    run("iptables", "-A", "FORWARD", "-s", "198.18.7.0/24", "-j", "ACCEPT")
    run("iptables", "-N", "ENFORCER")
    run("iptables", "-A", "ENFORCER", "-j", "DROP")
    run("iptables", "-I", "FORWARD", "-j", "ENFORCER")
    run("iptables", "-I", "FORWARD", "-j", "ENFORCER")
    code = (
        "from node.config import config_from_dict; from node.netfilter import *;"
        "import sys; n = Netfilter(ChainSpec.from_config(config_from_dict({}, {})));"
        "n.install() if sys.argv[1] == 'install' else n.remove()"
    )
    import sys

    subprocess.run([*netns, sys.executable, "-c", code, "install"], check=True)
    after = _listing(netns)
    assert after.count("-j ENFORCER\n") == 2  # one jump per family
    assert after.count("-A ENFORCER -j ENFORCER-BLOCK\n") == 2  # and the block chain in ours
    assert "-A ENFORCER -j DROP" not in after and "NFQUEUE --queue-balance 0:1" in after
    assert "-A FORWARD -s 198.18.7.0/24 -j ACCEPT" in after
    assert (
        "-A ENFORCER -p ipv6-icmp -m icmp6 --icmpv6-type 133 -j RETURN" in after
    )  # the IPv6 chain's own rules
    assert after.count("--ctstate ESTABLISHED -m connmark ! --mark 0x0/0xb00000 -j CONNMARK --set-xmark") == 2
    assert after.count("-g ENFORCER-ACKS\n") == 2 and after.count("-A ENFORCER-ACKS -m u32") == 22
    # the kernel took the rate check of offloaded UDP flows, in both families
    assert after.count("--hashlimit-above 50000/sec --hashlimit-burst 5000") == 2
    assert after.count("-A ENFORCER-FLOOD -j NFQUEUE") == 2
    subprocess.run([*netns, sys.executable, "-c", code, "install"], check=True)  # idempotent
    assert _listing(netns).count("-j ENFORCER\n") == 2
    subprocess.run([*netns, sys.executable, "-c", code, "remove"], check=True)
    final = _listing(netns)
    assert "ENFORCER" not in final and "NFQUEUE" not in final
    assert "-A FORWARD -s 198.18.7.0/24 -j ACCEPT" in final  # never touched anything else


BLOCKS_CODE = """
import ipaddress, sys
from node.config import config_from_dict
from node.netfilter import ChainSpec, Netfilter
from node.source_blocks import SourceBlocks
n = Netfilter(ChainSpec.from_config(config_from_dict({}, {})))
n.install()
blocks = SourceBlocks(n, max_sources=2)
raw = lambda text: ipaddress.ip_address(text).packed
blocks.block(raw("198.18.9.9"), 30, now=0.0)
blocks.block(raw("fd00:198:18:9::9"), 10, now=0.0)
blocks.block(raw("198.18.9.10"), 30, now=0.0)  # over the cap: counted, not installed
blocks.apply()
print(n.listing()[4] + n.listing()[6], end="")
print("=== 20s")
blocks.expire(20.0)
blocks.apply()
print(n.listing()[4] + n.listing()[6], end="")
print("=== full", blocks.counters["source_blocks.full"])
n.remove()
"""


def test_source_blocks_are_kernel_drops_in_our_block_chain_until_their_time(netns: list[str]) -> None:
    import sys

    out = subprocess.run(
        [*netns, sys.executable, "-c", BLOCKS_CODE], check=True, capture_output=True, text=True
    ).stdout
    first, later = out.split("=== 20s")
    assert "-A ENFORCER-BLOCK -s 198.18.9.9/32 -j DROP" in first
    assert "-A ENFORCER-BLOCK -s fd00:198:18:9::9/128 -j DROP" in first
    assert "198.18.9.10" not in first
    assert "-A ENFORCER-BLOCK -s 198.18.9.9/32 -j DROP" in later  # 30 s: still blocked
    assert "fd00:198:18:9::9" not in later  # 10 s: over
    assert later.strip().endswith("=== full 1")
    assert "ENFORCER" not in _listing(netns)


def _replay_kernel() -> tuple[Any, Callable[[bytes, float], int]]:
    """The replay's model of our chain, and a function giving a packet's fate in it."""
    from core.flow import flow_key
    from core.packet import decode
    from node.replay_kernel import Kernel

    kernel = Kernel(config_from_dict({}, {}).netfilter, lambda conn: None)

    def step(packet: bytes, now: float) -> int:
        meta = decode(packet)
        key, direction = flow_key(meta)
        return kernel.step(meta, key, direction, now)[0]

    return kernel, step


def _handshake_queued(kernel: Any, step: Callable[[bytes, float], int]) -> Any:
    """A connection's SYN and SYN-ACK through the replay model, each queued to a reader: its connection."""
    import dpkt

    from node.replay_kernel import QUEUE
    from tests.pipeline.packets import tcp4

    assert step(tcp4(seq=1), 0.0) == QUEUE
    conn = kernel.connections[next(iter(kernel.connections))]
    synack = tcp4("198.18.2.11", "198.18.1.11", 80, 40000, flags=dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK)
    assert step(synack, 0.1) == QUEUE
    return conn


def test_replay_models_the_reopening_syn_as_our_chain_does() -> None:
    import dpkt

    from node.replay_kernel import DROPPED, QUEUE
    from tests.pipeline.packets import tcp4

    n = config_from_dict({}, {}).netfilter
    kernel, step = _replay_kernel()
    ack = dpkt.tcp.TH_ACK
    conn = _handshake_queued(kernel, step)
    kernel.verdict(conn, "RESET", n.drop_mark)  # blocked once established (an injection)
    assert step(tcp4(flags=ack, seq=2), 0.2) == DROPPED
    assert step(tcp4(seq=900), 1.0) == QUEUE  # a new connection from the same port is queued
    # a connection refused at its first SYN (never answered) keeps its retransmissions dropped
    assert step(tcp4(sport=40001, seq=5), 0.0) == QUEUE
    kernel.verdict(kernel.connections[next(reversed(list(kernel.connections)))], "RESET", n.drop_mark)
    assert step(tcp4(sport=40001, seq=5), 1.0) == DROPPED


# ---- quiet ACKs: the kernel's test for "no payload" must be exact --------------------------------------

ACKS_PROBE = """
import socket, sys
from node.config import config_from_dict
from node.netfilter import ChainSpec, ack_chain_rules
spec = ChainSpec.from_config(config_from_dict({}, {}))
family = int(sys.argv[1])
lines = ["*filter", ":ENFORCER-ACKS - [0:0]", *ack_chain_rules(spec, family), "-A OUTPUT -p tcp -j ENFORCER-ACKS", "COMMIT", ""]
print("\\n".join(lines))
"""


def _tcp_header(words: int, window: int) -> bytes:
    options = b"\x01" * (4 * words - 20)  # NOPs
    return struct.pack("!HHIIBBHHH", 40000, 80, 1, 1, words << 4, 0x10, window, 0, 0) + options


def _ipv4(tcp: bytes, payload: bytes, ip_options: bytes = b"") -> bytes:
    ihl = 5 + len(ip_options) // 4
    total = 4 * ihl + len(tcp) + len(payload)
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x40 | ihl, 0, total, 0, 0, 64, 6, 0, a4("198.18.0.1"), a4("198.18.0.2")
    )
    return header + ip_options + tcp + payload


def _ipv6(tcp: bytes, payload: bytes, dest_options: bool = False) -> bytes:
    ext = struct.pack("!BB6s", 6, 0, b"\x01\x04\0\0\0\0") if dest_options else b""
    body = ext + tcp + payload
    first = 60 if dest_options else 6
    header = struct.pack(
        "!IHBB16s16s", 6 << 28, len(body), first, 64, a6("fd00:198:18::1"), a6("fd00:198:18::2")
    )
    return header + body


def _counts(netns: list[str], family: int) -> tuple[int, int]:
    """Packets the ACK chain let on (its RETURN rules) and queued (the rest)."""
    tool = "iptables-save" if family == 4 else "ip6tables-save"
    let_on = queued = 0
    for line in subprocess.run(
        [*netns, tool, "-c"], capture_output=True, text=True, check=True
    ).stdout.splitlines():
        if " -A ENFORCER-ACKS " in line:
            packets = int(line[1:].split(":")[0])
            if line.endswith("-j RETURN"):
                let_on += packets
            else:
                queued += packets
    return let_on, queued


def test_the_kernel_passes_a_quiet_ack_only_when_it_provably_carries_no_payload(netns: list[str]) -> None:
    import sys

    run = lambda *a: subprocess.run([*netns, *a], check=True, capture_output=True)  # noqa: E731
    # A veth pair inside the throwaway namespace: the packets only need a route out (the OUTPUT hook).
    run("ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1")
    run("ip", "addr", "add", "198.18.0.1/24", "dev", "v0")
    run("ip", "-6", "addr", "add", "fd00:198:18::1/64", "dev", "v0", "nodad")
    run("ip", "link", "set", "v0", "up")
    run("ip", "link", "set", "v1", "up")
    for family, restore in ((4, "iptables-restore"), (6, "ip6tables-restore")):
        rules = subprocess.run(
            [sys.executable, "-c", ACKS_PROBE, str(family)], capture_output=True, text=True, check=True
        )
        subprocess.run([*netns, restore, "--noflush"], input=rules.stdout, text=True, check=True)
    cases: list[tuple[int, bytes, bool]] = []  # family, packet, let on
    for words in range(5, 16):
        cases += [
            (4, _ipv4(_tcp_header(words, 1000), b""), True),
            (6, _ipv6(_tcp_header(words, 1000), b""), True),
        ]
        for size in (1, 2, 3, 4, 40):  # any payload at all is queued, whatever the header length
            cases += [(4, _ipv4(_tcp_header(words, 1000), b"x" * size), False)]
            cases += [(6, _ipv6(_tcp_header(words, 1000), b"x" * size), False)]
    for family, build in ((4, _ipv4), (6, _ipv6)):
        cases += [
            (family, build(_tcp_header(8, 64), b""), True),
            (family, build(_tcp_header(8, 63), b""), False),
        ]
        cases += [(family, build(_tcp_header(5, 0), b""), False)]  # a zero window: the threat checks see it
    cases += [(4, _ipv4(_tcp_header(5, 1000), b"", ip_options=b"\x01\x01\x01\x00"), False)]
    cases += [(6, _ipv6(_tcp_header(5, 1000), b"", dest_options=True), False)]
    sender = (
        "import socket, sys\n"
        "family = int(sys.argv[1]); packet = bytes.fromhex(sys.argv[2])\n"
        "if family == 4:\n"
        "    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW); s.sendto(packet, ('198.18.0.2', 0))\n"
        "else:\n"
        "    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW); s.sendto(packet, ('fd00:198:18::2', 0))\n"
    )
    wrong = []
    for family, packet, let_on in cases:
        before = _counts(netns, family)
        run(sys.executable, "-c", sender, str(family), packet.hex())
        after = _counts(netns, family)
        delta = (after[0] - before[0], after[1] - before[1])
        if delta != ((1, 0) if let_on else (0, 1)):
            wrong.append((family, packet.hex(), let_on, delta))
    assert not wrong, wrong
    assert len(cases) == 11 * (2 + 10) + 8  # header lengths × (bare + with payload), and the edge cases


def test_replay_models_quiet_acks_as_our_chain_does() -> None:
    import dpkt

    from node.replay_kernel import ACCEPTED, QUEUE
    from tests.pipeline.packets import tcp4

    n = config_from_dict({}, {}).netfilter
    kernel, step = _replay_kernel()
    ack = dpkt.tcp.TH_ACK
    conn = _handshake_queued(kernel, step)
    assert step(tcp4(flags=ack, seq=2), 0.2) == QUEUE  # the handshake's ACK: a reader sees it
    kernel.verdict(conn, "learn_quiet", n.pass_mark | n.quiet_ack_mark)
    assert step(tcp4(flags=ack, seq=2), 0.3) == ACCEPTED and kernel.counters["kernel.quiet_acks"] == 1
    assert step(tcp4(flags=ack, seq=2, data=b"x"), 0.4) == QUEUE  # one byte of payload
    assert step(tcp4(flags=ack | dpkt.tcp.TH_PUSH, seq=3), 0.5) == QUEUE  # not a bare ACK
    assert step(tcp4(seq=900), 1.0) == QUEUE  # a new connection reusing the ports starts loud
    assert step(tcp4(flags=ack, seq=901), 1.1) == QUEUE
