"""Configuration: the shipped file, environment overrides, and errors that name the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from node.config import DEFAULT_CONFIG_PATH, Config, ConfigError, config_from_dict, load_config


def test_shipped_file_is_the_defaults_and_every_key_is_commented() -> None:
    assert load_config(DEFAULT_CONFIG_PATH, environ={}) == Config()
    for line in DEFAULT_CONFIG_PATH.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            assert line.split("=", 1)[1].split("#", 1)[1].strip(), f"uncommented key: {line}"


def test_environment_overrides_and_aliases() -> None:
    env = {
        "ENFORCER_WORKERS": "3",
        "ENFORCER_READERS": "4",
        "ENFORCER_CPUS": "0-1",
        "CLUSTER_JOIN_ADDR": "198.18.0.1:18400",
        "ENFORCER_QUEUES_GSO": "off",
        "ENFORCER_NETFILTER_HOOKS": "FORWARD,OUTPUT",
        "ENFORCER_FAILURE_VERDICT_TIMEOUT": "drop",
    }
    c = config_from_dict({"workers": {"count": 9}}, env)
    assert (c.workers.count, c.queues.readers, c.cpus) == (3, 4, (0, 1))
    assert c.controller.join_addr == "198.18.0.1:18400" and c.queues.gso is False
    assert c.netfilter.hooks == ("FORWARD", "OUTPUT") and c.failure.verdict_timeout == "drop"
    assert c.queue_numbers == (0, 1, 2, 3)


@pytest.mark.parametrize(
    ("doc", "env", "message"),
    [
        ({"queues": {"readerz": 2}}, {}, "queues.readerz: unknown key"),
        ({"bogus": {}}, {}, "bogus: unknown key"),
        ({"queues": {"readers": "two"}}, {}, "queues.readers: expected an integer"),
        ({"queues": {"readers": 0}}, {}, "queues.readers: expected 1..64"),
        ({"failure": {"queue_full": "maybe"}}, {}, "failure.queue_full: expected pass or drop"),
        ({"netfilter": {"hooks": ["PREROUTING"]}}, {}, "netfilter.hooks[0]"),
        ({"netfilter": {"accept_mark": 3}}, {}, "netfilter.accept_mark: expected a single bit"),
        ({"netfilter": {"pass_mark": 0x100000}}, {}, "five distinct mark bits"),
        ({"netfilter": {"flood_mark": 0x100000}}, {}, "five distinct mark bits"),
        ({"netfilter": {"udp_flow_rate": -1}}, {}, "netfilter.udp_flow_rate: expected 0..1000000"),
        ({"cpus": [4096]}, {}, "cpus[0]"),
        (
            {},
            {"ENFORCER_WORKERS": "many"},
            "workers.count: expected an integer, got 'many' (from $ENFORCER_WORKERS)",
        ),
        ({}, {"ENFORCER_QUEUES_GSO": "perhaps"}, "queues.gso: expected true or false"),
        ({"metrics": {"listen": "localhost"}}, {}, "metrics.listen: expected host:port"),
        ({"workers": {"inspect": "some"}}, {}, "workers.inspect: expected app or new or all"),
    ],
)
def test_errors_name_the_key(doc: dict[str, object], env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict(doc, env)
    assert message in str(err.value)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "node.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=30)  # fmt: skip


def test_bad_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[queues]\nreaders = -1\n")
    for command in (["config", "check"], ["run"]):
        result = _cli(*command, "--config", str(bad))
        assert result.returncode == 2 and "queues.readers" in result.stderr, result.stderr
    result = _cli("config", "check", env={"ENFORCER_WORKERS": "x"})
    assert result.returncode == 2 and "workers.count" in result.stderr
    (tmp_path / "broken.toml").write_text("[queues\n")
    result = _cli("config", "check", "--config", str(tmp_path / "broken.toml"))
    assert result.returncode == 2 and "not valid TOML" in result.stderr


def test_config_check_prints_effective_values() -> None:
    result = _cli("config", "check", env={"ENFORCER_WORKERS": "5"})
    assert result.returncode == 0 and "count = 5  # number of DPI worker processes" in result.stdout


def test_version() -> None:
    from core import __version__

    result = _cli("--version")
    assert result.stdout.strip() == f"enforcer {__version__}"
