"""Our jumps stay first: finding what a CNI did to a hook, and the repair for real in a throwaway
namespace; and the bridge check (bridges present without br_netfilter) on sysfs/procfs-shaped trees."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.config import config_from_dict
from node.netfilter import ChainSpec, find_jump_problem, repair_script
from node.netfilter_bridges import find_bridges

NS = "nft-jumps"


def spec(**sections: dict[str, object]) -> ChainSpec:
    return ChainSpec.from_config(config_from_dict(sections, {}))


def test_a_rule_above_our_jump_or_a_deleted_jump_is_found_and_a_first_jump_is_fine() -> None:
    s = spec()
    ok = "-P FORWARD ACCEPT\n-A FORWARD -j ENFORCER\n-A FORWARD -j KUBE-FORWARD\n"
    assert find_jump_problem(s, 4, "FORWARD", ok) is None
    above = "-P FORWARD ACCEPT\n-A FORWARD -j ACCEPT\n-A FORWARD -j ENFORCER\n"
    problem = find_jump_problem(s, 4, "FORWARD", above)
    assert problem is not None and problem.ours == 1 and problem.first == "-A FORWARD -j ACCEPT"
    assert "-A FORWARD -j ACCEPT" in problem.describe()
    gone = find_jump_problem(s, 6, "FORWARD", "-P FORWARD DROP\n-A FORWARD -j cali-FORWARD\n")
    assert gone is not None and gone.ours == 0 and "deleted" in gone.describe()
    twice = find_jump_problem(
        s, 4, "FORWARD", "-A FORWARD -j ENFORCER\n-A FORWARD -j X\n-A FORWARD -j ENFORCER\n"
    )
    assert twice is not None and twice.ours == 2 and "2 times" in twice.describe()
    empty = find_jump_problem(s, 4, "FORWARD", "-P FORWARD ACCEPT\n")
    assert empty is not None and empty.ours == 0
    # INPUT's jump leaves loopback alone: that form is ours, the bare one is not
    inputs = spec(netfilter={"hooks": ["INPUT"]})
    assert find_jump_problem(inputs, 4, "INPUT", "-A INPUT ! -i lo -j ENFORCER\n") is None
    assert find_jump_problem(inputs, 4, "INPUT", "-A INPUT -j ENFORCER\n") is not None


def test_the_repair_deletes_each_of_our_jumps_and_inserts_one_first_in_one_transaction() -> None:
    s = spec()
    problem = find_jump_problem(s, 4, "FORWARD", "-A FORWARD -j ACCEPT\n-A FORWARD -j ENFORCER\n" * 2)
    assert problem is not None and problem.ours == 2
    script = repair_script(s, [problem])
    assert script.splitlines() == [
        "*filter", "-D FORWARD -j ENFORCER", "-D FORWARD -j ENFORCER", "-I FORWARD 1 -j ENFORCER", "COMMIT",
    ]  # fmt: skip


@pytest.fixture
def netns() -> Iterator[list[str]]:
    subprocess.run(["ip", "netns", "del", NS], capture_output=True)
    subprocess.run(["ip", "netns", "add", NS], check=True)
    try:
        yield ["ip", "netns", "exec", NS]
    finally:
        subprocess.run(["ip", "netns", "del", NS], capture_output=True)


REPAIR_CODE = """
from node.config import config_from_dict
from node.netfilter import ChainSpec, JumpWatch, Netfilter
import subprocess
n = Netfilter(ChainSpec.from_config(config_from_dict({}, {})))
n.install()
subprocess.run(["iptables", "-I", "FORWARD", "1", "-s", "198.18.7.0/24", "-j", "ACCEPT"], check=True)
subprocess.run(["ip6tables", "-D", "FORWARD", "-j", "ENFORCER"], check=True)
watch = JumpWatch(n, 5.0)
print(len(watch.check_once()), watch.counters["netfilter.jump_repaired"])
print(len(watch.check_once()), watch.counters["netfilter.jump_repaired"], watch.counters["netfilter.jump_checks"])
"""


def test_a_cni_rule_above_us_and_a_deleted_jump_are_repaired_for_real(netns: list[str]) -> None:
    out = subprocess.run(
        [*netns, sys.executable, "-c", REPAIR_CODE], capture_output=True, text=True, check=True
    )
    assert out.stdout.splitlines() == ["2 2", "0 2 2"], out.stderr  # both found and repaired, then clean
    v4 = subprocess.run([*netns, "iptables", "-S", "FORWARD"], capture_output=True, text=True).stdout
    v6 = subprocess.run([*netns, "ip6tables", "-S", "FORWARD"], capture_output=True, text=True).stdout
    rules4 = [r for r in v4.splitlines() if r.startswith("-A")]
    rules6 = [r for r in v6.splitlines() if r.startswith("-A")]
    assert rules4 == ["-A FORWARD -j ENFORCER", "-A FORWARD -s 198.18.7.0/24 -j ACCEPT"]  # theirs kept, below
    assert rules6 == ["-A FORWARD -j ENFORCER"]


def _tree(tmp_path: Path, bridges: list[str], others: list[str], call: str | None) -> tuple[str, str]:
    net = tmp_path / "class-net"
    for name in bridges:
        (net / name / "bridge").mkdir(parents=True)
    for name in others:
        (net / name).mkdir(parents=True)
    proc = tmp_path / "bridge-sysctl"
    if call is not None:
        proc.mkdir()
        (proc / "bridge-nf-call-iptables").write_text(call + "\n")
        (proc / "bridge-nf-call-ip6tables").write_text("1\n")
    return str(net), str(proc)


def test_bridges_without_br_netfilter_are_reported_with_the_reason(tmp_path: Path) -> None:
    net, proc = _tree(tmp_path / "a", ["cni0"], ["eth0", "veth1"], None)
    missing = find_bridges(net, proc)
    assert missing.bridges == ("cni0",) and missing.unfiltered == (4, 6) and not missing.module_loaded
    assert "cni0" in missing.describe() and "br_netfilter is not loaded" in missing.describe()
    net, proc = _tree(tmp_path / "b", ["cni0"], ["eth0"], "0")
    off = find_bridges(net, proc)
    assert off.unfiltered == (4,) and "bridge-nf-call-iptables=0" in off.describe()
    net, proc = _tree(tmp_path / "c", ["cni0"], [], "1")
    assert find_bridges(net, proc).describe() == ""
    net, proc = _tree(tmp_path / "d", [], ["eth0"], None)  # no bridge: nothing bypasses FORWARD
    assert find_bridges(net, proc).describe() == ""
