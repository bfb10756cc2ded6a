"""Per-group threat settings: enable flag, action and thresholds of every threat, overridable by name.

The policy carries a document per group (plus a default) of the form

    {"syn_flood": {"enabled": true, "action": "drop", "syns_per_window": 2000},
     "tls_1_0": {"enabled": true},
     "k8s_extip_mitm": {"external_ips": ["198.18.0.10"], "internal_nets": ["198.18.0.0/15"]}}

Keys other than `enabled` and `action` are thresholds declared in the catalogue (plus the two list keys
of `k8s_extip_mitm`). `compile_threat_settings` validates the document whole and raises
`ThreatSettingsError` naming the first bad key, so a bad snapshot is rejected before it reaches a worker.
Compiled settings are immutable and shared by every flow of the group until the next policy generation.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from core.lookup import Mode
from threats.catalogue import BY_NAME, K8S_EXTIP_MITM, THREATS, Threat, ThreatAction, Threshold

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Private ranges a pod address comes from when no `internal_nets` is given.
DEFAULT_INTERNAL_NETS: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "198.18.0.0/15", "fc00::/7")
)
# Bound on the addresses one settings document may list (they are kept in a set per group).
MAX_EXTERNAL_IPS = 4096
MAX_INTERNAL_NETS = 256


class ThreatSettingsError(ValueError):
    """A threat-settings document that does not validate; the message names the bad key."""


@dataclasses.dataclass(frozen=True, slots=True)
class ThreatSetting:
    enabled: bool
    action: ThreatAction
    thresholds: Mapping[str, Threshold]


@dataclasses.dataclass(frozen=True, slots=True)
class ThreatSettings:
    """The compiled settings of one group (immutable)."""

    by_id: Mapping[int, ThreatSetting]
    on: frozenset[int]  # ids of enabled threats, for the hot-path check
    external_ips: frozenset[bytes] = frozenset()  # raw 4/16-byte addresses (k8s_extip_mitm)
    internal_nets: tuple[IPNetwork, ...] = DEFAULT_INTERNAL_NETS

    def enabled(self, threat: Threat) -> bool:
        return threat.id in self.on

    def action(self, threat: Threat) -> ThreatAction:
        return self.by_id[threat.id].action

    def threshold(self, threat: Threat, key: str) -> Threshold:
        return self.by_id[threat.id].thresholds[key]

    def is_internal(self, addr: bytes) -> bool:
        ip = ipaddress.ip_address(addr)
        return any(ip in net for net in self.internal_nets)


def _defaults() -> ThreatSettings:
    by_id = {t.id: ThreatSetting(t.enabled, t.action, t.thresholds) for t in THREATS}
    return ThreatSettings(MappingProxyType(by_id), frozenset(t.id for t in THREATS if t.enabled))


DEFAULT_SETTINGS = _defaults()

_LIST_KEYS = frozenset({"external_ips", "internal_nets"})


def _threshold(path: str, value: Any, default: Threshold) -> Threshold:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or value != value:
        raise ThreatSettingsError(f"{path}: expected a non-negative number, got {value!r}")
    if isinstance(default, int) and not isinstance(value, int):
        if not float(value).is_integer():
            raise ThreatSettingsError(f"{path}: expected a whole number, got {value!r}")
        value = int(value)
    return value


def _address_list(path: str, value: Any, limit: int, parse: Any) -> list[Any]:
    if not isinstance(value, list | tuple):
        raise ThreatSettingsError(f"{path}: expected a list of addresses, got {type(value).__name__}")
    if len(value) > limit:
        raise ThreatSettingsError(f"{path}: at most {limit} entries, got {len(value)}")
    out = []
    for i, item in enumerate(value):
        try:
            out.append(parse(str(item)) if isinstance(item, str) else parse(item))
        except (ValueError, TypeError) as exc:
            raise ThreatSettingsError(f"{path}[{i}]: {exc}") from None
    return out


def compile_threat_settings(
    doc: Mapping[str, Any] | None, base: ThreatSettings = DEFAULT_SETTINGS, path: str = "threats"
) -> ThreatSettings:
    """Validate `doc` and return `base` with its overrides applied. Raises ThreatSettingsError."""
    if doc is None:
        return base
    if not isinstance(doc, Mapping):
        raise ThreatSettingsError(f"{path}: expected a mapping of threat names, got {type(doc).__name__}")
    by_id = dict(base.by_id)
    external_ips, internal_nets = base.external_ips, base.internal_nets
    for name, entry in doc.items():
        here = f"{path}.{name}"
        threat = BY_NAME.get(name) if isinstance(name, str) else None
        if threat is None:
            raise ThreatSettingsError(f"{here}: unknown threat (known: {', '.join(BY_NAME)})")
        if not isinstance(entry, Mapping):
            raise ThreatSettingsError(f"{here}: expected a mapping, got {type(entry).__name__}")
        current = by_id[threat.id]
        enabled, action, thresholds = current.enabled, current.action, dict(current.thresholds)
        for key, value in entry.items():
            where = f"{here}.{key}"
            if key == "enabled":
                if not isinstance(value, bool):
                    raise ThreatSettingsError(f"{where}: expected true or false, got {value!r}")
                enabled = value
            elif key == "action":
                try:
                    action = ThreatAction(value)
                except ValueError:
                    choices = ", ".join(a.value for a in ThreatAction)
                    raise ThreatSettingsError(f"{where}: expected one of {choices}, got {value!r}") from None
            elif threat is K8S_EXTIP_MITM and key in _LIST_KEYS:
                if key == "external_ips":
                    ips = _address_list(where, value, MAX_EXTERNAL_IPS, ipaddress.ip_address)
                    external_ips = frozenset(ip.packed for ip in ips)
                else:
                    internal_nets = tuple(
                        _address_list(
                            where, value, MAX_INTERNAL_NETS, lambda s: ipaddress.ip_network(s, False)
                        )
                    )
            elif key in threat.thresholds:
                thresholds[key] = _threshold(where, value, threat.thresholds[key])
            else:
                known = ", ".join(["enabled", "action", *threat.thresholds])
                raise ThreatSettingsError(f"{where}: unknown setting (known: {known})")
        by_id[threat.id] = ThreatSetting(enabled, action, MappingProxyType(thresholds))
    on = frozenset(tid for tid, s in by_id.items() if s.enabled)
    return ThreatSettings(MappingProxyType(by_id), on, external_ips, internal_nets)


@dataclasses.dataclass(frozen=True, slots=True)
class GroupThreatSettings:
    """Settings for every group of one policy generation; groups without their own use the default."""

    default: ThreatSettings
    groups: Mapping[str, ThreatSettings]

    def for_group(self, group: str) -> ThreatSettings:
        return self.groups.get(group, self.default)


def compile_group_settings(
    doc: Mapping[str, Any] | None, path: str = "threat_settings"
) -> GroupThreatSettings:
    """Compile `{"default": {...}, "groups": {"web": {...}}}`; group documents overlay the default."""
    if doc is None:
        return GroupThreatSettings(DEFAULT_SETTINGS, MappingProxyType({}))
    if not isinstance(doc, Mapping):
        raise ThreatSettingsError(f"{path}: expected a mapping, got {type(doc).__name__}")
    unknown = set(doc) - {"default", "groups"}
    if unknown:
        raise ThreatSettingsError(
            f"{path}.{sorted(map(str, unknown))[0]}: unknown key (known: default, groups)"
        )
    default = compile_threat_settings(doc.get("default"), DEFAULT_SETTINGS, f"{path}.default")
    groups_doc = doc.get("groups") or {}
    if not isinstance(groups_doc, Mapping):
        raise ThreatSettingsError(f"{path}.groups: expected a mapping of group names")
    groups = {}
    for group, gdoc in groups_doc.items():
        if not isinstance(group, str) or not group:
            raise ThreatSettingsError(f"{path}.groups: group names must be non-empty strings, got {group!r}")
        groups[group] = compile_threat_settings(gdoc, default, f"{path}.groups.{group}")
    return GroupThreatSettings(default, MappingProxyType(groups))


def effective_action(mode: Mode, threat_action: ThreatAction) -> ThreatAction:
    """The action actually taken: Protect runs the configured action, Discover/Monitor only alert."""
    return threat_action if mode is Mode.PROTECT else ThreatAction.ALERT
