"""HTTP/2 control-frame floods (`http2_control_flood`), timed per connection.

The HTTP/2 parser counts a client's control frames by kind (PING, SETTINGS, PRIORITY, empty frames) and
reports every `CONTROL_BATCH` of one kind; it has no clock. `ControlFrames` times those reports against
the group's rate: `frames_per_window` frames of one kind within `window` seconds is a flood (counted in
whole batches, so the rate is rounded up to one). A connection keeps the times of its last few batches
per kind, reports once, and a client that pings now and then for hours never fills a window.
"""

from __future__ import annotations

import math
from collections import deque

from threats import catalogue as C
from threats.catalogue import Hit
from threats.settings import ThreatSettings
from workers.dpi.parsers.http2 import CONTROL_BATCH


class ControlFrames:
    """The batch times of one connection's control frames, by kind."""

    __slots__ = ("batches", "reported")

    def __init__(self) -> None:
        self.batches: dict[str, deque[float]] = {}
        self.reported = False

    def batch(self, kind: str, now: float, settings: ThreatSettings) -> Hit | None:
        """Another `CONTROL_BATCH` frames of `kind` arrived at `now`: the flood, the first time the
        group's rate is reached."""
        if self.reported:
            return None
        rate = settings.threshold(C.HTTP2_CONTROL_FLOOD, "frames_per_window")
        window = settings.threshold(C.HTTP2_CONTROL_FLOOD, "window")
        batches = max(1, math.ceil(rate / CONTROL_BATCH))
        times = self.batches.get(kind)
        if times is None or times.maxlen != batches + 1:  # (first batch, or the group's rate changed)
            times = self.batches[kind] = deque(times or (), maxlen=batches + 1)
        times.append(now)
        if len(times) <= batches or now - times[0] > window:
            return None
        self.reported = True
        return Hit(
            C.HTTP2_CONTROL_FLOOD,
            f"{batches * CONTROL_BATCH} {kind} frames from the client in {now - times[0]:.1f} s",
        )
