"""A real containerd (+ runc, CNI bridge) inside a lab's node namespace, driven over the CRI as the
kubelet drives it. For the `cri` tests.

Everything is private to one temp directory (root, state, config, socket, CNI config and IPAM state)
except what containerd itself insists on: the pods' network namespaces under /run/netns (removed with
their pods, and by `cleanup` when a test failed half-way) and its shims' sockets under /run/containerd/s.
containerd runs in the lab's node namespace (nsenter --net: the CNI bridge and every pod veth are created
there, never in the machine's namespace); pod addresses are from the lab's benchmarking range. Pods'
cgroups go under a parent of their own, removed at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from lab.oci_image import LAB_IMAGE, build_image_tar
from lab.topology import Lab, LabError
from runtime.cri import cri_api_pb2 as api
from runtime.cri.client import CriClient

CNI_BIN_DIR = "/usr/lib/cni"  # Debian's containernetworking-plugins
POD_SUBNET = "198.18.40.0/24"
POD_SUBNET6 = "fd00:198:18:40::/64"
CNI_BRIDGE = "cni0"
CGROUP_ROOT = "/sys/fs/cgroup"
SHIM_DIR = "/run/containerd"  # containerd 1.6 puts its shims' sockets here whatever its state dir
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0


@dataclass
class LabPod:
    name: str
    namespace: str
    uid: str
    labels: dict[str, str]
    sandbox_id: str = ""
    config: Any = None
    containers: list[str] = field(default_factory=list)
    netns_path: str = ""
    ip: str = ""
    ips: list[str] = field(default_factory=list)  # ip first, then the additional ones (IPv6)
    started_at: float = 0.0  # monotonic: RunPodSandbox called ...
    returned_at: float = 0.0  # ... and returned (the sandbox ready, as the kubelet sees it)


class LabContainerd:
    """containerd in `lab`'s node namespace; `with LabContainerd(lab) as ctd:` always cleans up."""

    def __init__(self, lab: Lab, subnet: str = POD_SUBNET, subnet6: str = POD_SUBNET6) -> None:
        self.lab = lab
        self.subnet = subnet
        self.subnet6 = subnet6  # dual-stack pods: the second address is the CRI's additional_ips
        self.tmp = Path(tempfile.mkdtemp(prefix="enforcer-ctd-"))
        self.socket = str(self.tmp / "containerd.sock")
        self.cgroup_parent = f"/enforcer-lab-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.client: CriClient | None = None
        self.pods: list[LabPod] = []
        self.netns_paths: set[str] = set()
        self._made_shim_dir = not os.path.exists(SHIM_DIR)
        self._isolated: set[str] = set()  # bridge ports already isolated
        self._routed = False  # the node namespace's proxy ARP and forwarding settings are in place
        self._write_config()

    # ---- containerd ------------------------------------------------------------------------------

    def _write_config(self) -> None:
        cni_conf = self.tmp / "cni"
        cni_conf.mkdir()
        (cni_conf / "10-lab.conflist").write_text(
            json.dumps(
                {
                    "cniVersion": "0.4.0",
                    "name": "enforcer-lab",
                    "plugins": [
                        {
                            "type": "bridge",
                            "bridge": CNI_BRIDGE,
                            "isGateway": True,
                            "ipMasq": False,
                            "ipam": {
                                "type": "host-local",
                                "ranges": [[{"subnet": self.subnet}], [{"subnet": self.subnet6}]],
                                "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}],
                                "dataDir": str(self.tmp / "ipam"),
                            },
                        }
                    ],
                }
            )
        )
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        (self.tmp / "config.toml").write_text(
            f"""version = 2
root = "{self.tmp / "root"}"
state = "{self.tmp / "state"}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{self.socket}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{self.tmp / "opt"}"
[{cri}]
  sandbox_image = "{LAB_IMAGE}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  disable_apparmor = true
  restrict_oom_score_adj = true
  enable_selinux = false
  [{cri}.containerd]
    snapshotter = "native"
    default_runtime_name = "runc"
  [{cri}.containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [{cri}.containerd.runtimes.runc.options]
      Root = "{self.tmp / "runc"}"
  [{cri}.cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{cni_conf}"
"""
        )

    def start(self) -> LabContainerd:
        log = open(self.tmp / "containerd.log", "ab")
        self.proc = subprocess.Popen(
            [
                "nsenter",
                f"--net=/run/netns/{self.lab.node}",
                "containerd",
                "--config",
                str(self.tmp / "config.toml"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.client = CriClient(self.socket, timeout_s=30.0)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                raise LabError(f"containerd exited with {self.proc.returncode}:\n{self.log()}")
            try:
                self.client.version()
                return self
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise LabError(
                        f"containerd not answering after {START_TIMEOUT_S}s:\n{self.log()}"
                    ) from None
                time.sleep(0.1)

    def stop(self) -> None:
        """Stop containerd (by its PID); its shims and pods keep running, as on a real node."""
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        try:
            return (self.tmp / "containerd.log").read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def import_image(self) -> None:
        tar = build_image_tar(self.tmp / "image.tar")
        out = subprocess.run(
            [
                "ctr",
                "--address",
                self.socket,
                "-n",
                "k8s.io",
                "images",
                "import",
                "--snapshotter",
                "native",
                str(tar),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if out.returncode != 0:
            raise LabError(f"ctr images import: {out.stderr.strip()}")

    # ---- pods, as the kubelet makes them -----------------------------------------------------------

    def cri(self) -> CriClient:
        if self.client is None:
            raise LabError("containerd is not running")
        return self.client

    def run_pod(
        self, name: str, namespace: str, labels: dict[str, str], uid: str | None = None, route: bool = True
    ) -> LabPod:
        """RunPodSandbox with the pod's metadata and labels; returns once the sandbox is ready (as the
        kubelet sees it), with its address. `route`: its traffic to other pods goes through the node's
        FORWARD hook (`_route_through_node`; a measurement without traffic can skip the extra commands)."""
        pod = LabPod(name, namespace, uid or str(uuid.uuid4()), dict(labels))
        attempt = sum(1 for p in self.pods if p.uid == pod.uid)
        pod.config = api.PodSandboxConfig(
            metadata=api.PodSandboxMetadata(name=name, uid=pod.uid, namespace=namespace, attempt=attempt),
            hostname=name,
            log_directory=str(self.tmp / "logs" / f"{namespace}_{name}_{pod.uid}"),
            labels=labels,
            annotations={"enforcer.lab/test": "cri"},
            linux=api.LinuxPodSandboxConfig(cgroup_parent=f"{self.cgroup_parent}/pod{pod.uid}"),
        )
        self.pods.append(pod)
        pod.started_at = time.monotonic()
        pod.sandbox_id = (
            self.cri().call("RunPodSandbox", api.RunPodSandboxRequest(config=pod.config)).pod_sandbox_id
        )
        pod.returned_at = time.monotonic()
        self._note_netns(pod)
        if route:
            self._route_through_node(pod)
        return pod

    def _route_through_node(self, pod: LabPod) -> None:
        """Make pod-to-pod traffic on the CNI bridge go through the node's IP forwarding (and its FORWARD
        hook, where the enforcer sits) instead of being switched by the bridge.

        On a real node the enforcer sees same-bridge traffic through br_netfilter, which the lab cannot
        assume is loaded (a module, host-wide; loading it is no test's business). So every bridge port is
        isolated (pods cannot reach each other at layer 2) and the node answers their ARP for each other
        (proxy ARP on the bridge, private-VLAN style, without delay) and routes between them without
        redirects; for IPv6, which has no private-VLAN proxy, the node answers neighbour solicitations for
        each pod address (proxy NDP entries). Everything here is inside the lab's node namespace."""
        ports = json.loads(
            self.lab.node_exec("ip", "-j", "link", "show", "master", CNI_BRIDGE).stdout or "[]"
        )
        for port in ports:
            if port["ifname"] not in self._isolated:
                self.lab.node_exec("bridge", "link", "set", "dev", port["ifname"], "isolated", "on")
                self._isolated.add(port["ifname"])
        for addr in pod.ips[1:]:
            if ":" in addr:
                self.lab.node_exec("ip", "-6", "neigh", "add", "proxy", addr, "dev", CNI_BRIDGE, check=False)
        if pod.netns_path:  # the node cannot be told not to send IPv6 redirects: the pod ignores them
            for key in ("all", "default", "eth0"):
                subprocess.run(
                    ["nsenter", f"--net={pod.netns_path}", "sysctl", "-qw", f"net.ipv6.conf.{key}.accept_redirects=0"],
                    capture_output=True, timeout=10,
                )  # fmt: skip
        if self._routed:
            return
        self._routed = True
        for key, value in (
            (f"net.ipv4.conf.{CNI_BRIDGE}.proxy_arp", "1"),
            (f"net.ipv4.conf.{CNI_BRIDGE}.proxy_arp_pvlan", "1"),
            (f"net.ipv4.neigh.{CNI_BRIDGE}.proxy_delay", "0"),
            (f"net.ipv4.conf.{CNI_BRIDGE}.send_redirects", "0"),
            (f"net.ipv6.conf.{CNI_BRIDGE}.proxy_ndp", "1"),
            (f"net.ipv6.neigh.{CNI_BRIDGE}.proxy_delay", "0"),
            ("net.ipv4.conf.all.send_redirects", "0"),
        ):
            self.lab.node_exec("sysctl", "-qw", f"{key}={value}")
        # where br_netfilter exists, it is off here, so the path is the same with or without it
        self.lab.node_exec("sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0", check=False)

    def _note_netns(self, pod: LabPod) -> None:
        resp = self.cri().call(
            "PodSandboxStatus", api.PodSandboxStatusRequest(pod_sandbox_id=pod.sandbox_id, verbose=True)
        )
        pod.ip = resp.status.network.ip
        pod.ips = [pod.ip, *(a.ip for a in resp.status.network.additional_ips)]
        try:
            info = json.loads(resp.info.get("info", "{}"))
            for ns in info.get("runtimeSpec", {}).get("linux", {}).get("namespaces", []):
                if ns.get("type") == "network" and ns.get("path"):
                    pod.netns_path = ns["path"]
                    self.netns_paths.add(ns["path"])
        except ValueError:
            pass

    def start_container(self, pod: LabPod, name: str, command: list[str]) -> str:
        config = api.ContainerConfig(
            metadata=api.ContainerMetadata(name=name),
            image=api.ImageSpec(image=LAB_IMAGE),
            command=command,
            log_path=f"{name}.log",
        )
        cid = (
            self.cri()
            .call(
                "CreateContainer",
                api.CreateContainerRequest(
                    pod_sandbox_id=pod.sandbox_id, config=config, sandbox_config=pod.config
                ),
            )
            .container_id
        )
        pod.containers.append(cid)
        self.cri().call("StartContainer", api.StartContainerRequest(container_id=cid))
        return cid

    def container_pid(self, container_id: str) -> int:
        resp = self.cri().call(
            "ContainerStatus", api.ContainerStatusRequest(container_id=container_id, verbose=True)
        )
        return int(json.loads(resp.info["info"])["pid"])

    def remove_pod(self, pod: LabPod) -> None:
        """StopPodSandbox + RemovePodSandbox (as the kubelet does on deletion; both idempotent)."""
        cri = self.cri()
        cri.call("StopPodSandbox", api.StopPodSandboxRequest(pod_sandbox_id=pod.sandbox_id))
        cri.call("RemovePodSandbox", api.RemovePodSandboxRequest(pod_sandbox_id=pod.sandbox_id))
        pod.sandbox_id = ""

    # ---- always clean up ---------------------------------------------------------------------------

    def cleanup(self) -> None:
        errors: list[str] = []
        if any(p.sandbox_id for p in self.pods) and (self.proc is None or self.proc.poll() is not None):
            try:
                self.start()  # pods outlived a stopped containerd: it removes them best
            except (LabError, OSError) as exc:
                errors.append(str(exc))
        if self.client is not None:
            for pod in self.pods:
                if pod.sandbox_id:
                    try:
                        self.remove_pod(pod)
                    except grpc.RpcError as exc:
                        errors.append(f"pod {pod.name}: {exc}")
        self.stop()
        self._kill_our_shims()
        for path in self.netns_paths:
            if os.path.exists(path):
                subprocess.run(["umount", path], capture_output=True, timeout=10)
                try:
                    os.unlink(path)
                except OSError as exc:
                    errors.append(f"{path}: {exc}")
        self._unmount_under_tmp()
        self._remove_cgroups()
        if self._made_shim_dir:
            _remove_empty_dirs(SHIM_DIR)
        if not os.environ.get("ENFORCER_LAB_KEEP"):
            shutil.rmtree(self.tmp, ignore_errors=True)
        if errors:
            raise LabError("containerd lab cleanup: " + "; ".join(errors))

    def _kill_our_shims(self) -> None:
        """Shims of our containerd still alive (containerd gone before its pods): found by our socket on
        their command line, ended by PID."""
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if (
                cmdline
                and cmdline[0].endswith(b"containerd-shim-runc-v2")
                and self.socket.encode() in cmdline
            ):
                try:
                    os.kill(int(entry), signal.SIGKILL)
                except OSError:
                    pass

    def _unmount_under_tmp(self) -> None:
        prefix = str(self.tmp) + "/"
        try:
            lines = Path("/proc/self/mountinfo").read_text().splitlines()
        except OSError:
            return
        points = sorted(
            (line.split()[4] for line in lines if line.split()[4].startswith(prefix)), reverse=True
        )
        for point in points:
            subprocess.run(["umount", "-l", point], capture_output=True, timeout=10)

    def _remove_cgroups(self) -> None:
        root = Path(CGROUP_ROOT)
        if not root.is_dir():
            return
        for hierarchy in [root, *(p for p in root.iterdir() if p.is_dir())]:
            base = hierarchy / self.cgroup_parent.lstrip("/")
            if not base.is_dir():
                continue
            _remove_empty_dirs(str(base))

    def __enter__(self) -> LabContainerd:
        try:
            self.start()
            self.import_image()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def _remove_empty_dirs(top: str) -> None:
    """rmdir `top` and the directories under it, deepest first; anything not empty stays."""
    for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda t: -len(t[0])):
        try:
            os.rmdir(dirpath)
        except OSError:
            pass
