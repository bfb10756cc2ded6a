"""Pod identities from CRI answers: pure functions over the runtime's lists and statuses.

The watcher caches one `SandboxInfo` per sandbox (its IPs and metadata do not change in its lifetime) and
one `ContainerInfo` per container (name and image tag), and rebuilds the pods from the runtime's current
lists with `build_pods`. A pod is keyed by its UID: a restarted pod (new sandbox, new IP) stays the same
workload with the same labels, so it keeps its groups.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from core import workload_labels as WL

# Bounds that keep one pod's labels inside what a policy-input item may carry (core.policy_input decodes
# at most 256 map entries of 1024 characters): a pod over them is still a workload, with fewer labels.
MAX_LABELS = 240
MAX_LABEL_VALUE = 1000
MAX_ADDRESSES = 16  # a pod has one address per family in practice; dual-stack plus extras stays far below
MAX_UID_LEN = 128  # a Kubernetes UID has 36 characters; a longer one is not a pod we can key on
MAX_NAME_LEN = 253  # Kubernetes object names (pod, namespace) are DNS subdomains of at most 253
MAX_LABEL_KEY = 317  # a Kubernetes label key: a 253-character prefix, "/", a 63-character name

SANDBOX_READY = 0  # runtime.v1.PodSandboxState
CONTAINER_STATES = ("created", "running", "exited", "unknown")  # runtime.v1.ContainerState by value

# Suffixes controllers add to the names of the pods they create.
_HASH5 = re.compile(r"^(.+)-[a-z0-9]{5}$")
_ORDINAL = re.compile(r"^(.+)-\d+$")


@dataclass(frozen=True, slots=True)
class SandboxInfo:
    id: str
    uid: str
    name: str
    namespace: str
    attempt: int
    created_at: int  # nanoseconds
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    addresses: tuple[str, ...]  # empty for a pod on the node's network (hostNetwork)
    host_network: bool


@dataclass(frozen=True, slots=True)
class ContainerInfo:
    id: str
    sandbox_id: str
    name: str
    image: str  # the image as the user named it (tag), else the runtime's reference


@dataclass(frozen=True, slots=True)
class Container:
    id: str
    name: str
    image: str
    state: str


@dataclass(frozen=True, slots=True)
class PodIdentity:
    uid: str
    name: str
    namespace: str
    sandbox_id: str
    labels: Mapping[str, str]  # the pod's Kubernetes labels, verbatim
    annotations: Mapping[str, str]
    addresses: tuple[str, ...]
    host_network: bool
    containers: tuple[Container, ...] = field(default=())

    @property
    def workload(self) -> str:
        return workload_name(self.name, self.labels)

    def images(self) -> list[str]:
        return sorted({c.image for c in self.containers if c.image})

    def policy_labels(self, node: str) -> dict[str, str]:
        """What the policy selects on: the pod's labels verbatim, the identity keys, the intrinsic ones."""
        identity = {
            WL.POD_NAME: self.name,
            WL.POD_NAMESPACE: self.namespace,
            WL.POD_UID: self.uid,
            WL.WORKLOAD_NAME: self.workload,
            WL.NODE: node,
            WL.IMAGES: _bounded_join(self.images()),
            "workload": self.uid,
            "kind": "pod",
            "pod_uid": self.uid,
        }
        room = MAX_LABELS - len(identity)
        usable = [
            (k, v) for k, v in sorted(self.labels.items()) if k not in identity and len(k) <= MAX_LABEL_KEY
        ]
        own = {k: v[:MAX_LABEL_VALUE] for k, v in usable[:room]}
        return {**own, **identity}

    def to_dict(self, node: str) -> dict[str, Any]:
        """The JSON view (`enforcer workloads`)."""
        return {
            "key": self.uid,
            "source": "cri",
            "pod": self.name,
            "namespace": self.namespace,
            "uid": self.uid,
            "workload": self.workload,
            "node": node,
            "sandbox_id": self.sandbox_id,
            "host_network": self.host_network,
            "addresses": list(self.addresses),
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "containers": [
                {"name": c.name, "image": c.image, "id": c.id, "state": c.state} for c in self.containers
            ],
        }


def workload_name(pod_name: str, labels: Mapping[str, str]) -> str:
    """The owning workload's name, as NeuVector's `service` uses it: the pod name without the suffixes its
    controller added (Deployment `-<template hash>-<5>`, DaemonSet `-<5>`, StatefulSet `-<ordinal>`), the
    job's name for a Job's pod, else the pod name (a bare pod)."""
    job = labels.get("batch.kubernetes.io/job-name") or labels.get("job-name")
    if job:
        return job
    template_hash = labels.get("pod-template-hash")
    if template_hash:
        suffix = f"-{template_hash}-"
        cut = pod_name.rfind(suffix)
        if cut > 0:
            return pod_name[:cut]
    if labels.get("statefulset.kubernetes.io/pod-name") == pod_name:
        m = _ORDINAL.match(pod_name)
        if m:
            return m.group(1)
    if "controller-revision-hash" in labels and "pod-template-generation" in labels:  # a DaemonSet's pod
        m = _HASH5.match(pod_name)
        if m:
            return m.group(1)
    return pod_name


def sandbox_info(status: Any) -> SandboxInfo:
    """A `runtime.v1.PodSandboxStatus` message → SandboxInfo (addresses validated, bounded)."""
    meta = status.metadata
    host_network = status.linux.namespaces.options.network == 2  # NamespaceMode.NODE
    addresses: list[str] = []
    if not host_network:
        for raw in [status.network.ip, *(p.ip for p in status.network.additional_ips)]:
            try:
                addr = str(ipaddress.ip_address(raw))
            except ValueError:
                continue  # empty or malformed: not an address of this pod
            if addr not in addresses and len(addresses) < MAX_ADDRESSES:
                addresses.append(addr)
    return SandboxInfo(
        id=status.id,
        uid=meta.uid,
        name=meta.name[:MAX_NAME_LEN],
        namespace=meta.namespace[:MAX_NAME_LEN],
        attempt=meta.attempt,
        created_at=status.created_at,
        labels=dict(status.labels),
        annotations=dict(status.annotations),
        addresses=tuple(addresses),
        host_network=host_network,
    )


def container_info(status: Any, sandbox_id: str) -> ContainerInfo:
    """A `runtime.v1.ContainerStatus` message → ContainerInfo."""
    return ContainerInfo(status.id, sandbox_id, status.metadata.name, status.image.image or status.image_ref)


def build_pods(
    ready_sandboxes: Iterable[str],
    sandboxes: Mapping[str, SandboxInfo],
    containers: Iterable[tuple[str, int]],
    container_infos: Mapping[str, ContainerInfo],
    max_pods: int,
) -> tuple[dict[str, PodIdentity], int]:
    """Pods by UID from the ids of the ready sandboxes and (container id, state) pairs; returns the pods
    and how many were left out over `max_pods`. Of several ready sandboxes of one pod (a restart caught
    half-way) the newest counts."""
    newest: dict[str, SandboxInfo] = {}
    for sid in ready_sandboxes:
        info = sandboxes.get(sid)
        if info is None or not info.uid or len(info.uid) > MAX_UID_LEN:
            continue  # not a pod the inventory can carry (the policy input bounds its strings)
        have = newest.get(info.uid)
        if have is None or (info.created_at, info.attempt) > (have.created_at, have.attempt):
            newest[info.uid] = info
    by_sandbox: dict[str, list[Container]] = {}
    for cid, state in containers:
        ci = container_infos.get(cid)
        if ci is None:
            continue
        label = CONTAINER_STATES[state] if 0 <= state < len(CONTAINER_STATES) else "unknown"
        by_sandbox.setdefault(ci.sandbox_id, []).append(Container(cid, ci.name, ci.image, label))
    pods: dict[str, PodIdentity] = {}
    left_out = 0
    for uid, info in sorted(newest.items(), key=lambda kv: kv[1].created_at):
        if len(pods) >= max_pods:
            left_out += 1
            continue
        pods[uid] = PodIdentity(
            uid=uid,
            name=info.name,
            namespace=info.namespace,
            sandbox_id=info.id,
            labels=info.labels,
            annotations=info.annotations,
            addresses=info.addresses,
            host_network=info.host_network,
            containers=tuple(sorted(by_sandbox.get(info.id, ()), key=lambda c: (c.name, c.id))),
        )
    return pods, left_out


def _bounded_join(images: list[str]) -> str:
    out = ""
    for image in images:
        candidate = f"{out},{image}" if out else image
        if len(candidate) > MAX_LABEL_VALUE:
            break
        out = candidate
    return out
