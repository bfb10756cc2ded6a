"""The verdict-lookup contract between the policy tables and the packet path.

Readers and workers depend on this module only; how the tables are built and where they live (shared
memory written by the policy process) is the policy package's business. A lookup never raises for
traffic: an address in no group falls in the built-in `external` group, and a pair of groups with no
matching rule falls to the deciding group's mode.
"""

from __future__ import annotations

import enum
from typing import NamedTuple, Protocol


class Mode(enum.IntEnum):
    DISCOVER = 0
    MONITOR = 1
    PROTECT = 2


class Action(enum.IntEnum):
    """What the packet path does with a flow."""

    ALLOW = 0  # let it through
    DENY = 1  # block it (first packet dropped; TCP gets a reset)


class Report(enum.IntEnum):
    """Which event, if any, the decision must produce."""

    NONE = 0
    LEARNED = 1  # discover mode: an unmatched connection, to be learned
    VIOLATION = 2  # monitor/protect: unmatched or denied traffic


class Decision(NamedTuple):
    """The answer for one flow at one policy generation."""

    action: Action
    final: bool  # True: the L3/L4 answer is the flow's fate; False: the rule needs the application (DPI)
    rule_id: int  # the matching rule; 0 for an implicit decision (mode default)
    mode: Mode  # mode of the group whose mode decided
    report: Report
    src_group: str
    dst_group: str
    generation: int  # the policy generation the answer came from


class PolicyTables(Protocol):
    """Read side of the compiled policy, as seen by readers and workers."""

    def generation(self) -> int:
        """The generation currently published (monotonic). 0 means no policy has been published yet."""
        ...

    def decide(self, family: int, src: bytes, dst: bytes, proto: int, dport: int) -> Decision:
        """The L3/L4 decision for a new flow (`src`/`dst` are 4 or 16 raw address bytes)."""
        ...

    def decide_app(
        self,
        family: int,
        src: bytes,
        dst: bytes,
        proto: int,
        dport: int,
        app: str,
        host: str = "",
        server_app: str | None = "",
    ) -> Decision:
        """The decision once the flow's application is known (e.g. "HTTP", "MySQL").

        `host` is the virtual host the client asked for (HTTP Host, TLS SNI; see `normalize_host`),
        "" when it named none. `server_app` is the server software its HTTP response named ("etcd",
        "CouchDB" …; "" none); None while that response has not been seen: a rule naming a server
        application then gives a provisional answer (`final=False`), and the caller asks again once
        the response is in. Otherwise the answer is final.
        """
        ...


def normalize_host(raw: bytes | str) -> str:
    """A Host header or SNI value as host rules compare it: lower case, no port, no trailing dot.

    Anything that is not a plausible DNS name (an IP literal, control bytes, over 253 characters)
    becomes "", which no host pattern matches.
    """
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("ascii")
        except UnicodeDecodeError:
            return ""
    name = raw.strip().lower()
    if name.startswith("["):
        return ""  # an IPv6 literal
    name = name.rsplit(":", 1)[0] if name.count(":") == 1 else name
    name = name.rstrip(".")
    if not name or len(name) > 253 or not all(c.isalnum() or c in "-._" for c in name) or not name.isascii():
        return ""
    return name
