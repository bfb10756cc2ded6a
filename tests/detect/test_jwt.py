"""jwt_forgery: tokens whose header asks the server to skip or subvert the signature check (alg none, a
stripped signature, an injecting key id, an embedded key), in any header, cookie or value; signed tokens,
DPoP proofs and look-alike text are no finding. Every token here was made for these tests."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.verdict import WorkerVerdict
from threats import catalogue as C
from workers.detect.jwt import check_jwt

from .test_body_parts import flow
from .test_engine import Lab
from .test_headers import CURL, request


def segment(doc: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()


CLAIMS = segment({"sub": "alice", "role": "admin", "exp": 1900000000})
SIGNATURE = "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
FORGED = [
    (segment({"alg": "none", "typ": "JWT"}) + f".{CLAIMS}.", "alg none"),
    (segment({"alg": "NoNe", "typ": "JWT"}) + f".{CLAIMS}.", "alg none in another case"),
    (segment({"alg": "none"}) + f".{CLAIMS}.{SIGNATURE}", "alg none with a signature left on"),
    (segment({"alg": "HS256", "typ": "JWT"}) + f".{CLAIMS}.", "a signature stripped"),
    (
        segment({"alg": "HS256", "kid": "../../../../../../dev/null"}) + f".{CLAIMS}.{SIGNATURE}",
        "kid climbing",
    ),
    (segment({"alg": "HS256", "kid": "k' UNION SELECT 'secret'--"}) + f".{CLAIMS}.{SIGNATURE}", "kid SQL"),
    (segment({"alg": "HS256", "kid": "key|curl 198.18.0.9"}) + f".{CLAIMS}.{SIGNATURE}", "kid shell"),
    (
        segment({"alg": "RS256", "jwk": {"kty": "RSA", "n": "0vx7", "e": "AQAB"}}) + f".{CLAIMS}.{SIGNATURE}",
        "jwk",
    ),
]
GENUINE = [
    (segment({"alg": "RS256", "kid": "2024-07-key-1", "typ": "JWT"}) + f".{CLAIMS}.{SIGNATURE}", "signed"),
    (
        segment({"alg": "ES256", "typ": "dpop+jwt", "jwk": {"kty": "EC", "crv": "P-256"}})
        + f".{CLAIMS}.{SIGNATURE}",
        "DPoP",
    ),
    ("eyJhbGciOiJub25lIn0 is how alg none starts", "a header alone, in prose"),
    ("eyJ.not.json", "no JSON"),
    (
        segment({"alg": "ES256", "kid": "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs--a"})
        + f".{CLAIMS}.{SIGNATURE}",
        "a thumbprint kid",
    ),
    (
        segment({"alg": "RS256", "kid": "projects/shop/keys/signing/versions/3"}) + f".{CLAIMS}.{SIGNATURE}",
        "a key path",
    ),
]


@pytest.mark.parametrize(("token", "why"), FORGED)
def test_a_forged_token_is_found_in_a_header_a_cookie_or_a_value(token: str, why: str) -> None:
    for text in (f"Bearer {token}", f"session={token}; theme=dark", f'{{"token": "{token}"}}'):
        hit = check_jwt([text.encode()])
        assert hit is not None and hit.threat is C.JWT_FORGERY, (why, text)


@pytest.mark.parametrize(("token", "why"), GENUINE)
def test_signed_tokens_dpop_proofs_and_prose_are_no_finding(token: str, why: str) -> None:
    assert check_jwt([f"Bearer {token}".encode()]) is None, why


@given(st.binary(max_size=200))
def test_the_check_is_total(data: bytes) -> None:
    text = b"eyJ" + base64.urlsafe_b64encode(data) + b"." + base64.urlsafe_b64encode(data[::-1]) + b"."
    hit = check_jwt([text, b"eyJhbGciOi" + data + b".e30."])
    assert hit is None or (hit.threat is C.JWT_FORGERY and len(hit.excerpt) <= C.MAX_FINDING_EXCERPT)


def test_a_forged_token_is_reset_in_protect_and_a_signed_one_served() -> None:
    lab = Lab()
    forged = [*CURL, ("Authorization", f"Bearer {FORGED[0][0]}")]
    verdicts = lab.send(flow(request("GET", forged, b"", "/api/admin"), 42980))
    assert verdicts[-1] is WorkerVerdict.RESET_FLOW
    [event] = lab.threats("jwt_forgery")
    assert event["action"] == "reset" and event["group"] == "web"
    signed = [*CURL, ("Authorization", f"Bearer {GENUINE[0][0]}")]
    verdicts = lab.send(flow(request("GET", signed, b"", "/api/admin"), 42981))
    assert WorkerVerdict.RESET_FLOW not in verdicts and len(lab.threats()) == 1
