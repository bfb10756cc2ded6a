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
  (a Markdown code span in text, ``run `ls -la` first``, ``(`whoami`)``, or a fence), -2 when a sentence
  goes on after its closing backtick; a backtick that closes a span, or that none closes, opens nothing; a
  separator 1 when it opens the value or follows a quote, a number or an address (breaking out of a
  quoted or numeric argument: `1;id`, `127.0.0.1|id`), else 0;
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
    " gawk sed ifup arp traceroute tracert nproc lsb_release env"
    # PowerShell's download-and-run cmdlets and their aliases
    " iwr irm iex invoke-webrequest invoke-restmethod invoke-expression start-bitstransfer"
).split()
# Command names that are English words or field names too: they count only with shell arguments or in
# a breakout position.
_COMMON = (
    "id cat tac head tail more less echo printf ping sleep timeout kill killall rm cp mv touch find type cd"
    " dir net sh bash ps top who w uptime ssh scp ftp host date reboot halt shutdown"
    " whois dig route perl python python3 php ruby lua node curl dash hostname passwd pwd"
    # system and file tools an attacker reads, packs or runs with (names of other things too: a tag, a
    # product, a word), counted like the words above
    " gunzip gzip zcat bzcat xzcat unxz zstdcat tar bsdtar rev tee xargs dd od hexdump strings stat file"
    " lsof pgrep pkill chroot nsenter mount umount dmesg journalctl systemctl service su runuser setsid"
    " screen tmux vi vim gdb strace ltrace openssl rsync sftp sshpass mysql psql sqlite3 redis-cli mongo"
    " docker kubectl crictl iptables modprobe insmod mknod base32 md5sum sha256sum ldd objdump readelf"
    " visudo chpasswd gcc make pip pip3 pipx"
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
_POSIX_ONLY = _SUBSTITUTIONS | {"`"}  # separators only POSIX shells read, which tell `ID` from `id`
# what an argument list shows that shell use has and prose has not
_SHELL_ARGUMENT = re.compile(
    r"(?:^|\s)-{1,2}[a-z]"  # an option
    r"|(?:^|[\s=,])(?:/[\w.-]|~/|\.\./|[a-z]:[\\/])"  # an absolute, home, parent or Windows path
    r"|[a-z][a-z0-9+.-]{1,10}://"  # a URL
    r"|%[a-z_]\w{1,30}%"  # a Windows variable
    r"|\b\d{1,3}(?:\.\d{1,3}){3}\b"  # an IPv4 address
    r"|[<>]",  # a redirection
    re.I,
)
# two words of prose opening the arguments (`more information about …`, `cat lovers and …`): the path or
# URL a sentence goes on to name is no argument of the command its first word spells
_PROSE_FIRST = re.compile(r"\s*[a-z]{2,}\s+[a-z]{2,}(?:[\s,.]|\Z)", re.I)
_PROSE_WORDS = re.compile(r"[a-z]{2,} [a-z]{2,}[,.]?", re.I)  # (two tokens of a split argument list)
# a command word in mixed case: neither lower, upper nor capitalised (`lS`, `wHo`), or one capital letter
_MIXED_CASE = re.compile(r"[A-Z]|[a-z]+[A-Z][A-Za-z]*|[A-Z]+[a-z]+[A-Z][A-Za-z]*|[A-Z]{2,}[a-z][A-Za-z]*")
_COMMENT = re.compile(r"(?:^|\s)#.*\Z", re.S)
_NUMBERS_ONLY = re.compile(r"\s*\d+(?:\.\d+)?(?:\s+\d+(?:\.\d+)?)*\s*\Z")
BREAKOUT_LOOKBACK = 48  # characters before a separator read to tell a breakout (an address fits)
# `${IFS}`, `$IFS$9`, `$IFS`: the shell's field separator written where a space would be seen
_IFS = re.compile(r"\$\{IFS\}|\$IFS(?:\$\d)?(?![A-Za-z0-9_])")
# runs of quotes, backslashes and empty expansions, which the shell drops inside a command name
# (`w'h'o'am'i`, `c\at`, `wh""oami`, `c$@at`, `c${unset}url`): `_unsplit`
_MARK_START = re.compile(r"['\"\\$]")  # (a one-class scan finds where a run may start, fast)
_SPLIT_MARKS = re.compile(r"(?:''|\"\"|['\"\\]|\$[@*]|\$\{[a-z_]\w{0,15}\})+", re.I)
# `${PATH%%u*}`, `${HOME:0:1}`: a variable whose value starts with `/` cut to that character, a slash
# written so that no `/` is seen
_SLASH_VARIABLE = re.compile(r"\$\{(?:PATH|HOME|PWD|OLDPWD|SHELL)(?::0:1|%%?[^}]{1,20})\}")
# arithmetic expansion of numbers (`$((31+64))`): what an injection echoes to see its command ran (the
# shell prints the sum, the value's text does not); no language but the shell's writes it
_ARITHMETIC = re.compile(
    r"\$\(\(\s*\d+(?:\s*[-+*/%]\s*\d+)+\s*\)\)"
    r"|(?:`|\$\()\s*expr\s+\d+(?:\s*[-+*/%]\s*\d+)+\s*[`)]"  # (the same with `expr`, `` `expr 3 + 4` ``)
)
# characters a value needs for any occurrence (`needs_check`)
_NEEDED = re.compile(r"[;|&`\n\r$<>](?:(?<=[$<>])\(|(?<![$<>]))")  # (one class first: a fast scan)
# ... for a command line of its own (an option's dash, a path's slash, a redirection), a globbed path, a
# FOR loop's or a function definition's parenthesis. Values without any (a word, a name, most prose) are
# never scored as command lines
_LINE_HINT = re.compile(r"[-/\\<>~\[?*({\u00ad]")
# ... and beside it a space (a command and its arguments), a redirection, a glob or a parenthesis
_LINE_SPACING = re.compile(r"[\s<>\[?*($]")  # (`$`: `${IFS}`)

# A value that is a command line of its own (`cat /etc/passwd`, `time sh -c whoami`, `$SHELL -c …`): an
# application that runs a value (`sh -c "$code"`, `eval`) runs it without any separator. Wrappers that
# run the command after them come first.
_WRAPPERS = frozenset("time nohup strace ltrace nice exec timeout".split())  # (`timeout` takes seconds)
_WRAPPER = "|".join(sorted(_WRAPPERS - {"timeout"})) + r"|timeout[ \t]+\d+"
_LINE = re.compile(
    rf"\s*['\"]?(?P<wrap>(?:(?:{_WRAPPER})[ \t]+)*)['\"]?"
    r"(?P<word>\$\{?shell\}?|/(?:usr/(?:local/)?)?s?bin/[\w.-]{1,30}|[a-z][a-z0-9_.+-]{0,30})['\"]?"
    r"(?=[ \t<>]|\Z)(?P<args>[^;|&\n\r`]{0,200})",
    re.I,
)
_WORD = re.compile(r"[a-z][a-z0-9_.+-]*")
_FIRST_WORD = re.compile(r"\s*([\w$/{}.+'\"\\@*-]{1,40})")
_NAME_MARKS = re.compile(r"['\"\\]|\$[@*]|\$\{[a-z_]\w{0,15}\}(?=\w)", re.I)
# what a command line's first argument other than options must be to count: a path under a system
# directory, a home or parent path, a Windows path, share or %variable%, a URL or an IPv4 address
_LINE_TARGET = re.compile(
    r"['\"]?(?:/(?:etc|bin|sbin|usr|var|proc|dev|tmp|home|root|opt|lib|lib64|boot|sys|run|mnt|srv)(?:/|\Z)"
    r"|~/|\.\./|[a-z]:[\\/]|\\\\\w|[a-z][a-z0-9+.-]{1,10}://|\d{1,3}(?:\.\d{1,3}){3}\b|%[a-z_]\w{1,30}%)",
    re.I,
)
_OPTION = re.compile(r"-{1,2}[a-z][\w-]*\Z|/[a-z]\Z", re.I)
# an interpreter given code to run (`sh -c …`, `perl -e …`, `cmd /c …`, `powershell -enc …`)
_INTERPRETERS = frozenset(
    "sh bash dash zsh ksh csh tcsh ash busybox python python2 python3 perl ruby php node lua powershell"
    " pwsh cmd cmd.exe".split()
)
_CODE_OPTION = re.compile(r"\s*(?:-c|-e|-r|/c|/k|-command|-encodedcommand|-enc|-ec)\s+\S", re.I)
_SHELLS = frozenset("sh bash dash zsh ksh ash csh tcsh".split())
PIPED_SHELL_WEIGHT = 2  # a shell after a pipe (`… | sh`): what came before runs as a script
# a redirection a shell reads and prose does not write (`->`, `a > b` are prose): a here-string, a file
# descriptor's (`2>`, `>&`), or one to a path or a variable
# (an HTML end tag, `</li>`, is no redirection from a file; a descriptor is a number of its own, not the
# end of a version or an anchor: `#2016-0702>`)
_REDIRECTION = re.compile(
    r"<<<|(?<![\w.#-])\d>|>&|(?<![-=<>])(?!</[a-z][a-z0-9-]{0,20}>)[<>]{1,2}\s*(?:/|~/|\$|&)", re.I
)
WRAPPER_WEIGHT = 1  # `time`, `nohup`, `strace` … before a command: nobody writes it so but to run it

# A glob standing for a system file or program (`/etc/pa[s]swd`, `/???/??t`, `/bi[n]/bash`): the shell
# expands it to the path a filter looks for; nobody writes one but to get past such a filter.
_GLOB_TOKEN = re.compile(r"(?<![\w:/.])(?:/[\w.\[\]?*!^-]{1,40}){2,6}")
_GLOB_CHAR = re.compile(r"[\[?*]")
_STARS_SEGMENT = re.compile(r"/\*+(?:/|\Z)")
_BRACKET = re.compile(r"\[(!|\^)?([^\]]{1,20})\]")
_BRACKET_SLASHES = re.compile(r"\[[^\]/]{0,20}/[^\]]{0,20}\]")
MAX_GLOB_TOKENS = 4  # globbed tokens tried per value (each matched against `_SYSTEM_FILES` and programs)
_SYSTEM_FILES = {
    "etc": "passwd shadow group hosts hostname issue sudoers crontab os-release resolv.conf".split(),
    "proc/self": "environ cmdline maps status".split(),
    "proc": "version cpuinfo".split(),
    "dev": ["tcp", "udp"],
}

# A cmd.exe FOR loop (`for /f "tokens=*" %a in ('dir /b') do …`): batch syntax and nothing else
_CMD_FOR = re.compile(
    r"\bfor(?:[ \t]+/[dlrf](?:[ \t]+(?:\"[^\"]{0,80}\"|[a-z]:\\\S*))?)*[ \t]+%%?[^\s%]{1,30}[ \t]+in[ \t]*"
    r"\([^)]{0,200}\)[ \t]*do\b",
    re.I,
)
# A PHP call that runs a command or shows the server's setup, after what ends an expression or a string
# (`'.system('id').'`, `;passthru($c)`, `{${phpinfo()}}`): code injection reaching the shell. PHP's names
# are matched in lower case and glued to their parenthesis, as tools send them (`System (OS)` is prose).
# A command is given to run: a call with nothing or a number in it is a name in text (`child_process.exec()`,
# `systemd.exec(5)`), and so is a method's (a dot after a name, not PHP's concatenation after a string)
_CODE_RUNS_COMMAND = re.compile(
    r"(?:\A|(?<![\w$\]])[.]|[;'\"})(]|\{\$\{|<\?(?:php\b|=)?)\s*"
    r"(?:(?:system|passthru|shell_exec|exec|popen|proc_open|pcntl_exec)\((?!\s*\d*\s*\))|phpinfo\()"
)
_CODE_CALL_HINT = re.compile(r"(?:system|exec|passthru|popen|proc_open|phpinfo)\(")  # (a literal scan)
# A call spliced into a string by concatenation (`".base64_decode("aWQ=")."`, `'.md5(1).'`): the value
# closes the application's string, appends what the call returns, and reopens it (PHP, Perl)
_CONCATENATED_CALL = re.compile(r"(['\"])\s*\.\s*[a-z_]\w{0,30}\s*\([^()\n]{0,200}\)\s*\.\s*\1", re.I)
# PHP's ini directives as the arguments of a PHP-CGI run whose query is its command line (CVE-2012-1823,
# CVE-2024-4577 with a soft hyphen): `?-d allow_url_include=1 -d auto_prepend_file=php://input`
_PHP_CGI_ARGUMENTS = re.compile(
    r"\A\s*[-\u00ad]d\s*(?:allow_url_include|auto_prepend_file|auto_append_file|safe_mode|open_basedir"
    r"|disable_functions|cgi\.force_redirect|register_globals)\s*=",
    re.I,
)
# A statement of code after what ends an expression or a string, the application's own code after it
# commented out (`';exit(md5('x'));//`, `".die(id());#`): how scanners probe a value spliced into
# `eval()`; no field value ends a call statement with a comment
_CODE_STATEMENT = re.compile(
    r"(?:\A\w{0,30}\s*;|['\"]\s*[.;])\s*[a-z_]\w{0,30}\s*\((?:[^()\n]|\([^()\n]{0,100}\)){0,200}\)\s*;\s*(?://|#)\s*\Z",
    re.I,
)
# A program's path ending the value with a pipe (`../../usr/bin/env|`): Perl's two-argument open()
# runs a file name that ends so and reads its output
_PIPED_OPEN = re.compile(r"(?:\A|/)(?:usr/)?(?:local/)?s?bin/[\w.+-]{1,30}\s*\|\s*\Z")
# A data: URL of PHP code (`data:;base64,PD9waHAg…`, `data://text/plain,<?php …`): an include of a
# URL runs it (PHP's allow_url_include)
_DATA_PHP = re.compile(
    r"data:(?://)?[\w/+.-]{0,40}(?:;[\w=.-]{0,40}){0,4}(?:;base64,\s*PD9|,\s*<\?(?:php|=))", re.I
)
# a server-side include directive, in a page the server parses: one that runs a command (`<!--#exec
# cmd="id"-->`), and those that read a file or the server's variables into the page (`<!--#include
# virtual="/etc/passwd"-->`, `<!--#echo var="DOCUMENT_ROOT"-->`, `<!--#printenv-->`), which probe for it
_SSI_EXEC = re.compile(r"<!--\s*#\s*exec\s+(?:cmd|cgi)\s*=", re.I)
_SSI_DIRECTIVE = re.compile(
    r"<!--\s*#\s*(?:(?:include|fsize|flastmod)\s+(?:virtual|file)|echo\s+(?:var|encoding)|set\s+var"
    r"|config\s+(?:timefmt|sizefmt|errmsg))\s*=|<!--\s*#\s*printenv\s*-->",
    re.I,
)
# bash's network devices (`>& /dev/tcp/198.18.0.9/4444`): a reverse shell; no file has such a path
_NETWORK_DEVICE = re.compile(r"/dev/(?:tcp|udp)/[\w.:-]{1,64}/\d{1,5}\b", re.I)
# A cmd.exe IF on a file, an exit code or a %variable% compared (`IF EXIST C:\x CMD`, `IF %ERRORLEVEL%
# NEQ 0 …`, `if "%v%"==%%A …`): prose has `if exist…` and `if defined…` hardly ever followed by a file or a number
_CMD_IF_TEST = re.compile(
    r"\s*if(?:[ \t]+/i)?(?:[ \t]+not)?[ \t]+"
    r"(?:exist[ \t]+\S+|errorlevel[ \t]+\d+|cmdextversion[ \t]+\d+)[ \t]+\S",
    re.I,
)
_CMD_IF_COMPARE = re.compile(
    r"\bif[ \t]+(?:/i[ \t]+)?(?:not[ \t]+)?\"?%\w{1,30}%\"?(?:[ \t]+(?:equ|neq|lss|leq|gtr|geq)[ \t]|[ \t]*==)",
    re.I,
)
# A function definition opening a value: how bash imports a function from an environment variable, the
# way CGI passes headers (Shellshock, CVE-2014-6271: `() { :; }; /bin/id`)
_FUNCTION_IMPORT = re.compile(r"\s*\(\s*\)\s*\{")


def needs_check(value: str) -> bool:
    """Whether `value` holds a separator or substitution, or may be a command line of its own (most
    values are neither: no scoring)."""
    return _NEEDED.search(value) is not None or _may_be_a_line(value)


def _may_be_a_line(value: str) -> bool:
    """Whether `value` has an argument's punctuation and a space (or what stands for one) beside it."""
    return _LINE_HINT.search(value) is not None and _LINE_SPACING.search(value) is not None


_PROGRAM_DIRS = ("bin", "sbin", "usr/bin", "usr/sbin", "usr/local/bin")
_PROGRAMS = frozenset({*_WEIGHT, *_INTERPRETERS})


def _glob_regex(glob: str) -> re.Pattern[str] | None:
    """The paths a shell glob of one path (segments of `*`, `?` and bracket expressions) expands to, as
    a regular expression; None when a bracket expression is not closed."""
    out: list[str] = []
    i = 0
    while i < len(glob):
        ch = glob[i]
        if ch == "[":
            m = _BRACKET.match(glob, i)
            if m is None:
                return None
            # the set as written (ranges `a-z` kept), with what a Python class reads otherwise escaped
            chars = re.sub(r"[\\\[\]^]", r"\\\g<0>", m.group(2).replace("/", ""))
            out.append(f"[{'^/' if m.group(1) else ''}{chars}]" if chars else "")
            i = m.end()
            continue
        out.append("[^/]" if ch == "?" else "[^/]*" if ch == "*" else re.escape(ch))
        i += 1
    try:
        return re.compile("".join(out))
    except re.error:  # a range out of order (`[z-a]`): the shell matches nothing with it either
        return None


def _globbed_system_path(text: str) -> str | None:
    """The system file or program a glob in `text` stands for (`/etc/pa[s]swd` is `/etc/passwd`), or
    None."""
    if "[" in text:  # slashes inside a bracket expression are dropped by the shell (`/[e//]tc`)
        text = _BRACKET_SLASHES.sub(lambda m: m.group().replace("/", ""), text)
    tried = 0
    for m in _GLOB_TOKEN.finditer(text):
        token = m.group()
        # (a segment of stars alone stands for no name: `/**/` is an SQL comment, `/etc/*` a listing)
        if not _GLOB_CHAR.search(token) or _STARS_SEGMENT.search(token):
            continue
        tried += 1
        if tried > MAX_GLOB_TOKENS:
            break
        directory, _, name = token[1:].rpartition("/")
        dir_rx, name_rx = _glob_regex(directory), _glob_regex(name)
        if dir_rx is None or name_rx is None:
            continue
        literal = not _GLOB_CHAR.search(name)
        for where, names in (*_SYSTEM_FILES.items(), *((d, _PROGRAMS) for d in _PROGRAM_DIRS)):
            if dir_rx.fullmatch(where):
                if literal:
                    found = name if name in names else None
                else:
                    found = next((n for n in names if name_rx.fullmatch(n)), None)
                if found is not None:
                    return f"/{where}/{found}"
    return None


def _line_weight(m: re.Match[str]) -> tuple[int, str]:
    """The score of a value that opens with a command (`_LINE`), and the command word: its weight, a
    wrapper's, and its arguments' (`_line_argument_weight`)."""
    word = m.group("word").lower()
    if word.strip("${}") == "shell":
        word = "sh"
    name = word.rpartition("/")[2]
    weight = 2 if word.startswith("/") else _WEIGHT.get(word)
    if weight is None or (weight == 1 and m.group("word").istitle() and not m.group("wrap")):
        return 0, word  # (a capitalised English word opens a sentence: `Make sure …`, `More info at …`)
    args = m.group("args")
    if "#" in args:
        args = _COMMENT.sub("", args)
    total = weight + (WRAPPER_WEIGHT if m.group("wrap") else 0) + _line_argument_weight(args, name)
    return total, word


def _line_argument_weight(args: str, name: str) -> int:
    """2 for a redirection, code given to an interpreter, or a first argument other than options that is
    a system path, a URL or an address (`cat /etc/passwd`); 1 for options (`ls -la`, `python -m x`); 0
    for words first (`cat lovers`, `more info at https://…`: prose that opens with a command's name, a
    tool's subcommand: `kubectl get pods -n x`)."""
    if _REDIRECTION.search(args) or (name in _INTERPRETERS and _CODE_OPTION.match(args)):
        return 2
    options = 0
    tokens = args.split()
    for i, token in enumerate(tokens):
        if _OPTION.match(token):
            options += 1
            continue
        if options and token.isdigit():  # an option's number (`ping -i 30 …`)
            continue
        if _LINE_TARGET.match(token):
            return 2
        # options then words: a sentence about the command (`grep -P can now use …`), not a run of it
        return 1 if options and not _PROSE_WORDS.fullmatch(" ".join(tokens[i : i + 2])) else 0
    return 1 if options else 0


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
    if _PROSE_FIRST.match(args):  # words first (`; more information at https://…`): a redirection only
        return 2 if _REDIRECTION.search(args) else 0
    if _SHELL_ARGUMENT.search(args) or _NUMBERS_ONLY.match(args):
        return 2
    return 0


def _reach_weight(text: str, start: int, sep: str) -> int:
    if sep in _SUBSTITUTIONS:
        return 2
    if sep == "`":
        # glued to the value (`x`id``) or opening it: a substitution; after a space or punctuation: a
        # Markdown code span in text (`run `ls -la` first`, `(`whoami`)`) or fence, a point off
        close = text.find("`", start + 1)
        if close > 0 and _PROSE_FIRST.match(text, close + 1):
            return -2  # a sentence goes on after it: a Markdown code span (`` `grep -E` instead of … ``)
        if start == 0:
            return 1
        before = text[start - 1]
        return 1 if before.isalnum() or before in "'\"." else -1  # (`.`: code's concatenation, `'.`id`.'`)
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
    if from_start and len(before) == 1 and before.isalnum():  # a throwaway argument (`a;id`, `x|id`)
        return True
    if before[-1] in "'\")":  # a quoted argument closed, or a parenthesised one (`a);id`)
        return True
    if not before[-1].isdigit():
        return False
    token = before.rstrip("0123456789.:")
    return (from_start or len(token) > 0) and (not token or not (token[-1].isalnum() or token[-1] in "._"))


def _commands(text: str) -> Iterator[tuple[re.Match[str], str, int]]:
    """The occurrences of a command in `text`: the match, the command word in lower case and its weight.
    (Each takes two characters at least, so `MAX_SCORED_VALUE` bounds their number.)"""
    for m in _OCCURRENCE.finditer(text):
        word = m.group("word")
        if _MIXED_CASE.fullmatch(word):
            continue  # no shell finds `lS` or `vI`: a generated password's letters
        if word.isupper() and m.group("sep") in _POSIX_ONLY:
            continue  # a POSIX shell finds no `CP`: `$(CP)` and `` `MAKE` `` are make's variables
        if m.group("sep") == "`" and (text.count("`", 0, m.start()) % 2 or "`" not in text[m.end() :]):
            # a backtick that closes a substitution (or a Markdown code span) opens none, and one no
            # backtick closes runs nothing (the shell reads to the closing one: texinfo's `quote')
            continue
        low = word.lower()
        weight = _WEIGHT.get(low)
        if weight is not None and m.group("word") in _SHELLS and m.group("sep") == "|":
            weight = PIPED_SHELL_WEIGHT
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
    separated = _NEEDED.search(text) is not None
    if not separated and not _may_be_a_line(text):
        return None
    sure = _unmistakable(text)
    if sure is not None:
        return sure
    text, spelling, notes = _spellings(text, evasion)
    if "/" in text and _GLOB_CHAR.search(text):
        path = _globbed_system_path(text)
        if path is not None:
            return " + ".join([f"a glob standing for {path!r}", *notes])
    if not separated and not _opens_with_a_command(text):
        return None  # no separator and no command first: nothing to score (a URL, prose with a dash)
    best, why = _scored(text)
    unsplit = _unsplit(text) if ("'" in text or '"' in text or "\\" in text or "$" in text) else None
    if unsplit is not None and _joins_a_command(text, unsplit):
        unsplit_best, unsplit_why = _scored(unsplit)
        if unsplit_best > best:
            best, why = unsplit_best, unsplit_why
            spelling += 1
            notes.append("command name split by quotes or empty expansions")
    if best and best + spelling >= THRESHOLD:
        return " + ".join([why, *notes])
    return None


def _spellings(text: str, evasion: int) -> tuple[str, int, list[str]]:
    """`text` with `$IFS` read as a space and a variable cut to a slash as `/`; the weight of the
    spellings only a shell reads (these, an arithmetic expansion, `evasion`) and their names."""
    spelling = evasion
    notes: list[str] = ["overlong UTF-8"] if evasion else []
    if "IFS" in text and _IFS.search(text):
        text = _IFS.sub(" ", text)
        spelling += 2
        notes.append("$IFS as a space")
    if "${" in text and _SLASH_VARIABLE.search(text):
        text = _SLASH_VARIABLE.sub("/", text)
        spelling += 2
        notes.append("a variable cut to a slash")
    if ("$((" in text or "expr" in text) and _ARITHMETIC.search(text):
        spelling += 2
        notes.append("arithmetic expansion")
    return text, spelling, notes


def _joins_a_command(text: str, unsplit: str) -> bool:
    """Whether dropping the marks made a word that `text` did not have (a command's name, or a program
    outside the lists: `|s'e't /a …`); `don't` → `dont` is one too, `'ab'||'cd'` makes none."""
    return not set(_WORD.findall(unsplit.lower())).issubset(_WORD.findall(text.lower()))


def _opens_with_a_command(text: str) -> bool:
    """Whether `text`'s first word, quotes and empty expansions dropped, is a command, a wrapper, a path
    or a variable (`_LINE` looks further)."""
    m = _FIRST_WORD.match(text)
    if m is None:
        return False
    word = m.group(1)
    if "'" in word or '"' in word or "\\" in word or "$" in word:
        word = _NAME_MARKS.sub("", word)
    word = word.lower()
    return word in _WEIGHT or word in _WRAPPERS or word.startswith(("/", "$"))


def _unsplit(text: str) -> str | None:
    """`text` with the marks of a split name dropped (quotes, backslashes or empty expansions before a
    letter, after a letter or opening a word: `w'h'o'am'i`, `$@ec$@ho`, `''ec''ho`), or None when it has
    none. (Read from the marks, which are few: a regular expression with look-behinds would test every
    position.)"""
    kept: list[str] = []
    last = 0
    for first in _MARK_START.finditer(text):
        if first.start() < last:
            continue  # inside a run already dropped
        m = _SPLIT_MARKS.match(text, first.start())
        if m is None:
            continue
        start, end = m.span()
        if end >= len(text) or not _is_letter(text[end]):
            continue
        before = text[start - 1] if start else ""
        opens_a_word = not before or before in ";|&`(" or before.isspace()
        if _is_letter(before) or (opens_a_word and m.group() not in ("'", '"')):
            kept.append(text[last:start])
            last = end
    if not kept:
        return None
    kept.append(text[last:])
    return "".join(kept)


def _is_letter(char: str) -> bool:
    return char.isascii() and char.isalpha()


def _unmistakable(text: str) -> str | None:
    """Why `text` holds shell syntax that is an injection by itself (Shellshock, a cmd.exe FOR loop or
    IF, a PHP call that runs a command, a statement that ends the code or a call spliced into a string,
    PHP-CGI's arguments, a program's path piped from, a data: URL of PHP code, a server-side include's
    directive, bash's network device), or None."""
    if "(" in text:
        if _FUNCTION_IMPORT.match(text):
            return "a shell function definition opens the value (Shellshock)"
        loop = _CMD_FOR.search(text) if "%" in text else None
        if loop is not None:
            return f"a cmd.exe FOR loop {loop.group()[:32]!r}"
        call = _CODE_RUNS_COMMAND.search(text) if _CODE_CALL_HINT.search(text) else None
        if call is not None:
            return f"code that runs a command {call.group().strip()[:24]!r}"
        if text.rstrip().endswith(("//", "#")) and _CODE_STATEMENT.search(text):
            return "a code statement after a breakout, the rest commented out"
        if ")." in text or ") ." in text:
            spliced = _CONCATENATED_CALL.search(text)
            if spliced is not None:
                return f"a call spliced into a string {spliced.group()[:32]!r}"
    if "=" in text and _PHP_CGI_ARGUMENTS.match(text):
        return "PHP-CGI arguments in the query (CVE-2012-1823)"
    if text.rstrip().endswith("|") and _PIPED_OPEN.search(text):
        return "a program's path piped from (Perl's open)"
    if "data:" in text and _DATA_PHP.search(text):
        return "a data: URL of PHP code"
    if "<!--" in text:
        if _SSI_EXEC.search(text):
            return "a server-side include runs a command"
        if _SSI_DIRECTIVE.search(text):
            return "a server-side include directive reads a file or the server's variables"
    if "/dev/" in text:
        device = _NETWORK_DEVICE.search(text)
        if device is not None:
            return f"a shell's network device {device.group()[:32]!r}"
    if (text.lstrip()[:2].lower() == "if" and _CMD_IF_TEST.match(text)) or (
        "%" in text and _CMD_IF_COMPARE.search(text)
    ):
        return f"a cmd.exe IF {text.strip()[:32]!r}"
    return None


def _scored(text: str) -> tuple[int, str]:
    """The best score of a command in `text` (after a separator or substitution, or opening the value
    as a command line of its own) and why."""
    best = 0
    why = ""
    if _NEEDED.search(text):
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
    line = _LINE.match(text) if _LINE_HINT.search(text) else None
    if line is not None:
        total, word = _line_weight(line)
        if total > best:
            best = total
            why = f"a command line {word!r}"
            if line.group("args").strip():
                why += f" {line.group('args').strip()[:24]!r}"
    return best, why
