"""CURVE key pairs for the controller link, as zmq.auth certificate files.

`NAME.key` holds the public key (give it to the other side), `NAME.key_secret` the secret one (mode
0600, stays where it was made). The controller lists the enforcers it accepts as the public key files
in its clients directory; an enforcer knows the controller by its public key file.
"""

from __future__ import annotations

import os
from pathlib import Path

import zmq.auth


def generate_keypair(directory: str | os.PathLike[str], name: str) -> tuple[Path, Path]:
    """Write NAME.key and NAME.key_secret into `directory` (created 0700); returns their paths."""
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"key name {name!r} is not a plain file name")
    d = Path(directory)
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    old = os.umask(0o077)
    try:
        public, secret = zmq.auth.create_certificates(str(d), name)
    finally:
        os.umask(old)
    os.chmod(secret, 0o600)
    return Path(public), Path(secret)


def load_public_keys(directory: str | os.PathLike[str]) -> dict[bytes, str]:
    """Public keys (Z85) of the `*.key` certificate files in `directory` → their file stem."""
    keys: dict[bytes, str] = {}
    d = Path(directory)
    if not d.is_dir():
        return keys
    for path in sorted(d.glob("*.key")):
        try:
            public, _ = zmq.auth.load_certificate(str(path))
        except (OSError, ValueError):
            continue
        keys[public] = path.stem
    return keys
