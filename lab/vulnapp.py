"""A deliberately injectable web app for the lab (stdlib http.server + an in-memory SQLite database),
for real attack tools (sqlmap) to find its flaws through the enforcer.

Two injectable parameters: `GET /item?id=N` splices `id` into a numeric context, `GET /search?q=S`
splices `q` into a quoted one. A POST to either path reads the parameter from its body as frameworks
do: a form, a multipart form, or JSON (whatever the Content-Type says, as an API that parses JSON
regardless). `/greet?name=S` (or a POST of `name`) writes `name` into its page unescaped: a reflected
XSS flaw, for scanners that send script only where their marker comes back. `/lab` is an index of
links and forms to all of these, for a scanner that crawls. Any other path answers 200 "ok" (a benign
request), and so does a POST to any other path. It binds only the address it is given: run it inside a
lab namespace (`python -m lab.vulnapp ADDR PORT`); it prints "ready" once listening and stops after
`--seconds`.
"""

from __future__ import annotations

import argparse
import email.parser
import email.policy
import json
import socket
import sqlite3
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

SCHEMA = """
CREATE TABLE items (id INTEGER, name TEXT);
INSERT INTO items VALUES (1, 'widget'), (2, 'gadget'), (3, 'gizmo');
CREATE TABLE users (name TEXT, password TEXT);
INSERT INTO users VALUES ('admin', 's3cret');
"""
MAX_POST_BYTES = 64 * 1024  # of a POST body, read before answering
_FRAMING = {"host", "content-length", "content-type", "connection", "transfer-encoding"}  # (not logged)
INDEX = """<h1>lab shop</h1>
<a href="/item?id=1">item</a> <a href="/search?q=widget">search</a> <a href="/greet?name=guest">greet</a>
<a href="/ping?addr=198.18.0.7">ping</a>
<form method="post" action="/search"><input name="q" value="widget"><input type="submit"></form>
<form method="post" action="/greet"><input name="name" value="guest"><input type="submit"></form>"""


def body_args(body: bytes, content_type: str) -> dict[str, str]:
    """A POST body's parameters: JSON (by its first byte, whatever the type), a multipart form, a form."""
    if body.lstrip()[:1] == b"{":
        try:
            doc = json.loads(body)
        except ValueError:
            return {}
        return {str(k): str(v) for k, v in doc.items()} if isinstance(doc, dict) else {}
    if content_type.lower().startswith("multipart/form-data"):
        head = f"Content-Type: {content_type}\r\n\r\n".encode()
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
        args = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            if isinstance(name, str) and isinstance(payload, bytes):
                args[name] = payload.decode("utf-8", "replace")
        return args
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}


def query_for(path: str, args: dict[str, str] | None = None) -> str | None:
    """The SQL the app runs for a request path (its parameters from the query string, or `args` read
    from a POST body), the parameter spliced in unescaped (the flaw); None for a path with no query."""
    url = urlsplit(path)
    if args is None:
        args = {k: v[0] for k, v in parse_qs(url.query).items()}
    if url.path == "/item":
        return "SELECT id, name FROM items WHERE id=" + args.get("id", "0")
    if url.path == "/search":
        return "SELECT id, name FROM items WHERE name='" + args.get("q", "") + "'"
    return None


def greeting(args: dict[str, list[str]]) -> str:
    """The greeting page, `name` written in unescaped (the flaw)."""
    return f"<p>Hello {args.get('name', ['guest'])[0]}</p>"


class _ServerV6(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def make_server(addr: str, port: int, log: Path | None = None) -> ThreadingHTTPServer:
    """The app on `addr`:`port`; each request is appended to `log` when given, one JSON object a line
    (method, path, content type, body as Latin-1, headers but the framing ones): a request log for offline scoring, as
    `scripts/eval_detect.py` keeps."""
    db = sqlite3.connect(":memory:", check_same_thread=False)
    db.executescript(SCHEMA)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def _log(self, body: bytes = b"") -> None:
            if log is not None:
                ctype = self.headers.get("Content-Type") or ""
                entry = {
                    "method": self.command,
                    "path": self.path,
                    "type": ctype,
                    "body": body.decode("latin-1"),
                    "headers": [[k, v] for k, v in self.headers.items() if k.lower() not in _FRAMING],
                }
                with lock, log.open("a", encoding="utf-8") as out:
                    out.write(json.dumps(entry) + "\n")

        def do_GET(self) -> None:
            self._log()
            url = urlsplit(self.path)
            if url.path == "/greet":
                self._answer(None, greeting(parse_qs(url.query)))
            else:
                self._answer(query_for(self.path), INDEX if url.path == "/lab" else "ok")

        def _answer(self, sql: str | None, body: str = "ok") -> None:
            status = 200
            if sql is not None:
                try:
                    with lock:
                        rows = db.execute(sql).fetchall()
                    body = "<ul>" + "".join(f"<li>{r[0]} {r[1]}</li>" for r in rows) + "</ul>"
                except sqlite3.Error as exc:  # the error page error-based techniques look for
                    status, body = 500, f"SQL error: {exc}"
            data = f"<html><body>{body}</body></html>".encode("utf-8", "replace")
            self.send_response(status)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            # read (bounded); a post to /item or /search is a query with the body's parameter, any other
            # is benign to the app and answered 200 "ok"
            length = min(int(self.headers.get("Content-Length") or 0), MAX_POST_BYTES)
            body = self.rfile.read(length)
            self._log(body)
            path = urlsplit(self.path).path
            if path == "/greet":
                self._answer(None, greeting(parse_qs(body.decode("utf-8", "replace"))))
                return
            args = (
                body_args(body, self.headers.get("Content-Type") or "")
                if path in ("/item", "/search")
                else {}
            )
            self._answer(query_for(self.path, args) if args else None)

        def log_message(self, format: str, *args: object) -> None:
            pass  # a scan makes hundreds of requests

    server_class = _ServerV6 if ":" in addr else ThreadingHTTPServer
    return server_class((addr, port), Handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("addr", help="the lab address to listen on")
    parser.add_argument("port", type=int)
    parser.add_argument("--seconds", type=float, default=300.0, help="stop after this long")
    parser.add_argument("--log", type=Path, help="append each request to this file (JSON lines)")
    args = parser.parse_args(argv)
    server = make_server(args.addr, args.port, args.log)
    stop = threading.Timer(args.seconds, server.shutdown)
    stop.daemon = True
    stop.start()
    print("ready", flush=True)
    server.serve_forever()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
