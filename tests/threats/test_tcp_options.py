"""TCP option parsing: the one-unpack path for the usual SYN layout gives what the full walk gives."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from threats.tcp import parse_tcp_options, walk_tcp_options

# A Linux SYN's options: MSS 1460, SACK permitted, timestamps, NOP, window scale 7.
LINUX_SYN = bytes.fromhex("020405b40402080a0001e2400000000001030307")


def _fields(opts: bytes) -> tuple[bool, int, int, bool]:
    r = parse_tcp_options(opts)
    return r.ok, r.mss, r.wscale, r.fast_open


def _walked(opts: bytes) -> tuple[bool, int, int, bool]:
    r = walk_tcp_options(opts)
    return r.ok, r.mss, r.wscale, r.fast_open


def test_linux_syn_options() -> None:
    assert _fields(LINUX_SYN) == (True, 1460, 7, False) == _walked(LINUX_SYN)


@settings(max_examples=600, deadline=None)
@given(st.data())
def test_usual_layout_path_agrees_with_the_walk(data: st.DataObject) -> None:
    # Mutate the bytes the fast path checks (kinds and lengths) and the values it reads, so layouts it must
    # refuse (a wrong length, another kind, a fast-open cookie) reach the walk and still agree.
    b = bytearray(LINUX_SYN)
    for _ in range(data.draw(st.integers(0, 3))):
        i = data.draw(
            st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, data.draw(st.integers(0, 19))])
        )
        b[i] = data.draw(st.sampled_from([0, 1, 2, 3, 4, 8, 10, 34, 255, data.draw(st.integers(0, 255))]))
    assert _fields(bytes(b)) == _walked(bytes(b))


@settings(max_examples=500, deadline=None)
@given(st.binary(min_size=20, max_size=20))
def test_random_twenty_bytes_agree_with_the_walk(opts: bytes) -> None:
    assert _fields(opts) == _walked(opts)
