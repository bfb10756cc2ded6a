"""The reusable pieces of the container build under .ci/: podman's private configuration and the
rootfs trimming, run for real on temporary directories (no podman or debootstrap needed)."""

from __future__ import annotations

import os
import resource
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest

from .support import REPO

CI = REPO / ".ci"
SCRIPTS = sorted(CI.glob("*.sh"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_parses(script: Path) -> None:
    out = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0 and not out.stderr, out.stderr


def test_podman_env_writes_a_private_config(tmp_path: Path) -> None:
    pdir = tmp_path / "podman"
    env = {"PATH": os.environ["PATH"], "PODMAN_DIR": str(pdir)}
    out = subprocess.run(
        ["bash", "-c", f'. {CI / "podman-env.sh"}; echo "$CONTAINERS_CONF"; echo "$CONTAINERS_STORAGE_CONF"'],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout.split()
    assert out == [str(pdir / "containers.conf"), str(pdir / "storage.conf")]
    containers = tomllib.loads((pdir / "containers.conf").read_text())
    storage = tomllib.loads((pdir / "storage.conf").read_text())
    assert containers["engine"]["runtime"] == "runc"
    assert containers["containers"]["netns"] == "host"
    limits = dict(u.split("=", 1) for u in containers["containers"]["default_ulimits"])
    soft, hard = limits["nofile"].split(":")
    nofile_hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if nofile_hard != resource.RLIM_INFINITY:
        assert int(soft) == int(hard) == nofile_hard
    assert int(limits["nproc"].split(":")[1]) <= 32768
    assert storage["storage"]["driver"] == "overlay"
    assert storage["storage"]["graphroot"].startswith(str(pdir))
    assert storage["storage"]["runroot"].startswith(str(pdir))


def test_podman_env_needs_its_directory() -> None:
    proc = subprocess.run(
        ["bash", "-c", f". {CI / 'podman-env.sh'}"],
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert proc.returncode != 0
    assert "PODMAN_DIR" in proc.stderr


def _fake_rootfs(root: Path) -> None:
    files = {
        "usr/bin/dpkg": "#!/bin/sh\n",
        "etc/resolv.conf": "nameserver 192.0.2.1\n",
        "etc/hostname": "buildhost\n",
        "etc/hosts": "127.0.0.1 buildhost\n",
        "etc/apt/sources.list": "deb http://deb.debian.org/debian bookworm main\n",
        "var/cache/apt/archives/libc6.deb": "x",
        "var/lib/apt/lists/some_Packages": "x",
        "var/log/dpkg.log": "x",
        "usr/share/doc/bash/copyright": "GPL",
        "usr/share/doc/bash/README": "x",
        "usr/share/man/man1/bash.1.gz": "x",
        "usr/share/locale/de/LC_MESSAGES/bash.mo": "x",
        "usr/share/locale/locale.alias": "x",
        "debootstrap/debootstrap.log": "x",
    }
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(content)
    (root / "usr/bin/dpkg").chmod(0o755)
    for d in (
        "dev/pts",
        "etc/dpkg/dpkg.cfg.d",
        "etc/apt/apt.conf.d",
        "etc/apt/sources.list.d",
        "tmp",
        "var/tmp",
    ):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "dev/null-standin").write_text("")


def test_trim_rootfs_makes_a_slim_tree(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    _fake_rootfs(root)
    subprocess.run([str(CI / "trim-rootfs.sh"), str(root)], check=True, timeout=30)
    gone = [
        "etc/resolv.conf",
        "etc/hostname",
        "var/cache/apt/archives/libc6.deb",
        "var/lib/apt/lists/some_Packages",
        "var/log/dpkg.log",
        "usr/share/doc/bash/README",
        "usr/share/man/man1",
        "usr/share/locale/de",
        "debootstrap",
        "dev/pts",
        "dev/null-standin",
    ]
    for rel in gone:
        assert not (root / rel).exists(), rel
    kept = ["usr/share/doc/bash/copyright", "usr/share/locale/locale.alias", "usr/bin/dpkg"]
    for rel in kept:
        assert (root / rel).exists(), rel
    assert (root / "etc/hosts").read_text() == ""
    excludes = (root / "etc/dpkg/dpkg.cfg.d/docker").read_text()
    assert "path-exclude /usr/share/doc/*" in excludes
    assert "path-include /usr/share/doc/*/copyright" in excludes
    assert (root / "etc/apt/apt.conf.d/docker-clean").exists()
    if Path("/etc/apt/sources.list.d/debian.sources").exists():
        assert not (root / "etc/apt/sources.list").exists()
        assert "URIs:" in (root / "etc/apt/sources.list.d/debian.sources").read_text()


def test_trim_rootfs_refuses_a_directory_that_is_not_a_rootfs(tmp_path: Path) -> None:
    precious = tmp_path / "dev" / "keep-me"
    precious.parent.mkdir()
    precious.write_text("x")
    proc = subprocess.run(
        [str(CI / "trim-rootfs.sh"), str(tmp_path)], capture_output=True, text=True, timeout=10
    )
    assert proc.returncode == 2
    assert "not a Debian root filesystem" in proc.stderr
    assert precious.exists()


@pytest.mark.parametrize(
    "script", ["trim-rootfs.sh", "make-base-image.sh", "container-test.sh", "container-lab.py"]
)
def test_scripts_are_executable(script: str) -> None:
    assert (CI / script).stat().st_mode & stat.S_IXUSR


@pytest.mark.parametrize("work", ["/", "relative/dir", "/var"])
def test_container_test_refuses_a_dangerous_work_directory(work: str) -> None:
    """WORK is removed at the end of a run: / or a relative path is refused before anything starts."""
    proc = subprocess.run(
        ["bash", str(CI / "container-test.sh")],
        env={"PATH": os.environ["PATH"], "WORK": work},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "container-test:" in proc.stderr
