"""Shared fixtures for the policy tests."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "config" / "policies" / "demo.yaml"


def ip(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


@pytest.fixture
def private_dir(tmp_path: Path) -> Path:
    """A 0700 directory for sockets, keys, state and table files."""
    d = tmp_path / "run"
    d.mkdir(mode=0o700)
    return d
