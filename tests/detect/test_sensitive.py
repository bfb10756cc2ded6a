"""sensitive_file_access: a request for version-control metadata, an environment or credentials file, a
server's configuration, a shell's history or a source file's backup; ordinary paths that look alike (the
`.well-known` directory, a page about environments, a query naming such a file) are no finding."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.verdict import WorkerVerdict
from threats import catalogue as C
from workers.detect.sensitive import check_sensitive_path

from .test_body_parts import flow
from .test_engine import Lab
from .test_headers import CURL, request

PROBES = [
    "/.git/config",
    "/.git/HEAD",
    "/app/.git/",
    "/.svn/entries",
    "/.hg/hgrc",
    "/CVS/Root",
    "/.env",
    "/api/.env.production",
    "/.aws/credentials",
    "/home/.ssh/id_rsa",
    "/id_ed25519",
    "/.htpasswd",
    "/.HTACCESS",
    "/WEB.CONFIG",
    "/.bash_history",
    "/.DS_Store",
    "/.kube/config",
    "/wp-config.php.bak",
    "/config.php~",
    "/.index.php.swp",
    "/settings.yml.old",
    "/%2Egit/config",
]
ORDINARY = [
    "/",
    "/.well-known/acme-challenge/abc123",
    "/.well-known/security.txt",
    "/environment/overview.html",
    "/docs/.github-guide.html",
    "/static/app.js?v=3",
    "/download?file=.env",
    "/search?q=.git/config",
    "/backup/index.html",
    "/releases/app-1.2.tar.gz",
    "/img/logo.png.webp",
    "/config.json",
    "/gitlab/readme",
]


@pytest.mark.parametrize("path", PROBES)
def test_a_probe_for_a_file_never_served_is_sensitive_file_access(path: str) -> None:
    hit = check_sensitive_path(path.encode())
    assert hit is not None and hit.threat is C.SENSITIVE_FILE_ACCESS, path


@pytest.mark.parametrize("path", ORDINARY)
def test_ordinary_paths_are_no_finding(path: str) -> None:
    assert check_sensitive_path(path.encode()) is None, path


def test_browser_requests_of_the_benign_corpus_are_no_finding() -> None:
    corpus = Path(__file__).parent / "corpus" / "benign_requests.txt"
    lines = [line for line in corpus.read_text().splitlines() if line.startswith("/")]
    assert len(lines) > 50
    assert [line for line in lines if check_sensitive_path(line.encode()) is not None] == []


@given(st.text(max_size=300))
def test_the_check_is_total(path: str) -> None:
    hit = check_sensitive_path(("/" + path).encode("utf-8", "surrogatepass"))
    assert hit is None or (
        hit.threat is C.SENSITIVE_FILE_ACCESS and len(hit.excerpt) <= C.MAX_FINDING_EXCERPT
    )


def test_a_git_config_probe_is_reset_in_protect_and_a_page_served() -> None:
    lab = Lab()
    verdicts = lab.send(flow(request("GET", CURL, b"", "/.git/config"), 42950))
    assert verdicts[-1] is WorkerVerdict.RESET_FLOW
    [event] = lab.threats("sensitive_file_access")
    assert event["action"] == "reset" and event["group"] == "web"
    verdicts = lab.send(flow(request("GET", CURL, b"", "/.well-known/security.txt"), 42951))
    assert WorkerVerdict.RESET_FLOW not in verdicts and len(lab.threats()) == 1
