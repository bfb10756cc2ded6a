"""Shared by the runtime tests: monitor settings for a lab pod, a pod profile, and helpers to run things
in a pod."""

from __future__ import annotations

import os
import shutil
import subprocess

from core.lookup import Mode
from runtime.identity import GroupSelector
from runtime.profiles import ProcessEntry, ProcessProfile, RuntimePolicy
from runtime.settings import RuntimeSettings

# What a lab pod needs to start anything: `ip netns exec` runs inside the pod for a moment.
BASE = (
    ProcessEntry("ip"),
    ProcessEntry("sh"),
    ProcessEntry("bash"),
    ProcessEntry("sleep"),
    ProcessEntry("true"),
    ProcessEntry("touch"),
)


def settings(**kw: object) -> RuntimeSettings:
    base: dict[str, object] = dict(
        node="t",
        file_monitor=False,
        use_exec_permission=False,
        profile_refresh_s=0.1,
        proc_scan_interval_s=0.5,
    )
    base.update(kw)
    return RuntimeSettings(**base)  # type: ignore[arg-type]


def policy(netns: str, mode: Mode, entries: tuple[ProcessEntry, ...] = BASE) -> RuntimePolicy:
    return RuntimePolicy(
        groups=(GroupSelector("pod", labels={"netns": netns}),),
        profiles={"pod": ProcessProfile("pod", mode, entries)},
    )


def copy_bin(src: str, dst_dir: str, name: str) -> str:
    dst = os.path.join(dst_dir, name)
    shutil.copy(shutil.which(src) or src, dst)
    os.chmod(dst, 0o755)
    return dst


def retry_loop(command: str, attempts: int = 100) -> str:
    """Shell text that runs `command` `attempts` times and prints how many succeeded (`ok=N`)."""
    return (
        f"i=0; ok=0; while [ $i -lt {attempts} ]; do {command} && ok=$((ok+1)); i=$((i+1)); done; echo ok=$ok"
    )


def in_pod(netns: str, script: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", netns, "sh", "-c", script], capture_output=True, text=True, timeout=timeout
    )
