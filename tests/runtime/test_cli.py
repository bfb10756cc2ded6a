from __future__ import annotations

import json
import os
import subprocess
import sys

from node.cli import main
from runtime.cli import load_policy


def test_bad_policy_files_exit_2_naming_the_problem(tmp_path, capsys) -> None:
    missing = os.path.join(str(tmp_path), "nope.yaml")
    assert main(["runtime", "--policy", missing]) == 2
    assert "nope.yaml" in capsys.readouterr().err
    bad = os.path.join(str(tmp_path), "bad.yaml")
    with open(bad, "w") as f:
        f.write("profiles:\n  web:\n    mode: lockdown\n")
    assert main(["runtime", "--policy", bad]) == 2
    assert "lockdown" in capsys.readouterr().err
    with open(bad, "w") as f:
        f.write("- a list\n")
    assert main(["runtime", "--policy", bad]) == 2
    assert "mapping" in capsys.readouterr().err


def test_runs_and_prints_events_as_json_lines(tmp_path, netns: str) -> None:
    pol = os.path.join(str(tmp_path), "policy.yaml")
    with open(pol, "w") as f:
        f.write(
            f"groups:\n  - name: pod\n    labels: {{netns: {netns}}}\n"
            "profiles:\n  pod:\n    mode: monitor\n    entries:\n      - {name: ip}\n      - {name: sh}\n"
        )
    assert load_policy(pol).profiles["pod"].entries[0].name == "ip"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "node.cli",
            "runtime",
            "--policy",
            pol,
            "--duration",
            "3",
            "--no-file-monitor",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    first = json.loads(proc.stdout.readline())
    assert first["what"] == "runtime.started"
    subprocess.run(["ip", "netns", "exec", netns, "sh", "-c", "sleep 0.2"], check=True)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0
    events = [json.loads(line) for line in out.splitlines()]
    assert any(e["type"] == "process" and e["action"] == "violation" and e["name"] == "sleep" for e in events)
