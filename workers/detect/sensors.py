"""DLP/WAF sensors: named sets of regular expressions with a context, attached to groups.

A policy generation carries a list of sensors:

    [{"name": "pci", "action": "block", "groups": ["web"],  # no groups: every group
      "rules": [{"name": "visa", "pattern": "4[0-9]{15}", "context": "body", "caseless": false}]},
     {"name": "cards", "predefined": "credit_card", "action": "alert", "groups": ["web", "db"]}]

`compile_sensors(doc)` validates the whole list (a bad pattern is rejected with a message naming the
sensor, the rule and the pattern) and compiles, off the packet path, one Hyperscan database per
context: block mode for values (url, header, sql) and stream mode for byte streams (body, packet) so a
pattern split across packets still matches. Patterns Hyperscan cannot compile (back-references,
look-around) fall back to Python `re` with a warning; if the `hyperscan` module is missing, everything
uses `re`. The compiled `SensorSet` is immutable and swapped in with the policy generation.

A match reports the sensor and rule names and a masked excerpt (all letters and digits but the last
four replaced by `*`): sensitive values are never logged in full. Rules may carry a confirm check
(`luhn` for card numbers) run on the matched text to cut false positives.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

_hs: Any = None
try:  # the wheel bundles libhs; absence is tolerated (slower `re` fallback), and reported
    import hyperscan

    _hs = hyperscan
except ImportError:  # pragma: no cover - depends on the platform
    pass

HYPERSCAN_AVAILABLE = _hs is not None

# Bounds on what one policy may ask for.
MAX_SENSORS = 1024
MAX_RULES = 10_000  # all sensors together (2,000 is the benchmark target)
MAX_PATTERN_LENGTH = 2048
# Bytes before a match end searched to recover the matched text (for confirm checks and excerpts);
# also the overlap the `re` fallback keeps between stream chunks.
MATCH_LOOKBEHIND = 128
MAX_EXCERPT = 48
# Candidate matches of one confirm-checked rule examined per scan with the `re` fallback.
MAX_CANDIDATES = 64


class Context(enum.StrEnum):
    URL = "url"
    HEADER = "header"
    BODY = "body"
    PACKET = "packet"
    SQL = "sql"


STREAM_CONTEXTS = frozenset({Context.BODY, Context.PACKET})


class SensorAction(enum.StrEnum):
    ALERT = "alert"
    BLOCK = "block"


class SensorError(ValueError):
    """A sensor document that does not validate; the message names the sensor, rule and pattern."""


@dataclasses.dataclass(frozen=True, slots=True)
class Rule:
    name: str
    pattern: str
    context: Context
    caseless: bool = False
    confirm: str = ""  # "" or "luhn"


@dataclasses.dataclass(frozen=True, slots=True)
class Sensor:
    name: str
    action: SensorAction
    groups: frozenset[str]
    rules: tuple[Rule, ...]


class SensorMatch(NamedTuple):
    sensor: str
    rule: str
    context: Context
    action: SensorAction
    excerpt: str  # masked


# -- predefined sensors ----------------------------------------------------------------------------------

_CARD = r"\b(?:4\d{3}|5[1-5]\d{2}|2[2-7]\d{2}|3[47]\d{2}|6(?:011|5\d{2}))(?:[ -]?\d{4}){2}[ -]?\d{1,4}\b"
PREDEFINED: Mapping[str, tuple[Rule, ...]] = {
    "credit_card": tuple(
        Rule(f"card-{ctx.value}", _CARD, ctx, confirm="luhn")
        for ctx in (Context.BODY, Context.URL, Context.SQL)
    ),
    "us_ssn": tuple(
        Rule(f"ssn-{ctx.value}", r"\b\d{3}-\d{2}-\d{4}\b", ctx, confirm="ssn")
        for ctx in (Context.BODY, Context.URL, Context.SQL)
    ),
    "aws_access_key": tuple(
        Rule(f"aws-key-{ctx.value}", r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}\b", ctx)
        for ctx in (Context.BODY, Context.URL, Context.HEADER)
    ),
    "private_key": (
        Rule(
            "private-key-body",
            r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED |PGP )?PRIVATE KEY( BLOCK)?-----",
            Context.BODY,
        ),
    ),  # fmt: skip
    "waf": (
        Rule(
            "path-traversal", r"(?:\.\.|%2e%2e|%252e%252e)(?:/|\\|%2f|%5c|%252f)", Context.URL, caseless=True
        ),
        Rule("etc-passwd", r"/etc/(?:passwd|shadow)\b", Context.URL),
        Rule(
            "log4shell",
            r"\$\{\s*jndi\s*:|\$\{[^}]{0,40}\$\{\s*(?:lower|upper|env|date|::-)",
            Context.HEADER,
            caseless=True,
        ),
        Rule("log4shell-url", r"\$\{jndi:", Context.URL, caseless=True),
        Rule("shellshock", r"\(\s*\)\s*\{\s*:\s*;\s*\}\s*;", Context.HEADER),
        Rule("php-wrapper", r"\b(?:php|expect|phar|zip|data)://", Context.URL, caseless=True),
        Rule(
            "cmd-injection",
            r"(?:;|\||`|\$\()\s*(?:cat|wget|curl|nc|bash|sh|id|uname|whoami)\b[^&]*",
            Context.URL,
        ),
        Rule("cmd-injection-body", r"(?:;|\|\||`|\$\()\s*(?:wget|curl|nc|bash|whoami)\s", Context.BODY),
        Rule("jsp-webshell", r"Runtime\.getRuntime\(\)\.exec\(", Context.BODY),
    ),  # fmt: skip
}


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return len(digits) >= 12 and total % 10 == 0


def ssn_ok(text: str) -> bool:
    """Area not 000, 666 or 9xx; group not 00; serial not 0000 (SSA numbering rules)."""
    area, group, serial = text[-11:-8], text[-7:-5], text[-4:]
    return area not in ("000", "666") and not area.startswith("9") and group != "00" and serial != "0000"


_CONFIRMS: Mapping[str, Callable[[str], bool]] = {
    "luhn": lambda text: luhn_ok("".join(c for c in text if c.isdigit())),
    "ssn": ssn_ok,
}


def mask(text: str, keep: int = 4) -> str:
    """Replace every letter and digit but the last `keep` by `*` (bounded to MAX_EXCERPT)."""
    text = text[-MAX_EXCERPT:]
    alnum = [i for i, c in enumerate(text) if c.isalnum()]
    hide = set(alnum[:-keep] if keep else alnum)
    return "".join("*" if i in hide else c for i, c in enumerate(text))


# -- compilation -------------------------------------------------------------------------------------------


class _Entry(NamedTuple):
    sensor: Sensor
    rule: Rule
    confirm_rx: re.Pattern[str]  # the pattern anchored at the end, to recover the match text


def _text(data: bytes) -> str:
    return data.decode("latin-1")


_LEADING_FLAGS = re.compile(r"\(\?[aiLmsux]+\)")


class SensorSet:
    """All sensors of one policy generation, compiled. Immutable after construction."""

    def __init__(self, sensors: Sequence[Sensor], use_hyperscan: bool = True) -> None:
        self.sensors = tuple(sensors)
        self.warnings: list[str] = []
        self.hyperscan = use_hyperscan and HYPERSCAN_AVAILABLE
        self._entries: list[_Entry] = []
        self._by_context: dict[Context, list[int]] = {c: [] for c in Context}
        for sensor in self.sensors:
            for rule in sensor.rules:
                flags = re.I if rule.caseless else 0
                # Leading global flags such as "(?i)" must stay at the very start of the expression.
                lead = _LEADING_FLAGS.match(rule.pattern)
                head, body = (lead.group(0), rule.pattern[lead.end() :]) if lead else ("", rule.pattern)
                confirm = re.compile(f"{head}(?:{body})\\Z", flags | re.S)
                self._by_context[rule.context].append(len(self._entries))
                self._entries.append(_Entry(sensor, rule, confirm))
        self._fallback: dict[Context, list[tuple[int, re.Pattern[str]]]] = {c: [] for c in Context}
        self._db: dict[Context, Any] = {}  # block mode, per context
        self._stream_db: dict[Context, Any] = {}  # stream mode, body and packet contexts
        for ctx, ids in self._by_context.items():
            if ids:
                self._compile(ctx, ids)
        self.groups = frozenset(g for s in self.sensors for g in s.groups)
        self.all_groups = any(not s.groups for s in self.sensors)  # a sensor without groups applies to all

    def _compile(self, ctx: Context, ids: list[int]) -> None:
        fallback_ids = ids
        if self.hyperscan:
            assert _hs is not None
            # Block mode for whole values; stream contexts also get a stream-mode database for flows.
            mode = _hs.HS_MODE_BLOCK
            try:
                self._db[ctx] = self._hs_database(mode, ids)
                if ctx in STREAM_CONTEXTS:
                    self._stream_db[ctx] = self._hs_database(_hs.HS_MODE_STREAM, ids)
                fallback_ids = []
            except _hs.error:
                # Find the patterns Hyperscan rejects (one compile each: only on this slow path).
                bad = set()
                for i in ids:
                    try:
                        self._hs_database(mode, [i])
                    except _hs.error as exc:
                        rule, sensor = self._entries[i].rule, self._entries[i].sensor
                        self.warnings.append(
                            f"sensor {sensor.name!r} rule {rule.name!r}: pattern {rule.pattern!r} "
                            f"not supported by Hyperscan ({exc}); using Python re"
                        )
                        bad.add(i)
                good = [i for i in ids if i not in bad]
                if good:
                    self._db[ctx] = self._hs_database(mode, good)
                    if ctx in STREAM_CONTEXTS:
                        self._stream_db[ctx] = self._hs_database(_hs.HS_MODE_STREAM, good)
                fallback_ids = [i for i in ids if i in bad]
        for i in fallback_ids:
            rule = self._entries[i].rule
            self._fallback[ctx].append((i, re.compile(rule.pattern, (re.I if rule.caseless else 0) | re.S)))

    def _hs_database(self, mode: int, ids: list[int]) -> Any:
        assert _hs is not None
        db = _hs.Database(mode=mode)
        db.compile(
            expressions=[self._hs_expr(i) for i in ids],
            ids=ids,
            elements=len(ids),
            flags=[self._hs_flags(i) for i in ids],
        )
        return db

    def _hs_expr(self, i: int) -> bytes:
        return self._entries[i].rule.pattern.encode("latin-1", "backslashreplace")

    def _hs_flags(self, i: int) -> int:
        assert _hs is not None
        rule = self._entries[i].rule
        # One report per pattern suffices, unless a confirm check may reject the first candidate.
        flags = _hs.HS_FLAG_DOTALL if rule.confirm else _hs.HS_FLAG_SINGLEMATCH | _hs.HS_FLAG_DOTALL
        if rule.caseless:
            flags |= _hs.HS_FLAG_CASELESS
        return flags

    # -- scanning ----------------------------------------------------------------------------------------

    def applies(self, group: str) -> bool:
        return self.all_groups or group in self.groups

    def scan(self, ctx: Context, data: bytes, group: str) -> list[SensorMatch]:
        """Scan one value (url, header, sql; or a whole body/packet) for the sensors of `group`."""
        if not (self.all_groups or group in self.groups):
            return []
        ends: list[tuple[int, int]] = []
        db = self._db.get(ctx)
        if db is not None:
            db.scan(data, match_event_handler=_on_match, context=ends)
        if self._fallback[ctx]:
            ends += self._fallback_ends(ctx, _text(data), 0)
        return self._matches(ctx, ends, data, group) if ends else []

    def _fallback_ends(self, ctx: Context, text: str, after: int) -> list[tuple[int, int]]:
        """Match ends of the `re` fallback rules ending beyond `after`; every candidate for a rule with a
        confirm check (bounded), the first otherwise."""
        ends: list[tuple[int, int]] = []
        for i, rx in self._fallback[ctx]:
            if self._entries[i].rule.confirm:
                for n, m in enumerate(rx.finditer(text)):
                    if n >= MAX_CANDIDATES:
                        break
                    if m.end() > after:
                        ends.append((i, m.end()))
            else:
                first = rx.search(text)
                if first is not None and first.end() > after:
                    ends.append((i, first.end()))
        return ends

    def open_stream(self, ctx: Context, group: str) -> SensorStream:
        """A scanner for one direction of one flow's body or packet bytes (matches across chunks)."""
        if ctx not in STREAM_CONTEXTS:
            raise ValueError(f"{ctx.value} is not a stream context")
        return SensorStream(self, ctx, group)

    def _matches(
        self, ctx: Context, ends: Iterable[tuple[int, int]], data: bytes, group: str
    ) -> list[SensorMatch]:
        out: list[SensorMatch] = []
        seen: set[int] = set()
        for i, end in ends:
            if i in seen:
                continue
            sensor, rule, confirm_rx = self._entries[i]
            if sensor.groups and group not in sensor.groups:
                continue
            window = _text(data[max(0, end - MATCH_LOOKBEHIND) : end])
            m = confirm_rx.search(window)
            text = m.group() if m is not None else window[-MAX_EXCERPT:]
            if rule.confirm and not _CONFIRMS[rule.confirm](text):
                continue
            seen.add(i)
            out.append(SensorMatch(sensor.name, rule.name, ctx, sensor.action, mask(text)))
        return out


def _open_stream(db: Any, on_match: Callable[..., None]) -> Any:
    """Open a Hyperscan stream. The caller must keep `on_match` alive while the stream is open, close
    the stream exactly once and never scan it after: the binding holds no reference to the callback
    and crashes the process on a scan of a closed stream. `SensorStream` guarantees all three."""
    stream = db.stream(match_event_handler=on_match)
    stream.__enter__()
    return stream


def _on_match(i: int, _start: int, end: int, _flags: int, ends: list[tuple[int, int]]) -> None:
    ends.append((i, end))


def _collect(ends: list[tuple[int, int]]) -> Callable[..., None]:
    def on_match(i: int, _start: int, end: int, _flags: int, _ctx: object) -> None:
        ends.append((i, end))

    return on_match


class SensorStream:
    """Hyperscan stream state for one flow direction (plus a bounded tail for the `re` fallback and for
    recovering the text of a match that began in an earlier chunk)."""

    def __init__(self, sensors: SensorSet, ctx: Context, group: str) -> None:
        self._set = sensors
        self._ctx = ctx
        self._group = group
        self._applies = sensors.applies(group)
        self._fallback = bool(sensors._fallback[ctx])
        self._ends: list[tuple[int, int]] = []
        self._offset = 0  # stream offset of the first byte of the next chunk
        self._older = b""  # the chunk before `_recent`
        self._recent = b""  # the last chunk scanned
        self._reported: set[tuple[str, str]] = set()
        db = sensors._stream_db.get(ctx) if self._applies else None
        # The binding does not keep a reference to the callback: this object does, for the stream's life.
        self._on_match = _collect(self._ends)
        self._stream = _open_stream(db, self._on_match) if db is not None else None

    def _tail(self) -> bytes:
        recent = self._recent
        if len(recent) >= MATCH_LOOKBEHIND:
            return recent[-MATCH_LOOKBEHIND:]
        return (self._older + recent)[-MATCH_LOOKBEHIND:]

    def scan(self, chunk: bytes) -> list[SensorMatch]:
        if not self._applies:
            return []
        ends = self._ends
        ends.clear()
        if self._stream is not None:
            self._stream.scan(chunk)
        if not ends and not self._fallback:  # the common case: nothing to recover, only remember
            self._offset += len(chunk)
            self._older, self._recent = self._recent, chunk
            return []
        tail = self._tail()
        data = tail + chunk
        base = self._offset - len(tail)  # stream offset of data[0]
        found = [(i, end - base) for i, end in ends]
        if self._fallback:
            found += self._set._fallback_ends(self._ctx, _text(data), len(tail))
        matches = [
            m
            for m in self._set._matches(self._ctx, ((i, max(0, e)) for i, e in found), data, self._group)
            if (m.sensor, m.rule) not in self._reported
        ]
        self._reported.update((m.sensor, m.rule) for m in matches)
        self._offset += len(chunk)
        self._older, self._recent = self._recent, chunk
        return matches

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None


# -- validation ------------------------------------------------------------------------------------------


def _rule(sensor: str, where: str, doc: Any) -> Rule:
    if not isinstance(doc, Mapping):
        raise SensorError(f"{where}: expected a mapping with name, pattern and context")
    unknown = set(doc) - {"name", "pattern", "context", "caseless"}
    if unknown:
        raise SensorError(
            f"{where}.{sorted(unknown)[0]}: unknown key (known: name, pattern, context, caseless)"
        )
    name, pattern = doc.get("name"), doc.get("pattern")
    if not isinstance(name, str) or not name:
        raise SensorError(f"{where}.name: sensor {sensor!r}: rules need a non-empty name")
    if not isinstance(pattern, str) or not pattern:
        raise SensorError(f"{where}.pattern: sensor {sensor!r} rule {name!r}: expected a non-empty pattern")
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise SensorError(
            f"{where}.pattern: sensor {sensor!r} rule {name!r}: pattern longer than {MAX_PATTERN_LENGTH}"
        )
    try:
        context = Context(str(doc.get("context")))
    except ValueError:
        choices = ", ".join(c.value for c in Context)
        raise SensorError(
            f"{where}.context: sensor {sensor!r} rule {name!r}: expected one of {choices}"
        ) from None
    caseless = doc.get("caseless", False)
    if not isinstance(caseless, bool):
        raise SensorError(f"{where}.caseless: sensor {sensor!r} rule {name!r}: expected true or false")
    try:
        rx = re.compile(pattern, re.I if caseless else 0)
    except re.error as exc:
        raise SensorError(
            f"{where}.pattern: sensor {sensor!r} rule {name!r}: bad pattern {pattern!r}: {exc}"
        ) from None
    if rx.search("") is not None:
        raise SensorError(
            f"{where}.pattern: sensor {sensor!r} rule {name!r}: pattern {pattern!r} matches empty input"
        )
    return Rule(name, pattern, context, caseless)


def compile_sensors(
    doc: Sequence[Any] | None, path: str = "sensors", use_hyperscan: bool = True
) -> SensorSet:
    """Validate and compile the sensors of one policy generation. Raises SensorError naming the problem."""
    if doc is None:
        return SensorSet((), use_hyperscan)
    if not isinstance(doc, Sequence) or isinstance(doc, str | bytes):
        raise SensorError(f"{path}: expected a list of sensors")
    if len(doc) > MAX_SENSORS:
        raise SensorError(f"{path}: at most {MAX_SENSORS} sensors, got {len(doc)}")
    sensors: list[Sensor] = []
    names: set[str] = set()
    total = 0
    for i, sdoc in enumerate(doc):
        where = f"{path}[{i}]"
        if not isinstance(sdoc, Mapping):
            raise SensorError(f"{where}: expected a mapping")
        unknown = set(sdoc) - {"name", "action", "groups", "rules", "predefined"}
        if unknown:
            raise SensorError(f"{where}.{sorted(unknown)[0]}: unknown key")
        name = sdoc.get("name")
        if not isinstance(name, str) or not name:
            raise SensorError(f"{where}.name: expected a non-empty sensor name")
        if name in names:
            raise SensorError(f"{where}.name: sensor {name!r} defined twice")
        names.add(name)
        try:
            action = SensorAction(sdoc.get("action", "alert"))
        except ValueError:
            raise SensorError(f"{where}.action: sensor {name!r}: expected alert or block") from None
        groups = sdoc.get("groups", [])
        if not isinstance(groups, list | tuple) or not all(isinstance(g, str) and g for g in groups):
            raise SensorError(f"{where}.groups: sensor {name!r}: expected a list of group names")
        predefined = sdoc.get("predefined")
        if predefined is not None:
            if predefined not in PREDEFINED:
                known = ", ".join(PREDEFINED)
                raise SensorError(
                    f"{where}.predefined: sensor {name!r}: unknown set {predefined!r} (known: {known})"
                )
            rules = PREDEFINED[predefined]
        else:
            rdocs = sdoc.get("rules")
            if not isinstance(rdocs, list | tuple) or not rdocs:
                raise SensorError(f"{where}.rules: sensor {name!r}: expected a non-empty list of rules")
            rules = tuple(_rule(name, f"{where}.rules[{j}]", r) for j, r in enumerate(rdocs))
        total += len(rules)
        if total > MAX_RULES:
            raise SensorError(f"{path}: more than {MAX_RULES} rules in all")
        sensors.append(Sensor(name, action, frozenset(groups), tuple(rules)))
    return SensorSet(sensors, use_hyperscan)
