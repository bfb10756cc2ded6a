"""`enforcer capture`'s side of the exchange with the running enforcer, and its output file.

The requester binds a PULL socket `capture-<random>.sock` in the enforcer's run directory (0700: only
root gets there, which is the authentication) and pushes its request into the inbox of each worker
(evidence) or reader (on-demand capture); they answer on that socket with bounded msgpack messages
(`core.messages`). Nothing but those messages is accepted, and each is checked like any other.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import zmq

from core import messages as M
from core.capture import RECORD_OVERHEAD
from core.pcapfile import Record, write_pcap

SEND_TIMEOUT_MS = 1000  # a request the enforcer's socket does not take within this: it is not running
FLUSH_SLACK_S = 3.0  # readers send what they copied once a second; their last chunk may come this late


class CaptureError(RuntimeError):
    """The enforcer cannot be asked, did not answer, or refused (exit status 1)."""


class OutputExists(ValueError):
    """The output file exists (or is a link): never overwritten (exit status 2)."""


def open_output(path: str) -> int:
    """A new file only root reads: created here (O_EXCL), never through a symbolic link, mode 0600."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        raise OutputExists(f"{path} exists; refusing to overwrite it") from None
    except OSError as exc:
        raise OutputExists(f"{path}: cannot create: {exc.strerror}") from None
    os.fchmod(fd, 0o600)  # whatever the umask
    return fd


def write_output(fd: int, records: Iterable[Record]) -> int:
    with os.fdopen(fd, "wb") as fh:
        return write_pcap(fh, records)


class Exchange:
    """One request/answer exchange with the enforcer's processes over its run directory."""

    def __init__(self, run_dir: str) -> None:
        self.run_dir = run_dir
        if not _listening(M.supervisor_endpoint(run_dir)):
            raise CaptureError(f"no enforcer is running here (no live supervisor socket in {run_dir})")
        self.token = secrets.token_hex(8)
        self.ctx = zmq.Context(1)
        self.inbox = self.ctx.socket(zmq.PULL)
        self.inbox.setsockopt(zmq.LINGER, 0)
        try:
            self.inbox.bind(M.capture_reply_endpoint(run_dir, self.token))
        except zmq.ZMQError as exc:
            self.ctx.destroy(linger=0)
            raise CaptureError(f"cannot open a socket in {run_dir}: {exc} (run as root)") from None

    def send(self, endpoint: str, msg: M.Message, what: str) -> None:
        if not _listening(endpoint):
            raise CaptureError(f"no {what} is running (nothing listens on {endpoint.removeprefix('ipc://')})")
        sock = self.ctx.socket(zmq.PUSH)
        sock.setsockopt(zmq.IMMEDIATE, 1)  # only to a live peer: a stale socket file is an error
        sock.setsockopt(zmq.SNDTIMEO, SEND_TIMEOUT_MS)
        sock.setsockopt(zmq.LINGER, SEND_TIMEOUT_MS)
        sock.connect(endpoint)
        try:
            sock.send(M.encode(msg))
        except zmq.Again:
            raise CaptureError(f"the {what} does not answer (is the enforcer running?)") from None
        finally:
            sock.close()

    def receive(self, deadline: float, wanted: Callable[[M.Message], bool]) -> M.Message | None:
        """The next answer `wanted` accepts, or None at `deadline` (monotonic). Bad frames are skipped."""
        while (left := deadline - time.monotonic()) > 0:
            if not self.inbox.poll(int(left * 1000) + 1):
                continue
            try:
                msg = M.decode(self.inbox.recv(zmq.NOBLOCK))
            except (zmq.Again, M.MessageError):
                continue
            if wanted(msg):
                return msg
        return None

    def close(self) -> None:
        self.ctx.destroy(linger=0)  # also removes our socket file


def _listening(endpoint: str) -> bool:
    """Whether a process listens on an ipc endpoint: a socket file left by a stopped one refuses."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(endpoint.removeprefix("ipc://"))
        except OSError:
            return False
    return True


def fetch_evidence(run_dir: str, worker: int, evidence_id: str, timeout: float) -> list[Record]:
    """The packets worker `worker` keeps under `evidence_id`; CaptureError if none."""
    ex = Exchange(run_dir)
    try:
        ex.send(
            M.worker_endpoint(run_dir, worker), M.EvidenceRequest(ex.token, evidence_id), f"worker {worker}"
        )
        reply = ex.receive(
            time.monotonic() + timeout,
            lambda m: isinstance(m, M.EvidenceReply) and m.evidence_id == evidence_id and m.worker == worker,
        )
    finally:
        ex.close()
    if reply is None:
        raise CaptureError(f"worker {worker} did not answer within {timeout:g}s")
    assert isinstance(reply, M.EvidenceReply)
    if not reply.records:
        raise CaptureError(
            f"evidence {evidence_id} is not held by worker {worker} (evicted by newer evidence, or taken "
            "before the worker restarted)"
        )
    return reply.records


@dataclass
class Recorded:
    records: list[Record] = field(default_factory=list)
    bytes: int = 0
    over_budget: int = 0  # matching packets left out once the byte budget was spent
    readers_done: int = 0
    notes: list[str] = field(default_factory=list)


def record(
    run_dir: str, readers: int, start: M.CaptureStart, on_chunk: Callable[[Recorded], None]
) -> Recorded:
    """Ask every reader to copy what `start` matches for `start.seconds`; gather their chunks until each
    says done (or its last chunk is overdue). At most `start.max_bytes` packet bytes in all."""
    out = Recorded()
    ex = Exchange(run_dir)
    try:
        start = dataclasses.replace(start, reply=ex.token)
        for r in range(readers):
            ex.send(M.reader_endpoint(run_dir, r), start, f"reader {r}")
        deadline = time.monotonic() + start.seconds + FLUSH_SLACK_S
        while out.readers_done < readers:
            msg = ex.receive(deadline, lambda m: isinstance(m, M.CaptureChunk) and m.reply == ex.token)
            if msg is None:
                out.notes.append(f"{readers - out.readers_done} reader(s) sent no final chunk in time")
                break
            assert isinstance(msg, M.CaptureChunk)
            for rec in msg.records:
                cost = len(rec[2]) + RECORD_OVERHEAD
                if out.bytes + cost > start.max_bytes:
                    out.over_budget += 1
                    continue
                out.bytes += cost
                out.records.append(rec)
            if msg.done:
                out.readers_done += 1
                out.over_budget += msg.over_budget
                if msg.note:
                    out.notes.append(f"reader {msg.reader}: {msg.note}")
            on_chunk(out)
    finally:
        ex.close()
    out.records.sort(key=lambda rec: rec[0])  # several readers: one time line
    return out
