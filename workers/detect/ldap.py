"""LDAP injection in one request value, scored on the filter grammar (RFC 4515).

An application that splices a value into a search filter (`(&(uid=$user)(userPassword=$pass))`) runs
whatever filter syntax the value brings: it closes the application's item and opens items of its own
(`*)(uid=*))(|(uid=*`), turns the filter into one that is always true (`admin)(&)`), or lists every
entry (`*(|(objectclass=*))`). Parentheses and stars are common in text (`John (Smith)`, `f(x)(y)`,
`search term*`), so a value is scored and is an injection when its distinct signals reach `THRESHOLD`:

- 3: an item closed and a composition opened (`)(|(`, `)(&(`, `)(!(`, `)(&)`); a closed item followed by
  a presence test (`)(cn=*`); a presence test on `objectClass` (`objectclass=*`: every entry); a value
  made only of filter metacharacters with a star and an operator (`*|`, `*)(&`);
- 2: a composition opened anywhere (`(|(`, `(&(`, `(!(`); a closed item followed by an item
  (`)(uid=`); a value that starts by closing an item after a wildcard (`*)`);
- 1: any presence test in parentheses (`(mail=*)`); two items closed in a row (`))`).

So `*)(uid=*))(|(uid=*` scores 3 + 2 + 1 + …, `*(|(mail=*))` 2 + 1 + 1, `f(x)(y=2)` 2, `John (Smith)` 0.
One compiled expression per signal, over at most `MAX_SCORED_VALUE` characters, and none runs on a
value without a parenthesis or a star (`needs_check`).
"""

from __future__ import annotations

import re

THRESHOLD = 3
MAX_SCORED_VALUE = 4096

_ATTR = r"[a-z][\w.;-]{0,60}"  # an attribute description (`cn`, `userPassword`, `mail;lang-en`)
_SIGNALS: tuple[tuple[str, int, re.Pattern[str]], ...] = (
    ("item closed, composition opened", 3, re.compile(r"\)\s*\(+\s*[|&!]\s*[()]")),
    ("item closed, presence test opened", 3, re.compile(rf"\)\s*\(+\s*{_ATTR}\s*=\s*\*", re.I)),
    ("objectClass presence test", 3, re.compile(r"\bobjectclass\s*=\s*\*", re.I)),
    ("filter metacharacters only", 3, re.compile(r"\A(?=.*\*)(?=.*[|&])[\s*()|&!]{2,}\Z")),
    ("composition opened", 2, re.compile(r"\(\s*[|&!]\s*\(")),
    ("item closed, item opened", 2, re.compile(rf"\)\s*\(+\s*{_ATTR}\s*[~<>]?=", re.I)),
    ("wildcard then close at the start", 2, re.compile(r"\A\s*\*+\s*\)")),
    ("presence test", 1, re.compile(rf"\(\s*{_ATTR}\s*=\s*\*\s*\)", re.I)),
    ("two items closed", 1, re.compile(r"\)\s*\)")),
)


def needs_check(value: str) -> bool:
    """Whether `value` holds filter syntax at all (a parenthesis, or a star next to an operator)."""
    return "(" in value or ")" in value or "*|" in value or "*&" in value or "|*" in value or "&*" in value


def injected(value: str, evasion: int = 0) -> str | None:
    """Why `value` is an LDAP injection ("signal + signal"), or None. `evasion`: the weight of evasion
    evidence the value was sent with (overlong UTF-8), added once some signal fired."""
    text = value[:MAX_SCORED_VALUE]
    if not needs_check(text):
        return None
    total = evasion
    names = ["overlong UTF-8"] if evasion else []
    for name, weight, pattern in _SIGNALS:
        if pattern.search(text):
            total += weight
            names.append(name)
            if total >= THRESHOLD:
                return " + ".join(names)
    return None
