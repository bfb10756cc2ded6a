"""Bridges that bypass our FORWARD jump: a bridge CNI without br_netfilter.

Pods on one node attached to one Linux bridge (the standard `bridge` CNI plugin, flannel's cni0, kubenet's
cbr0) talk through the bridge at layer 2. Only with the br_netfilter module loaded and
`net.bridge.bridge-nf-call-iptables` (`-ip6tables` for IPv6) set to 1 does that traffic cross the
iptables FORWARD hook, and so our chain. Without it the enforcer never sees same-node pod traffic.
Both settings are per network namespace; this reads the enforcer's own.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

SYS_CLASS_NET = "/sys/class/net"
PROC_BRIDGE = "/proc/sys/net/bridge"
CALL_KEYS = {4: "bridge-nf-call-iptables", 6: "bridge-nf-call-ip6tables"}
MODPROBE_TIMEOUT_S = 10


@dataclass(frozen=True, slots=True)
class BridgeFinding:
    """Bridges present and the families whose bridged traffic skips iptables (empty: all is seen)."""

    bridges: tuple[str, ...]
    unfiltered: tuple[int, ...]
    module_loaded: bool

    def describe(self) -> str:
        if not self.bridges or not self.unfiltered:
            return ""
        families = " and ".join(f"IPv{f}" for f in self.unfiltered)
        why = "br_netfilter is not loaded" if not self.module_loaded else (
            " and ".join(f"net.bridge.{CALL_KEYS[f]}=0" for f in self.unfiltered)
        )  # fmt: skip
        return (
            f"bridges {', '.join(self.bridges)} are present but {why}: {families} traffic between pods on "
            "the same bridge skips the FORWARD hook and is not enforced (set netfilter.load_br_netfilter, "
            "or load the module and set the sysctl on the node)"
        )


def find_bridges(sys_class_net: str = SYS_CLASS_NET, proc_bridge: str = PROC_BRIDGE,
                 families: tuple[int, ...] = (4, 6)) -> BridgeFinding:  # fmt: skip
    try:
        names = sorted(os.listdir(sys_class_net))
    except OSError:
        names = []
    bridges = tuple(n for n in names if os.path.isdir(os.path.join(sys_class_net, n, "bridge")))
    loaded = os.path.isdir(proc_bridge)
    unfiltered = tuple(f for f in families if _setting(proc_bridge, CALL_KEYS[f]) != "1")
    return BridgeFinding(bridges, unfiltered if bridges else (), loaded)


def _setting(proc_bridge: str, key: str) -> str:
    try:
        with open(os.path.join(proc_bridge, key)) as fh:
            return fh.read().strip()
    except OSError:
        return ""  # the module is not loaded


def load_br_netfilter(families: tuple[int, ...] = (4, 6), proc_bridge: str = PROC_BRIDGE) -> str:
    """`modprobe br_netfilter` and turn the call sysctls on (only when configured); "" or the error."""
    try:
        result = subprocess.run(
            ["modprobe", "br_netfilter"], capture_output=True, text=True, timeout=MODPROBE_TIMEOUT_S
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"modprobe br_netfilter: {exc}"
    if result.returncode != 0:
        return f"modprobe br_netfilter: {result.stderr.strip() or result.returncode}"
    for family in families:
        try:
            with open(os.path.join(proc_bridge, CALL_KEYS[family]), "w") as fh:
                fh.write("1")
        except OSError as exc:
            return f"net.bridge.{CALL_KEYS[family]}: {exc}"
    return ""
