"""Policy deltas: the difference between two native policy mappings, and applying one.

A delta turns version `base` into version `version` and carries only what changed: groups, rules,
sensors and process profiles by key (name, id, name, group), every other top-level key whole when it
changed, plus the complete order of groups and rules (order matters: rules tie on `order` by
position, label and FQDN matches prefer the group listed first). The receiver applies it to exactly
`base` and validates the result like any snapshot; a delta for another base is a gap, answered by a
full snapshot.
"""

from __future__ import annotations

from typing import Any

from policy.model import PolicyError

_KEYED = {"groups": "name", "rules": "id", "sensors": "name", "process_profiles": "group"}
_ORDERED = ("groups", "rules")


def _index(items: Any, key: str, section: str) -> dict[Any, Any]:
    if not isinstance(items, list):
        raise PolicyError(f"delta: {section} is not a list")
    out: dict[Any, Any] = {}
    for item in items:
        if not isinstance(item, dict) or key not in item:
            raise PolicyError(f"delta: an item of {section} has no {key!r}")
        out[item[key]] = item
    return out


def make_delta(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The delta from `old` to `new` (both native mappings with a `version`)."""
    delta: dict[str, Any] = {"base": old.get("version", 0), "version": new.get("version", 0)}
    upsert: dict[str, list[Any]] = {}
    remove: dict[str, list[Any]] = {}
    for section, key in _KEYED.items():
        before = _index(old.get(section, []), key, section)
        after = _index(new.get(section, []), key, section)
        changed = [item for k, item in after.items() if before.get(k) != item]
        gone = [k for k in before if k not in after]
        if changed:
            upsert[section] = changed
        if gone:
            remove[section] = gone
        if section in _ORDERED and list(before) != list(after):
            delta.setdefault("order", {})[section] = list(after)
    replace = {
        k: v for k, v in new.items() if k not in _KEYED and k != "version" and old.get(k, _MISSING) != v
    }
    dropped = [k for k in old if k not in _KEYED and k != "version" and k not in new]
    if upsert:
        delta["upsert"] = upsert
    if remove:
        delta["remove"] = remove
    if replace:
        delta["replace"] = replace
    if dropped:
        delta["drop"] = dropped
    return delta


_MISSING = object()


def apply_delta(base: dict[str, Any], delta: dict[str, Any]) -> dict[str, Any]:
    """`base` with `delta` applied (a new mapping); PolicyError when the delta does not fit `base`.

    Deltas come from the network: any malformation is a PolicyError, never another exception.
    """
    try:
        return _apply(base, delta)
    except (TypeError, KeyError, ValueError, AttributeError) as exc:
        if isinstance(exc, PolicyError):
            raise
        raise PolicyError(f"delta is malformed: {exc!r}") from None


def _apply(base: dict[str, Any], delta: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(delta, dict):
        raise PolicyError("delta is not a mapping")
    if delta.get("base") != base.get("version", 0):
        raise PolicyError(
            f"delta for version {delta.get('base')!r} cannot apply to version {base.get('version')}"
        )
    out = {k: v for k, v in base.items() if k not in _KEYED}
    upsert = delta.get("upsert", {})
    remove = delta.get("remove", {})
    order = delta.get("order", {})
    if not all(isinstance(x, dict) for x in (upsert, remove, order)):
        raise PolicyError("delta: upsert, remove and order must be mappings")
    for section, key in _KEYED.items():
        items = _index(base.get(section, []), key, section)
        gone = remove.get(section, [])
        if not isinstance(gone, list):
            raise PolicyError(f"delta: remove.{section} is not a list")
        for k in gone:
            if k not in items:
                raise PolicyError(
                    f"delta: removes {section} {k!r}, which version {base.get('version')} lacks"
                )
            del items[k]
        for k, item in _index(upsert.get(section, []), key, f"upsert.{section}").items():
            items[k] = item
        if section in order:
            wanted = order[section]
            if not isinstance(wanted, list) or len(wanted) != len(items) or set(wanted) != set(items):
                raise PolicyError(f"delta: order of {section} does not match its items")
            out[section] = [items[k] for k in wanted]
        elif items:
            out[section] = list(items.values())
    replace = delta.get("replace", {})
    if not isinstance(replace, dict):
        raise PolicyError("delta: replace is not a mapping")
    out.update(replace)
    dropped = delta.get("drop", [])
    if not isinstance(dropped, list):
        raise PolicyError("delta: drop is not a list")
    for k in dropped:
        if isinstance(k, str):
            out.pop(k, None)
    out["version"] = delta.get("version")
    return out
