"""Our chains: what they contain, and installing/removing them for real inside a throwaway namespace."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from pipeline.config import config_from_dict
from pipeline.netfilter import ChainSpec, chain_rules, restore_script

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
        "from pipeline.config import config_from_dict; from pipeline.netfilter import *;"
        "import sys; n = Netfilter(ChainSpec.from_config(config_from_dict({}, {})));"
        "n.install() if sys.argv[1] == 'install' else n.remove()"
    )
    import sys

    subprocess.run([*netns, sys.executable, "-c", code, "install"], check=True)
    after = _listing(netns)
    assert after.count("-j ENFORCER") == 2  # one jump per family
    assert "-A ENFORCER -j DROP" not in after and "NFQUEUE --queue-balance 0:1" in after
    assert "-A FORWARD -s 198.18.7.0/24 -j ACCEPT" in after
    assert (
        "-A ENFORCER -p ipv6-icmp -m icmp6 --icmpv6-type 133 -j RETURN" in after
    )  # the IPv6 chain's own rules
    subprocess.run([*netns, sys.executable, "-c", code, "install"], check=True)  # idempotent
    assert _listing(netns).count("-j ENFORCER") == 2
    subprocess.run([*netns, sys.executable, "-c", code, "remove"], check=True)
    final = _listing(netns)
    assert "ENFORCER" not in final and "NFQUEUE" not in final
    assert "-A FORWARD -s 198.18.7.0/24 -j ACCEPT" in final  # never touched anything else
