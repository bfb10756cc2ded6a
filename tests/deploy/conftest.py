"""Fixtures of the deployment tests: the DaemonSet, its pod spec and its one container."""

from __future__ import annotations

from typing import Any

import pytest

from .support import find


@pytest.fixture
def daemonset() -> dict[str, Any]:
    return find("DaemonSet")


@pytest.fixture
def container(daemonset: dict[str, Any]) -> dict[str, Any]:
    containers = daemonset["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    c = containers[0]
    assert isinstance(c, dict)
    return c


@pytest.fixture
def pod_spec(daemonset: dict[str, Any]) -> dict[str, Any]:
    spec = daemonset["spec"]["template"]["spec"]
    assert isinstance(spec, dict)
    return spec
