"""Loaders for the deployment tests: the manifests under deploy/, the Dockerfile, the package
version. Everything is read from the source tree; nothing here needs a cluster or the network."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
# The Kubernetes version the manifests are checked against (schemas shipped with kubernetes-validate).
KUBERNETES_VERSION = "1.30.0"


def package_version() -> str:
    with open(REPO / "pyproject.toml", "rb") as f:
        version = tomllib.load(f)["project"]["version"]
    assert isinstance(version, str)
    return version


def manifest_files() -> list[Path]:
    """Every Kubernetes manifest (kustomization.yaml is kustomize's, not the API server's)."""
    return sorted(p for p in DEPLOY.glob("*.yaml") if p.name != "kustomization.yaml")


def load_documents(path: Path) -> list[dict[str, Any]]:
    with open(path) as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]


def all_resources() -> list[dict[str, Any]]:
    return [doc for path in manifest_files() for doc in load_documents(path)]


def find(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        r for r in all_resources() if r["kind"] == kind and (name is None or r["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''} in deploy/, found {len(found)}"
    return found[0]
