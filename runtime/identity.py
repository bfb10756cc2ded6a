"""Which workload a process belongs to, and which group that workload is in.

A workload is a container (its id is in the process's cgroup path), a Kubernetes pod (its UID is in the
cgroup path; the pod's containers share one network namespace), or, in the lab, a network namespace
other than the node's with processes in it (optionally in a cgroup of its own). A process in the node's
network namespace and in no container cgroup belongs to no workload: it is the node's.

The parsers here are pure functions over the text of /proc files, so they are tested on literals; the
`WorkloadResolver` at the bottom is the thin part that reads /proc.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping

from core.selectors import WorkloadSelector

# Bound on the resolver's cache of workloads (distinct netns + cgroup combinations).
WORKLOAD_CACHE_MAX = 4096
# Bound on the bytes read from one /proc file here (cgroup and net tables of a workload are small).
PROC_READ_MAX = 1 << 20

_HEX64 = re.compile(r"([0-9a-f]{64})")
# Last path component carrying a container id, with the prefixes of docker, containerd, CRI-O and
# podman under the systemd driver (`docker-<id>.scope`) or the cgroupfs driver (bare `<id>`).
_CONTAINER_COMPONENT = re.compile(
    r"^(?:docker-|cri-containerd-|crio-|libpod-|containerd-)?([0-9a-f]{64})(?:\.scope)?$"
)
# Pod UID as the kubelet writes it: `pod<uid>` (cgroupfs) or `kubepods-<qos>-pod<uid_with_underscores>.slice`.
_POD_UID = re.compile(
    r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})(?:\.slice)?$"
)
# Which hierarchy names a process's cgroup: the unified one, then the v1 controllers a pod runtime
# always uses.
_CGROUP_PREFERENCE = ("unified", "pids", "memory", "cpu", "name=systemd")
_NS_LINK = re.compile(r"^[a-z_]+:\[(\d+)\]$")


@dataclasses.dataclass(frozen=True, slots=True)
class CgroupEntry:
    """One line of /proc/PID/cgroup: hierarchy id, controllers (empty for v2) and the path."""

    hierarchy: int
    controllers: tuple[str, ...]
    path: str


@dataclasses.dataclass(frozen=True, slots=True)
class Workload:
    """A container, pod or lab pod on this node. `key` is stable for its lifetime."""

    key: str
    kind: str  # "container" | "pod" | "netns"
    container_id: str | None
    pod_uid: str | None
    netns: int | None  # network namespace inode
    netns_name: str | None  # name under /run/netns, if any (the lab's pods)
    cgroup: str  # the most specific cgroup path seen ("" if only the root)

    def intrinsic_labels(self) -> dict[str, str]:
        """Labels every workload carries without help from the controller."""
        labels = {"workload": self.key, "kind": self.kind}
        if self.container_id:
            labels["container_id"] = self.container_id
        if self.pod_uid:
            labels["pod_uid"] = self.pod_uid
        if self.netns_name:
            labels["netns"] = self.netns_name
        if self.cgroup:
            labels["cgroup"] = self.cgroup
        return labels


def parse_cgroup(text: str) -> tuple[CgroupEntry, ...]:
    """Parse /proc/PID/cgroup (v1 lines `3:cpu,cpuacct:/path`, v2 line `0::/path`); bad lines skipped."""
    entries = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3 or not parts[0].isdigit():
            continue
        controllers = tuple(c for c in parts[1].split(",") if c)
        entries.append(CgroupEntry(int(parts[0]), controllers, parts[2]))
    return tuple(entries)


def container_id_from_path(path: str) -> str | None:
    """The container id in a cgroup path, from its deepest component that carries one."""
    for component in reversed(path.split("/")):
        if component.startswith("libpod-conmon-"):
            continue
        m = _CONTAINER_COMPONENT.match(component)
        if m:
            return m.group(1)
    return None


def pod_uid_from_path(path: str) -> str | None:
    """The Kubernetes pod UID in a cgroup path (dashes restored from the systemd driver's underscores)."""
    for component in reversed(path.split("/")):
        m = _POD_UID.search(component)
        if m:
            return m.group(1).replace("_", "-")
    return None


def identity_from_cgroup(entries: Iterable[CgroupEntry]) -> tuple[str | None, str | None, str]:
    """(container id, pod uid, the process's cgroup path) from the entries of all hierarchies.

    The path reported is the v2 (unified) one when it is not the root, else that of the first v1
    hierarchy in `_CGROUP_PREFERENCE` that is not the root, else any non-root path, else "".
    """
    container = pod = None
    by_kind: dict[str, str] = {}
    for entry in entries:
        path = entry.path
        if path in ("", "/"):
            continue
        container = container or container_id_from_path(path)
        pod = pod or pod_uid_from_path(path)
        kind = "unified" if entry.hierarchy == 0 and not entry.controllers else ",".join(entry.controllers)
        for name in (kind, *entry.controllers):
            by_kind.setdefault(name, path)
        by_kind.setdefault("", path)
    for kind in _CGROUP_PREFERENCE:
        if kind in by_kind:
            return container, pod, by_kind[kind]
    return container, pod, by_kind.get("", "")


def parse_ns_link(text: str) -> int | None:
    """The inode in a namespace link such as `net:[4026531840]`."""
    m = _NS_LINK.match(text.strip())
    return int(m.group(1)) if m else None


def parse_fib_trie_local(text: str) -> frozenset[str]:
    """The local IPv4 addresses of a network namespace from its /proc/net/fib_trie (loopback excluded).

    An address is local when a `|-- A.B.C.D` line is followed by a `/32 host LOCAL` line.
    """
    out: set[str] = set()
    last: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("|-- "):
            last = line[4:].strip()
        elif last is not None and line.startswith("/32 host LOCAL"):
            try:
                addr = ipaddress.IPv4Address(last)
            except ValueError:
                continue
            if not addr.is_loopback:
                out.add(str(addr))
    return frozenset(out)


def parse_if_inet6(text: str) -> frozenset[str]:
    """The global/site IPv6 addresses of a network namespace from its /proc/net/if_inet6.

    Columns: address (32 hex), ifindex, prefix length, scope, flags, device. Loopback and link-local
    addresses are not a workload's identity.
    """
    out: set[str] = set()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 6 or len(parts[0]) != 32:
            continue
        try:
            addr = ipaddress.IPv6Address(bytes.fromhex(parts[0]))
        except ValueError:
            continue
        if addr.is_loopback or addr.is_link_local:
            continue
        out.add(str(addr))
    return frozenset(out)


@dataclasses.dataclass(frozen=True, slots=True)
class GroupSelector:
    """Members of a group: every label given must match, or an address in one of the CIDRs.

    Label values may end in `*` (prefix match). `selector` is a selector as users write it (Kubernetes
    label selectors, namespaces, NeuVector criteria: `core.selectors`), evaluated the way the policy
    process evaluates it for the network tables. A selector with none of these matches nothing.
    """

    name: str
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    cidrs: tuple[str, ...] = ()
    selector: WorkloadSelector | None = None

    def matches(self, labels: Mapping[str, str], addresses: Iterable[str]) -> bool:
        if self.labels and all(_label_match(want, labels.get(k)) for k, want in self.labels.items()):
            return True
        if self.selector is not None and self.selector.matches(labels):
            return True
        if self.cidrs:
            nets = [ipaddress.ip_network(c, strict=False) for c in self.cidrs]
            for a in addresses:
                ip = ipaddress.ip_address(a)
                if any(ip.version == n.version and ip in n for n in nets):
                    return True
        return False


def _label_match(want: str, have: str | None) -> bool:
    if have is None:
        return False
    if want.endswith("*"):
        return have.startswith(want[:-1])
    return have == want


def group_of(
    workload: Workload,
    selectors: Iterable[GroupSelector],
    extra_labels: Mapping[str, Mapping[str, str]] | None = None,
    addresses: Iterable[str] = (),
) -> str | None:
    """The first group whose selector matches the workload, or None.

    `extra_labels` maps a workload key, pod UID or netns name to labels the controller knows of
    (Kubernetes pod and namespace labels), merged over the intrinsic ones.
    """
    labels = workload.intrinsic_labels()
    if extra_labels:
        for k in (workload.netns_name, workload.pod_uid, workload.container_id, workload.key):
            if k and k in extra_labels:
                labels.update(extra_labels[k])
    addrs = tuple(addresses)
    for sel in selectors:
        if sel.matches(labels, addrs):
            return sel.name
    return None


def make_workload(
    entries: Iterable[CgroupEntry], netns: int | None, host_netns: int | None, netns_names: Mapping[int, str]
) -> Workload | None:
    """The workload of a process from its cgroup entries and netns inode, or None for a node process."""
    container, pod, cgroup = identity_from_cgroup(entries)
    name = netns_names.get(netns) if netns is not None else None
    if container:
        return Workload(f"container:{container}", "container", container, pod, netns, name, cgroup)
    if pod:
        return Workload(f"pod:{pod}", "pod", None, pod, netns, name, cgroup)
    if netns is not None and host_netns is not None and netns != host_netns:
        key = f"netns:{name}" if name else f"netns:{netns}"
        return Workload(key, "netns", None, None, netns, name, cgroup)
    return None


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read(PROC_READ_MAX).decode("utf-8", "replace")
    except OSError:
        return None


def netns_inode(pid: int, proc: str = "/proc") -> int | None:
    try:
        return os.stat(f"{proc}/{pid}/ns/net").st_ino
    except OSError:
        return None


def named_netns(run_dir: str = "/run/netns") -> dict[int, str]:
    """Inode → name of the network namespaces mounted under /run/netns (what `ip netns` names)."""
    out: dict[int, str] = {}
    try:
        names = os.listdir(run_dir)
    except OSError:
        return out
    for name in names:
        try:
            out[os.stat(os.path.join(run_dir, name)).st_ino] = name
        except OSError:
            continue
    return out


def workload_addresses(pid: int, proc: str = "/proc") -> frozenset[str]:
    """The addresses of the network namespace of `pid` (read through that process's /proc/PID/net)."""
    v4 = _read(f"{proc}/{pid}/net/fib_trie")
    v6 = _read(f"{proc}/{pid}/net/if_inet6")
    return parse_fib_trie_local(v4 or "") | parse_if_inet6(v6 or "")


class WorkloadResolver:
    """PID → Workload over /proc, with a bounded cache keyed by what identifies a workload."""

    def __init__(
        self, proc: str = "/proc", run_netns: str = "/run/netns", cache_max: int = WORKLOAD_CACHE_MAX
    ) -> None:
        self._proc = proc
        self._run_netns = run_netns
        self._cache_max = cache_max
        self._cache: OrderedDict[tuple[int | None, str], Workload | None] = OrderedDict()
        # The enforcer runs in the node's network namespace (hostNetwork), so ours is the node's.
        self.host_netns = netns_inode(os.getpid(), proc)
        self._names: dict[int, str] = named_netns(run_netns)

    def refresh_names(self) -> None:
        """Re-read /run/netns (called periodically and when an unnamed netns is met)."""
        self._names = named_netns(self._run_netns)
        self._cache.clear()

    def identify(self, pid: int) -> Workload | None:
        """The workload of `pid`, or None for a node process or a process that is gone."""
        text = _read(f"{self._proc}/{pid}/cgroup")
        ns = netns_inode(pid, self._proc)
        if text is None or ns is None:
            return None
        key = (ns, text)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        if ns != self.host_netns and ns not in self._names:
            self._names = named_netns(self._run_netns)
        wl = make_workload(parse_cgroup(text), ns, self.host_netns, self._names)
        self._cache[key] = wl
        if len(self._cache) > self._cache_max:
            self._cache.popitem(last=False)
        return wl

    def addresses(self, pid: int) -> frozenset[str]:
        return workload_addresses(pid, self._proc)


def node_workloads(
    resolver: WorkloadResolver, pids: Iterable[int], max_workloads: int = WORKLOAD_CACHE_MAX
) -> dict[str, tuple[Workload, frozenset[str], int]]:
    """The workloads on the node: key → (workload, its addresses, one PID in it).

    For the network side (groups by workload identity, and the controller's view of the node). The
    addresses of a network namespace are read once, through the first PID met in it.
    """
    out: dict[str, tuple[Workload, frozenset[str], int]] = {}
    by_netns: dict[int | None, frozenset[str]] = {}
    for pid in pids:
        wl = resolver.identify(pid)
        if wl is None or wl.key in out:
            continue
        if len(out) >= max_workloads:
            break
        if wl.netns not in by_netns:
            by_netns[wl.netns] = resolver.addresses(pid)
        out[wl.key] = (wl, by_netns[wl.netns], pid)
    return out
