"""SSH: the identification string each side sends first ("SSH-2.0-OpenSSH_9.6p1 comment\r\n"), then
the binary packets of the key exchange, then the sizes of the encrypted authentication exchange.

RFC 4253 lets a server send other lines before its banner; those are skipped (a bounded number of
bytes). After its banner each side's packets are in clear until its NEWKEYS (message 21): their
lengths are read to find it. After it the parser only measures flights: the bytes one side sends
before the other answers.

Why the flights: a password guesser (hydra, medusa) tries as many passwords on one connection as the
server allows (dropbear 10, OpenSSH `MaxAuthTries` 6), so counting connections sees a tenth of its
guesses. The server's refusal (USERAUTH_FAILURE: the same list of methods every time) is the same
encrypted size every time, while a success, a public-key answer or a session's first reply differs.
So, numbering the client's encrypted flights (1: the service request, 2: the first authentication
request), the server's answer to flight 2 is the refusal's size when that request failed, and every
later answer of exactly that size to a request of at most `MAX_GUESS_BYTES` (a password: a public-key
query carries its key and is larger) is one more refused attempt (`SshAuthFailure`). The first
answer of another size ends the authentication phase (`SshAuthEnd`): what follows is the session.
One exception: a server with a login banner sends it (USERAUTH_BANNER) once, in the flight of its
first refusal, so a smaller answer to flight 3 is taken as the refusal if the answer to flight 4
repeats it (else it was a success, and the phase is over). And a server that asks for the password
through keyboard-interactive (OpenSSH with PAM: hydra uses it where passwords are refused) answers each
request with a prompt (INFO_REQUEST) and the client's answer to it with the refusal: prompts and
refusals take turns, each refusal one more refused attempt (`read_refusals`).
The last answer of a connection has no request after it: it is complete when either side closes or
resets the connection (`stream_ended`, called by the DPI engine). SSH-1 has another packet format and
is not followed past its banner.
"""

from __future__ import annotations

from workers.dpi.events import ParserEvent, SshAuthEnd, SshAuthFailure, SshBanner
from workers.dpi.parsers.base import FeedResult, Outcome, Side
from workers.dpi.settings import DpiSettings

MAX_BANNER = 255  # RFC 4253 §4.2: the identification line is at most 255 bytes including CR LF
MAX_PRELUDE = 1024  # server lines before the banner we are willing to skip
MAX_PACKET = 35000  # RFC 4253 §6.1: the largest packet an implementation must take
MSG_NEWKEYS = 21
# An authentication request counted as a guess is at most this many encrypted bytes: a password
# request (OpenSSH pads the password to 64 bytes) is 76-100; a public-key query (key blob) is larger.
MAX_GUESS_BYTES = 128
MAX_AUTH_EXCHANGES = 64  # client flights followed before the authentication phase is taken as over

_PREFIX = b"SSH-"
_BANNER, _PACKETS, _ENCRYPTED, _DONE = range(4)  # where one side's stream is


def probe(side: Side, head: bytes) -> bool:
    n = min(len(head), 4)
    return head[:n] == _PREFIX[:n]


def parse_banner(line: bytes) -> SshBanner | None:
    if not line.startswith(_PREFIX):
        return None
    rest = line[4:]
    version, sep, tail = rest.partition(b"-")
    if not sep or not version or not all(0x30 <= c <= 0x39 or c == 0x2E for c in version):
        return None
    software, _, comments = tail.partition(b" ")
    if not software or any(c < 0x21 or c > 0x7E for c in software):
        return None
    return SshBanner(version, software, comments)


def read_refusals(answers: list[tuple[int, bool]]) -> tuple[int, bool]:
    """The refused guesses the server's answers show (`answers`: their sizes from the first
    authentication request on, and whether each request was small enough to be a guess), and whether
    the last answer fits no way of refusing (the authentication phase is over). The first answer is the
    refusal (of the `none` request a client sends first, or of a first guess: never counted). Then:

    - passwords: every later answer is that refusal, each one refused guess;
    - a login banner: it rode with the first answer only, so every later answer is one smaller size
      (counted once a third answer confirms it);
    - keyboard-interactive (PAM): the server prompts, the client answers with the password, the server
      refuses, and the client asks again: prompts (the second, fourth … answers, of another size than
      the refusal) and refusals (the third, fifth …: the first answer's size) take turns, each refusal a
      refused guess (counted once two rounds confirm the turns: a success answers a prompt otherwise).
      A login banner beside keyboard-interactive prompts is not followed (the turns never start).
    """
    sizes = [size for size, _guess in answers]
    first, n = sizes[0], len(sizes)
    if all(size == first for size in sizes[1:]):
        return sum(guess for _size, guess in answers[1:]), False
    if sizes[1] < first and all(size == sizes[1] for size in sizes[2:]):
        return (sum(guess for _size, guess in answers[1:]) if n >= 3 else 0), False
    prompt, refusals = sizes[1], sizes[2::2]
    turns = all(size == prompt for size in sizes[1::2]) and all(size == first for size in refusals)
    if turns:
        return (sum(guess for _size, guess in answers[2::2]) if len(refusals) >= 2 else 0), False
    return 0, True


class AuthFlights:
    """The encrypted flights of both sides, read for refused authentication attempts (module docstring)."""

    __slots__ = ("side", "size", "client_flights", "client_size", "answers", "failures", "over")

    def __init__(self) -> None:
        self.side = -1  # the side whose flight is open
        self.size = 0  # ... and its bytes so far
        self.client_flights = 0  # client flights closed (by the server's answer)
        self.client_size = 0  # the last one's bytes
        # the server's answers to the authentication requests (from client flight 2): (bytes, whether the
        # request was small enough to be a password guess)
        self.answers: list[tuple[int, bool]] = []
        self.failures = 0
        self.over = False

    def add(self, side: Side, n: int, events: list[ParserEvent]) -> None:
        if self.over:
            return
        if side != self.side:
            if self.side == Side.CLIENT:
                self.client_flights += 1
                self.client_size = self.size
            elif self.side == Side.SERVER:
                self._answer(self.size, events)
            self.side, self.size = side, 0
        self.size += n

    def _answer(self, size: int, events: list[ParserEvent]) -> None:
        """A server flight is complete: the answer to client flight `client_flights`."""
        k = self.client_flights
        if k < 2:
            return  # sent before any request (EXT_INFO), or the service accept
        self.answers.append((size, self.client_size <= MAX_GUESS_BYTES))  # (a refused public key is no guess)
        refused, over = read_refusals(self.answers)
        while self.failures < refused:
            self._refused(events)
        if over or k >= MAX_AUTH_EXCHANGES:
            self.end(events)

    def _refused(self, events: list[ParserEvent]) -> None:
        self.failures += 1
        events.append(SshAuthFailure(self.failures))

    def close(self, events: list[ParserEvent]) -> None:
        """The connection is ending: the flight still open is complete (a refusal the server sent just
        before the guesser gave up, or just before it closed)."""
        if self.side == Side.SERVER and not self.over:
            self._answer(self.size, events)
        self.side, self.size = -1, 0

    def end(self, events: list[ParserEvent]) -> None:
        if not self.over:
            self.over = True
            events.append(SshAuthEnd(self.failures))


class SshParser:
    __slots__ = ("s", "phase", "identified", "skipped", "auth")

    def __init__(self, settings: DpiSettings) -> None:
        self.s = settings
        self.phase = [_BANNER, _BANNER]
        self.identified = False
        self.skipped = [0, 0]
        self.auth = AuthFlights()

    def feed(self, side: Side, data: bytes) -> FeedResult:
        phase = self.phase[side]
        if phase == _ENCRYPTED:
            events: list[ParserEvent] = []
            self.auth.add(side, len(data), events)
            return FeedResult(len(data), 0, events, Outcome.KEEP)
        if phase == _PACKETS:
            return self._packets(side, data, 0, [], Outcome.KEEP)
        if phase == _DONE:
            return FeedResult(len(data), 0, [], Outcome.KEEP)
        return self._banner(side, data)

    def _banner(self, side: Side, data: bytes) -> FeedResult:
        events: list[ParserEvent] = []
        pos = 0
        while True:
            nl = data.find(b"\n", pos)
            if nl < 0:
                if len(data) - pos > MAX_BANNER:
                    return FeedResult(pos, 0, events, Outcome.GIVE_UP)
                if not self.identified and not probe(side, data[pos:]) and side is Side.CLIENT:
                    return FeedResult(pos, 0, events, Outcome.GIVE_UP)
                return FeedResult(pos, 0, events, Outcome.KEEP)
            line = data[pos:nl].rstrip(b"\r")
            if len(line) > MAX_BANNER:
                return FeedResult(pos, 0, events, Outcome.GIVE_UP)
            banner = parse_banner(line)
            pos = nl + 1
            if banner is None:
                self.skipped[side] += len(line) + 1
                if side is Side.CLIENT or self.skipped[side] > MAX_PRELUDE or line.startswith(_PREFIX):
                    return FeedResult(pos, 0, events, Outcome.GIVE_UP)
                continue
            events.append(banner)
            newly = not self.identified
            self.identified = True
            outcome = Outcome.FINAL if newly else Outcome.KEEP
            ssh1 = banner.proto_version.startswith(b"1.") and banner.proto_version != b"1.99"
            if ssh1 or _DONE in self.phase:  # SSH-1 (another packet format), or the other side is lost
                return self._stop(side, data, events, outcome)
            self.phase[side] = _PACKETS
            return self._packets(side, data, pos, events, outcome)

    def _packets(
        self, side: Side, data: bytes, pos: int, events: list[ParserEvent], outcome: Outcome
    ) -> FeedResult:
        """The clear packets of the key exchange, up to this side's NEWKEYS."""
        while True:
            if len(data) - pos < 6:
                return FeedResult(pos, 6 - (len(data) - pos), events, outcome)
            length = int.from_bytes(data[pos : pos + 4], "big")
            if not 5 <= length <= MAX_PACKET:
                return self._stop(side, data, events, outcome)  # no SSH-2 packet: follow no further
            end = pos + 4 + length
            if end > len(data):
                return FeedResult(pos, end - len(data), events, outcome)
            newkeys = data[pos + 5] == MSG_NEWKEYS
            pos = end
            if newkeys:
                self.phase[side] = _ENCRYPTED
                if pos < len(data):
                    self.auth.add(side, len(data) - pos, events)
                return FeedResult(len(data), 0, events, outcome)

    def stream_ended(self, side: Side) -> list[ParserEvent]:
        """A side closed (FIN) or the connection was reset (`workers.dpi.parsing`)."""
        events: list[ParserEvent] = []
        if self.phase[Side.CLIENT] == _ENCRYPTED and self.phase[Side.SERVER] == _ENCRYPTED:
            self.auth.close(events)
        return events

    def _stop(self, side: Side, data: bytes, events: list[ParserEvent], outcome: Outcome) -> FeedResult:
        """Nothing more to read on this side: the authentication phase is not followed (said once the
        other side's banner is in too: the window stays open for it)."""
        self.phase[side] = _DONE
        if _BANNER not in self.phase:
            self.auth.end(events)
        return FeedResult(len(data), 0, events, outcome)
