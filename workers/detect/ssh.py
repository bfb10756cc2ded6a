"""SSH password guessing seen inside connections: refused authentication attempts per (client, server).

The readers count a guesser's connections (`threats.attempts`); a guesser that tries as many passwords
per connection as the server allows (hydra: 10 on dropbear, 5 on OpenSSH) opens few of them. The SSH
parser recognises each refused attempt by its encrypted size (`workers.dpi.parsers.ssh`), and this
counts them: more than `failures_per_window` refusals in `window` from one client to one server is
`ssh_brute_force`, whichever way they were spread over connections.
"""

from __future__ import annotations

from threats.catalogue import SSH_BRUTE_FORCE, Hit
from threats.settings import ThreatSettings
from threats.window import WindowCounter


class SshRefusals:
    """Refused SSH logins per (client, server) in a window; bounded by `capacity` keys."""

    def __init__(self, capacity: int = 65536) -> None:
        self._refused: WindowCounter[tuple[bytes, bytes]] = WindowCounter(capacity)

    def on_refusal(self, client: bytes, server: bytes, now: float, settings: ThreatSettings) -> Hit | None:
        window = settings.threshold(SSH_BRUTE_FORCE, "window")
        count = self._refused.hit((client, server), now, window)
        if count <= settings.threshold(SSH_BRUTE_FORCE, "failures_per_window"):
            return None
        return Hit(SSH_BRUTE_FORCE, f"{count:.0f} refused logins in {window:g}s")
