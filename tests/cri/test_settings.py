"""The [cri] table: defaults, the environment override, errors that name the key."""

from __future__ import annotations

import pytest

from node.config import ConfigError, config_from_dict
from runtime.cri.settings import AUTO, CriSettings


def test_socket_from_the_environment_and_off() -> None:
    assert config_from_dict({}).cri.socket == AUTO
    assert config_from_dict(
        {}, environ={"ENFORCER_CRI_SOCKET": "/run/k3s/containerd/containerd.sock"}
    ).cri.socket == ("/run/k3s/containerd/containerd.sock")
    off = config_from_dict({"cri": {"socket": ""}})
    assert off.cri.resolve_socket() == ""
    assert CriSettings(socket="/x/cri.sock").resolve_socket() == "/x/cri.sock"


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({"socket": "relative.sock"}, "cri.socket"),
        ({"poll_ms": 0}, "cri.poll_ms"),
        ({"max_pods": 0}, "cri.max_pods"),
    ],
)
def test_bad_values_name_the_key(table: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        config_from_dict({"cri": table})
