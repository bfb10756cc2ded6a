"""The enforcer's configuration: one typed, frozen object loaded once from TOML plus the environment.

Each section is a frozen dataclass whose fields carry their default and a one-line help (shown by
`enforcer config check`). Unknown keys are rejected, values are type-checked, and every error names the
key path and what was expected. Any key can be overridden from the environment as
`ENFORCER_<SECTION>_<KEY>` (upper case); a few short names that a DaemonSet sets are aliases (`ALIASES`).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import ipaddress
import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from core.config import (  # noqa: F401 - the sections are part of this module's interface
    DROP,
    FAILURE_ACTIONS,
    HOOKS,
    INSPECT_MODES,
    LOG_LEVELS,
    PASS,
    ControllerConfig,
    EventsConfig,
    FailureConfig,
    FlowsConfig,
    LogConfig,
    MetricsConfig,
    NetfilterConfig,
    NodeConfig,
    PolicyConfig,
    QueuesConfig,
    RuntimeDirsConfig,
    SupervisorConfig,
    WorkersConfig,
    setting,
)
from pipeline.guard import GuardSettings
from pipeline.settings import ReaderConfig
from runtime.cri.settings import CriSettings
from runtime.settings import RuntimeSettings
from workers.detect.engine import DetectLimits
from workers.dpi.settings import DpiSettings
from workers.settings import WorkerConfig

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent.parent / "config" / "enforcer.toml"


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the key path."""


@dataclass(frozen=True, slots=True)
class Config:
    node: NodeConfig = field(default_factory=NodeConfig)
    queues: QueuesConfig = field(default_factory=QueuesConfig)
    workers: WorkersConfig = field(default_factory=WorkersConfig)
    netfilter: NetfilterConfig = field(default_factory=NetfilterConfig)
    flows: FlowsConfig = field(default_factory=FlowsConfig)
    failure: FailureConfig = field(default_factory=FailureConfig)
    supervisor: SupervisorConfig = field(default_factory=SupervisorConfig)
    paths: RuntimeDirsConfig = field(default_factory=RuntimeDirsConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    events: EventsConfig = field(default_factory=EventsConfig)
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    log: LogConfig = field(default_factory=LogConfig)
    dpi: DpiSettings = field(default_factory=DpiSettings)
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)
    cri: CriSettings = field(default_factory=CriSettings)
    detect: DetectLimits = field(default_factory=DetectLimits)
    guard: GuardSettings = field(default_factory=GuardSettings)
    cpus: tuple[int, ...] = setting((), "CPUs the enforcer may use; empty means all the machine's CPUs")

    @property
    def queue_numbers(self) -> tuple[int, ...]:
        return self.queues.numbers

    def reader(self) -> ReaderConfig:
        """The sections a reader process needs."""
        return ReaderConfig(
            queues=self.queues,
            workers=self.workers,
            netfilter=self.netfilter,
            flows=self.flows,
            failure=self.failure,
            supervisor=self.supervisor,
            paths=self.paths,
            guard=self.guard,
        )

    def worker(self) -> WorkerConfig:
        """The sections a worker process needs."""
        return WorkerConfig(
            queues=self.queues,
            workers=self.workers,
            supervisor=self.supervisor,
            paths=self.paths,
            dpi=self.dpi,
            detect=self.detect,
        )

    def reader_cpu(self, index: int) -> int:
        return _layout(self.queues.reader_cpus, self.cpus, index)

    def worker_cpu(self, index: int) -> int:
        # Workers start from the other end of the CPU list so that with few CPUs a reader and the worker
        # it feeds most tend to sit on different cores.
        return _layout(self.workers.cpus, tuple(reversed(self.cpus)), index)


def _layout(explicit: tuple[int, ...], pool: tuple[int, ...], index: int) -> int:
    if explicit:
        return explicit[index % len(explicit)]
    cpus = pool or tuple(sorted(os.sched_getaffinity(0)))
    return cpus[index % len(cpus)]


# Short environment names a DaemonSet sets, mapped to their key paths.
ALIASES: Mapping[str, tuple[str, ...]] = {
    "ENFORCER_READERS": ("queues.readers",),
    "ENFORCER_WORKERS": ("workers.count",),
    "ENFORCER_CPUS": ("cpus",),
    "CLUSTER_JOIN_ADDR": ("controller.join_addr",),
    "ENFORCER_NODE": ("node.name",),
    "ENFORCER_LOG_LEVEL": ("log.level",),
}
CONFIG_PATH_ENV = "ENFORCER_CONFIG"


def load_config(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Load the TOML file at `path` (default: `$ENFORCER_CONFIG` or the packaged default), apply
    environment overrides and validate. Raises ConfigError naming the key on any problem."""
    environ = os.environ if environ is None else environ
    if path is None:
        path = environ.get(CONFIG_PATH_ENV) or DEFAULT_CONFIG_PATH
        if path == DEFAULT_CONFIG_PATH and not DEFAULT_CONFIG_PATH.exists():
            # Installed without the source tree: the built-in defaults are the shipped file's values.
            return config_from_dict({}, environ)
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read configuration: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return config_from_dict(doc, environ)


def config_from_dict(doc: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Config:
    merged = _apply_environment(_deep_copy(doc), environ or {})
    config = _build(Config, merged, "")
    _check(config)
    return config


def config_to_dict(config: Config) -> dict[str, Any]:
    return _to_plain(dataclasses.asdict(config))


def config_to_json(config: Config) -> str:
    return json.dumps(config_to_dict(config), indent=2, sort_keys=True)


def describe(config: Config) -> str:
    """The effective configuration as commented TOML-like text (for `enforcer config check`)."""
    return "\n".join(_describe_table(config, "")).lstrip("\n") + "\n"


def _describe_table(table: Any, name: str) -> list[str]:
    """A table's keys first, then its sub-tables (`[detect.packet]`), as TOML wants them."""
    lines = [f"\n[{name}]"] if name else []
    subtables = []
    for f in dataclasses.fields(table):
        value = getattr(table, f.name)
        if dataclasses.is_dataclass(value):
            subtables.append((f"{name}.{f.name}" if name else f.name, value))
            continue
        text = hex(value) if f.name.endswith("_mark") else _toml_value(value)
        lines.append(f"{f.name} = {text}  # {_help(type(table), f)}")
    for sub_name, value in subtables:
        lines += _describe_table(value, sub_name)
    return lines


def _help(cls: type, f: dataclasses.Field[Any]) -> str:
    """A key's help: its `help` metadata, or else the comment that ends the field's line in the source, or
    the comment lines right above it (sections owned by other packages, like DpiSettings and
    RuntimeSettings, document their fields that way)."""
    text = f.metadata.get("help")
    if text:
        return str(text)
    return _trailing_comments(cls).get(f.name, "")


@functools.cache
def _trailing_comments(cls: type) -> dict[str, str]:
    comments: dict[str, str] = {}
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return comments
    above: list[str] = []  # comment lines right above a field document it when it has no trailing one
    for line in source.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            text = stripped.lstrip("#").strip()
            if not text.startswith("---"):  # section rulers are not help
                above.append(text)
            continue
        name, sep, rest = stripped.partition(":")
        if sep and name.isidentifier():
            if "#" in rest:
                comments[name] = rest.split("#", 1)[1].strip()
            elif above:
                comments[name] = " ".join(above)
        above = []
    return comments


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)
    return str(value)


def _deep_copy(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in doc.items()}


def _apply_environment(doc: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    overrides: dict[tuple[str, ...], tuple[str, str]] = {}
    for name, paths in ALIASES.items():
        if name in environ:
            for p in paths:
                overrides[tuple(p.split("."))] = (name, environ[name])
    for section, sec_type in get_type_hints(Config).items():
        if not dataclasses.is_dataclass(sec_type):
            env = f"ENFORCER_{section}".upper()
            if env in environ:
                overrides[(section,)] = (env, environ[env])
            continue
        for key in dataclasses.fields(sec_type):
            env = f"ENFORCER_{section}_{key.name}".upper()
            if env in environ:
                overrides[(section, key.name)] = (env, environ[env])
    for keypath, (env, raw) in overrides.items():
        target = doc
        for part in keypath[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ConfigError(f"{'.'.join(keypath[:-1])}: expected a table")
        target[keypath[-1]] = _EnvValue(env, raw)
    return doc


@dataclass(frozen=True, slots=True)
class _EnvValue:
    """A raw string from the environment; converted to the key's type when the key is built."""

    name: str
    raw: str


def _build(cls: type, doc: Any, prefix: str) -> Any:
    if not isinstance(doc, Mapping):
        raise ConfigError(f"{prefix or 'configuration'}: expected a table, got {type(doc).__name__}")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(doc) - names)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(f"{where}{unknown[0]}: unknown key (known: {', '.join(sorted(names))})")
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in doc:
            continue
        path = f"{prefix}.{f.name}" if prefix else f.name
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            values[f.name] = _build(hint, doc[f.name], path)  # type: ignore[arg-type]
        else:
            values[f.name] = _convert(doc[f.name], hint, path)
    try:
        return cls(**values)
    except ValueError as exc:  # a section's own validation (e.g. DpiSettings) names its key
        raise ConfigError(str(exc)) from None


def _convert(value: Any, hint: Any, path: str) -> Any:
    source = ""
    if isinstance(value, _EnvValue):
        source = f" (from ${value.name})"
        value = _parse_env(value.raw, hint, path, source)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected true or false, got {value!r}{source}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected an integer, got {value!r}{source}")
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{path}: expected a number, got {value!r}{source}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{path}: expected a string, got {value!r}{source}")
    if hint == tuple[int, ...] or hint == tuple[str, ...]:
        item = int if hint == tuple[int, ...] else str
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{path}: expected a list of {item.__name__}s, got {value!r}{source}")
        return tuple(_convert(v, item, f"{path}[{i}]") for i, v in enumerate(value))
    raise ConfigError(f"{path}: unsupported type {hint}")  # a programming error in the schema


def _parse_env(raw: str, hint: Any, path: str, source: str) -> Any:
    raw = raw.strip()
    if hint is bool:
        lowered = raw.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{path}: expected true or false, got {raw!r}{source}")
    if hint is int:
        try:
            return int(raw, 0)
        except ValueError:
            raise ConfigError(f"{path}: expected an integer, got {raw!r}{source}") from None
    if hint is float:
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"{path}: expected a number, got {raw!r}{source}") from None
    if hint == tuple[int, ...]:
        return [_parse_env(p, int, path, source) for p in _split_list(raw)]
    if hint == tuple[str, ...]:
        return _split_list(raw)
    return raw


def _split_list(raw: str) -> list[str]:
    """Comma-separated items; `a-b` ranges are expanded for CPU lists (`0-3,6`)."""
    items: list[str] = []
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        if sep and lo.isdigit() and hi.isdigit():
            items.extend(str(i) for i in range(int(lo), int(hi) + 1))
        else:
            items.append(part)
    return items


def _require(ok: bool, path: str, expected: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"{path}: expected {expected}, got {value!r}")


def _check(c: Config) -> None:
    """Checks that types alone cannot express."""
    q, w, n = c.queues, c.workers, c.netfilter
    _require(0 <= q.first <= 65535 - max(q.readers, 1), "queues.first", "a queue number 0..65535", q.first)
    _require(1 <= q.readers <= 64, "queues.readers", "1..64", q.readers)
    _require(1 <= q.max_len <= 1 << 20, "queues.max_len", "1..1048576", q.max_len)
    _require(64 <= q.copy_range <= 65535, "queues.copy_range", "64..65535", q.copy_range)
    _require(1 <= q.recv_batch <= 4096, "queues.recv_batch", "1..4096", q.recv_batch)
    _require(1 << 16 <= q.socket_buffer <= 1 << 30, "queues.socket_buffer", "64 KiB..1 GiB", q.socket_buffer)
    _require(1 <= w.count <= 64, "workers.count", "1..64", w.count)
    _require(1 <= w.batch_size <= 1024, "workers.batch_size", "1..1024", w.batch_size)
    _require(0 <= w.spin_us <= 1000, "workers.spin_us", "0..1000", w.spin_us)
    _require(1 <= w.inflight_max <= 1 << 20, "workers.inflight_max", "1..1048576", w.inflight_max)
    _require(
        1 <= w.verdict_timeout_ms <= 60_000, "workers.verdict_timeout_ms", "1..60000", w.verdict_timeout_ms
    )
    if w.payload_pattern:
        try:
            bytes.fromhex(w.payload_pattern)
        except ValueError:
            raise ConfigError(
                f"workers.payload_pattern: expected hex bytes, got {w.payload_pattern!r}"
            ) from None
    cpus = set(os.sched_getaffinity(0))
    for key, values in (("cpus", c.cpus), ("queues.reader_cpus", q.reader_cpus), ("workers.cpus", w.cpus)):
        for i, cpu in enumerate(values):
            _require(cpu in cpus, f"{key}[{i}]", f"a CPU this process may use {sorted(cpus)}", cpu)
    for i, hook in enumerate(n.hooks):
        _require(hook in HOOKS, f"netfilter.hooks[{i}]", " or ".join(HOOKS), hook)
    _require(bool(n.hooks), "netfilter.hooks", "at least one hook", n.hooks)
    _require(
        n.chain.replace("-", "").replace("_", "").isalnum() and 0 < len(n.chain) <= 24,
        "netfilter.chain", "a chain name of letters, digits, - and _ (at most 24)", n.chain,
    )  # fmt: skip
    _require(n.jump_check_ms == 0 or 100 <= n.jump_check_ms <= 3_600_000, "netfilter.jump_check_ms",
             "0 or 100..3600000", n.jump_check_ms)  # fmt: skip
    marks = ("accept_mark", "drop_mark", "pass_mark", "quiet_ack_mark", "flood_mark")
    for key in marks:
        value = getattr(n, key)
        _require(0 < value < 1 << 32 and value & (value - 1) == 0, f"netfilter.{key}", "a single bit", value)
    values = tuple(getattr(n, key) for key in marks)
    _require(len(set(values)) == len(marks), "netfilter", "five distinct mark bits", values)
    _require(0 <= n.udp_flow_rate <= 1_000_000, "netfilter.udp_flow_rate", "0..1000000", n.udp_flow_rate)
    for f in dataclasses.fields(c.failure):
        value = getattr(c.failure, f.name)
        _require(value in FAILURE_ACTIONS, f"failure.{f.name}", " or ".join(FAILURE_ACTIONS), value)
    fl = c.flows
    _require(1024 <= fl.max_flows <= 1 << 24, "flows.max_flows", "1024..16777216", fl.max_flows)
    for f in dataclasses.fields(fl):
        if f.name.endswith("_s"):
            _require(
                getattr(fl, f.name) > 0,
                f"flows.{f.name}",
                "a positive number of seconds",
                getattr(fl, f.name),
            )
    s = c.supervisor
    _require(
        s.heartbeat_interval_ms >= 10, "supervisor.heartbeat_interval_ms", ">= 10", s.heartbeat_interval_ms
    )
    _require(s.heartbeat_timeout_ms > 2 * s.heartbeat_interval_ms, "supervisor.heartbeat_timeout_ms",
             "more than twice heartbeat_interval_ms", s.heartbeat_timeout_ms)  # fmt: skip
    _require(-20 <= s.packet_nice <= 19, "supervisor.packet_nice", "-20..19", s.packet_nice)
    _require(s.startup_timeout_ms >= s.heartbeat_timeout_ms, "supervisor.startup_timeout_ms",
             "at least heartbeat_timeout_ms", s.startup_timeout_ms)  # fmt: skip
    _require(s.restart_budget >= 0, "supervisor.restart_budget", ">= 0", s.restart_budget)
    _require(w.inspect in INSPECT_MODES, "workers.inspect", " or ".join(INSPECT_MODES), w.inspect)
    _require(
        c.policy.startup in ("monitor", "protect"), "policy.startup", "monitor or protect", c.policy.startup
    )
    p, e, ctl = c.policy, c.events, c.controller
    _require(1 << 16 <= p.table_bytes <= 1 << 30, "policy.table_bytes", "64 KiB..1 GiB", p.table_bytes)
    _require(0 <= p.reuse_wait_ms <= 10_000, "policy.reuse_wait_ms", "0..10000", p.reuse_wait_ms)
    _require(
        10 <= p.watch_interval_ms <= 600_000, "policy.watch_interval_ms", "10..600000", p.watch_interval_ms
    )
    _require(
        10 <= e.aggregate_window_ms <= 600_000,
        "events.aggregate_window_ms",
        "10..600000",
        e.aggregate_window_ms,
    )
    _require(1 <= e.batch_max <= 4096, "events.batch_max", "1..4096", e.batch_max)
    _require(
        1 << 20 <= e.spool_max_bytes <= 1 << 34, "events.spool_max_bytes", "1 MiB..16 GiB", e.spool_max_bytes
    )
    for key in ("heartbeat_s", "timeout_s", "reconnect_max_s", "inflight_batches"):
        _require(getattr(ctl, key) >= 1, f"controller.{key}", ">= 1", getattr(ctl, key))
    _require(ctl.timeout_s > ctl.heartbeat_s, "controller.timeout_s", "more than heartbeat_s", ctl.timeout_s)
    try:
        c.runtime.validate()
        c.cri.validate()
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    _require(c.log.level in LOG_LEVELS, "log.level", " or ".join(LOG_LEVELS), c.log.level)
    if c.metrics.listen:
        _check_hostport(c.metrics.listen, "metrics.listen")
    if c.controller.join_addr:
        _check_hostport(c.controller.join_addr, "controller.join_addr", resolve=False)


def _check_hostport(value: str, path: str, resolve: bool = True) -> None:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise ConfigError(f"{path}: expected host:port, got {value!r}")
    if resolve:
        try:
            ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            raise ConfigError(f"{path}: expected an IP address and port, got {value!r}") from None


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_to_plain(v) for v in value]
    return value
