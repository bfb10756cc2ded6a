"""webshell_upload: a file that a web server would run and that takes commands from requests, uploaded in
a multipart form or PUT to a script's path; images, documents, source text and prose about PHP are no
finding. Every shell here was written for these tests, in the shapes public web shells take."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.verdict import WorkerVerdict
from threats import catalogue as C
from workers.detect.upload import check_upload

from .test_body_parts import flow
from .test_engine import Lab
from .test_headers import CURL, request

MULTIPART = "multipart/form-data; boundary=b"


def form(name: bytes, content: bytes, ctype: bytes = b"application/octet-stream") -> bytes:
    return (
        b'--b\r\nContent-Disposition: form-data; name="title"\r\n\r\nholiday\r\n'
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="' + name + b'"\r\n'
        b"Content-Type: " + ctype + b"\r\n\r\n" + content + b"\r\n--b--\r\n"
    )


SHELLS = [
    (b"shell.php", b'<?php system($_GET["cmd"]); ?>', "PHP running a query's command"),
    (b"avatar.jpg", b"GIF89a;<?php echo `$_GET[c]`; ?>", "a polyglot image with backticks"),
    (b"x.php", b"<?php @eval(base64_decode($_POST['z'])); ?>", "an obfuscated one-liner"),
    (
        b"up.php",
        b"<?php eval(gzinflate(base64_decode('7b0HYBxJliUmL23Ke39K9UrX4HShCIBgEyTYkEAQ'))); ?>",
        "a packed shell",
    ),
    (b"cmd.jsp", b'<% Process p = Runtime.getRuntime().exec(request.getParameter("cmd")); %>', "JSP"),
    (b"cmd.aspx", b'<%@ Page Language="Jscript"%><% eval(Request.Item["c"],"unsafe"); %>', "ASP.NET's eval"),
    (b"s.asp", b'<% Set o = CreateObject("WScript.Shell") : o.Run Request("c") %>', "classic ASP"),
    (b"shell.php.jpg", b"<?php phpinfo(); ?>", "a script behind an image's extension"),
    (b"shell.php;.jpg", b"<?php phpinfo(); ?>", "IIS's semicolon"),
    (b"shell.phtml", b"<?= 1 ?>", "another extension PHP runs"),
    (b".htaccess", b"AddType application/x-httpd-php .jpg\n", "an .htaccess making images scripts"),
    (b"files.php", b"<?\n$d = $_GET['d'];\nforeach (scandir($d) as $f) echo $f;\n?>", "a file lister"),
    (b"up.php", b"<? copy($_FILES['f']['tmp_name'], $_POST['to']); ?>", "an uploader"),
    (b"run.cfm", b'<cfexecute name="#url.c#" timeout="5"></cfexecute>', "ColdFusion"),
    (b"q.cfm", b"<cfquery datasource='x'>#form.q#</cfquery>", "a ColdFusion query tool"),
    (b"c.cgi", b"#!/usr/bin/perl\nmy $q = $ENV{QUERY_STRING};\nprint `$q`;\n", "a Perl CGI shell"),
    (b"c.pl", b"#!/usr/bin/perl\nopen(P, \"($ENV{QUERY_STRING}) 2>&1 |\");\nprint <P>;\n", "a pipe opened"),
]
BENIGN = [
    (b"photo.jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01", "an image"),
    (b"report.pdf", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3", "a document"),
    (b"notes.txt", b"In class we wrote <?php echo 'hi'; ?> on the board", "a text file quoting PHP"),
    (b"readme.md", b"Never pass `$_GET` to system() in your code", "prose about a shell"),
    (b"index.html", b"<html><body><% not a server tag %></body></html>", "HTML"),
    (b"app.py", b"import os\nos.system('make')\n", "a Python script"),
    (b"build.sh", b"#!/bin/sh\nmake && make install\n", "a build script"),
    (b"log.php.txt", b"PHP notice: fopen(): failed to open stream in /var/www/a.php", "a log"),
]


@pytest.mark.parametrize(("name", "content", "why"), SHELLS)
def test_a_web_shell_in_a_file_part_is_webshell_upload(name: bytes, content: bytes, why: str) -> None:
    hit = check_upload(form(name, content), MULTIPART, b"/upload")
    assert hit is not None and hit.threat is C.WEBSHELL_UPLOAD, why


@pytest.mark.parametrize(("name", "content", "why"), BENIGN)
def test_images_documents_and_source_text_are_no_finding(name: bytes, content: bytes, why: str) -> None:
    assert check_upload(form(name, content), MULTIPART, b"/upload") is None, why


def test_a_put_to_a_scripts_path_is_read_as_the_file() -> None:
    assert check_upload(b"<?php system($_REQUEST[1]);", "", b"/dav/x.php", b"PUT") is not None
    assert (
        check_upload(b"<?php echo 1;", "application/octet-stream", b"/dav/info.php?x=1", b"PUT") is not None
    )
    assert check_upload(b"plain notes", "", b"/dav/notes.txt", b"PUT") is None
    assert check_upload(b"<?php echo 1;", "", b"/notes/new", b"PUT") is None  # no script's path
    # a forum post quoting PHP, sent to a PHP page: a form's value, which the injection checks read
    quoted = b"message=Try+<?php+echo+1;+?>&submit=Post"
    assert check_upload(quoted, "application/x-www-form-urlencoded", b"/posting.php", b"POST") is None


@given(st.binary(max_size=300), st.binary(max_size=20))
def test_the_check_is_total(content: bytes, name: bytes) -> None:
    hit = check_upload(form(name.replace(b'"', b""), b"<?php " + content), MULTIPART, b"/u")
    assert hit is None or (hit.threat is C.WEBSHELL_UPLOAD and len(hit.excerpt) <= C.MAX_FINDING_EXCERPT)


def test_a_web_shell_upload_is_reset_in_protect_and_a_photo_served() -> None:
    lab = Lab()
    shell = form(b"shell.php", b'<?php system($_GET["cmd"]); ?>')
    verdicts = lab.send(flow(request("POST", [*CURL, ("Content-Type", MULTIPART)], shell, "/upload"), 42970))
    assert verdicts[-1] is WorkerVerdict.RESET_FLOW
    [event] = lab.threats("webshell_upload")
    assert event["action"] == "reset" and event["group"] == "web"
    photo = form(b"photo.jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01" * 40)
    verdicts = lab.send(flow(request("POST", [*CURL, ("Content-Type", MULTIPART)], photo, "/upload"), 42971))
    assert WorkerVerdict.RESET_FLOW not in verdicts and len(lab.threats()) == 1


def test_a_shell_in_a_later_body_part_is_found() -> None:
    """A shell behind 20 KB of another file reaches the detector in a later part of the body."""
    lab = Lab()
    part = b'--b\r\nContent-Disposition: form-data; name="f"; filename="%s"\r\n\r\n%s\r\n'
    shell = b'<?php system($_POST["c"]); ?>'
    body = part % (b"big.bin", b"\x00" * 20000) + part % (b"s.php", shell) + b"--b--\r\n"
    verdicts = lab.send(flow(request("POST", [*CURL, ("Content-Type", MULTIPART)], body, "/upload"), 42972))
    assert WorkerVerdict.RESET_FLOW in verdicts and lab.threats("webshell_upload")
