"""Messages between processes: round trips, and bad frames rejected with a named anomaly."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core import anomalies as A
from core import messages as M


@pytest.mark.parametrize(
    "msg",
    [
        M.Inspect(1, [(7, b"\x45packet", 0), (8, b"", M.NO_VERDICT)]),
        M.Verdicts(0, [(7, 1, 10), (8, 4, 0)]),
        M.Events("worker 1", [{"type": "audit", "what": "x", "n": 1}]),
        M.Heartbeat("reader", 2, 1234, {"packets": 5}),
        M.BlockSources("reader 0", [(bytes(4), 30.0), (bytes(16), 0.5)]),
    ],
)
def test_round_trip(msg: M.Message) -> None:
    assert M.decode(M.encode(msg)) == msg


@pytest.mark.parametrize(
    ("frame", "anomaly"),
    [
        (b"\xc1", A.MESSAGE_MALFORMED),
        (msgpack.packb({"a": 1}), A.MESSAGE_MALFORMED),
        (msgpack.packb([99, 1, 0, []]), A.MESSAGE_BAD_VERSION),
        (msgpack.packb([M.SCHEMA_VERSION, 77]), A.MESSAGE_UNKNOWN_TYPE),
        (msgpack.packb([M.SCHEMA_VERSION, 1, 0, [[1, "not bytes", 0]]]), A.MESSAGE_MALFORMED),
        (
            msgpack.packb([M.SCHEMA_VERSION, 1, 0, [[1, b"x"]]]),
            A.MESSAGE_MALFORMED,
        ),  # no flags (version 1 item)
        (msgpack.packb([M.SCHEMA_VERSION, 1, 0, [[1, b"x", 2]]]), A.MESSAGE_MALFORMED),  # unknown flag bit
        (msgpack.packb([M.SCHEMA_VERSION, 1, 0, [[1, b"x", True]]]), A.MESSAGE_MALFORMED),
        (msgpack.packb([1, 1, 0, [[1, b"x"]]]), A.MESSAGE_BAD_VERSION),  # a reader of the old schema
        (msgpack.packb([M.SCHEMA_VERSION, 2, 0, [[1, 2]]]), A.MESSAGE_MALFORMED),
        (msgpack.packb([M.SCHEMA_VERSION, 4, "reader", "x", 1, {}]), A.MESSAGE_MALFORMED),
        (msgpack.packb([M.SCHEMA_VERSION, 5, "reader 0", [[b"abc", 30.0]]]), A.MESSAGE_MALFORMED),
        (msgpack.packb([M.SCHEMA_VERSION, 5, "reader 0", [[bytes(4), 0]]]), A.MESSAGE_MALFORMED),
        (msgpack.packb([M.SCHEMA_VERSION, 5, "reader 0", [[bytes(4), 1e9]]]), A.MESSAGE_MALFORMED),
        (
            msgpack.packb([M.SCHEMA_VERSION, 1, 0, [[1, b"x" * (M.MAX_PACKET_BYTES + 1), 0]]]),
            A.MESSAGE_MALFORMED,
        ),
    ],
)
def test_bad_frames_are_named(frame: bytes, anomaly: str) -> None:
    with pytest.raises(M.MessageError) as err:
        M.decode(frame)
    assert err.value.anomaly == anomaly


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=200))
def test_random_frames_raise_only_message_error(frame: bytes) -> None:
    try:
        msg = M.decode(frame)
    except M.MessageError as exc:
        assert exc.anomaly in (A.MESSAGE_MALFORMED, A.MESSAGE_BAD_VERSION, A.MESSAGE_UNKNOWN_TYPE)
    else:
        assert M.decode(M.encode(msg)) == msg
