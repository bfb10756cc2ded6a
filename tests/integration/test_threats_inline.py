"""Threat detection inline: an attack on a protected server is cut and reported, the same request
without the attack goes through."""

from __future__ import annotations

import time

import pytest

from lab.enforcer import LabEnforcer
from lab.topology import Lab
from tests.integration.test_app_rules import _talk

pytestmark = pytest.mark.netns

BENIGN = "GET /search?q=blue+shoes&page=2 HTTP/1.1\\r\\nHost: web\\r\\nUser-Agent: lab\\r\\n\\r\\n"
ATTACK = "GET /search?q=1%27%20UNION%20SELECT%20username,password%20FROM%20users--%20 HTTP/1.1\\r\\nHost: web\\r\\n\\r\\n"


def test_sql_injection_in_http_is_reset_in_protect_mode(lab: Lab) -> None:
    with LabEnforcer(lab) as e:
        assert _talk(lab, BENIGN) == "ok"
        assert _talk(lab, ATTACK) == "reset"
        deadline = time.monotonic() + 8  # threat events are aggregated for a few seconds
        threats: list[dict[str, object]] = []
        while time.monotonic() < deadline and not threats:
            threats = [
                ev for ev in e.events() if ev["type"] == "threat" and ev.get("name") == "sql_injection"
            ]
            time.sleep(0.3)
        assert threats, [ev["type"] for ev in e.events()]
        assert threats[0]["action"] in ("reset", "block", "drop")
