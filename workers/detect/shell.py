"""OS command injection in one request value, scored on the shell's grammar.

An application that splices a value into a shell command line (`ping -c 1 $host`, `convert $file`) runs
whatever follows a command separator or a substitution in it. Such a value holds a *separator* (`;`, `|`,
`||`, `&`, `&&`, a newline) or a *substitution* (`$(…)`, `<(…)`, `>(…)`, a backtick) followed by a
*command word*: a program an attacker runs to learn, fetch, wait or connect (`id`, `whoami`, `uname`,
`cat`, `wget`, `nc`, `sleep`, …) or an absolute path to one (`/bin/sh`, `/usr/bin/id`). Prose has
separators and command words too (`Tom & Jerry; cat lovers`), so each occurrence is scored and a value
is an injection when one scores `THRESHOLD`:

- the command word: 2 for a name no prose uses (`whoami`, `uname`, `wget`, `/bin/sh`), 1 for one that
  is also an English word or a field name (`cat`, `id`, `sleep`, `ping`, `curl`, `hostname`), 0 for any
  other word whose first argument is an option or an absolute path (`;flock -u /`: it counts only where
  a breakout reaches it);
- how it is reached: a substitution `$(`, `<(`, `>(` 2 (never prose: jQuery's `$(document)` names no
  command); a backtick 1 when it opens the value or is glued to a word or a quote (`x`id``), else -1
  (a Markdown code span in text, ``run `ls -la` first``, ``(`whoami`)``, or a fence); a separator 1 when
  it opens the value or follows a quote, a number or an address (breaking out of a quoted or numeric
  argument: `1;id`, `127.0.0.1|id`), else 0;
- its arguments, up to the next separator: 2 for an option (`-la`), an absolute or Windows path
  (`/etc/passwd`, `C:\\`), a URL, an IP address, a redirection (`>`, `2>&1`), or numbers only (`sleep
  5`); 1 for no argument at all (`;id`), unless a parenthesis it did not open closes it (code's `(a &&
  hostname)`) or the same separator goes on to another name (a field list `ip|hostname|port`, a Markdown
  table row `| type | fields |`); 0 for words (`cat lovers`). A shell comment (` #…`) is no argument.

Spellings only a shell reads add to the value's score once: `${IFS}` or `$IFS` as a space (2), an
arithmetic expansion of numbers (`$((31+64))`, what an injection echoes to see it ran: 2), a command name
split by quotes or backslashes (`w'h'o'am'i`, `c\\at`: 1), overlong UTF-8 (1). A brace list
(`;{cat,/etc/passwd}`) is a command word with a comma before its argument. So `;id` scores 1 + 1 + 1,
`$(sleep 5)` 1 + 2 + 2, `Tom & Jerry; cat lovers` 1 + 0 + 0, `name|id` (a field list) 1 + 0 + 1. Every
check is one compiled regular expression over at most `MAX_SCORED_VALUE` characters, and none runs on a
value without a separator or substitution character (`needs_check`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

THRESHOLD = 3  # an occurrence (plus the value's shell spellings) scoring this much is an injection
MAX_SCORED_VALUE = 4096  # characters scored per value (injections start near a value's start)

# Command names no prose or form field uses: an attacker's reconnaissance, download, shells and
# interpreters' one-liners, Windows' administration tools.
_DISTINCT = (
    "whoami uname ifconfig ipconfig netstat nslookup wget ncat netcat nc zsh ksh csh tcsh powershell pwsh"
    " cmd.exe chmod chown mkfifo telnet base64 xxd systeminfo tasklist getent crontab useradd usermod sudo"
    " busybox socat nmap tftp certutil bitsadmin wmic rundll32 msiexec nohup printenv ls grep egrep awk"
    " gawk sed ifup arp traceroute tracert nproc lsb_release"
    # PowerShell's download-and-run cmdlets and their aliases
    " iwr irm iex invoke-webrequest invoke-restmethod invoke-expression start-bitstransfer"
).split()
# Command names that are English words or field names too: they count only with shell arguments or in
# a breakout position.
_COMMON = (
    "id cat tac head tail more less echo printf ping sleep timeout kill killall rm cp mv touch find type cd"
    " dir net sh bash env ps top who w uptime ssh scp ftp host date reboot halt shutdown"
    " whois dig route perl python python3 php ruby lua node curl dash hostname passwd pwd"
).split()
_WEIGHT = {**dict.fromkeys(_COMMON, 1), **dict.fromkeys(_DISTINCT, 2)}

# a separator or a substitution, optional space (or `{` of a brace list, a quote of a quoted command
# name), then a word: an absolute path to a program, or a name (looked up in the lists above: one
# regular expression for every name, so a value full of separators costs one scan)
_OCCURRENCE = re.compile(
    r"(?P<sep>[$<>]\(|`|\|\||&&|[;|&\n\r])[ \t{]*['\"]?"
    r"(?P<word>/(?:usr/(?:local/)?)?s?bin/[\w.-]{1,30}|[a-z][a-z0-9_.+-]{0,30})['\"]?(?=[\s;|&`)<>{,$]|\Z)"
    r"(?P<args>[^;|&\n\r`)]{0,200})",
    re.I,
)
# any other program name counts where its first argument is an option or an absolute path (`;flock -u
# /`), with no weight of its own: only where a breakout reaches it (`UNKNOWN_WORD_WEIGHT` + 1 + 2)
_FIRST_ARGUMENT_SHELLISH = re.compile(r"[ \t]+(?:-{1,2}[a-z]|/[\w.])", re.I)
UNKNOWN_WORD_WEIGHT = 0
# command and process substitutions: `$(id)`, `<(cat f)`, `>(tee log)`
_SUBSTITUTIONS = frozenset(("$(", "<(", ">("))
# what an argument list shows that shell use has and prose has not
_SHELL_ARGUMENT = re.compile(
    r"(?:^|\s)-{1,2}[a-z]"  # an option
    r"|(?:^|[\s=,])(?:/[\w.-]|~/|\.\./|[a-z]:\\)"  # an absolute, home, parent or Windows path
    r"|[a-z][a-z0-9+.-]{1,10}://"  # a URL
    r"|\b\d{1,3}(?:\.\d{1,3}){3}\b"  # an IPv4 address
    r"|[<>]",  # a redirection
    re.I,
)
_COMMENT = re.compile(r"(?:^|\s)#.*\Z", re.S)
_NUMBERS_ONLY = re.compile(r"\s*\d+(?:\.\d+)?(?:\s+\d+(?:\.\d+)?)*\s*\Z")
BREAKOUT_LOOKBACK = 48  # characters before a separator read to tell a breakout (an address fits)
# `${IFS}`, `$IFS$9`, `$IFS`: the shell's field separator written where a space would be seen
_IFS = re.compile(r"\$\{IFS\}|\$IFS(?:\$\d)?(?![A-Za-z0-9_])")
# quotes and backslashes inside a command name, which the shell drops (`w'h'o'am'i`, `c\at`, `wh""oami`)
_SPLIT_NAME = re.compile(r"(?<=[a-z])(?:''|\"\"|['\"\\])(?=[a-z])|(?<=[;|&`(\s])\\(?=[a-z])", re.I)
# arithmetic expansion of numbers (`$((31+64))`): what an injection echoes to see its command ran (the
# shell prints the sum, the value's text does not); no language but the shell's writes it
_ARITHMETIC = re.compile(r"\$\(\(\s*\d+(?:\s*[-+*/%]\s*\d+)+\s*\)\)")
# characters a value needs for any occurrence (`needs_check`)
_NEEDED = re.compile(r"[;|&`\n\r]|[$<>]\(")


def needs_check(value: str) -> bool:
    """Whether `value` holds a separator or substitution at all (most values do not: no scoring)."""
    return _NEEDED.search(value) is not None


def _argument_weight(args: str, sep: str, after: str) -> int:
    """`after`: the characters that follow the arguments."""
    if "#" in args:  # a shell comment (`; sleep 9 #` cuts what the application appends)
        args = _COMMENT.sub("", args)
    if not args.strip():
        # a command alone (`;id`, `$(whoami)`), unless a parenthesis it did not open closes it (code's
        # `(a && hostname)` names a variable) or the same separator goes on to another name (a list of
        # fields: `ip|hostname|port`)
        if sep not in _SUBSTITUTIONS and after.startswith(")"):
            return 0
        if after[:1] == sep[-1] and after[1:].lstrip()[:1].isalnum():
            return 0
        return 1
    if _SHELL_ARGUMENT.search(args) or _NUMBERS_ONLY.match(args):
        return 2
    return 0


def _reach_weight(text: str, start: int, sep: str) -> int:
    if sep in _SUBSTITUTIONS:
        return 2
    if sep == "`":
        # glued to the value (`x`id``) or opening it: a substitution; after a space or punctuation: a
        # Markdown code span in text (`run `ls -la` first`, `(`whoami`)`) or fence, a point off
        if start == 0:
            return 1
        before = text[start - 1]
        return 1 if before.isalnum() or before in "'\"" else -1
    return (
        1 if _breaks_out(text[max(0, start - BREAKOUT_LOOKBACK) : start], start <= BREAKOUT_LOOKBACK) else 0
    )


def _breaks_out(before: str, from_start: bool) -> bool:
    """Whether a separator after `before` breaks out of the argument the application expected: it
    follows the value's start, a quote, or a number or an address (a token of digits, dots and colons),
    optionally with spaces. `from_start`: `before` begins at the value's start."""
    before = before.rstrip()
    if not before:
        return from_start
    if before[-1] in "'\"":
        return True
    if not before[-1].isdigit():
        return False
    token = before.rstrip("0123456789.:")
    return (from_start or len(token) > 0) and (not token or not (token[-1].isalnum() or token[-1] in "._"))


def _commands(text: str) -> Iterator[tuple[re.Match[str], str, int]]:
    """The occurrences of a command in `text`: the match, the command word in lower case and its weight.
    (Each takes two characters at least, so `MAX_SCORED_VALUE` bounds their number.)"""
    for m in _OCCURRENCE.finditer(text):
        low = m.group("word").lower()
        weight = _WEIGHT.get(low)
        if weight is None:
            if low.startswith("/"):
                weight = 2  # an absolute path to a program counts as a distinct name
            elif len(low) > 1 and _FIRST_ARGUMENT_SHELLISH.match(m.group("args")):
                weight = UNKNOWN_WORD_WEIGHT
            else:
                continue  # a word of text after a separator
        yield m, low, weight


def injected(value: str, evasion: int = 0) -> str | None:
    """Why `value` is a command injection ("separator ';' + command 'id' + ..."), or None. `evasion`:
    the weight of evasion evidence the value was sent with (overlong UTF-8)."""
    text = value[:MAX_SCORED_VALUE]
    if not needs_check(text):
        return None
    spelling = evasion
    notes: list[str] = ["overlong UTF-8"] if evasion else []
    if "IFS" in text and _IFS.search(text):
        text = _IFS.sub(" ", text)
        spelling += 2
        notes.append("$IFS as a space")
    if "$((" in text and _ARITHMETIC.search(text):
        spelling += 2
        notes.append("arithmetic expansion")
    if ("'" in text or '"' in text or "\\" in text) and _SPLIT_NAME.search(text):
        unsplit = _SPLIT_NAME.sub("", text)
        if next(_commands(unsplit), None) is not None and next(_commands(text), None) is None:
            text = unsplit
            spelling += 1
            notes.append("command name split by quotes")
    best = 0
    why = ""
    for m, low, weight in _commands(text):
        sep, args = m.group("sep"), m.group("args")
        after = text[m.end() : m.end() + 8]
        total = weight + _reach_weight(text, m.start(), sep) + _argument_weight(args, sep, after)
        if total > best:
            best = total
            kind = "substitution" if sep in _SUBSTITUTIONS or sep == "`" else "separator"
            why = f"{kind} {sep.strip() or 'newline'!r} + command {low!r}"
            if args.strip():
                why += f" {args.strip()[:24]!r}"
    if best and best + spelling >= THRESHOLD:
        return " + ".join([why, *notes])
    return None
