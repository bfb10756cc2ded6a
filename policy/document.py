"""The derived document of a policy: everything its consumers compile that is not an L3/L4 table.

The policy process derives it from each snapshot it applies (the node host says how: the readers' guard
wants the threat settings, the workers the threat settings and sensors, the runtime child the process
profiles and file rules), encodes it here and publishes it in the same half of the shared tables file as
the tables, under the same generation. Consumers read it back from the tables (`SharedTables.document`)
and decode it here. msgpack of plain values only (no pickle), bounded.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgpack

# A policy's threat settings, sensors, profiles and file rules take well under 1 MiB even when large; the
# bound keeps one bad policy from crowding the tables out of their half (a bigger one is rejected whole).
MAX_DOCUMENT_BYTES = 4 << 20


class DocumentError(ValueError):
    """A derived document that cannot be encoded, is too large, or does not decode."""


def encode_document(document: dict[str, Any]) -> bytes:
    try:
        data: bytes = msgpack.packb(document, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise DocumentError(f"derived document not encodable: {exc}") from None
    if len(data) > MAX_DOCUMENT_BYTES:
        raise DocumentError(f"derived document is {len(data)} bytes, at most {MAX_DOCUMENT_BYTES} fit")
    return data


def decode_document(data: bytes) -> dict[str, Any]:
    """The document as published; b"" (a generation published without one) is the empty document."""
    if not data:
        return {}
    if len(data) > MAX_DOCUMENT_BYTES:
        raise DocumentError(f"derived document of {len(data)} bytes exceeds {MAX_DOCUMENT_BYTES}")
    try:
        document = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise DocumentError(f"derived document does not decode: {exc}") from None
    if not isinstance(document, dict):
        raise DocumentError("derived document is not a mapping")
    return document


def document_digest(data: bytes) -> int:
    """A 64-bit digest of an encoded document: equal digests mean the consumers have nothing to redo."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")
