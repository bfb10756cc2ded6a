"""A web shell uploaded over HTTP: a file that a web server would run and that takes commands from the
requests sent to it (`<?php system($_GET['c']); ?>`, a JSP calling `Runtime.exec(request.getParameter(…))`,
an ASP page evaluating `Request(…)`), as scanners and exploits upload through a vulnerable form or a
WebDAV `PUT`.

A finding is, in a multipart form's file part or in a body `PUT` to a path with a script's extension:
- **server-side code that takes commands from the request**: PHP (an open tag, then a call that runs
  code or a command or acts on files, `system(`, `eval(`, `passthru(`, backticks, `fopen(`,
  `move_uploaded_file(` …, and the request's input,
  `$_GET`, `$_POST`, `$_REQUEST`, `$_COOKIE`, `php://input` …; or `eval(` of a decoded blob,
  `eval(base64_decode(`, as obfuscated shells do), JSP (`Runtime.getRuntime().exec(` or a
  `ProcessBuilder` with `request.getParameter(`), ASP/ASP.NET (`eval`/`Execute` of `Request`, or
  `Process.Start`/`WScript.Shell` with `Request`), ColdFusion (`<cfexecute>`, or `<cffile>` and
  `<cfquery>` on a form's or URL's value), a Perl or shell CGI script running the query string: wherever it is, a polyglot image
  (`GIF89a<?php …`) included;
- **a script under a script's name**: a file named with an extension a server runs (`.php`, `.phtml`,
  `.phar`, `.jsp`, `.aspx`, `.ashx`, …, also hidden behind another, `shell.php.jpg`, `shell.php;.jpg`,
  `shell.php%00.jpg`) whose content opens a server-side code tag; or an `.htaccess` that makes a server
  run files of another extension as scripts.

Only a file part's first `MAX_UPLOAD_HEAD` bytes within the body part the detector sees are read: a
shell is small, and its code opens it.
"""

from __future__ import annotations

import re

from threats.catalogue import WEBSHELL_UPLOAD, Hit, excerpt_of
from workers.detect.multipart import boundary_of

MAX_UPLOAD_HEAD = 16 * 1024  # bytes of a file's start read
MAX_FILES = 32  # file parts looked at in one body part
# A part's headers that name a file, and where its content starts
_FILE_PART = re.compile(
    rb"content-disposition:[^\r\n]*?\bfilename\*?\s*=\s*(?:UTF-8'')?\"?([^\"\r\n;]*)[^\r\n]*(?:\r?\n[^\r\n]+)*\r?\n\r?\n",
    re.I,
)
_SCRIPT_NAME = re.compile(
    rb"\.(?:php\d?|phtml|pht|phps|phar|inc|jsp|jspx|jsw|jsv|jspf|asp|aspx|ascx|ashx|asmx|asa|cer|cshtml"
    rb"|shtml|cgi|pl)(?=$|[.;%\x00\s:])",
    re.I,
)
_PHP_TAG = re.compile(rb"<\?(?:php\b|=|\s)", re.I)
_SERVER_TAG = re.compile(rb"<\?(?:php\b|=)|<%|<jsp:|<script[^>]+runat\s*=\s*[\"']?server", re.I)
# a call that runs code or a command, or acts on files (a file manager's or an uploader's shell)
_PHP_RUNS = re.compile(
    rb"\b(?:system|exec|shell_exec|passthru|popen|proc_open|pcntl_exec|eval|assert|create_function"
    rb"|call_user_func(?:_array)?|preg_replace|include|require(?:_once)?|file_put_contents|fwrite"
    rb"|opendir|scandir|readdir|readfile|fopen|file_get_contents|show_source|highlight_file|copy"
    rb"|move_uploaded_file|unlink|rmdir)\s*\(|`",
    re.I,
)
_PHP_INPUT = re.compile(
    rb"\$_(?:GET|POST|REQUEST|COOKIE|SERVER|FILES)\b|\$HTTP_\w+|php://input|getallheaders\s*\("
)
_PHP_DECODED_EVAL = re.compile(
    rb"\b(?:eval|assert)\s*\(\s*(?:@\s*)?(?:base64_decode|gzinflate|gzuncompress|str_rot13|strrev|hex2bin)\s*\(",
    re.I,
)
_JSP_RUNS = re.compile(rb"Runtime\s*\.\s*getRuntime\s*\(\s*\)\s*\.\s*exec\s*\(|new\s+ProcessBuilder\s*\(")
_JSP_INPUT = re.compile(rb"request\s*\.\s*(?:getParameter|getHeader|getInputStream|getReader)\s*\(")
_ASP_EVAL = re.compile(rb"\b(?:eval|execute(?:global)?)\s*\(?\s*request\b", re.I)
_ASP_RUNS = re.compile(rb"Process\s*\.\s*Start\s*\(|WScript\.Shell|cmd\.exe", re.I)
_ASP_INPUT = re.compile(rb"\bRequest\s*(?:\.\s*(?:Form|QueryString|Item|Params)|\[|\()", re.I)
_CFML_RUNS = re.compile(
    rb"<cfexecute\b|<cf(?:file|directory)\b[^>]{0,300}#\s*(?:form|url)\."
    rb"|<cfquery\b[^>]{0,300}>[^<]{0,300}#\s*(?:form|url)\.",
    re.I,
)
# a CGI script (Perl or a shell) that runs what the query string or a form parameter says
_CGI_SCRIPT = re.compile(rb"\A\s*#!\s*/\S*(?:perl|sh|bash)\b|\buse\s+CGI\b")
_CGI_RUNS = re.compile(
    rb"`|\bopen\s*\([^\n]*\|\s*[\"']\s*\)|\b(?:system|exec|eval)\s*\(|\bqx\s*[({/]|\beval\s+[\"$`]"
)
_CGI_INPUT = re.compile(rb"QUERY_STRING|\bparam\s*\(|<STDIN>|\$FORM\b|CONTENT_LENGTH")
_HTACCESS_HANDLER = re.compile(
    rb"\b(?:AddType|AddHandler|SetHandler)\b[^\r\n]*(?:php|x-httpd|cgi-script)", re.I
)


def check_upload(body: bytes, content_type: str, path: bytes, method: bytes = b"") -> Hit | None:
    """A web shell in a multipart form's file parts in `body`, or as the body itself when the request
    `PUT`s it to a `path` that names a script, or None. (A form posted to `/index.php` is no file: its
    values are the injection checks'.)"""
    if not body:
        return None
    if "multipart/" in content_type.lower():
        boundary = boundary_of(content_type, body)
        if boundary is None or b"filename" not in body:  # (`in`: most forms upload nothing)
            return None
        for n, m in enumerate(_FILE_PART.finditer(body)):
            if n >= MAX_FILES:
                break
            start = m.end()
            end = body.find(b"--" + boundary, start, start + MAX_UPLOAD_HEAD)
            head = body[start : end if end >= 0 else start + MAX_UPLOAD_HEAD]
            hit = _judge(m.group(1), head)
            if hit is not None:
                return hit
        return None
    if method.upper() != b"PUT":
        return None
    name = path.partition(b"?")[0].rpartition(b"/")[2]
    if _SCRIPT_NAME.search(name) or name.lower() == b".htaccess":
        return _judge(name, body[:MAX_UPLOAD_HEAD])
    return None


def _judge(name: bytes, head: bytes) -> Hit | None:
    """A file's name and first bytes: a web shell, or None."""
    why = _takes_commands(head) if b"<" in head or b"#!" in head or b"CGI" in head else ""
    if not why and _SCRIPT_NAME.search(name):
        found = _SERVER_TAG.search(head)
        if found is not None:
            why = f"a server-side script uploaded as {name.decode('latin-1')[:60]}"
    if not why and name.lower().endswith(b".htaccess") and _HTACCESS_HANDLER.search(head):
        why = "an .htaccess that makes files run as scripts"
    return Hit(WEBSHELL_UPLOAD, why, excerpt_of(head)) if why else None


def _takes_commands(head: bytes) -> str:
    """Why `head` is code that runs what a request sends it ("": it is not)."""
    if b"<?" in head and _PHP_TAG.search(head):
        if _PHP_DECODED_EVAL.search(head) or (_PHP_RUNS.search(head) and _PHP_INPUT.search(head)):
            return "PHP that runs what a request sends it"
    if b"<%" in head or b"<jsp:" in head:
        if _JSP_RUNS.search(head) and _JSP_INPUT.search(head):
            return "JSP that runs what a request sends it"
        if _ASP_EVAL.search(head) or (_ASP_RUNS.search(head) and _ASP_INPUT.search(head)):
            return "ASP that runs what a request sends it"
    if (b"<cf" in head or b"<CF" in head) and _CFML_RUNS.search(head):
        return "ColdFusion that runs what a request sends it"
    if _CGI_SCRIPT.search(head) and _CGI_RUNS.search(head) and _CGI_INPUT.search(head):
        return "a CGI script that runs what a request sends it"
    return ""
