"""The Dockerfile, read as text: two stages, a runtime stage without a compiler and with only the
packages the enforcer calls, the package version in its label, and nothing bookworm's buildah
cannot build. (.ci/container-test.sh builds and runs the image for real.)"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from .support import REPO, package_version

RUNTIME_PACKAGES = {"python3", "iptables", "iproute2", "conntrack"}
COMPILERS = {"gcc", "g++", "cc", "clang", "build-essential", "python3-dev", "libc6-dev"}


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [arg for kw, arg in self.instructions if kw == keyword]


def _instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, rest = line.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    assert not pending, "Dockerfile ends inside a continued line"
    return out


def _stages() -> tuple[dict[str, str], list[Stage]]:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for keyword, rest in _instructions((REPO / "Dockerfile").read_text()):
        if keyword == "FROM":
            parts = rest.split()
            base = parts[0]
            for name, value in global_args.items():
                base = base.replace("${" + name + "}", value)
            alias = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base, alias))
        elif not stages:
            assert keyword == "ARG", f"only ARG may precede the first FROM, found {keyword}"
            name, _, value = rest.partition("=")
            global_args[name] = value
        else:
            stages[-1].instructions.append((keyword, rest))
    return global_args, stages


def _apt_packages(run: str) -> set[str]:
    words = shlex.split(run.replace("&&", " && "))
    packages: set[str] = set()
    for i, word in enumerate(words):
        if word == "install" and i > 0 and words[i - 1] == "apt-get":
            for w in words[i + 1 :]:
                if w == "&&":
                    break
                if not w.startswith("-"):
                    packages.add(w)
    return packages


def test_two_stages_on_pinned_debian() -> None:
    _, stages = _stages()
    assert len(stages) == 2
    assert all(s.base == "debian:bookworm-slim" for s in stages)
    assert stages[0].name == "build"


def test_runtime_stage_has_only_the_packages_the_enforcer_calls() -> None:
    _, (_, runtime) = _stages()
    installed: set[str] = set()
    for run in runtime.args("RUN"):
        installed |= _apt_packages(run)
    assert installed == RUNTIME_PACKAGES
    assert not installed & COMPILERS


def test_build_stage_has_the_compiler_and_makes_the_venv() -> None:
    _, (build, runtime) = _stages()
    installed: set[str] = set()
    for run in build.args("RUN"):
        installed |= _apt_packages(run)
    assert {"gcc", "python3-dev", "libc6-dev"} <= installed
    assert any("pip install" in run and "/src" in run for run in build.args("RUN"))
    assert "--from=build /opt/venv /opt/venv" in runtime.args("COPY")


def test_version_label_defaults_to_the_package_version() -> None:
    _, (_, runtime) = _stages()
    args = dict(a.partition("=")[::2] for a in runtime.args("ARG"))
    assert args["VERSION"] == package_version()
    labels = " ".join(runtime.args("LABEL"))
    assert 'org.opencontainers.image.version="${VERSION}"' in labels


def test_entrypoint_and_default_command() -> None:
    _, (_, runtime) = _stages()
    assert runtime.args("ENTRYPOINT") == ['["enforcer"]']
    assert runtime.args("CMD") == ['["run"]']


def test_within_old_buildah_dockerfile_support() -> None:
    instructions = _instructions((REPO / "Dockerfile").read_text())
    for keyword, rest in instructions:
        assert not re.search(r"<<-?\s*['\"]?[A-Za-z]", rest), f"heredoc in {keyword}: not in buildah 1.28"
        if keyword in ("COPY", "ADD"):
            assert "--link" not in rest.split(), "COPY --link is not supported by buildah 1.28"
    known = {"FROM", "ARG", "ENV", "RUN", "WORKDIR", "COPY", "LABEL", "STOPSIGNAL", "ENTRYPOINT", "CMD"}
    assert {keyword for keyword, _ in instructions} <= known


def test_dockerignore_keeps_the_context_small() -> None:
    ignored = set((REPO / ".dockerignore").read_text().split())
    assert {".git", ".venv", "tests"} <= ignored
    assert "pipeline" not in ignored and "pyproject.toml" not in ignored
