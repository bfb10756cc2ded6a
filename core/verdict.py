"""What a worker answers for one packet it inspected (sent back to the owning reader)."""

from __future__ import annotations

import enum


class WorkerVerdict(enum.IntEnum):
    PASS = 0  # let this packet through; keep sending the flow's packets (inspection goes on)
    ALLOW_FLOW = 1  # final: let it through and offload the whole connection to the kernel
    DROP = 2  # drop this packet only; the flow stays under inspection
    BLOCK_FLOW = 3  # final: drop this packet and every later packet of the connection in the kernel
    RESET_FLOW = 4  # final: as BLOCK_FLOW, and send a TCP reset to both ends

    @property
    def final(self) -> bool:
        return self in (WorkerVerdict.ALLOW_FLOW, WorkerVerdict.BLOCK_FLOW, WorkerVerdict.RESET_FLOW)
