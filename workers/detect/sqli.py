"""SQL injection in one request value, by scoring what libinjection leaves to context.

libinjection judges a value by the fingerprint of its first tokens in three quoting contexts; it misses
what tools send as a *fragment* to append to a parameter (`' ORDER BY 22-- `, `" AND 7300=7300 AND
'pKlZ'='pKlZ`, `UNION ALL SELECT 'INJ'||'ECT'||'XXX',2,3`, `);waitfor delay '0:0:5'--`, ` or 1=1`).
This module scores such a value instead of matching a growing list: each signal below is something an
ordinary value (a name, prose, a search, a JSON document) rarely has, and carries a weight; a value is
an injection when the weights of the distinct signals it shows reach `THRESHOLD`.

Signals are constructs of SQL's grammar, not payloads: a logical operator followed by a comparison of
literals (with casts and the JSON operators), a condition left open for the query to close, a quote
closed and the rest cut by a comment, a statement no value has, a comment used as a space. Weights: 3
for a construct that is SQL and nothing else; 2 for SQL that prose, tutorials or code also write (`ORDER
BY 3`, `and deleted = 0`, `create function f (`), which needs context; 1 for context: the value starts
by breaking out of a string or number (`'`, `"`, `)`, `1 `, `or …`), or ends in a comment. So
`' ORDER BY 22-- ` is 3 + 2 + 1 + 1, `Order by date, newest first` is 0, and `O'Brien -- the best` is
1 (a quote; the comment has words after it). docs/threats.md lists every signal with its weight.

libinjection's verdict counts as one signal of weight 3. Prose (at least eight words that are no SQL
keyword, or four with no more quotes, brackets and operators than words; and twice as many such words
as keywords) takes 2 off: libinjection reads `(24%) of people` as a function call,
and a sentence about SQL names its clauses; an injection inside prose still shows two signals. Program
code takes 2 off a libinjection verdict too (`if (a > b) return a;` reads as a function and a keyword).
Text a program made takes 3 off: a generated secret (`7*T29*Ux#T@@Fq5!`: a password manager's symbols
read as quotes, comments and `@@variables`) and a whole statement with bind parameters (a tracing
agent's `db.statement`, `SELECT * FROM users WHERE id = $1`); a tautology or a UNION in one still shows.

The checks run on the value as decoded by `workers.detect.decode.variants`, with SQL block comments
read as whitespace (`UNION/**/SELECT`), and each one is a single compiled regular expression (bounded
work per value) that runs only when the substrings it needs are in the value.
"""

from __future__ import annotations

import re
from typing import NamedTuple

THRESHOLD = 3  # a value scoring this much is an injection (see the weights above)
LIBINJECTION_WEIGHT = 3  # libinjection's verdict is one signal, enough alone ...
PROSE_WEIGHT = -2  # ... except in prose, where its fingerprints of words and brackets misfire
GENERATED_WEIGHT = -3  # ... and in text a program made: a bound statement, a generated secret
PROSE_WORDS = 8  # words (not SQL keywords) that make a value prose, when they are most of its words
SHORT_PROSE_WORDS = 4  # ... or at least this many, with no more SQL punctuation (`_SQL_SYMBOL`) than words
MAX_SCORED_VALUE = 4096  # characters scored per value (the rest of a longer value is not scored)

# a type cast after a literal (PostgreSQL `'{"a":1}'::jsonb`, `'1'::int`) keeps it a literal
_CAST = r"(?:\s*::\s*[a-z]\w{0,20})?"
# a PostgreSQL array constructor is a literal too (`array['a','b']`, compared by `?|`, `@>`, `&&`)
_ARRAY = r"array\s*\[[^\]]{0,80}\]"
_LIT = (
    r"(?:(?:'(?:[^']|''){0,40}'|\"(?:[^\"]|\"\"){0,40}\"|n'[^']{0,40}'|-?\d+(?:\.\d+)?|true|false|null"
    rf"|0x[0-9a-f]+|{_ARRAY}){_CAST})"
)
# the same, where the last quote may be left for the application to close
_LIT_OPEN = (
    r"(?:(?:'(?:[^']|''){0,40}(?:'|\Z)|\"(?:[^\"]|\"\"){0,40}(?:\"|\Z)|n'[^']{0,40}'|-?\d+(?:\.\d+)?"
    rf"|true|false|null|0x[0-9a-f]+|{_ARRAY}){_CAST})"
)
# equality, and the containment and JSON operators that compare two documents (`<@`, `@>`, `?|`, `->>`)
# (pattern matches, negated or not: `not regexp`, `not like`, `sounds like`)
_EQ = (
    r"(?:==?|<>|!=|<=>|<@|@>|\?[|&]?|->>?|#>>?|#-|@\?|@@|\bis\b|\bin\b"
    r"|(?:\bnot\s+|\bsounds\s+)?\b(?:like|rlike|regexp|glob)\b)"
)
_ORDER = r"(?:>=|<=|<|>|\bbetween\b)"
# a comparison operator of SQL or of the script languages NoSQL `$where` clauses take
_CMP = r"(?:={1,3}|!={0,2}|<>|<=>|<=|>=|<|>)"
# a logical operator of SQL, or its C form
_LOGIC = r"(?:\b(?:or|and|xor)\b|\|\||&&)"
# an operand: a column or a function call on one (`json_extract(doc, '$.a')`)
_OPERAND = r"(?:[a-z_]\w{0,30}(?:\s*\([^()]{0,80}\))?)"


# keywords an evasion splits with a comment (`SEL/**/ECT`): those that start or join a statement
_SPLIT_KEYWORDS = (
    "select union insert update delete drop from where order group having exec execute declare table into"
    " values sleep benchmark waitfor concat truncate alter create".split()
)


def _split_keywords(words: list[str]) -> str:
    """A pattern for any of `words` with one or more block comments between two of its letters."""
    comment = r"(?:/\*[^*]{0,40}\*/)+"
    splits = (f"{w[:i]}{comment}{w[i:]}" for w in words for i in range(1, len(w)))
    return r"(?<![a-z])(?:" + "|".join(splits) + r")(?![a-z])"


class Signal(NamedTuple):
    name: str
    weight: int
    pattern: re.Pattern[str]
    # lowercase substrings of which the pattern needs one: a C-speed test that spares the regular
    # expression on most values (empty: always run)
    needles: frozenset[str] = frozenset()
    # searched in the value as sent too (the other signals see block comments as spaces)
    raw: bool = False
    # lowercase substrings of which the pattern needs one as well (empty: no second condition)
    also: frozenset[str] = frozenset()


_QUOTES = frozenset(("'", '"', "`"))
_LOGIC_NEEDLES = frozenset(("or", "and", "||", "&&"))
# what a comparison (`_CMP` or `_EQ`) needs one of
_COMPARE_NEEDLES = frozenset(("=", "<", ">", "like", "glob", "regexp", " is", " in", "?", "@", "#", "-"))


SIGNALS: tuple[Signal, ...] = (
    # AND/OR/XOR (or HAVING, CASE WHEN) then an equality whose both sides are literals: `or 1=1`,
    # `AND 7300=7300`, `HAVING 2=2`, `or 'a'='a`
    # (the last quote left for the application to close); or the same word on both sides (`or a=a`).
    Signal(
        "boolean equality of literals",
        3,
        re.compile(
            rf"(?:\b(?:or|and|xor|not|having|when|where)\b|\|\||&&)\s*\(?\s*(?:{_LIT}\s*\)?\s*{_EQ}\s*\(?\s*{_LIT_OPEN}"
            rf"|(?P<w>[a-z_]\w{{0,20}})\s*(?:=|==|\blike\b|\bglob\b|\bregexp\b|\brlike\b)\s*(?P=w)\b)",
            re.I,
        ),
        frozenset(("or", "and", "not", "having", "when", "where", "||", "&&")),
        also=_COMPARE_NEEDLES,
    ),
    # ... or an ordering of literals: after OR a tautology probe (`or 2 > 1`, `or 2 between 1 and 3`);
    # after AND prose about numbers has it too (`5 < 6 and 7 > 3`)
    Signal(
        "OR with an ordering of literals",
        3,
        re.compile(rf"(?:\bor\b|\|\|)\s*\(?\s*{_LIT}\s*\)?\s*{_ORDER}\s*\(?\s*{_LIT_OPEN}", re.I),
        frozenset(("<", ">", "between")),
    ),
    Signal(
        "AND with an ordering of literals",
        2,
        re.compile(rf"(?:\b(?:and|xor)\b|&&)\s*\(?\s*{_LIT}\s*\)?\s*{_ORDER}\s*\(?\s*{_LIT_OPEN}", re.I),
        frozenset(("<", ">", "between")),
    ),
    # OR with a constant then a comment or a statement end: `or true--`, `' or 1 --`, `or 1/*`
    Signal(
        "constant truth after OR",
        3,
        re.compile(r"\bor\s+(?:(?:true|[1-9]\d*|'[^']+')\s*(?:--|#|/\*|;)|\(\s*exists\b)", re.I),
        frozenset(("or",)),
    ),
    # a condition whose right side is left for the application to close: `OR name = "`, `AND 6698=(`,
    # `||(null!=`: the value ends inside a comparison the query completes
    Signal(
        "condition left open",
        3,
        re.compile(
            rf"(?:{_LOGIC}|\b(?:having|where|when)\b|\bif\s*\()\s*\(?\s*(?:{_OPERAND}|{_LIT})\s*{_CMP}\s*['\"`(]?\s*\Z",
            re.I,
        ),
        frozenset(("or", "and", "||", "&&", "if", "having", "where", "when")),
        also=frozenset(("=", "<", ">")),
    ),
    # AND/OR then a column (or a call on one) compared to a literal: `and deleted = 0`, `&&(b=0)`; math
    # prose has it too (`x = 1 or y = 2`), so it needs context
    Signal(
        "condition on a column",
        2,
        re.compile(rf"{_LOGIC}\s*\(?\s*{_OPERAND}\s*(?:{_CMP}|{_EQ})\s*{_LIT}", re.I),
        _LOGIC_NEEDLES,
        also=_COMPARE_NEEDLES,
    ),
    # a quote (or bracket), then OR/AND and a true number: `'or'1`, `" and 1`, `) and 'true` (the
    # application adds the closing quote)
    Signal(
        "true literal after a quote and logic",
        2,
        re.compile(
            r"['\"`)]\s*(?:or|and|xor|\|\||&&)\s*['\"`]?\s*(?:[1-9]\d*|true)\b['\"`]?\s*(?:--|#|;|\Z)", re.I
        ),
        _LOGIC_NEEDLES,
        also=_QUOTES,
    ),
    # an escaped quote then logic: the backslash defeats escaping that doubles it (`\'and 1`)
    Signal("logic after an escaped quote", 2, re.compile(rf"\\'\s*{_LOGIC}", re.I), frozenset(("\\",))),
    # exactly one quote, an operator or SQL word after it, and a comment to cut off the application's
    # closing quote: `x'|email--`, `' notnull --`, `user'collate nocase--`. An apostrophe inside a word
    # (`it's`) counts only when the comment is glued to the last token, as prose does not write it.
    Signal(
        "unbalanced quote cut by a comment",
        2,
        re.compile(
            r"\A[^'\"`]{0,60}(?:(?<![a-z])['\"`]|['\"`](?![a-z])|['\"`](?=.*[\w?)]--))[^'\"`]{0,80}?"
            r"(?:[|^&<>=/%+*~!?-]|\b(?:is|not|like|glob|regexp|rlike|collate|mod|div|notnull|isnull|sounds|or|and"
            r"|xor|between|in|escape)\b)[^'\"`]{0,80}(?:--|#)[\s+\-]*\w{0,4}\s*\Z",
            re.I | re.S,
        ),
        frozenset(("--", "#")),
        also=_QUOTES,
    ),
    # SQL variables and statements that only a query has: `declare @x`, `set @old_sql_mode`, `insert into
    # t (…)`, `alter table t add`
    Signal(
        "SQL statement",
        3,
        re.compile(
            r"\bdeclare\s+@\w|\bset\s+@@?\w+\s*(?:=|:=|\Z)|\binsert\s+into\s+[\w.`\"\[\]]+\s*(?:\(|values\b|select\b)"
            r"|\balter\s+table\s+[\w.`\"\[\]]+\s+(?:add|drop|change|modify|rename|alter)\b"
            r"|\b(?:drop\s+(?:table|database|schema|view|user|procedure|function)|truncate(?:\s+table)?)\s+[\w.`\"\[\]]+\s*;"
            # (`drop x;` alone is a changelog's `Drop foo.patch; merged upstream`: with a comment after it)
            r"|\bdrop\s+[\w.`\"\[\]]+\s*;\s*(?:--|#|/\*|\Z)|\bdelete\s+from\s+[\w.`\"\[\]]+\s*(?:;|--|#|where\b)"
            r"|\bupdate\s+[\w.`\"\[\]]+\s+set\s+[\w.`\"\[\]]+\s*=|\bselect\b.{1,80}?\bgroup\s+by\b.{1,80}?\bhaving\b"
            # who and what the database is, asked as a query (`select current_user;`, `select version()--`)
            r"|\bselect\s+(?:current_user|session_user|system_user|user\s*\(\s*\)|version\s*\(\s*\)|database\s*\(\s*\))"
            r"\s*(?:;|--|#|\Z|from\b)"
            # a table made from column definitions, or a server file read into one (`create table t (input
            # TEXT);`, `copy t from '/etc/passwd';`)
            r"|\bcreate\s+(?:temp(?:orary)?\s+)?table\s+[\w.`\"\[\]]+\s*\(\s*[\w`\"]+\s+[a-z]+\b[^;]{0,200}\)\s*;"
            r"|\bcopy\s+[\w.]+\s+(?:from|to)\s+(?:'/|'[a-z]:\\|program\b)",
            re.I,
        ),
        frozenset(
            (
                "@",
                "insert",
                "alter",
                "drop",
                "truncate",
                "delete",
                "update",
                "having",
                "select",
                "create",
                "copy",
            )
        ),
    ),
    # a FROM clause with its WHERE condition on a literal: `FROM t WHERE t.id = 5`, `from users where name
    # like '`; prose says where a thing comes from, then goes on with words (`where people like cheese`)
    Signal(
        "FROM with a WHERE condition",
        3,
        re.compile(
            r"\bfrom\s+[\w.`\"\[\]]{1,64}\s+where\s+\(?\s*[\w.`\"\[\]]{1,64}\s*(?:(?:[=<>]|!=)=?\s*['\"\d(@]"
            r"|(?:not\s+)?(?:like|regexp|rlike|glob)\s*['\"]|(?:not\s+)?in\s*\(|is\s+(?:not\s+)?null\b)",
            re.I,
        ),
        frozenset(("where",)),
        also=frozenset(("from",)),
    ),
    # DDL and value tuples that tutorials quote too: context only
    Signal(
        "SQL definition",
        2,
        re.compile(
            r"\b(?:create|alter)\s+(?:table|function|procedure|trigger|view|user|database)\s+[\w.`\"\[\]]+\s*"
            r"(?:\(|\bas\b|\breturns\b|\badd\b)"
            r"|\bvalues\s*\(\s*(?:'[^']*'|\d+|null)\s*,",
            re.I,
        ),
        frozenset(("create", "alter", "values")),
    ),
    # a block comment glued to a SQL keyword in place of a space: `DROP/*x*/t`, `SELECT/**/password`
    Signal(
        "comment as a space",
        3,
        re.compile(
            r"\b(?:select|union|from|where|drop|insert|update|delete|declare|exec|order|group|having|into|values"
            r"|table|and|or)/\*[^*]{0,40}\*/|/\*[^*]{0,40}\*/(?:select|union|from|where|into|values|table|and|or)\b",
            re.I,
        ),
        frozenset(("/*",)),
        raw=True,
    ),
    # a block comment inside a keyword: `DR/**/OP`, `UNI/*x*/ON`, which older parsers (and filters that
    # strip comments) join back into the keyword; no word of any language is written so
    Signal(
        "keyword split by a comment",
        3,
        re.compile(_split_keywords(_SPLIT_KEYWORDS), re.I),
        frozenset(("/*",)),
        raw=True,
    ),
    # a PostgreSQL cast to a SQL type on a quoted literal, a bracket or a column: `)::int`, `password::int`
    # (error-based extraction casts text to a number to read it in the error)
    Signal(
        "type cast",
        3,
        re.compile(
            r"(?:['\")]|\b[a-z_]\w*)\s*::\s*(?:int|integer|int4|int8|bigint|text|bool|boolean|jsonb?|varchar|char"
            r"|numeric|regclass|bytea|oid|xml|double\s+precision|real|float)\b",
            re.I,
        ),
        frozenset(("::",)),
    ),
    # two quoted literals compared: `'1'='1`, `'x'!='y'`, or the application's literal closed and compared
    # (`x' <> 'y`); names and prose quote one side at most
    Signal(
        "comparison of quoted literals",
        2,
        re.compile(
            rf"(?:'[^']{{0,40}}'|\"[^\"]{{0,40}}\"|\A[^'\"]{{0,40}}['\"]){_CAST}\s*(?:{_CMP}|{_EQ})\s*"
            rf"(?:'[^']{{0,40}}(?:'|\Z)|\"[^\"]{{0,40}}(?:\"|\Z))"
        ),
        _QUOTES,
        also=_COMPARE_NEEDLES,
    ),
    # a condition on literals inside a conditional function, as blind injection asks: `IIF(1 > 1, …`
    Signal(
        "conditional on literals",
        3,
        re.compile(rf"\b(?:iif|if)\s*\(\s*{_LIT}\s*(?:{_CMP}|{_EQ})\s*{_LIT}\s*,", re.I),
        frozenset(("if",)),
    ),
    # a logical operator with its operand cut off by a comment: `1='1' or-- -` (`#43` is a number)
    Signal(
        "logic cut by a comment",
        2,
        re.compile(rf"{_LOGIC}\s*(?:--(?:[\s+\-]|\Z)|#(?!\w)|/\*)", re.I),
        frozenset(("--", "#")),
        also=_LOGIC_NEEDLES,
    ),
    # a column alias then FROM after a closing bracket, a quote or a number: the select list of a UNION
    # (`) AS x FROM`, `7 AS "n" FROM`)
    Signal(
        "alias then FROM after a bracket",
        2,
        re.compile(r"(?:[)`'\"]|\b\d+)\s*as\s+[\w`'\"]{1,64}\s+from\b", re.I),
        frozenset(("from",)),
    ),
    # NoSQL query operators where a value belongs: `u_id[$ne]=2`, a JSON key `$where`
    Signal(
        "query operator as a value",
        3,
        re.compile(
            r"(?:\[\s*|\A)\$(?:ne|eq|gt|gte|lt|lte|in|nin|regex|where|exists|not|nor|or|and|elemmatch|expr|text"
            r"|all|size|type|mod)(?:\s*\]|\Z)",
            re.I,
        ),
        frozenset(("$",)),
    ),
    # a UNION begun, its SELECT left to follow: `9 union all`
    Signal("union begun", 2, re.compile(r"\bunion\s+(?:all|distinct)\s*\Z", re.I), frozenset(("union",))),
    # the whole value a true comparison of two numbers: a numeric parameter turned into a tautology
    # (`1=1`, `7 like 7`, `3 is not 4`)
    Signal(
        "tautology of numbers",
        3,
        re.compile(
            r"\A\s*\(?\s*(-?\d+)\s*(?:(?:={1,2}|<=>|\blike\b|\bis\b)\s*\1|(?:!=|<>|\bis\s+not\b)\s*(?!\1\b)-?\d+)"
            r"\s*\)?\s*\Z",
            re.I,
        ),
        frozenset(("=", "<>", "like", "is")),
    ),
    Signal(
        "union select",
        3,
        re.compile(
            r"\bunion\b(?:\s|(?:#|--)[^\n]{0,80}\n)*(?:(?:all|distinct|distinctrow)\b)?\s*\(?\s*select\b",
            re.I,
        ),
        frozenset(("union",)),
    ),
    # time-delay and heavy functions called as SQL (numeric argument), WAITFOR DELAY with a time string
    Signal(
        "time delay",
        3,
        re.compile(
            r"\b(?:sleep\(\s*\d+\s*\)|benchmark\s*\(\s*\d+\s*,|pg_sleep\s*\(|dbms_lock\.sleep\s*\("
            r"|select\s+sleep\s*\(|pg_sleep\b|dbms_pipe\.receive_message\s*\(|waitfor\s+(?:delay|time)\s*['\"\d]|randomblob\s*\(\s*\d)",
            re.I,
        ),
        frozenset(("sleep", "benchmark", "waitfor", "randomblob", "dbms_")),
    ),
    # the clock read, then a loop until it has moved on by seconds: server-side JavaScript (a `$where`
    # clause) made to wait
    Signal(
        "busy wait on the clock",
        3,
        re.compile(
            r"(?:new\s+date|date\.now|performance\.now)\b.{0,200}?\bwhile\s*\([^;{}]{0,60}?-\s*[+\w.()]{1,30}\s*<\s*"
            r"\d{3,}\s*\)",
            re.I,
        ),
        frozenset(("date", "now")),
        also=frozenset(("while",)),
    ),
    # a second statement: `; drop table`, `);waitfor`, `; exec master..`, `; declare @s`, `; grant dba to`
    Signal(
        "stacked statement",
        3,
        re.compile(
            r";\s*(?:select\s*(?:[\w@*(]+\s*,|\*|@@|\d|[\w.]+\s*\(|\()|insert\s+into|update\s+\w+\s+set|delete\s+from"
            r"|drop\s+(?:table|database|function)|exec(?:ute)?\b|declare\s+@|waitfor\b|shutdown\b|truncate\s"
            r"|alter\s+(?:table|user)|create\s+(?:table|user)|begin\s+declare|call\s+\w+\s*\("
            r"|replace\s+(?:into\s+)?(?:[\w.`]+\s*){1,2}(?:\([^)]{0,200}\)\s*)?values\s*\("
            # T-SQL's IF, with a query or a statement SQL has after it (`;IF(1=1) WAITFOR DELAY…`, `;if
            # exists(select…`): C, Perl and JavaScript write `; if (x) {` and `; if (n == 0) break;`
            r"|if\s*\([^;{}]{0,120}?\)\s*(?:waitfor|select|exec|execute|begin|drop|insert|update|delete|shutdown"
            r"|raiserror)\b|if\s*\(\s*(?:select|exists|not\s+exists)\b|if\s+(?:not\s+)?exists\s*\(\s*select\b"
            r"|desc\s+[\w.`]+\s*(?:;|--|#)|show\s+(?:tables|databases|grants|columns)\b|backup\s+database\b"
            r"|copy\s+[\w.]+\s+(?:from|to)\s+(?:'|/|program\b|stdout\b)"
            # privileges granted or taken back: `; grant dba to x`, `; grant all privileges on *.* to …`
            r"|(?:grant|revoke)\s+(?:all(?:\s+privileges)?|select|insert|update|delete|execute|connect|resource|dba"
            r"|sysadmin|file|super|usage|create\s+\w+)\b[\w\s,.*`'\"@%]{0,80}?\b(?:on|to|from)\s)",
            re.I,
        ),
        frozenset((";",)),
    ),
    # a routine created, with the clause that gives its body (MySQL's UDF injection: `CREATE FUNCTION f (s
    # CHAR(20)) RETURNS CHAR(50) …`)
    Signal(
        "routine created",
        3,
        re.compile(
            r"\bcreate\s+(?:or\s+replace\s+)?(?:function|procedure|trigger)\s+[\w.`]+\s*\(.{0,200}?\b(?:returns|begin)\b",
            re.I | re.S,
        ),
        frozenset(("create",)),
    ),
    # objects and functions only an injection names
    Signal(
        "system object",
        3,
        re.compile(
            # a server variable: one a query reads first, or any name written in one case (`@@datadir`,
            # `@@global.sql_mode`, `@@SPID`); a password manager's `x@@TcaiG1pQ` names none
            r"\binformation_schema\b|@@(?:(?:global|session|local)\.)?(?:(?:version|datadir|hostname|basedir|servername"
            r"|servicename|spid|identity|rowcount|language|tmpdir|port|secure_file_priv|sql_mode)\b"
            r"|(?-i:[a-z_]{4,}|[A-Z_]{4,})(?![A-Za-z0-9]))|\bxp_\w+"
            r"|\bsp_(?:oacreate|executesql|password)\b|\bload_file\s*\(|\butl_http\b|\bsysobjects\b|\bsyscolumns\b"
            r"|\bpg_catalog\b|\bsqlite_master\b|\binto\s+(?:out|dump)file\b|\bexec\s*\(\s*@|\bdeclare\s+@\w+\s+n?varchar"
            r"|\bexecute\s+immediate\b|\bprocedure\s+analyse\s*\(|\b(?:extractvalue|updatexml|name_const|gtid_subset|gtid_subtract)\s*\(|\bexp\s*\(\s*~"
            r"|\b(?:lo_import|lo_export|lo_get|pg_read_file|pg_read_binary_file|pg_ls_dir|dblink_connect|dbms_ldap|utl_inaddr"
            r"|dbms_xmlgen|openrowset|opendatasource|msdasql)\b|\bexec(?:ute)?\s+master\.|\bmaster\.\.\w+|\bchar\s*\(\s*\d+\s*(?:,\s*\d+\s*)*\)\s*(?:\+|\|\||,)",
            re.I,
        ),
        frozenset(
            "information_schema @@ xp_ sp_ load_file utl_http sysobj syscol pg_ sqlite_master outfile dumpfile exec"
            " declare procedure extractvalue updatexml name_const gtid_ exp master. char lo_ dblink utl_ dbms_"
            " openrowset opendatasource msdasql".split()
        ),
    ),
    # a query of the tables that list a database's users, schemas and tables (`select * from pg_shadow`,
    # `from sysibm.sysdummy1`, `from all_tables`): what an injection reads first, never a value
    Signal(
        "system catalog read",
        3,
        re.compile(
            r"\bfrom\s+(?:pg_(?:shadow|user|group|authid|roles|database|tables|namespace)|mysql\.(?:user|db)"
            r"|sys(?:users|databases|logins|objects|columns|comments)|sysibm\.\w+|syscat\.\w+|v\$\w+"
            r"|sys\.(?:databases|tables|columns|objects|sql_logins|server_principals|all_objects)"
            r"|(?:all|dba|user)_(?:tables|tab_columns|users|objects|views)|msysobjects|msysaccessobjects)\b",
            re.I,
        ),
        frozenset(("from",)),
        also=frozenset(("pg_", "mysql.", "sys", "all_", "dba_", "user_", "v$")),
    ),
    # a quote closed, then the rest of the statement cut by an empty comment: `admin'--`, `x' #`, `1')/*`
    Signal(
        "quote cut by a comment",
        3,
        re.compile(r"['\"`]\s*\)*\s*;?\s*(?:--[\s+\-]*|#\s*|/\*\s*)(?:(?<=\s)\w{1,4}\s*)?\Z"),
        _QUOTES,
    ),
    # ... or ended there: `admin@example.org';` (a password may end so too: context only). The quote closes
    # the application's literal: it is the last of an odd number (code's own literals come in pairs:
    # `import { a } from 'x';`)
    Signal(
        "quote closed by a statement end",
        2,
        re.compile(
            "|".join(rf"\A[^{q}]*(?:{q}[^{q}]*{q}[^{q}]*)*{q}\s*\)*\s*;\s*\Z" for q in ("'", '"', "`"))
        ),
        frozenset((";",)),
    ),
    # a cluster of quotes and brackets that breaks any quoting context (`1)"()),('(.`, `x'ab<'">)cd`):
    # what a scanner sends first to see whether the statement breaks
    Signal(
        "quote-breaking probe",
        3,
        re.compile(r"(?=[()'\",.<>]{4})[(),.<>]*(?:'[(),.<>]*\"|\"[(),.<>]*')"),
        _QUOTES,
    ),
    # clauses that probe the statement's shape, strong after a closing quote or bracket
    Signal(
        "clause after a quote",
        3,
        re.compile(
            r"(?:(?:\A|[\w)])['\"`]|\))\s*;?\s*(?:order\s+by|group\s+by|having|union|select|limit|procedure|rlike)\b",
            re.I,
        ),
        _QUOTES | {")"},
    ),
    # the value opens with a quote and a logical operator: it closes the application's literal first
    Signal(
        "starts by closing a quote into logic",
        1,
        re.compile(rf"\A\s*['\"`]\s*{_LOGIC}", re.I),
        _LOGIC_NEEDLES,
        also=_QUOTES,
    ),
    # AND/OR right after a quote: search syntax has it too (`"a b" OR c`), so context only
    Signal(
        "logic after a quote",
        1,
        re.compile(r"(?:(?:\A|[\w)])['\"`]|\))\s*(?:and|or|xor|&&|\|\|)(?:\b|\s)", re.I),
        _QUOTES | {")"},
    ),
    Signal(
        "shape probe",
        2,
        re.compile(
            r"\b(?:order\s+by\s+\d|group\s+by\s+[\w.]+\s+having|having\s+\d+\s*[=<>]|case\s+when\b.{1,80}\bthen\b"
            r"|when\s+[\w'\"]{1,40}\s+then\b"
            r"|select\s+(?:\*|top\s+\d|null\b|@|\d+\s*,|count\s*\(\s*\*)|or\s+exists\b)",
            re.I,
        ),
        frozenset(("order", "group", "having", "case", "when", "select", "exists")),
    ),
    Signal("subquery", 2, re.compile(r"\(\s*select\b", re.I), frozenset(("select",))),
    # ... reading a table: a select list, FROM and a name, then what follows a table in a query
    # (`(select password from users limit 1`, `in ( select id from t where`); a sentence in brackets
    # goes on with words
    Signal(
        "subquery reading a table",
        3,
        re.compile(
            r"\(\s*select\s+[^()]{1,80}?\s+from\s+[\w.`\"\[\]]{1,64}\s*(?:\)|;|,|\Z|(?:where|limit|order|group"
            r"|union|join|offset)\b)",
            re.I,
        ),
        frozenset(("select",)),
        also=frozenset(("from",)),
    ),
    # SELECT of what only a query selects: a hex string, a function of the server called as code is
    # (`user(`, `version ()`: prose puts a space and words in brackets), a built string (`char(`,
    # `concat(`), a condition (`if(`, `(case when`), NULLs, as UNION, blind and error-based payloads
    # probe the column count and read the server
    Signal(
        "select of a probe",
        3,
        re.compile(
            r"\bselect(?:\s|\*/)*\(?\s*(?:0x[0-9a-f]{2,}\b|(?:user|current_user|system_user|session_user|version"
            r"|database|schema|char|chr|concat|concat_ws|group_concat|load_file|if|iif)(?:\(|\s+\(\s*\))|null\s*,"
            r"|\(\s*case\s+(?:[\w.]+\s+)?when\b)",
            re.I,
        ),
        frozenset(("select",)),
    ),
    # string concatenation between literals, as UNION and error-based payloads build markers with
    Signal(
        "concatenated literals",
        1,
        re.compile(r"'[^']{0,20}'\s*(?:\|\||\+)\s*'[^']{0,20}'"),
        frozenset(("'",)),
    ),
    # context: the value starts by leaving a string or a number, or ends in a comment
    Signal(
        "breaks out of a literal",
        1,
        re.compile(
            rf"\A\s*(?:[\w.@\\-]{{0,60}}['\"`]|\d+\s*\)*\s+(?=[a-z])|\)+|\(*\s*{_LOGIC}\s*[\w('\"`])", re.I
        ),
    ),
    # a comment closed that the value never opened: it ends one the query (or another parameter) began
    Signal(
        "comment closed, never opened",
        2,
        re.compile(r"\A(?:(?!/\*).)*?\*/", re.S),
        frozenset(("*/",)),
        raw=True,
    ),
    Signal(
        "ends in a comment",
        1,
        re.compile(r"(?:--[\s+\-]*|#|/\*)\s*(?:(?<=\s)\w{1,4}\s*)?\Z"),
        frozenset(("-", "#", "/*")),
    ),
)
# Which signals a value may show, as bit masks over SIGNALS: each needle sets the bits of the signals
# that name it (in `needles`, in `also`); signals without needles (or without `also`) are always set.
_NEEDLE_MASKS = tuple(
    (
        n,
        sum(1 << i for i, s in enumerate(SIGNALS) if n in s.needles),
        sum(1 << i for i, s in enumerate(SIGNALS) if n in s.also),
    )
    for n in sorted({n for s in SIGNALS for n in s.needles | s.also})
)
_FREE = sum(1 << i for i, s in enumerate(SIGNALS) if not s.needles)
_FREE_ALSO = sum(1 << i for i, s in enumerate(SIGNALS) if not s.also)
_COMMENT_MASK = sum(1 << i for i, s in enumerate(SIGNALS) if "/*" in s.needles)


def _signals(mask: int) -> list[Signal]:
    """The signals whose bits are set in `mask`, in SIGNALS order."""
    out = []
    while mask:
        low = mask & -mask
        out.append(SIGNALS[low.bit_length() - 1])
        mask ^= low
    return out


# What a value needs for any signal of weight 2 or more to fire: values without it score below the
# threshold whatever else they hold, and are not scored (most benign values stop here).
_GATE = re.compile(
    r"['\"`;#()=<>|&@*]|--|/\*|union|between|order|group|having|case|select|exists|information_schema|xp_|sp_"
    r"|utl_http|sysobj|syscol|pg_|sqlite_master|outfile|dumpfile|immediate|master\.\.|waitfor|like|null|true"
    r"|::|\*/|\$|alter\s+table|create\s|delete\s+from|lo_|dblink|utl_|dbms_|openrowset|opendatasource|msdasql"
    r"|master\.|\d\s+is\s|from\s+(?:mysql\.|sys|all_|dba_|user_|msys)"
)
_BLOCK_COMMENT = re.compile(r"/\*(?!!).*?\*/", re.S)
# what SQL writes between its words and a sentence hardly does: quotes, brackets, comparisons, comments
_SQL_SYMBOL = re.compile(r"['\"`()=;#*|&<>@]|--|::")
# a word of prose: letters standing alone, not part of an identifier (`mass_mails`, `` `t` ``, `user(`)
_WORD = re.compile(r"(?<![\w`'\"$@.])[a-z]{2,}(?![\w`'\"(]|\.\w)", re.I)
_SQL_WORDS = frozenset(
    "select union all and or not from where case when then else end null order by group having insert into"
    " values update set delete drop table exec execute declare waitfor delay sleep like limit as is in if"
    " concat char cast convert count distinct top xor".split()
)


# Program code pasted into a form (a snippet on a forum, a template): keywords, arrows and braces of the
# C family, JavaScript and Python that SQL does not have; and the queries of a metrics store (PromQL,
# which Grafana sends Prometheus in a query string: `avg(x) by (job)`, `rate(x{job="api"}[5m])`): an
# aggregation's grouping after its call, a label matcher, a range of a duration
_CODE = re.compile(
    r"\b(?:return|function|println|printf|console\.log)\b|\bdef\s+\w+\s*\(|=>|===|!==|\{\s*$|^\s*\}|\)\s*\{"
    # JavaScript's modules: `import { a } from 'x'`, `const { b } = require('y')`
    r"|\bimport\s+(?:\{[^}]{0,200}\}|\*\s+as\s+\w+|\w+)\s+from\s+['\"]|\brequire\s*\(\s*['\"]"
    r"|(?i:\)\s*(?:by|without)\s*\(|\{\s*[a-z_]\w*\s*(?:=~|!~|!=|=)\s*\"|\[\d+[smhdwy]\])",
    re.M,
)


# what `_CODE` needs one of: one C-speed scan before it runs
_CODE_NEEDLE = re.compile(r"return|function|print|console|def|=>|===|!==|[{}\[]|by|without|import|require")


def code(value: str) -> bool:
    """Whether `value` reads as program code rather than SQL (libinjection's fingerprints of function
    calls and keywords misfire on it as on prose)."""
    text = value[:MAX_SCORED_VALUE]
    return _CODE_NEEDLE.search(text) is not None and _CODE.search(text) is not None


def prose(value: str) -> bool:
    """Whether `value` reads as sentences: enough words that are no SQL keyword, twice as many as its
    keywords of three letters or more (`is`, `in`, `as`, `if`, `or` are English's words as much as SQL's),
    or fewer words with little SQL punctuation (`If 'limit' is omitted or None, all are kept.`); program
    code (`function(){var a=…}`) has words too, but is no prose. Words in a block comment are no words
    (`DR/**/OP/*bypass deny listing*/t`)."""
    text = value[:MAX_SCORED_VALUE]
    if "/*" in text:
        text = _BLOCK_COMMENT.sub(" ", text)
    words = _WORD.findall(text)
    if len(words) < SHORT_PROSE_WORDS or code(value):
        return False
    keywords = [w for w in words if w.lower() in _SQL_WORDS]
    plain = len(words) - len(keywords)
    if plain < 2 * sum(1 for w in keywords if len(w) > 2):
        return False
    return plain >= PROSE_WORDS or plain >= SHORT_PROSE_WORDS and len(_SQL_SYMBOL.findall(text)) <= plain


# A whole statement a program wrote, whose values are left to bind parameters (`?`, `$1`, `:name`, `%s`,
# `@p1`): what tracing agents export as a span's `db.statement` (OpenTelemetry, Zipkin, Elastic APM) and
# ORMs log. An injection breaks out of a value into a query; it does not open with the statement, and
# never leaves its values to a driver to bind.
_STATEMENT_START = re.compile(r"\s*\(?\s*(?:select|insert|update|delete|with|replace|merge)\s", re.I)
_PLACEHOLDER = re.compile(r"(?<![\w$?:@])(?:\?|\$\d{1,3}|:[a-z_]\w{0,30}|%s|@p\d{1,3})(?![\w?])", re.I)
_CUT = re.compile(r"--|#|/\*|;\s*\S")  # a comment or a second statement: no program's single statement


def bound_statement(value: str) -> bool:
    """Whether `value` is a single SQL statement with bind parameters for its values (`_PLACEHOLDER`)."""
    text = value[:MAX_SCORED_VALUE]
    return (
        _STATEMENT_START.match(text) is not None
        and _PLACEHOLDER.search(text) is not None
        and _CUT.search(text) is None
    )


# A generated secret (a password manager's `7*T29*Ux#T@@Fq5!`, an API key): one run of letters in both
# cases, digits and symbols, whose words are no SQL: libinjection's fingerprints and the
# quote-and-comment signals misfire on its symbols as on prose. Tamper scripts switch case too, but in
# keywords (`SeLeCt`), and a login bypass (`admin'#`) is short and in one case.
TOKEN_LENGTH = (10, 128)
_LETTER_RUN = re.compile(r"[A-Za-z]{2,}")
_SPACE = re.compile(r"\s")
_QUOTE_CLUSTER = re.compile(r"['\"`][^\w\s]*['\"`]")  # two quotes in one run of symbols
_TOKEN_KEYWORDS = _SQL_WORDS | frozenset(
    "sleep benchmark pg char chr concat substr substring mid ascii ord hex unhex version user database schema"
    " load file outfile dumpfile information union rand md5 sha1 true false rlike regexp iif xp sp cmdshell"
    " dbms utl waitfor".split()
)


def token(value: str) -> bool:
    """Whether `value` reads as a generated secret: no space, `TOKEN_LENGTH`, upper and lower case letters
    and a symbol, no two quotes in one run of symbols, and no word that is SQL's."""
    if not TOKEN_LENGTH[0] <= len(value) <= TOKEN_LENGTH[1] or _SPACE.search(value) or value.isalnum():
        return False  # (a value of letters and digits only is no secret with a symbol)
    if value.islower() or value.isupper() or value.lower() == value:  # (one case, or no letter at all)
        return False
    if _QUOTE_CLUSTER.search(value):  # sqlmap's heuristic probe (`1'dvZCJz<'">)ZmzaaA`) is no secret
        return False
    runs = _LETTER_RUN.findall(value)
    return bool(runs) and not any(r.lower() in _TOKEN_KEYWORDS for r in runs)


def score(value: str, enough: int | None = None, base: int = 0) -> tuple[int, list[str]]:
    """The summed weight of the signals `value` shows, and their names (each signal counted once).
    With `enough`, scoring stops as soon as the total (plus `base`) reaches it or can no longer reach
    `THRESHOLD`: the verdict is then known, the total only a bound."""
    text = value[:MAX_SCORED_VALUE]
    if "```" in text:  # a Markdown code fence (a snippet in a comment box) opens no identifier
        text = text.replace("```", "   ")
    low = text.lower()
    if base < THRESHOLD - 1 and _GATE.search(low) is None:
        return 0, []
    # a block comment is whitespace to SQL; within a word (`UNI/**/ON`) older parsers dropped it
    commented = "/*" in text
    texts = [_BLOCK_COMMENT.sub(" ", text), _BLOCK_COMMENT.sub("", text)] if commented else [text]
    if "+" in text and " " not in text:  # `+` for spaces, as form encoding (and tamper scripts) write them
        texts.append(texts[0].replace("+", " "))
    joined = " ".join(texts).lower() if len(texts) > 1 else low
    needed, also = _FREE, _FREE_ALSO
    for needle, in_needles, in_also in _NEEDLE_MASKS:
        if needle in joined:
            needed |= in_needles
            also |= in_also
    if commented:
        needed |= _COMMENT_MASK
    possible = _signals(needed & also)
    left = sum(s.weight for s in possible)
    total = 0
    names: list[str] = []
    for signal in possible:
        if enough is not None and (base + total >= enough or base + total + left < THRESHOLD):
            break
        left -= signal.weight
        for t in (text,) if signal.raw else texts:
            if signal.pattern.search(t):
                total += signal.weight
                names.append(signal.name)
                break
    return total, names


def generated(value: str) -> bool:
    """Whether a program wrote `value`: a generated secret or a bound statement."""
    return token(value) or bound_statement(value)


def taken_off(value: str, libinjection: bool, made: bool | None = None) -> int:
    """The weight the kind of text `value` is takes off its score: a generated secret's or a program's
    bound statement (`made`, when known: `generated`), prose's, program code's where libinjection
    judged it."""
    if generated(value) if made is None else made:
        return GENERATED_WEIGHT
    if prose(value) or libinjection and code(value):
        return PROSE_WEIGHT
    return 0


def injected(value: str, fingerprint: str | None = None, evasion: int = 0) -> str | None:
    """The names of the signals that make `value` an injection ("a + b"), or None. `fingerprint`:
    libinjection's, when it judged the value an injection; `evasion`: the weight of evasion evidence
    the value was sent with (overlong UTF-8: `workers.detect.decode.overlong_escapes`)."""
    made: bool | None = None  # (`generated`, looked for only when a discount may matter)
    if fingerprint is not None:
        made = generated(value)
        if not (made or prose(value) or code(value)):
            return f"libinjection fingerprint {fingerprint}"  # enough alone (the other signals add nothing)
    base = (LIBINJECTION_WEIGHT if fingerprint is not None else 0) + evasion
    enough = THRESHOLD - PROSE_WEIGHT  # scoring stops once no discount can undo the verdict ...
    total, names = score(value, enough, base)
    if THRESHOLD <= total + base <= enough:
        made = generated(value) if made is None else made
        if made and total + base == enough:  # ... unless a program made the value: its total in full
            total, names = score(value, THRESHOLD - GENERATED_WEIGHT, base)
    total += base
    if evasion:
        names.insert(0, "overlong UTF-8")
    if fingerprint is not None:
        names.insert(0, f"libinjection fingerprint {fingerprint}")
    if THRESHOLD <= total < THRESHOLD - (GENERATED_WEIGHT if made else PROSE_WEIGHT):
        total += taken_off(value, fingerprint is not None, made)
    return " + ".join(names) if total >= THRESHOLD else None
