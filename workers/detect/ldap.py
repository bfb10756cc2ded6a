"""LDAP injection in one request value, scored on the filter grammar (RFC 4515).

An application that splices a value into a search filter (`(&(uid=$user)(userPassword=$pass))`) runs
whatever filter syntax the value brings: it closes the application's item and opens items of its own
(`*)(uid=*))(|(uid=*`), turns the filter into one that is always true (`admin)(&)`), or lists every
entry (`*(|(objectclass=*))`). Parentheses and stars are common in text (`John (Smith)`, `f(x)(y)`,
`search term*`), so a value is scored and is an injection when its distinct signals reach `THRESHOLD`:

- 3: an item closed and a composition opened (`)(|(`, `)(&(`, `)(!(`, `)(&)`, or `)(|` left for the
  application to finish); a closed item followed by a presence test (`)(cn=*`); a presence test on
  `objectClass` (`objectclass=*`: every entry); a value made only of filter metacharacters with a star
  and an operator (`*|`, `*)(&`); a close followed by a NUL (`*))%00`: a filter builder that stops at
  the NUL drops the rest of the application's filter). An operator between the items (`)|(uid=*`) is allowed: some filter
  builders join items so;
- 2: the breakout itself, found on the parentheses' structure: a `)` the value did not open (it closes
  the application's item) followed by an item or a composition opened (`x)(sn~=y`, `1)(gidNumber<=9`),
  plus 1 for each of: the value ends inside an item (the application's own `)` closes it), an operator
  between the items, a wildcard in the item it closed (`*aaa)(cn>=b)`); a composition opened anywhere
  (`(|(`, `(&(`, `(!(`); a value that starts by closing an item after a wildcard (`*)`);
- 1: any presence test in parentheses (`(mail=*)`); two items closed in a row (`))`).

So `*)(uid=*))(|(uid=*` scores 2 + 1 + 3 + …, `*(|(mail=*))` 2 + 1 + 1, `john)(sn~=smith` 2 + 1,
`1) apples (qty=2)` 2, `f(x)(y=2)` 0 (it closes only what it opened), `John (Smith)` 0. Overlong UTF-8
adds 1. A value that closes nothing it did not open breaks out of nothing and is not scored, unless it opens
with a wildcard (`*(|(mail=*))`: a value for the application's item, then filter syntax): a whole
filter (`(&(objectCategory=computer)(cn=x*))`, which directory tools send as a value) or text about one.
One compiled expression per signal and one pass over the parentheses, over at most `MAX_SCORED_VALUE`
characters, and none runs on a value without a parenthesis or a star (`needs_check`).
"""

from __future__ import annotations

import re

THRESHOLD = 3
MAX_SCORED_VALUE = 4096

_ATTR = r"[a-z][\w.;-]{0,60}"  # an attribute description (`cn`, `userPassword`, `mail;lang-en`)
_SIGNALS: tuple[tuple[str, int, re.Pattern[str]], ...] = (
    # (an operator between the items, `)|(`, is how some filter builders join them)
    ("item closed, composition opened", 3, re.compile(r"\)\s*[|&!]?\s*\(+\s*[|&!]\s*(?:[()]|\Z)")),
    ("item closed, presence test opened", 3, re.compile(rf"\)\s*[|&!]?\s*\(+\s*{_ATTR}\s*=\s*\*", re.I)),
    ("objectClass presence test", 3, re.compile(r"\bobjectclass\s*=\s*\*", re.I)),
    ("filter metacharacters only", 3, re.compile(r"\A(?=.*\*)(?=.*[|&])[\s*()|&!]{2,}\Z")),
    # a NUL after a close: a C-string filter builder stops there, so the application's rest is cut off
    # (`injection.ldap_value` adds a form that keeps the NUL; `%00` too: a NUL escaped twice)
    ("item closed, the rest cut off by a NUL", 3, re.compile(r"\)\s*(?:\x00|%00)")),
    ("composition opened", 2, re.compile(r"\(\s*[|&!]\s*\(")),
    ("wildcard then close at the start", 2, re.compile(r"\A\s*\*+\s*\)")),
    ("presence test", 1, re.compile(rf"\(\s*{_ATTR}\s*=\s*\*\s*\)", re.I)),
    ("two items closed", 1, re.compile(r"\)\s*\)")),
)
# an item or a composition opened: what a breakout opens after closing the application's item
_OPENED = re.compile(rf"\(\s*(?:[|&!]|{_ATTR}\s*[~<>:]?=)", re.I)
_OPERATOR_BETWEEN = re.compile(r"\)\s*[|&!]\s*\(")
BREAKOUT_WEIGHT = 2  # closes an item it did not open, then opens one
BREAKOUT_EVIDENCE_WEIGHT = 1  # each of: left open, an operator between, a wildcard in the closed item


def _unopened_close(text: str) -> int:
    """The index of the first `)` that closes more than `text` opened before it, or -1."""
    depth = 0
    for i, c in enumerate(text):
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth < 0:
                return i
    return -1


def _breakout(text: str, close: int) -> tuple[int, list[str]]:
    """The filter structure of a breakout: a `)` the value did not open (it closes the application's
    item) followed by an item or composition opened; with, each adding a point, the value ending inside
    an item (the application's own `)` closes it), an operator between the items, a wildcard in the item
    it closed (`*aaa)`). `close`: the index of the `)` the value did not open (-1: none)."""
    if close < 0:
        return 0, []
    rest = text[close + 1 :]
    if _OPENED.search(rest) is None:
        return 0, []
    total, names = BREAKOUT_WEIGHT, ["closes the application's item and opens one"]
    if rest.count("(") > rest.count(")"):
        total += BREAKOUT_EVIDENCE_WEIGHT
        names.append("left open for the application to close")
    if _OPERATOR_BETWEEN.search(text):
        total += BREAKOUT_EVIDENCE_WEIGHT
        names.append("an operator between items")
    if "*" in text[:close]:
        total += BREAKOUT_EVIDENCE_WEIGHT
        names.append("a wildcard in the closed item")
    return total, names


def needs_check(value: str) -> bool:
    """Whether `value` holds filter syntax at all (a parenthesis, or a star next to an operator)."""
    return "(" in value or ")" in value or "*|" in value or "*&" in value or "|*" in value or "&*" in value


def injected(value: str, evasion: int = 0) -> str | None:
    """Why `value` is an LDAP injection ("signal + signal"), or None. `evasion`: the weight of evasion
    evidence the value was sent with (overlong UTF-8), added once some signal fired."""
    text = value[:MAX_SCORED_VALUE]
    if not needs_check(text):
        return None
    close = _unopened_close(text)
    if close < 0 and not text.lstrip().startswith("*"):
        return None  # it closes nothing it did not open: a whole filter, or text about one
    total, names = _breakout(text, close)
    if evasion:
        total += evasion
        names.append("overlong UTF-8")
    if total >= THRESHOLD:
        return " + ".join(names)
    for name, weight, pattern in _SIGNALS:
        if pattern.search(text):
            total += weight
            names.append(name)
            if total >= THRESHOLD:
                return " + ".join(names)
    return None
