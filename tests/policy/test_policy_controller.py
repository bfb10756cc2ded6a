"""Reference controller pieces: policy directory merge, event store, CLI queries, keys; the control
message codec under hostile input."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import stat
import time
from pathlib import Path

import msgpack
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.cli import register
from controller.policy_dir import MAX_DELTA_HISTORY, PolicyDirectory, ServedPolicy, load_policy_dir
from controller.store import EventStore
from core import control as C
from core.events import EventType, make_event
from core.messages import MessageError
from policy.loader import parse_policy
from policy.model import PolicyError

DATA = Path(__file__).parent / "data"
DEMO = Path(__file__).resolve().parents[2] / "config" / "policies" / "demo.yaml"


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="enforcer")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return int(args.func(args))


def test_policy_directory_merges_native_and_crd_files(tmp_path: Path) -> None:
    demo = yaml.safe_load(DEMO.read_text())
    demo["groups"] = [g for g in demo["groups"] if g["name"] != "example-sites"]
    (tmp_path / "10-demo.yaml").write_text(yaml.safe_dump(demo))
    shutil.copy(DATA / "nv_security_rules.yaml", tmp_path / "20-neuvector.yaml")
    shutil.copy(DATA / "nv_security_rules.yaml", tmp_path / "30-same-groups-again.yaml")
    (tmp_path / "notes.txt").write_text("ignored")
    doc = load_policy_dir(tmp_path)
    snap = parse_policy(doc)
    names = {g.name for g in snap.groups}
    assert {"servers", "nv.nginx-pod.demo", "external"} <= names
    assert len(snap.rules) == 5 + 6  # the CRD export holds 6 rules, repeated by the third file


def test_policy_directory_conflicts_name_the_file(tmp_path: Path) -> None:
    shutil.copy(DEMO, tmp_path / "a.yaml")
    shutil.copy(DEMO, tmp_path / "b.yaml")
    assert len(load_policy_dir(tmp_path)["rules"]) == 5  # identical groups and rules merge
    (tmp_path / "b.yaml").write_text(DEMO.read_text().replace("mode: protect", "mode: monitor"))
    with pytest.raises(PolicyError, match="b.yaml: group 'servers' is also defined, differently, in a.yaml"):
        load_policy_dir(tmp_path)
    (tmp_path / "b.yaml").write_text("version: [\n")
    with pytest.raises(PolicyError, match="b.yaml: not valid YAML"):
        load_policy_dir(tmp_path)


def test_policy_directory_reads_validated_and_notices_changes(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(DEMO.read_text())
    directory = PolicyDirectory(tmp_path)
    sig = directory.signature()
    assert sig == directory.signature()
    doc = directory.load()
    assert doc["version"] == 0 and len(doc["rules"]) == 5  # normalized: the controller numbers versions
    st = policy.stat()
    # Same size and modification time: the cached parse is used (the file is not read again).
    policy.write_text(DEMO.read_text().replace("mode: protect", "mode: monitor"))  # as long: 7 letters
    assert policy.stat().st_size == st.st_size
    os.utime(policy, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert directory.signature() == sig
    assert directory.load() == doc
    os.utime(policy, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert directory.signature() != sig
    assert directory.load() != doc
    # Merged files that do not validate are not served: a rule naming a group no file defines.
    (tmp_path / "q.yaml").write_text("rules:\n  - {id: 900, from: nowhere, to: servers, action: allow}\n")
    assert load_policy_dir(tmp_path)["rules"][-1]["id"] == 900
    with pytest.raises(PolicyError, match="nowhere"):
        directory.load()
    assert PolicyDirectory(tmp_path / "absent").signature() is None


def test_served_versions_follow_the_content_and_survive_restarts(tmp_path: Path) -> None:
    def policy(mode: str) -> dict:
        return {"version": 0, "groups": [{"name": "g", "mode": mode, "members": ["198.18.0.0/16"]}]}

    store = EventStore(tmp_path / "c.db")
    served = ServedPolicy(store)
    assert (served.version, served.doc) == (0, None)
    assert served.offer(policy("protect")) and served.version == 1
    assert not served.offer(policy("protect")) and served.version == 1  # same content, same version
    assert served.offer(policy("monitor")) and served.version == 2
    assert served.doc is not None and served.doc["version"] == 2
    v1 = served.base(1)
    assert v1 is not None and v1["groups"][0]["mode"] == "protect"
    store.close()

    store = EventStore(tmp_path / "c.db")  # a restarted controller
    served = ServedPolicy(store)
    assert served.version == 2 and served.base(2) is None
    assert served.offer(policy("monitor"))  # nothing served yet in this run: pushed, at the same version
    assert served.version == 2
    assert served.force({"groups": "not validated"}) == 3
    assert ServedPolicy(store).version == 2  # a forced version is not persisted
    for i in range(MAX_DELTA_HISTORY + 3):
        served.offer(policy("protect") | {"default_mode": f"m{i}"})
    assert len(served.history) == MAX_DELTA_HISTORY
    assert min(served.history) == served.version - MAX_DELTA_HISTORY + 1
    store.close()


def _events(n: int, node: str = "node-1") -> list[dict]:
    flow = {"family": 4, "proto": 6, "src": "198.18.1.5", "sport": 1, "dst": "198.18.2.5", "dport": 80}
    return [make_event(EventType.VIOLATION, node, rule_id=i, flow=flow, action="deny") for i in range(n)]


def test_event_store_is_idempotent_and_fast_enough(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "c.db")
    events = _events(20_000)
    t0 = time.perf_counter()
    for i in range(0, len(events), 512):
        store.add_events("node-1", events[i : i + 512])
    rate = len(events) / (time.perf_counter() - t0)
    assert store.count() == 20_000
    assert store.add_events("node-1", events[:512]) == 0  # a batch resent after a lost ack
    assert store.count() == 20_000
    assert rate > 5_000, f"ingest {rate:.0f} events/s"  # the benchmark script reports the real figure
    store.close()


def test_event_store_keeps_the_connections_node_and_plain_data(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "c.db")
    flow = {"family": 4, "proto": 6, "src": "198.18.1.5", "sport": 1, "dst": "198.18.2.5", "dport": 80}
    threat = make_event(EventType.THREAT, "node-2", name="x", severity="high", action="drop", flow=flow,
                        excerpt=b"\x00\xffGET", now=123.5)  # fmt: skip
    no_id = {"type": "audit", "what": "x"}
    no_time = make_event(EventType.AUDIT, "node-1", what="y")
    no_time["time"] = "later"
    assert store.add_events("node-1", [threat, no_id, no_time]) == 2  # an event without an id is not stored
    assert store.events(node="node-2") == []  # stored under the authenticated node, whatever it claims
    stored = store.events(node="node-1")
    assert [e["id"] for e in stored] == [threat["id"], no_time["id"]]
    assert stored[0]["excerpt"] == "00ff474554"  # bytes as hex (core.events.jsonable)
    assert store.events(since=124.0, node="node-1") == [stored[1]]  # a time that is not a number: now
    assert store.events(node="node-1", limit=1) == [stored[0]]
    assert (store.count(), store.count("threat"), store.count("violation")) == (2, 1, 0)

    assert store.get_meta("policy_version", "0") == "0"
    store.set_meta("policy_version", "7")
    assert store.get_meta("policy_version") == "7"
    store.upsert_node("node-1", version="0.1.0", status="connected", last_seen=1.0)
    store.upsert_node("node-1", counters={"packets": 5}, last_seen=2.0)  # the other fields are kept
    store.upsert_node("node-0")
    assert store.nodes() == [
        {"node": "node-0", "version": None, "policy_version": None, "status": None, "last_seen": None,
         "counters": {}},
        {"node": "node-1", "version": "0.1.0", "policy_version": None, "status": "connected",
         "last_seen": 2.0, "counters": {"packets": 5}},
    ]  # fmt: skip
    store.close()


def test_controller_is_a_subcommand_of_enforcer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from node.cli import main

    assert main(["controller", "keys", "--dir", str(tmp_path / "k"), "node-9"]) == 0
    assert (tmp_path / "k" / "node-9.key").exists()
    assert main(["controller", "nodes", "--db", str(tmp_path / "absent.db")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_controller_cli_queries(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "c.db"
    store = EventStore(db)
    store.add_events("node-1", _events(3))
    conn = [
        make_event(EventType.CONNECTION, "node-1", client_group="clients", server_group="servers", app="HTTP",
                   port=80, count=4, proto=6),
        make_event(EventType.CONNECTION, "node-1", client_group="clients", server_group="dns", app="DNS",
                   port=53, count=1, proto=17),
    ]  # fmt: skip
    store.add_events("node-1", conn)
    store.upsert_node("node-1", version="0.1.0", policy_version=3, status="connected", last_seen=time.time())
    store.close()

    assert run("controller", "events", "--db", str(db), "--type", "violation", "--since", "5m") == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [e["rule_id"] for e in lines] == [0, 1, 2]
    assert run("controller", "events", "--db", str(db), "--since", "1900000000") == 0
    assert capsys.readouterr().out == ""
    assert run("controller", "events", "--db", str(db), "--since", "soon") == 2
    assert run("controller", "--db", str(db), "nodes") == 0
    node = json.loads(capsys.readouterr().out)
    assert (node["node"], node["policy_version"]) == ("node-1", 3)
    out = tmp_path / "learned.yaml"
    assert run("controller", "learned", "--db", str(db), "--export", str(out)) == 0
    rules = yaml.safe_load(out.read_text())["rules"]
    assert [(r["from"], r["to"], r["ports"], r["applications"]) for r in rules] == [
        ("clients", "dns", ["udp/53"], ["DNS"]),
        ("clients", "servers", ["tcp/80"], ["HTTP"]),
    ]
    assert run("controller", "events", "--db", str(tmp_path / "absent.db")) == 2


def test_controller_serve_needs_its_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("controller", "--policy-dir", str(tmp_path)) == 2
    assert "--secret-key is required" in capsys.readouterr().err


def test_keys_command_writes_certificates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("controller", "keys", "--dir", str(tmp_path / "k"), "controller", "node-1") == 0
    secret = tmp_path / "k" / "node-1.key_secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o700
    assert run("controller", "keys", "--dir", str(tmp_path / "k"), "../evil") == 2


def test_keys_add_enrols_a_key_for_one_node(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from controller.node_keys import NodeKeys

    keys, clients = tmp_path / "k", tmp_path / "clients"
    assert run("controller", "keys", "--dir", str(keys), "node-1", "node-2") == 0
    assert run("controller", "keys", "add", "node-1", "--key", str(keys / "node-1.key"),
               "--clients", str(clients)) == 0  # fmt: skip
    assert "enrolled for node node-1" in capsys.readouterr().out
    assert (clients / "node-1.node").read_text() == "node-1\n"
    assert (clients / "node-1.key").read_bytes() == (keys / "node-1.key").read_bytes()
    assert stat.S_IMODE(clients.stat().st_mode) == 0o700
    # --dir finds NODE.key; enrolling the same again is harmless.
    assert run("controller", "keys", "add", "node-2", "--dir", str(keys), "--clients", str(clients)) == 0
    assert run("controller", "keys", "add", "node-2", "--dir", str(keys), "--clients", str(clients)) == 0
    # One key, one node; one node, one key.
    assert run("controller", "keys", "add", "node-3", "--key", str(keys / "node-1.key"),
               "--clients", str(clients)) == 2  # fmt: skip
    assert "already enrolled for node 'node-1'" in capsys.readouterr().err
    assert run("controller", "keys", "add", "node-1", "--key", str(keys / "node-2.key"),
               "--clients", str(clients)) == 2  # fmt: skip
    assert "already enrolled for node 'node-2'" in capsys.readouterr().err
    assert run("controller", "keys", "--dir", str(keys), "node-5") == 0
    assert run("controller", "keys", "add", "node-1", "--key", str(keys / "node-5.key"),
               "--clients", str(clients)) == 2  # fmt: skip
    assert "node 'node-1' already has another key (node-1.key)" in capsys.readouterr().err
    assert run("controller", "keys", "add", "../evil", "--dir", str(keys), "--clients", str(clients)) == 2
    assert run("controller", "keys", "add", "node-1") == 2  # no clients directory
    assert run("controller", "keys", "node-4") == 2  # making certificates needs --dir
    bound = NodeKeys(clients)
    bound.reload()
    assert sorted(k.node for k in bound.keys.values()) == ["node-1", "node-2"]


def test_node_keys_bind_an_older_enrolment_on_first_use(tmp_path: Path) -> None:
    from zmq.auth import load_certificate

    from controller.node_keys import NodeKeys

    clients = tmp_path / "clients"
    assert run("controller", "keys", "--dir", str(clients), "old", "other") == 0  # bare keys: no bindings
    old, _ = load_certificate(str(clients / "old.key"))
    other, _ = load_certificate(str(clients / "other.key"))
    keys = NodeKeys(clients)
    keys.reload()
    assert keys.claim(b"A" * 40, "node-1") == "key not enrolled"
    assert keys.claim(old, "bad name!") != ""  # not recorded
    assert not (clients / "old.node").exists()
    assert keys.claim(old, "node-1") == ""
    assert (clients / "old.node").read_text() == "node-1\n"
    assert keys.claim(old, "node-1") == ""
    assert "enrolled for node 'node-1', not 'node-2'" in keys.claim(old, "node-2")
    assert "bound to another key (old.key)" in keys.claim(other, "node-1")
    again = NodeKeys(clients)  # as a restarted controller reads it
    again.reload()
    assert "not 'node-2'" in again.claim(old, "node-2")
    assert again.claim(other, "node-2") == ""


def test_control_messages_round_trip() -> None:
    msgs: list[C.ControlMessage] = [
        C.Hello("n", "0.1.0", ["a"], 3),
        C.Welcome(False, "0.1.0", 2.0, "no"),
        C.PolicyPush(4, {"version": 4, "groups": [{"name": "g"}]}),
        C.PolicyDelta(4, 5, {"base": 4, "version": 5, "groups": {"removed": ["g"]}}),
        C.PolicyAck(4, False, ["bad"]),
        C.EventBatch(9, _events(2)),
        C.EventAck([9, 10]),
        C.ControlHeartbeat("n", {"x": 1}),
    ]
    for msg in msgs:
        assert C.decode_control(C.encode_control(msg)) == msg


_junk = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=10)
    | st.binary(max_size=10),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner, max_size=5),
    max_leaves=15,
)  # fmt: skip
_headers = st.builds(
    lambda proto, kind, fields: msgpack.packb([proto, kind, *fields], use_bin_type=True),
    st.sampled_from([1, 1, 1, 2, "1"]),
    st.integers(0, 9) | _junk,
    st.lists(_junk, max_size=6),
)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.binary(max_size=64), max_size=3)
    | st.tuples(_headers).map(list)
    | st.tuples(
        _headers, st.binary(max_size=64) | _junk.map(lambda j: msgpack.packb(j, use_bin_type=True))
    ).map(list)
)
def test_control_decode_raises_only_message_error(frames: list[bytes]) -> None:
    try:
        msg = C.decode_control(frames)
    except MessageError as exc:
        assert exc.anomaly.startswith("control.")
        return
    assert C.decode_control(C.encode_control(msg)) == msg
