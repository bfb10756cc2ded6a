"""Our chains: what they contain, and installing/removing them for real inside a throwaway namespace."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from node.config import config_from_dict
from node.netfilter import ChainSpec, chain_rules, restore_script

NS = "nft-unit"


def spec(**sections: dict[str, object]) -> ChainSpec:
    return ChainSpec.from_config(config_from_dict(sections, {}))


def test_rules_mask_our_bits_and_balance_the_queues() -> None:
    rules = chain_rules(spec(queues={"readers": 3, "first": 4}))
    assert rules[0] == "-A ENFORCER -m mark --mark 0x400000/0x400000 -j RETURN"
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
            "-m connmark ! --mark 0x0/0x300000 -j CONNMARK --set-xmark 0x0/0x300000"
        )
        assert clear in rules
        # before the connmark matches, so the new connection is queued instead of inheriting a verdict
        assert rules.index(clear) < rules.index("-A ENFORCER -m connmark --mark 0x200000/0x200000 -j DROP")
        assert rules.index(clear) < rules.index("-A ENFORCER -m connmark --mark 0x100000/0x100000 -j RETURN")
        # a SYN retransmitted for a connection refused at its first SYN (never answered) is not NEW-matched
        assert not any("--ctstate NEW" in r for r in rules)


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
    assert after.count("--ctstate ESTABLISHED -m connmark ! --mark 0x0/0x300000 -j CONNMARK --set-xmark") == 2
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


def test_replay_models_the_reopening_syn_as_our_chain_does() -> None:
    import dpkt

    from core.flow import flow_key
    from core.packet import decode
    from node.replay_kernel import DROPPED, QUEUE, Kernel
    from tests.pipeline.packets import tcp4

    n = config_from_dict({}, {}).netfilter
    kernel = Kernel(n, lambda conn: None)
    syn, ack = dpkt.tcp.TH_SYN, dpkt.tcp.TH_ACK

    def step(packet: bytes, now: float) -> int:
        meta = decode(packet)
        key, direction = flow_key(meta)
        return kernel.step(meta, key, direction, now)[0]

    assert step(tcp4(seq=1), 0.0) == QUEUE
    conn = kernel.connections[next(iter(kernel.connections))]
    assert step(tcp4("198.18.2.11", "198.18.1.11", 80, 40000, flags=syn | ack), 0.1) == QUEUE
    kernel.verdict(conn, "RESET", n.drop_mark)  # blocked once established (an injection)
    assert step(tcp4(flags=ack, seq=2), 0.2) == DROPPED
    assert step(tcp4(seq=900), 1.0) == QUEUE  # a new connection from the same port is queued
    # a connection refused at its first SYN (never answered) keeps its retransmissions dropped
    assert step(tcp4(sport=40001, seq=5), 0.0) == QUEUE
    kernel.verdict(kernel.connections[next(reversed(list(kernel.connections)))], "RESET", n.drop_mark)
    assert step(tcp4(sport=40001, seq=5), 1.0) == DROPPED
