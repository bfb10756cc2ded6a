from __future__ import annotations

import os

from hypothesis import given
from hypothesis import strategies as st

from runtime.identity import (
    GroupSelector,
    Workload,
    WorkloadResolver,
    container_id_from_path,
    group_of,
    identity_from_cgroup,
    make_workload,
    node_workloads,
    parse_cgroup,
    parse_fib_trie_local,
    parse_if_inet6,
    parse_ns_link,
    pod_uid_from_path,
)
from runtime.proc_connector import list_pids
from tests.runtime.conftest import _run, kill_tree, spawn_in, wait_for

CID = "3f4e5d6c7b8a99887766554433221100ffeeddccbbaa00112233445566778899"
UID = "0f1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d"

# A container of a Burstable pod under cgroup v1 and the cgroupfs driver (every hierarchy the same).
V1_CGROUPFS = f"""12:pids:/kubepods/burstable/pod{UID}/{CID}
11:memory:/kubepods/burstable/pod{UID}/{CID}
3:cpu,cpuacct:/kubepods/burstable/pod{UID}/{CID}
1:name=systemd:/kubepods/burstable/pod{UID}/{CID}
"""
# The same under cgroup v2 and the systemd driver with containerd: underscores in the pod UID.
V2_SYSTEMD = (
    "0::/kubepods.slice/kubepods-burstable.slice/"
    f"kubepods-burstable-pod{UID.replace('-', '_')}.slice/cri-containerd-{CID}.scope\n"
)
DOCKER_V1 = f"4:memory:/docker/{CID}\n1:name=systemd:/docker/{CID}\n"
DOCKER_V2_SYSTEMD = f"0::/system.slice/docker-{CID}.scope\n"
PODMAN_CONMON = f"0::/machine.slice/libpod-conmon-{CID}.scope\n"
HOST_V1 = "9:name=systemd:/\n8:pids:/\n4:memory:/user.slice\n0::/\n"


def test_parse_cgroup_v1_and_v2_lines() -> None:
    entries = parse_cgroup(V1_CGROUPFS + "0::/\ngarbage\n:x:/y\n")
    assert [e.hierarchy for e in entries] == [12, 11, 3, 1, 0]
    assert entries[2].controllers == ("cpu", "cpuacct")
    assert entries[4].controllers == ()
    assert entries[4].path == "/"


def test_container_and_pod_from_v1_cgroupfs() -> None:
    cid, pod, path = identity_from_cgroup(parse_cgroup(V1_CGROUPFS))
    assert (cid, pod) == (CID, UID)
    assert path.endswith(CID)


def test_container_and_pod_from_v2_systemd_driver() -> None:
    cid, pod, _ = identity_from_cgroup(parse_cgroup(V2_SYSTEMD))
    assert (cid, pod) == (CID, UID)


def test_docker_without_pod() -> None:
    assert identity_from_cgroup(parse_cgroup(DOCKER_V1))[:2] == (CID, None)
    assert identity_from_cgroup(parse_cgroup(DOCKER_V2_SYSTEMD))[:2] == (CID, None)


def test_conmon_is_not_the_container() -> None:
    assert container_id_from_path(PODMAN_CONMON.split("::")[1].strip()) is None


def test_host_process_has_no_identity() -> None:
    assert identity_from_cgroup(parse_cgroup(HOST_V1)) == (None, None, "/user.slice")
    lab_v1 = "8:pids:/rt-a\n4:memory:/other/x\n0::/\n"
    assert identity_from_cgroup(parse_cgroup(lab_v1))[2] == "/rt-a"
    assert make_workload(parse_cgroup(HOST_V1), 4026531840, 4026531840, {}) is None


def test_pod_uid_only_is_a_pod_workload() -> None:
    assert pod_uid_from_path(f"/kubepods/besteffort/pod{UID}") == UID
    wl = make_workload(parse_cgroup(f"0::/kubepods/besteffort/pod{UID}\n"), 7, 1, {})
    assert wl is not None and wl.kind == "pod" and wl.key == f"pod:{UID}"


def test_netns_other_than_host_is_a_workload() -> None:
    wl = make_workload(parse_cgroup(HOST_V1), 4026532999, 4026531840, {4026532999: "rt-a"})
    assert wl is not None
    assert (wl.kind, wl.key, wl.netns_name) == ("netns", "netns:rt-a", "rt-a")
    unnamed = make_workload(parse_cgroup(HOST_V1), 4026532998, 4026531840, {})
    assert unnamed is not None and unnamed.key == "netns:4026532998"


def test_ns_link() -> None:
    assert parse_ns_link("net:[4026531840]") == 4026531840
    assert parse_ns_link("net:4026531840") is None


FIB_TRIE = """Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
     +-- 198.18.0.0/24 2 0 2
        |-- 198.18.0.0
           /24 link UNICAST
        |-- 198.18.0.7
           /32 host LOCAL
        |-- 198.18.0.255
           /32 link BROADCAST
Local:
  +-- 0.0.0.0/0 3 0 5
        |-- 198.18.0.7
           /32 host LOCAL
"""

IF_INET6 = """00000000000000000000000000000001 01 80 10 80       lo
fd000000000000000000000000000007 02 40 00 80     eth0
fe800000000000000000000000000001 02 40 20 80     eth0
"""


def test_fib_trie_local_addresses() -> None:
    assert parse_fib_trie_local(FIB_TRIE) == {"198.18.0.7"}


def test_if_inet6_addresses() -> None:
    assert parse_if_inet6(IF_INET6) == {"fd00::7"}


@given(st.text(max_size=400))
def test_parsers_never_raise(text: str) -> None:
    assert len(parse_cgroup(text)) <= len(text.splitlines())
    assert all(isinstance(a, str) for a in parse_fib_trie_local(text) | parse_if_inet6(text))
    inode = parse_ns_link(text)
    assert inode is None or str(inode) in text
    for found in (container_id_from_path(text), pod_uid_from_path(text)):
        assert found is None or 0 < len(found) <= len(text)


def _wl(**kw: object) -> Workload:
    base: dict[str, object] = dict(
        key="netns:rt-a", kind="netns", container_id=None, pod_uid=None, netns=5, netns_name="rt-a", cgroup=""
    )
    base.update(kw)
    return Workload(**base)  # type: ignore[arg-type]


def test_group_by_labels_addresses_and_order() -> None:
    web = GroupSelector("web", labels={"app": "web"})
    lab = GroupSelector("lab", labels={"netns": "rt-*"})
    net = GroupSelector("db", cidrs=("198.18.1.0/24", "fd00:1::/64"))
    empty = GroupSelector("nothing")
    wl = _wl()
    assert group_of(wl, [empty, web, lab]) == "lab"
    assert group_of(wl, [web, lab], extra_labels={"rt-a": {"app": "web"}}) == "web"
    assert group_of(_wl(netns_name="other", key="netns:other"), [lab, net], addresses=["198.18.1.9"]) == "db"
    assert group_of(_wl(netns_name=None, key="netns:5"), [lab, net], addresses=["fd00:1::3"]) == "db"
    assert group_of(_wl(netns_name=None, key="netns:5"), [lab, net], addresses=["198.18.2.9"]) is None


def test_real_netns_and_cgroup(netns: str, pids_cgroup: str, unified_cgroup: str) -> None:
    _run("ip", "-n", netns, "addr", "add", "198.18.3.4/24", "dev", "lo")
    _run("ip", "-n", netns, "addr", "add", "fd00:3::4/64", "dev", "lo")
    proc = spawn_in(netns, "sleep", "30", cgroup=pids_cgroup)
    try:
        resolver = WorkloadResolver()
        assert wait_for(lambda: open(f"/proc/{proc.pid}/comm").read().strip() == "sleep")
        with open(os.path.join(unified_cgroup, "cgroup.procs"), "w") as f:
            f.write(str(proc.pid))
        wl = resolver.identify(proc.pid)
        assert wl is not None
        assert wl.kind == "netns" and wl.netns_name == netns and wl.key == f"netns:{netns}"
        assert wl.netns == os.stat(f"/run/netns/{netns}").st_ino
        assert wl.cgroup == "/" + os.path.basename(unified_cgroup)
        addrs = resolver.addresses(proc.pid)
        assert "198.18.3.4" in addrs and "fd00:3::4" in addrs
        assert group_of(wl, [GroupSelector("lab", cidrs=("198.18.3.0/24",))], addresses=addrs) == "lab"
        seen = node_workloads(resolver, list_pids())
        assert seen[wl.key][0] == wl and "198.18.3.4" in seen[wl.key][1]
        assert all(w.key == k for k, (w, _, _) in seen.items())
        # Our own process is the node's (host netns, no container cgroup).
        assert resolver.identify(os.getpid()) is None
    finally:
        kill_tree([proc.pid])
        proc.wait(5)
    assert WorkloadResolver().identify(proc.pid) is None
