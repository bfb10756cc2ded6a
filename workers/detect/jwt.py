"""A forged JSON Web Token in an HTTP request: a token whose header asks the server to skip or subvert
the signature check, as jwt_tool and Burp's JWT editor forge them.

A token (three base64url segments, the header a JSON object: `eyJ…`) anywhere in the request's header
values (`Authorization: Bearer …`), cookies, query or body values is a finding when its header:
- names no algorithm (`"alg": "none"`, in any case: CVE-2015-9235 and its kin), or names one but comes
  with no signature (a signature stripped);
- carries a key id that injects into whatever looks the key up (`"kid": "../../../../dev/null"`, a
  quote and SQL, a shell's metacharacters);
- carries its own key (`"jwk": {…}`, CVE-2018-0114), outside a DPoP proof (`"typ": "dpop+jwt"`, RFC 9449,
  which carries its key by design).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable

from threats.catalogue import JWT_FORGERY, Hit, excerpt_of

MAX_TOKENS = 16  # tokens looked at per request
# header.payload.signature; the header a JSON object (`{"` is `eyJ` in base64url)
_TOKEN = re.compile(rb"eyJ[A-Za-z0-9_-]{6,}={0,2}\.[A-Za-z0-9_-]*={0,2}\.([A-Za-z0-9_-]*)")
# a key id that climbs out of a key directory, names a device, or breaks out into SQL or a shell
# (not `--`: a key's thumbprint, base64url, may hold two dashes)
_KID_INJECTION = re.compile(r"\.\.[/\\]|^/dev/|^/proc/|['\"]|\b(?:union|select)\b|[;|`]|\$\(|%00|\x00", re.I)


def check_jwt(texts: Iterable[bytes]) -> Hit | None:
    """A forged token in any of `texts` (header values, and values percent-decoded), or None."""
    seen = 0
    for text in texts:
        if b"eyJ" not in text:  # (most texts hold no token)
            continue
        for m in _TOKEN.finditer(text):
            seen += 1
            if seen > MAX_TOKENS:
                return None
            why = _forged(m.group().split(b".", 1)[0], m.group(1))
            if why:
                return Hit(JWT_FORGERY, why, excerpt_of(m.group()))
    return None


def _forged(encoded_header: bytes, signature: bytes) -> str:
    """Why a token with this header and signature is forged ("": it is not)."""
    raw = encoded_header.rstrip(b"=")
    try:
        header = json.loads(base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        return ""
    if not isinstance(header, dict):
        return ""
    alg = header.get("alg")
    if isinstance(alg, str) and alg.strip().lower() == "none":
        return "an unsigned token (alg none)"
    if isinstance(alg, str) and not signature and alg.upper().startswith(("HS", "RS", "ES", "PS", "ED")):
        return f"a token without its signature ({alg[:10]})"
    kid = header.get("kid")
    if isinstance(kid, str) and _KID_INJECTION.search(kid):
        return "a key id that injects"
    typ = header.get("typ")
    if "jwk" in header and not (isinstance(typ, str) and typ.lower() == "dpop+jwt"):
        return "a token that carries its own key (jwk)"
    return ""
