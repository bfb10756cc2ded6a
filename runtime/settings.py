"""Settings of the runtime monitor: one frozen object, every bound named with its reason.

The lead's config loader builds a `RuntimeSettings` from the `[runtime]` table of the TOML (unknown keys
rejected there); the monitor only reads it. Defaults are sized for a node running a few hundred
workloads on two cores.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any

# Suspicious tools reported regardless of profile (NeuVector's built-in list, trimmed to what exists on
# Linux nodes). An entry `name` matches the command name; `name:-x,-y` matches only when one of the flags
# is on the command line (nc without -l/-e is a common, harmless client).
DEFAULT_SUSPICIOUS_TOOLS: tuple[str, ...] = (
    "nmap",
    "masscan",
    "zmap",
    "nc:-l,-e,-c,--listen,--exec,--sh-exec,--lua-exec",
    "ncat:-l,-e,-c,--listen,--exec,--sh-exec,--lua-exec",
    "netcat:-l,-e,-c",
    "socat",
    "tcpdump",
    "tshark",
    "iodine",
    "iodined",
    "dnscat",
    "dnscat2",
    "hping3",
    "sshpass",
    "john",
    "hydra",
    "chisel",
    "ngrok",
)

# Package managers: running one inside a running container changes its contents behind the image.
DEFAULT_PACKAGE_MANAGERS: tuple[str, ...] = (
    "apt",
    "apt-get",
    "aptitude",
    "dpkg",
    "yum",
    "dnf",
    "microdnf",
    "rpm",
    "zypper",
    "apk",
    "pacman",
    "emerge",
)

# Programs through which a process may legitimately gain uid 0.
DEFAULT_SANCTIONED_ESCALATION: tuple[str, ...] = (
    "sudo",
    "su",
    "doas",
    "pkexec",
    "newgrp",
    "sg",
    "passwd",
    "chsh",
    "chfn",
    "gpasswd",
    "newuidmap",
    "newgidmap",
    "unix_chkpwd",
    "mount",
    "umount",
    "fusermount",
    "fusermount3",
    "ping",
)

# Interpreters whose standard input/output bound to a TCP socket make a reverse shell.
DEFAULT_SHELLS: tuple[str, ...] = (
    "sh",
    "bash",
    "dash",
    "ash",
    "zsh",
    "ksh",
    "mksh",
    "csh",
    "tcsh",
    "fish",
    "busybox",
)

# NeuVector's default sensitive paths, relative to each workload's root ("~" = every home directory).
DEFAULT_SENSITIVE_PATHS: tuple[str, ...] = (
    "/etc/passwd",
    "/etc/shadow",
    "/etc/group",
    "/etc/hosts",
    "/etc/resolv.conf",
    "/etc/ssh",
    "/etc/sudoers",
    "/root/.ssh",
    "~/.ssh",
    "/bin",
    "/sbin",
    "/usr/bin",
    "/usr/sbin",
    "/lib",
    "/usr/lib",
    "/var/lib/dpkg",
    "/var/lib/rpm",
    "/lib/apk/db",
)


@dataclasses.dataclass(frozen=True, slots=True)
class RuntimeSettings:
    node: str = "node"  # node name in events (the enforcer sets it from node.name)

    # --- process connector -------------------------------------------------------------------------
    use_connector: bool = True  # False: /proc polling only (NeuVector's fallback)
    # Socket receive buffer; the kernel drops (ENOBUFS) beyond it, counted as runtime.connector.overrun.
    connector_rcvbuf_bytes: int = 8 * 1024 * 1024
    # Decoded kernel events waiting for enrichment; beyond it events are dropped and counted.
    event_queue_max: int = 65536
    # Interval of the /proc rescan that catches what the connector missed (or everything, without it).
    proc_scan_interval_s: float = 2.0
    # Processes tracked (pid → info); beyond it the oldest are forgotten and counted.
    process_table_max: int = 65536
    # Parent chain depth recorded in events.
    parent_chain_max: int = 8

    # --- profiles and enforcement ------------------------------------------------------------------
    # Seconds between calls to get_profiles() (the policy process publishes new profiles).
    profile_refresh_s: float = 1.0
    # Distinct processes learned per group in Discover; beyond it learning stops (counted).
    learned_per_group_max: int = 1024
    # fanotify execute-permission checks (deny before the binary runs) where the kernel supports them.
    use_exec_permission: bool = True
    # Mount points whose executables are checked. Empty: the root of every container workload whose
    # root differs from ours (a lab pod sharing the node's root is enforced by kill).
    exec_permission_mounts: tuple[str, ...] = ()
    # Descendants killed with a denied process (bound on the walk).
    kill_descendants_max: int = 4096
    # PIDs that are never killed in addition to ours, our parent and PID 1 (e.g. the supervisor tree).
    protected_pids: tuple[int, ...] = ()

    # --- built-in detections -----------------------------------------------------------------------
    suspicious_tools: tuple[str, ...] = DEFAULT_SUSPICIOUS_TOOLS  # reported wherever they run
    package_managers: tuple[str, ...] = DEFAULT_PACKAGE_MANAGERS  # reported inside a running container
    sanctioned_escalation: tuple[str, ...] = DEFAULT_SANCTIONED_ESCALATION  # may lead to uid 0
    shells: tuple[str, ...] = DEFAULT_SHELLS  # on a TCP socket: a reverse shell
    # Delay before re-examining a new shell's descriptors (a reverse shell often redirects after exec).
    reverse_shell_recheck_s: float = 0.2
    # Shells waiting for that re-check.
    reverse_shell_pending_max: int = 4096
    # Lines read from /proc/PID/net/tcp* when matching a socket inode.
    net_table_lines_max: int = 65536

    # --- file monitor ------------------------------------------------------------------------------
    file_monitor: bool = True  # watch the sensitive paths and the file rules
    # "auto": fanotify, else inotify; "inotify" forces the fallback (no blocking, no process identity).
    file_backend: str = "auto"
    sensitive_paths: tuple[str, ...] = DEFAULT_SENSITIVE_PATHS  # watched in every workload
    # Window over which identical file events (workload, path, process, action) are folded into one.
    file_aggregate_window_s: float = 5.0
    # Distinct keys held by the aggregator; beyond it events are dropped and counted.
    file_aggregate_keys_max: int = 4096
    # fanotify/inotify marks placed in total; beyond it paths are left unwatched and counted.
    file_marks_max: int = 8192
    # Bytes read from the fanotify/inotify descriptor per read.
    file_read_bytes: int = 65536

    # --- main loop ---------------------------------------------------------------------------------
    # Longest wait of the main loop for work (events wake it at once), so stop_event and timed re-checks are
    # seen promptly; not shorter, because every idle wake-up preempts the node's workloads.
    loop_tick_s: float = 0.25
    # The interpreter's thread switch interval in the monitor process: short, so the permission and
    # notification threads answer within a millisecond while the main thread examines a burst.
    thread_switch_interval_s: float = 0.0005
    # Events emitted per loop iteration before other work is served.
    emit_batch_max: int = 1024

    def validate(self) -> None:
        """Raise ValueError naming the first key out of range."""
        positive = (
            "connector_rcvbuf_bytes",
            "event_queue_max",
            "proc_scan_interval_s",
            "process_table_max",
            "parent_chain_max",
            "profile_refresh_s",
            "learned_per_group_max",
            "kill_descendants_max",
            "reverse_shell_pending_max",
            "net_table_lines_max",
            "file_aggregate_window_s",
            "file_aggregate_keys_max",
            "file_marks_max",
            "file_read_bytes",
            "loop_tick_s",
            "emit_batch_max",
            "thread_switch_interval_s",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"runtime.{name} must be positive, got {getattr(self, name)!r}")
        if self.file_backend not in ("auto", "fanotify", "inotify"):
            raise ValueError(
                f"runtime.file_backend must be auto, fanotify or inotify, got {self.file_backend!r}"
            )
        if self.reverse_shell_recheck_s < 0:
            raise ValueError("runtime.reverse_shell_recheck_s must not be negative")


def settings_from_mapping(table: Mapping[str, Any], prefix: str = "runtime") -> RuntimeSettings:
    """RuntimeSettings from the `[runtime]` table of the TOML; errors name the key and what was expected.

    Unknown keys are rejected; lists become tuples; an int is accepted where a float is expected.
    """
    hints = typing.get_type_hints(RuntimeSettings)
    fields = {f.name for f in dataclasses.fields(RuntimeSettings)}
    unknown = sorted(set(table) - fields)
    if unknown:
        raise ValueError(f"{prefix}.{unknown[0]}: unknown key")
    values: dict[str, Any] = {}
    for key, value in table.items():
        want = hints[key]
        where = f"{prefix}.{key}"
        if want is bool:
            if not isinstance(value, bool):
                raise ValueError(f"{where}: expected true or false, got {value!r}")
        elif want is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{where}: expected an integer, got {value!r}")
        elif want is float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{where}: expected a number, got {value!r}")
            value = float(value)
        elif want is str:
            if not isinstance(value, str):
                raise ValueError(f"{where}: expected a string, got {value!r}")
        else:  # tuple[str, ...] or tuple[int, ...]
            item = typing.get_args(want)[0]
            if not isinstance(value, list | tuple) or not all(
                isinstance(v, item) and not isinstance(v, bool) for v in value
            ):
                raise ValueError(f"{where}: expected a list of {item.__name__}, got {value!r}")
            value = tuple(value)
        values[key] = value
    settings = RuntimeSettings(**values)
    settings.validate()
    return settings
