"""The `[cri]` table: where the container runtime's socket is and how it is followed."""

from __future__ import annotations

import os
from dataclasses import dataclass

from core.config import setting

# Where containerd and CRI-O listen by default; "auto" takes the first that exists.
DEFAULT_SOCKETS = ("/run/containerd/containerd.sock", "/run/crio/crio.sock")
AUTO = "auto"


@dataclass(frozen=True, slots=True)
class CriSettings:
    socket: str = setting(
        AUTO,
        'container runtime (CRI) socket for pod identity: "auto" (containerd, then CRI-O at their usual paths), a path, or "" (off: /proc and cgroups only)',
    )
    poll_ms: int = setting(
        250, "pod list poll interval where the runtime has no container events (containerd 1.6)"
    )
    resync_s: float = setting(10.0, "full re-read of every pod, also when events flow (missed events heal)")
    call_timeout_s: float = setting(5.0, "deadline of one CRI call")
    reconnect_max_s: float = setting(10.0, "ceiling of the reconnect back-off while the runtime is away")
    max_pods: int = setting(4096, "pods tracked; beyond it new pods are counted (cri.pods_full) and left out")

    def resolve_socket(self) -> str:
        """The socket to use ("" when off, or when "auto" finds none)."""
        if self.socket != AUTO:
            return self.socket
        return next((p for p in DEFAULT_SOCKETS if os.path.exists(p)), "")

    def validate(self) -> None:
        if self.socket not in ("", AUTO) and not self.socket.startswith("/"):
            raise ValueError(f"cri.socket: expected an absolute path, 'auto' or '', got {self.socket!r}")
        if not 10 <= self.poll_ms <= 60_000:
            raise ValueError(f"cri.poll_ms: expected 10..60000, got {self.poll_ms}")
        for key in ("resync_s", "call_timeout_s", "reconnect_max_s"):
            value = getattr(self, key)
            if not 0.1 <= value <= 3600:
                raise ValueError(f"cri.{key}: expected 0.1..3600 seconds, got {value}")
        if not 1 <= self.max_pods <= 100_000:
            raise ValueError(f"cri.max_pods: expected 1..100000, got {self.max_pods}")
