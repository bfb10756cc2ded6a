"""The policy the controller serves: a directory of YAML files merged into one policy, and its versions.

`load_policy_dir` merges every file (native policies and NeuVector CRD exports) into one native
mapping; `PolicyDirectory` watches the directory and reads it validated and normalized; `ServedPolicy`
numbers what is served: a new version only when the content changed (by digest), persisted so versions
stay monotonic across controller restarts, with the last few versions kept to send deltas from.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any, Protocol

import yaml

from policy.crd import CrdError, crd_to_native, is_crd_document
from policy.loader import MAX_POLICY_FILE_BYTES, parse_policy, policy_to_dict, yaml_load_all
from policy.model import PolicyError

MAX_POLICY_FILES = 1000  # YAML files in the policy directory
MAX_DELTA_HISTORY = 8  # served versions kept to send deltas from (older enforcers get a full snapshot)


def _merge_into(
    merged: dict[str, Any], doc: dict[str, Any], origin: str, owners: dict[str, tuple[str, Any]]
) -> None:
    for key in ("groups", "rules", "process_profiles", "file_rules", "sensors"):
        items = doc.get(key) or []
        if not isinstance(items, list):
            raise PolicyError(f"{origin}: {key} is not a list")
        for item in items:
            if key in ("groups", "sensors", "rules") and isinstance(item, dict):
                ident = item.get("id") if key == "rules" else item.get("name")
                name = f"{key}:{ident}"
                if name in owners:
                    # The same group or rule in several files (CRD exports repeat them) is fine if identical.
                    first, content = owners[name]
                    if content != item:
                        what = f"rule id {ident}" if key == "rules" else f"{key[:-1]} {ident!r}"
                        raise PolicyError(f"{origin}: {what} is also defined, differently, in {first}")
                    continue
                owners[name] = (origin, item)
            elif item in merged.get(key, ()):
                continue  # an identical profile or file rule repeated by another file
            merged.setdefault(key, []).append(item)
    threats = doc.get("threats") or {}
    if not isinstance(threats, dict):
        raise PolicyError(f"{origin}: threats is not a mapping")
    merged.setdefault("threats", {}).update(threats)
    if "default_mode" in doc:
        if "default_mode" in merged and merged["default_mode"] != doc["default_mode"]:
            raise PolicyError(f"{origin}: default_mode differs from another file's")
        merged["default_mode"] = doc["default_mode"]


def load_policy_dir(directory: str | Path, cache: dict[str, Any] | None = None) -> dict[str, Any]:
    """Merge every *.yaml / *.yml file of `directory` (native policies and CRD exports) into one
    native mapping (version 0: the controller assigns versions). Raises PolicyError naming the file.
    `cache` (path → (mtime, size, documents)) spares re-parsing files that did not change."""
    d = Path(directory)
    files = sorted(p for p in d.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    if len(files) > MAX_POLICY_FILES:
        raise PolicyError(f"{d}: more than {MAX_POLICY_FILES} policy files")
    merged: dict[str, Any] = {"version": 0}
    owners: dict[str, tuple[str, Any]] = {}
    for path in files:
        st = path.stat()
        cached = cache.get(str(path)) if cache is not None else None
        if cached is not None and cached[:2] == (st.st_mtime_ns, st.st_size):
            docs = cached[2]
        else:
            data = path.read_bytes()
            if len(data) > MAX_POLICY_FILE_BYTES:
                raise PolicyError(f"{path.name}: larger than {MAX_POLICY_FILE_BYTES} bytes")
            try:
                docs = [doc for doc in yaml_load_all(data) if doc is not None]
            except yaml.YAMLError as exc:
                raise PolicyError(f"{path.name}: not valid YAML: {exc}") from None
            if cache is not None:
                cache[str(path)] = (st.st_mtime_ns, st.st_size, docs)
        docs = copy.deepcopy(docs) if cache is not None else docs
        for i, doc in enumerate(docs):
            origin = path.name if len(docs) == 1 else f"{path.name}#{i}"
            if is_crd_document(doc):
                try:
                    doc = crd_to_native(doc)
                except CrdError as exc:
                    raise PolicyError(f"{origin}: {exc}") from None
            if not isinstance(doc, dict):
                raise PolicyError(f"{origin}: not a mapping")
            _merge_into(merged, doc, origin, owners)
    return merged


def policy_digest(doc: dict[str, Any]) -> str:
    """The digest of a policy's content: its version number is not part of it."""
    body = {k: v for k, v in doc.items() if k != "version"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


class PolicyDirectory:
    """The watched directory: a cheap signature to notice changes, and a full read when it changed."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file_cache: dict[str, Any] = {}  # unchanged files are not parsed again

    def signature(self) -> object:
        """Names, modification times and sizes of the directory's entries (None if it is unreadable)."""
        try:
            return tuple(
                sorted((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in self.path.iterdir())
            )
        except OSError:
            return None

    def load(self) -> dict[str, Any]:
        """Read, merge, validate and normalize the directory (the controller runs it aside, in a thread).

        Validated before serving (the enforcer validates again), and served in the normalized form the
        enforcer itself produces, so deltas apply to exactly what it holds. Raises OSError or PolicyError.
        """
        return policy_to_dict(parse_policy(load_policy_dir(self.path, self._file_cache)))


class MetaStore(Protocol):
    """Where the served version and digest persist (the controller's event store)."""

    def get_meta(self, key: str, default: str = "") -> str: ...

    def set_meta(self, key: str, value: str) -> None: ...


class ServedPolicy:
    """The policy being served, its version, and the recent versions deltas are made from."""

    def __init__(self, meta: MetaStore) -> None:
        self._meta = meta
        self.version = int(meta.get_meta("policy_version", "0"))
        self.digest = meta.get_meta("policy_digest", "")
        self.doc: dict[str, Any] | None = None
        self.history: dict[int, dict[str, Any]] = {}

    def offer(self, doc: dict[str, Any]) -> bool:
        """Serve a directory's content (stamped with its version in place). It gets a new version when it
        differs from what was served last, also by an earlier run; True when enforcers are to get it."""
        digest = policy_digest(doc)
        if digest != self.digest or self.version == 0:
            self.version += 1
            self.digest = digest
            self._meta.set_meta("policy_version", str(self.version))
            self._meta.set_meta("policy_digest", digest)
            changed = True
        else:
            changed = self.doc is None
        doc["version"] = self.version
        self._serve(doc)
        return changed

    def force(self, doc: dict[str, Any]) -> int:
        """Serve a copy of `doc` as the next version, whatever its content (tests of enforcer-side
        rejection); not persisted. Returns the version."""
        self.version += 1
        doc = dict(doc)
        doc["version"] = self.version
        self._serve(doc)
        return self.version

    def base(self, version: int) -> dict[str, Any] | None:
        """The policy served as `version`, if still held (a delta to the current one can be made)."""
        return self.history.get(version)

    def _serve(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.history[doc["version"]] = doc
        while len(self.history) > MAX_DELTA_HISTORY:
            del self.history[min(self.history)]
