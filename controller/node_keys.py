"""Which node each enrolled CURVE key may speak for.

The clients directory holds one public certificate per enforcer (`NAME.key`) and, beside it, the node
name that key is bound to (`NAME.node`, one line). A HELLO naming any other node is refused: a key on
the allowlist must not take over another node's session or file events under its name. A key enrolled
before bindings existed has no `NAME.node`; it is bound to the first node name it uses, and that is
recorded (trust on first use), so older enrolments keep working.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import zmq.auth

BINDING_SUFFIX = ".node"
MAX_NODE_NAME = 253  # a Kubernetes node name is a DNS subdomain
_NODE_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")


class EnrolmentError(ValueError):
    pass


@dataclass
class EnrolledKey:
    stem: str  # NAME of NAME.key in the clients directory
    node: str  # the node it is bound to; "" while not yet bound (an older enrolment)


def check_node_name(node: str) -> str:
    if len(node) > MAX_NODE_NAME or not _NODE_NAME.match(node):
        raise EnrolmentError(f"node name {node!r} is not a DNS name of at most {MAX_NODE_NAME} characters")
    return node


def _write_binding(directory: Path, stem: str, node: str) -> None:
    """NAME.node, written whole or not at all (a crash leaves no half name)."""
    path = directory / f"{stem}{BINDING_SUFFIX}"
    tmp = directory / f".{stem}{BINDING_SUFFIX}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(node + "\n")
    os.replace(tmp, path)


class NodeKeys:
    """The clients directory: enrolled public keys (Z85) and the node each is bound to."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.keys: dict[bytes, EnrolledKey] = {}

    def reload(self) -> None:
        keys: dict[bytes, EnrolledKey] = {}
        if self.directory.is_dir():
            for path in sorted(self.directory.glob("*.key")):
                try:
                    public, _ = zmq.auth.load_certificate(str(path))
                except (OSError, ValueError):
                    continue
                binding = path.with_suffix(BINDING_SUFFIX)
                try:
                    node = binding.read_text().strip()
                except FileNotFoundError:
                    node = ""
                except OSError:
                    continue  # unreadable binding: the key is not admitted rather than bound anew
                keys[public] = EnrolledKey(path.stem, node)
        self.keys = keys

    def get(self, key: bytes) -> EnrolledKey | None:
        return self.keys.get(key)

    def claim(self, key: bytes, node: str) -> str:
        """"" when `key` may speak for `node` (binding an unbound key to it, recorded); else the reason."""
        enrolled = self.keys.get(key)
        if enrolled is None:
            return "key not enrolled"
        if enrolled.node == node:
            return ""
        if enrolled.node:
            return f"this key is enrolled for node {enrolled.node!r}, not {node!r}"
        try:
            check_node_name(node)
        except EnrolmentError as exc:
            return str(exc)
        owner = next((k for k in self.keys.values() if k.node == node), None)
        if owner is not None:
            return f"node {node!r} is bound to another key ({owner.stem}.key)"
        _write_binding(self.directory, enrolled.stem, node)
        enrolled.node = node
        return ""


def enrol(clients_dir: str | os.PathLike[str], node: str, public_cert: str | os.PathLike[str]) -> Path:
    """Copy `public_cert` into the clients directory as NODE.key and bind it to NODE; returns the path.

    Refused when the key is already enrolled for another node or another key is bound to NODE."""
    check_node_name(node)
    try:
        public, _ = zmq.auth.load_certificate(str(public_cert))
    except (OSError, ValueError) as exc:
        raise EnrolmentError(f"{public_cert}: not a CURVE certificate ({exc})") from exc
    d = Path(clients_dir)
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    keys = NodeKeys(d)
    keys.reload()
    known = keys.get(public)
    if known is not None and known.node not in ("", node):
        raise EnrolmentError(f"this key is already enrolled for node {known.node!r} ({known.stem}.key)")
    for other_key, other in keys.keys.items():
        if other_key != public and (other.node == node or (other.stem == node and other.node == "")):
            raise EnrolmentError(f"node {node!r} already has another key ({other.stem}.key)")
    if known is not None and known.stem != node:
        stem = known.stem  # the same key under another file name: bind that one
    else:
        stem = node
        target = d / f"{node}.key"
        if Path(public_cert).resolve() != target.resolve():
            shutil.copyfile(public_cert, target)
    _write_binding(d, stem, node)
    return d / f"{stem}.key"
