"""Workload selectors as users write them, and their fast evaluation over many workloads.

Three forms select workloads into a group (`policy.model.Group.workload_selectors`; the runtime monitor
evaluates the same selectors for process profiles and file rules, so this module is in `core`):

- Kubernetes label selectors: `matchLabels` (equality) and `matchExpressions` (`In`, `NotIn`, `Exists`,
  `DoesNotExist`), all ANDed, optionally limited to `namespaces` (the pod's namespace by name) or by a
  `namespaceSelector` on `kubernetes.io/metadata.name` (the only namespace label a node knows);
- NeuVector criteria (`key`, `op`, `value`) with NeuVector's operators `=`, `!=`, `contains`, `prefix`,
  `regex`, `!regex`. Criteria with the same key are ORed, criteria with different keys ANDed; a
  negative criterion (`!=`, `!regex`) of a key must hold together with the key's positive ones
  (NeuVector: "not this value" narrows, it does not widen). `*` and `?` in a `=`/`!=` value are
  wildcards. Keys: `service` (`<workload>.<namespace>`), `domain` and `namespace` (the pod's
  namespace), `node`, `image` (any of the pod's images); any other key is a pod label.

Labels come from `core.workload_labels` (the CRI side fills them; the lab's workloads carry only
the intrinsic labels of the runtime child, such as `netns`). A missing label never satisfies a
positive requirement and always satisfies a negative one (Kubernetes' `NotIn` semantics).

Evaluation is by set algebra over an index key → value → workload numbers (`LabelIndex`): every
distinct value of a key is tested once per requirement, not once per workload, so thousands of
workloads × hundreds of groups recompile in milliseconds (`scripts/bench_selectors.py`).
Regular expressions are validated and compiled once (bounded cache), and their length is capped.
"""

from __future__ import annotations

import enum
import fnmatch
import functools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from core import workload_labels as WL

MAX_SELECTOR_REGEX_LEN = 256  # characters in one criterion regex (bounded compile and match cost)
MAX_SELECTOR_TERMS = 64  # requirements or criteria in one selector
MAX_SELECTOR_VALUES = 256  # values of one In/NotIn requirement
MAX_SELECTOR_VALUE_LEN = 512  # the longest label value or criterion value we take (regexes: the cap below)
_REGEX_CACHE = 4096  # compiled selector regexes kept (one per distinct pattern)

# Keys NeuVector derives from a workload's identity, kept apart from pod labels of the same name.
DERIVED_SERVICE = "@service"
DERIVED_NAMESPACE = "@namespace"
DERIVED_NODE = "@node"
DERIVED_IMAGE = "@image"
NEUVECTOR_KEYS = _NV_KEYS = {
    "service": DERIVED_SERVICE,
    "domain": DERIVED_NAMESPACE,
    "namespace": DERIVED_NAMESPACE,
    "node": DERIVED_NODE,
    "image": DERIVED_IMAGE,
}
_LABEL_KEY_RE = re.compile(r"^([A-Za-z0-9.-]{1,253}/)?[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")


class SelectorError(ValueError):
    """A selector that cannot be used (the message names the offending part)."""


class Op(enum.StrEnum):
    EQUAL = "="
    NOT_EQUAL = "!="
    CONTAINS = "contains"
    PREFIX = "prefix"
    REGEX = "regex"
    NOT_REGEX = "!regex"
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


NEUVECTOR_OPS = (Op.EQUAL, Op.NOT_EQUAL, Op.CONTAINS, Op.PREFIX, Op.REGEX, Op.NOT_REGEX)
KUBERNETES_OPS = (Op.IN, Op.NOT_IN, Op.EXISTS, Op.DOES_NOT_EXIST)
_NEGATIVE = frozenset({Op.NOT_EQUAL, Op.NOT_REGEX, Op.NOT_IN, Op.DOES_NOT_EXIST})
# The positive test a negative operator is the complement of.
_POSITIVE_OF = {
    Op.NOT_EQUAL: Op.EQUAL,
    Op.NOT_REGEX: Op.REGEX,
    Op.NOT_IN: Op.IN,
    Op.DOES_NOT_EXIST: Op.EXISTS,
}


@dataclass(frozen=True, slots=True)
class Requirement:
    """One test on one key: a Kubernetes expression or a NeuVector criterion."""

    key: str  # a pod label key, or a derived key (DERIVED_*)
    op: Op
    values: tuple[str, ...] = ()

    @property
    def negative(self) -> bool:
        return self.op in _NEGATIVE


@dataclass(frozen=True, slots=True)
class WorkloadSelector:
    """A Kubernetes-style selector (`labels` ANDed, `namespaces` ORed) or NeuVector `criteria`."""

    labels: tuple[Requirement, ...] = ()  # ANDed (matchLabels and matchExpressions)
    namespaces: tuple[str, ...] = ()  # the pod's namespace is one of these (empty: any)
    criteria: tuple[Requirement, ...] = ()  # NeuVector: same key ORed (negatives ANDed), keys ANDed

    def matches(self, labels: Mapping[str, str]) -> bool:
        """One workload (tests, single look-ups); compilation uses `LabelIndex.select`."""
        index = LabelIndex([labels])
        return 0 in index.select(self)


# ---- building and checking ------------------------------------------------------------------------


@functools.lru_cache(maxsize=_REGEX_CACHE)
def compiled_regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _check_value(value: object, where: str) -> str:
    if isinstance(value, bool | int | float):
        value = str(value).lower() if isinstance(value, bool) else str(value)
    if not isinstance(value, str) or len(value) > MAX_SELECTOR_VALUE_LEN or "\0" in value:
        raise SelectorError(f"{where}: value {value!r} is not a string of at most {MAX_SELECTOR_VALUE_LEN}")
    return value


def _check_label_key(key: object, where: str) -> str:
    if not isinstance(key, str) or not _LABEL_KEY_RE.match(key):
        raise SelectorError(f"{where}: label key {key!r} is not valid")
    return key


def criterion(key: object, op: object, value: object, where: str) -> Requirement:
    """A NeuVector criterion, checked (a bad regex is an error here, never at match time)."""
    if not isinstance(key, str) or not key:
        raise SelectorError(f"{where}: criterion key {key!r} is not valid")
    try:
        operator = Op(str(op))
    except ValueError:
        raise SelectorError(
            f"{where}: criterion {key!r}: operator {op!r} is not one of {', '.join(o.value for o in NEUVECTOR_OPS)}"
        ) from None
    if operator not in NEUVECTOR_OPS:
        raise SelectorError(f"{where}: criterion {key!r}: {op!r} is a Kubernetes operator")
    text = _check_value(value, f"{where}: criterion {key!r}")
    if operator in (Op.REGEX, Op.NOT_REGEX):
        if len(text) > MAX_SELECTOR_REGEX_LEN:
            raise SelectorError(f"{where}: criterion {key!r}: regex longer than {MAX_SELECTOR_REGEX_LEN}")
        try:
            compiled_regex(text)
        except re.error as exc:
            raise SelectorError(f"{where}: criterion {key!r}: bad regex {text!r}: {exc}") from None
    elif not text and operator != Op.EQUAL:
        raise SelectorError(f"{where}: criterion {key!r} {op}: empty value (only '=' takes one)")
    derived = _NV_KEYS.get(key)
    if derived is None:
        _check_label_key(key, where)
    return Requirement(derived or key, operator, (text,))


def expression(key: object, op: object, values: object, where: str) -> Requirement:
    """A Kubernetes `matchExpressions` entry."""
    label = _check_label_key(key, where)
    try:
        operator = Op(str(op))
    except ValueError:
        operator = None
    if operator not in KUBERNETES_OPS:
        raise SelectorError(f"{where}: {label!r}: operator {op!r} is not In, NotIn, Exists or DoesNotExist")
    assert operator is not None
    items = [] if values is None else values
    if not isinstance(items, list) or len(items) > MAX_SELECTOR_VALUES:
        raise SelectorError(f"{where}: {label!r}: values must be a list of at most {MAX_SELECTOR_VALUES}")
    texts = tuple(sorted({_check_value(v, f"{where}: {label!r}") for v in items}))
    if operator in (Op.IN, Op.NOT_IN) and not texts:
        raise SelectorError(f"{where}: {label!r} {operator}: needs at least one value")
    if operator in (Op.EXISTS, Op.DOES_NOT_EXIST) and texts:
        raise SelectorError(f"{where}: {label!r} {operator}: takes no values")
    return Requirement(label, operator, texts)


def equality(key: object, value: object, where: str) -> Requirement:
    return Requirement(_check_label_key(key, where), Op.IN, (_check_value(value, where),))


def check_workload_selector(selector: WorkloadSelector, where: str) -> None:
    """Reject an empty selector (it would select every pod of the cluster) and oversized ones."""
    terms = len(selector.labels) + len(selector.criteria) + len(selector.namespaces)
    if not terms:
        raise SelectorError(f"{where}: empty workload selector (it would select every workload)")
    if terms > MAX_SELECTOR_TERMS:
        raise SelectorError(f"{where}: {terms} terms in one selector, limit {MAX_SELECTOR_TERMS}")
    for r in (*selector.labels, *selector.criteria):
        if r.op in (Op.REGEX, Op.NOT_REGEX):
            if len(r.values[0]) > MAX_SELECTOR_REGEX_LEN:
                raise SelectorError(f"{where}: regex of {r.key!r} longer than {MAX_SELECTOR_REGEX_LEN}")
            try:
                compiled_regex(r.values[0])
            except re.error as exc:
                raise SelectorError(f"{where}: bad regex {r.values[0]!r} of {r.key!r}: {exc}") from None


def service_criteria(group_name: str) -> WorkloadSelector | None:
    """NeuVector's learned-group naming `nv.<workload>.<namespace>`: the group of that service."""
    if not group_name.startswith("nv.") or group_name.startswith("nv.ip."):
        return None
    service = group_name[3:]
    workload, dot, namespace = service.rpartition(".")
    if not dot or not workload or not namespace:
        return None
    return WorkloadSelector(
        criteria=(
            Requirement(DERIVED_SERVICE, Op.EQUAL, (service,)),
            Requirement(DERIVED_NAMESPACE, Op.EQUAL, (namespace,)),
        )
    )


# ---- evaluation -----------------------------------------------------------------------------------


def _value_test(op: Op, values: tuple[str, ...]) -> Callable[[str], bool]:
    """A predicate on one label value for a positive operator."""
    if op == Op.EQUAL:
        value = values[0]
        if "*" in value or "?" in value:
            glob = compiled_regex(fnmatch.translate(value))
            return lambda v: glob.match(v) is not None
        return lambda v: v == value
    if op == Op.CONTAINS:
        return lambda v: values[0] in v
    if op == Op.PREFIX:
        return lambda v: v.startswith(values[0])
    if op == Op.REGEX:
        rx = compiled_regex(values[0])
        return lambda v: rx.search(v) is not None
    if op == Op.IN:
        wanted = frozenset(values)
        return lambda v: v in wanted
    return lambda v: True  # EXISTS


def derived_labels(labels: Mapping[str, str]) -> dict[str, str | tuple[str, ...]]:
    """The keys NeuVector criteria use, from the identity labels of `core.workload_labels`."""
    out: dict[str, str | tuple[str, ...]] = {}
    namespace = labels.get(WL.POD_NAMESPACE)
    if namespace is not None:
        out[DERIVED_NAMESPACE] = namespace
        workload = labels.get(WL.WORKLOAD_NAME)
        if workload:
            out[DERIVED_SERVICE] = f"{workload}.{namespace}"
    node = labels.get(WL.NODE)
    if node is not None:
        out[DERIVED_NODE] = node
    images = labels.get(WL.IMAGES)
    if images:
        out[DERIVED_IMAGE] = tuple(i for i in images.split(",") if i)
    return out


class LabelIndex:
    """Workloads (by position) indexed by key → value → set of positions, with derived keys."""

    def __init__(self, workloads: Iterable[Mapping[str, str]]) -> None:
        self.index: dict[str, dict[str, set[int]]] = {}
        count = 0
        for i, labels in enumerate(workloads):
            count = i + 1
            for key, value in labels.items():
                self.index.setdefault(key, {}).setdefault(value, set()).add(i)
            for key, derived in derived_labels(labels).items():
                for value in (derived,) if isinstance(derived, str) else derived:
                    self.index.setdefault(key, {}).setdefault(value, set()).add(i)
        self.all: frozenset[int] = frozenset(range(count))
        self._cache: dict[Requirement, frozenset[int]] = {}

    def _positive(self, key: str, op: Op, values: tuple[str, ...]) -> frozenset[int]:
        by_value = self.index.get(key)
        if not by_value:
            return frozenset()
        if op in (Op.IN, Op.EQUAL) and not any("*" in v or "?" in v for v in values):
            found: set[int] = set()
            for v in values:
                found |= by_value.get(v, set())
            return frozenset(found)
        test = _value_test(op, values)
        found = set()
        for value, positions in by_value.items():
            if test(value):
                found |= positions
        return frozenset(found)

    def requirement(self, r: Requirement) -> frozenset[int]:
        """The workloads that satisfy one requirement (cached: groups share requirements)."""
        hit = self._cache.get(r)
        if hit is None:
            if r.negative:
                hit = self.all - self._positive(r.key, _POSITIVE_OF[r.op], r.values)
            else:
                hit = self._positive(r.key, r.op, r.values)
            self._cache[r] = hit
        return hit

    def select(self, selector: WorkloadSelector) -> frozenset[int]:
        result = self.all
        for r in selector.labels:
            result = result & self.requirement(r)
            if not result:
                return result
        if selector.namespaces:
            result = result & self.requirement(Requirement(DERIVED_NAMESPACE, Op.IN, selector.namespaces))
        by_key: dict[str, list[Requirement]] = {}
        for r in selector.criteria:
            by_key.setdefault(r.key, []).append(r)
        for requirements in by_key.values():
            if not result:
                return result
            positives = [r for r in requirements if not r.negative]
            if positives:
                union: frozenset[int] = frozenset()
                for r in positives:
                    union = union | self.requirement(r)
                result = result & union
            for r in requirements:
                if r.negative:
                    result = result & self.requirement(r)
        return result


# ---- the native (YAML) form -----------------------------------------------------------------------


def selector_to_dict(selector: WorkloadSelector) -> dict[str, object]:
    out: dict[str, object] = {}
    pod = [r for r in selector.labels if r.key != DERIVED_NAMESPACE]
    namespace = [r for r in selector.labels if r.key == DERIVED_NAMESPACE]
    match_labels = {r.key: r.values[0] for r in pod if r.op == Op.IN and len(r.values) == 1}
    expressions = [r for r in pod if not (r.op == Op.IN and len(r.values) == 1)]
    if match_labels:
        out["matchLabels"] = match_labels
    if expressions:
        out["matchExpressions"] = [
            {"key": r.key, "operator": r.op.value, **({"values": list(r.values)} if r.values else {})}
            for r in expressions
        ]
    if selector.namespaces:
        out["namespaces"] = list(selector.namespaces)
    if namespace:
        out["namespaceSelector"] = {
            "matchExpressions": [
                {
                    "key": NAMESPACE_NAME_LABEL,
                    "operator": r.op.value,
                    **({"values": list(r.values)} if r.values else {}),
                }
                for r in namespace
            ]
        }
    if selector.criteria:
        names = {v: k for k, v in _NV_KEYS.items() if k != "namespace"}
        out["criteria"] = [
            {"key": names.get(r.key, r.key), "op": r.op.value, "value": r.values[0]}
            for r in selector.criteria
        ]
    return out


SELECTOR_KEYS = frozenset({"matchLabels", "matchExpressions", "namespaces", "namespaceSelector", "criteria"})
# The one namespace label a node knows (Kubernetes sets it on every namespace: its name).
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


def _namespace_selector(doc: object, where: str) -> list[Requirement]:
    """A Kubernetes `namespaceSelector` on the namespace's name; other namespace labels are not known
    on the node (the pods' labels do not carry them), so they are refused rather than ignored."""
    if not isinstance(doc, Mapping) or set(doc) - {"matchLabels", "matchExpressions"}:
        raise SelectorError(f"{where}: namespaceSelector takes matchLabels and matchExpressions")
    out: list[Requirement] = []
    for r in _label_requirements(doc, f"{where} namespaceSelector"):
        if r.key != NAMESPACE_NAME_LABEL:
            raise SelectorError(
                f"{where}: namespaceSelector on {r.key!r}: only {NAMESPACE_NAME_LABEL} is known on the node"
            )
        out.append(Requirement(DERIVED_NAMESPACE, r.op, r.values))
    if not out:
        raise SelectorError(f"{where}: empty namespaceSelector (it would select every namespace)")
    return out


def _label_requirements(doc: Mapping[str, object], where: str) -> list[Requirement]:
    labels: list[Requirement] = []
    match_labels = doc.get("matchLabels") or {}
    if not isinstance(match_labels, Mapping):
        raise SelectorError(f"{where}: matchLabels is not a mapping")
    for key, value in match_labels.items():
        labels.append(equality(key, value, f"{where} matchLabels"))
    expressions = doc.get("matchExpressions") or []
    if not isinstance(expressions, list):
        raise SelectorError(f"{where}: matchExpressions is not a list")
    for i, e in enumerate(expressions):
        if not isinstance(e, Mapping) or set(e) - {"key", "operator", "values"}:
            raise SelectorError(f"{where} matchExpressions[{i}]: expected key, operator and values")
        labels.append(
            expression(e.get("key"), e.get("operator"), e.get("values"), f"{where} matchExpressions[{i}]")
        )
    return labels


def selector_from_dict(doc: Mapping[str, object], where: str) -> WorkloadSelector:
    """The native form: `{matchLabels, matchExpressions, namespaces, namespaceSelector}` or `{criteria}`
    (or both)."""
    unknown = set(doc) - SELECTOR_KEYS
    if unknown:
        raise SelectorError(f"{where}: unknown selector key {sorted(unknown)[0]!r}")
    labels = _label_requirements(doc, where)
    if "namespaceSelector" in doc:
        labels += _namespace_selector(doc["namespaceSelector"], where)
    namespaces = doc.get("namespaces") or []
    if not isinstance(namespaces, list):
        raise SelectorError(f"{where}: namespaces is not a list")
    ns = tuple(sorted({_check_value(n, f"{where} namespaces") for n in namespaces}))
    criteria_doc = doc.get("criteria") or []
    if not isinstance(criteria_doc, list):
        raise SelectorError(f"{where}: criteria is not a list")
    criteria: list[Requirement] = []
    for i, c in enumerate(criteria_doc):
        if not isinstance(c, Mapping) or set(c) - {"key", "op", "value"}:
            raise SelectorError(f"{where} criteria[{i}]: expected key, op and value")
        criteria.append(criterion(c.get("key"), c.get("op", "="), c.get("value"), f"{where} criteria[{i}]"))
    selector = WorkloadSelector(tuple(labels), ns, tuple(criteria))
    check_workload_selector(selector, where)
    return selector
