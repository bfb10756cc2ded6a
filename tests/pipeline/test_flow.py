"""Flow identity: one key for both directions, a hash that is symmetric, seeded and process-independent."""

from __future__ import annotations

import subprocess
import sys

from hypothesis import given
from hypothesis import strategies as st

from core.flow import Direction, flow_hash, flow_key, worker_for
from core.packet import Fragment, PacketMeta, decode
from tests.pipeline.packets import tcp4, tcp6


def test_both_directions_share_one_key() -> None:
    k1, d1 = flow_key(decode(tcp4("198.18.1.11", "198.18.2.11", 40000, 80)))
    k2, d2 = flow_key(decode(tcp4("198.18.2.11", "198.18.1.11", 80, 40000)))
    assert k1 == k2 and {d1, d2} == {Direction.A_TO_B, Direction.B_TO_A}
    k3, _ = flow_key(decode(tcp6(sport=1, dport=2)))
    k4, _ = flow_key(decode(tcp6(src="fd00:198:18:2::b", dst="fd00:198:18:1::b", sport=2, dport=1)))
    assert k3 == k4


@given(st.binary(min_size=4, max_size=4), st.binary(min_size=4, max_size=4), st.integers(0, 65535),
       st.integers(0, 65535), st.integers(0, 2**32 - 1))  # fmt: skip
def test_hash_is_symmetric(a: bytes, b: bytes, pa: int, pb: int, seed: int) -> None:
    def meta(src: bytes, dst: bytes, sp: int, dp: int) -> PacketMeta:
        return PacketMeta(4, 6, src, dst, sp, dp, 0, 0, 0, 0, -1, 0, Fragment.NONE, 0, 0, 64, 40, 20, 40, "")

    k1, _ = flow_key(meta(a, b, pa, pb))
    k2, _ = flow_key(meta(b, a, pb, pa))
    assert flow_hash(k1, seed) == flow_hash(k2, seed)


def test_seed_changes_the_spread() -> None:
    keys = [flow_key(decode(tcp4(sport=p)))[0] for p in range(1000, 1200)]
    a = [worker_for(k, 1, 4) for k in keys]
    b = [worker_for(k, 2, 4) for k in keys]
    assert a != b
    assert set(a) == {0, 1, 2, 3}  # and every worker gets flows


def test_same_hash_in_another_process() -> None:
    key = flow_key(decode(tcp4(sport=4242)))[0]
    code = (
        "from core.flow import flow_key, flow_hash; from core.packet import decode;"
        "from tests.pipeline.packets import tcp4;"
        "print(flow_hash(flow_key(decode(tcp4(sport=4242)))[0], 12345))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout) == flow_hash(key, 12345)
