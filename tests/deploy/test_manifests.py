"""The Kubernetes manifests under deploy/: schema-valid for a pinned Kubernetes version (offline), and
consistent with each other, with the package and with what the enforcer needs on a node."""

from __future__ import annotations

import copy
import shlex
import socket
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from .support import (
    DEPLOY,
    KUBERNETES_VERSION,
    REPO,
    all_resources,
    find,
    load_documents,
    manifest_files,
    package_version,
)

NAMESPACE = "neuvector-enforcer"
# What the enforcer does on a node, and the capability each needs (see the comments in the manifest).
EXPECTED_CAPABILITIES = {
    "NET_ADMIN",  # iptables chains, NFQUEUE, conntrack, netlink proc connector
    "NET_RAW",  # TCP resets and ICMP errors for blocked connections
    "SYS_ADMIN",  # fanotify, setns into workloads' namespaces
    "SYS_PTRACE",  # /proc/<pid> of other users' processes
    "DAC_READ_SEARCH",  # read files a rule names regardless of their owner
    "KILL",  # kill processes a protect-mode profile forbids
    "SYS_NICE",  # CPU pinning and priority
}


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a socket fails the test: validation must work offline."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access attempted during manifest validation")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _validate(resource: dict[str, Any]) -> str:
    version = kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
    assert isinstance(version, str)
    return version


def test_the_expected_manifests_are_there() -> None:
    kinds = sorted(r["kind"] for r in all_resources())
    assert kinds == ["ConfigMap", "DaemonSet", "Namespace", "ResourceQuota", "Secret", "ServiceAccount"]


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: p.name)
def test_manifest_is_schema_valid_offline(path: Path, no_network: None) -> None:
    docs = load_documents(path)
    assert docs, f"{path.name} holds no resource"
    for doc in docs:
        # strict: unknown fields (a typo such as `tolerations` misplaced) are errors too
        assert _validate(doc) == KUBERNETES_VERSION.rsplit(".", 1)[0]


def test_validator_rejects_a_broken_daemonset(daemonset: dict[str, Any], no_network: None) -> None:
    """The check above can fail: a wrong type, a misplaced field and a missing field are caught."""
    wrong_type = copy.deepcopy(daemonset)
    wrong_type["spec"]["template"]["spec"]["hostNetwork"] = "yes"
    unknown_field = copy.deepcopy(daemonset)
    unknown_field["spec"]["template"]["spec"]["containers"][0]["capabilities"] = {"add": ["NET_ADMIN"]}
    missing = copy.deepcopy(daemonset)
    del missing["spec"]["selector"]
    for broken in (wrong_type, unknown_field, missing):
        with pytest.raises(kubernetes_validate.ValidationError):
            _validate(broken)


def test_unknown_kind_is_not_silently_accepted(no_network: None) -> None:
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        _validate({"apiVersion": "v1", "kind": "NoSuchKind", "metadata": {"name": "x"}})


def test_kustomization_lists_every_manifest_but_the_secret_template() -> None:
    with open(DEPLOY / "kustomization.yaml") as f:
        kustomization = yaml.safe_load(f)
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in manifest_files()}
    assert listed == on_disk - {"controller-keys.secret.yaml"}
    assert all((DEPLOY / name).is_file() for name in listed)


def test_everything_lives_in_one_namespace() -> None:
    ns = find("Namespace")
    assert ns["metadata"]["name"] == NAMESPACE
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    for r in all_resources():
        if r["kind"] != "Namespace":
            assert r["metadata"].get("namespace") == NAMESPACE, f"{r['kind']} {r['metadata']['name']}"


def test_daemonset_refers_to_resources_that_exist(pod_spec: dict[str, Any]) -> None:
    assert pod_spec["serviceAccountName"] == find("ServiceAccount")["metadata"]["name"]
    volumes = {v["name"]: v for v in pod_spec["volumes"]}
    assert volumes["config"]["configMap"]["name"] == find("ConfigMap")["metadata"]["name"]
    assert volumes["controller-keys"]["secret"]["secretName"] == find("Secret")["metadata"]["name"]
    # the keys are optional: a node runs on its last-known-good policy until they exist
    assert volumes["controller-keys"]["secret"]["optional"] is True


def test_image_and_labels_carry_the_package_version(
    daemonset: dict[str, Any], container: dict[str, Any]
) -> None:
    version = package_version()
    assert container["image"].rsplit(":", 1)[1] == version
    assert daemonset["metadata"]["labels"]["app.kubernetes.io/version"] == version


def test_host_namespaces_and_exact_capabilities(pod_spec: dict[str, Any], container: dict[str, Any]) -> None:
    assert pod_spec["hostNetwork"] is True
    assert pod_spec["hostPID"] is True
    assert pod_spec.get("hostIPC", False) is False
    assert pod_spec["automountServiceAccountToken"] is False
    sc = container["securityContext"]
    assert sc["privileged"] is False
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert sc["capabilities"]["drop"] == ["ALL"]
    added = sc["capabilities"]["add"]
    assert len(added) == len(set(added))
    assert set(added) == EXPECTED_CAPABILITIES
    # the API server only recognises SYS_ADMIN in its CAP_-less spelling for its escalation check
    assert not any(c.startswith("CAP_") for c in added)


def test_privileged_alternative_is_documented() -> None:
    text = (DEPLOY / "daemonset.yaml").read_text()
    assert "# privileged: true" in text


def test_environment_and_config_mount(container: dict[str, Any]) -> None:
    env = {e["name"]: e for e in container["env"]}
    for name in ("ENFORCER_WORKERS", "ENFORCER_READERS", "CLUSTER_JOIN_ADDR", "ENFORCER_CONFIG"):
        assert name in env, name
    assert int(env["ENFORCER_WORKERS"]["value"]) >= 1
    assert int(env["ENFORCER_READERS"]["value"]) >= 1
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    config_path = env["ENFORCER_CONFIG"]["value"]
    assert mounts[config_path]["name"] == "config"
    assert mounts[config_path]["subPath"] in find("ConfigMap")["data"]
    assert env["ENFORCER_NODE"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"


def _config_toml() -> dict[str, Any]:
    return tomllib.loads(find("ConfigMap")["data"]["enforcer.toml"])


def test_probes_hit_the_health_endpoint_the_config_serves(container: dict[str, Any]) -> None:
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == 9464
    live, ready = container["livenessProbe"]["httpGet"], container["readinessProbe"]["httpGet"]
    assert (live["path"], ready["path"]) == ("/healthz", "/readyz")
    assert ports[live["port"]] == ports[ready["port"]] == 9464
    # the config's listen address and the per-node override both use the probes' port
    listen = _config_toml()["metrics"]["listen"]
    assert listen.rsplit(":", 1)[1] == "9464"
    env = {e["name"]: e for e in container["env"]}
    assert env["ENFORCER_METRICS_LISTEN"]["value"] == "$(HOST_IP):9464"
    assert env["HOST_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIP"


def test_resources_are_requested_and_memory_is_capped(container: dict[str, Any]) -> None:
    res = container["resources"]
    assert {"cpu", "memory"} <= set(res["requests"])
    assert "memory" in res["limits"]


def test_priority_class_is_covered_by_the_quota(pod_spec: dict[str, Any]) -> None:
    quota = find("ResourceQuota")
    (expr,) = quota["spec"]["scopeSelector"]["matchExpressions"]
    assert (expr["scopeName"], expr["operator"]) == ("PriorityClass", "In")
    assert pod_spec["priorityClassName"] in expr["values"]


def test_runs_on_control_plane_nodes(pod_spec: dict[str, Any]) -> None:
    tolerated = {(t["key"], t["effect"]) for t in pod_spec["tolerations"]}
    assert ("node-role.kubernetes.io/control-plane", "NoSchedule") in tolerated


def test_commented_node_affinity_example_is_valid() -> None:
    """The commented example, uncommented, still validates: users can enable it as is."""
    lines = (DEPLOY / "daemonset.yaml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "# affinity:")
    block = []
    for line in lines[start:]:
        stripped = line.strip()
        if not stripped.startswith("#"):
            break
        block.append(stripped[2:])  # drop "# ", keep the indentation inside the comment
    affinity = yaml.safe_load("\n".join(block))["affinity"]
    terms = affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert any(e["operator"] == "NotIn" for t in terms for e in t["matchExpressions"])
    ds = copy.deepcopy(find("DaemonSet"))
    ds["spec"]["template"]["spec"]["affinity"] = affinity
    _validate(ds)


def test_volumes_for_state_runtime_and_host_views(
    pod_spec: dict[str, Any], container: dict[str, Any]
) -> None:
    volumes = {v["name"]: v for v in pod_spec["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    config = _config_toml()
    # the runtime and state directories the config names are mounted, writable
    run = mounts[config["paths"]["run_dir"]]
    state = mounts[config["paths"]["state_dir"]]
    assert not run.get("readOnly", False) and not state.get("readOnly", False)
    assert volumes[run["name"]]["emptyDir"]["medium"] == "Memory"
    assert volumes[state["name"]]["hostPath"]["path"] == "/var/lib/enforcer"
    # host views are read-only
    for host_path in ("/sys/fs/cgroup", "/proc", "/run/containerd/containerd.sock"):
        (name,) = [n for n, v in volumes.items() if v.get("hostPath", {}).get("path") == host_path]
        (mount,) = [m for m in container["volumeMounts"] if m["name"] == name]
        assert mount["readOnly"] is True, host_path
    # the CRI socket is mounted where `cri.socket = "auto"` looks
    from runtime.cri.settings import DEFAULT_SOCKETS

    assert volumes["cri-socket"]["hostPath"]["type"] == "Socket"
    assert (
        next(m for m in container["volumeMounts"] if m["name"] == "cri-socket")["mountPath"]
        in DEFAULT_SOCKETS
    )
    # every mount has its volume and the other way round
    assert {m["name"] for m in container["volumeMounts"]} == set(volumes)


def test_controller_key_files_are_in_the_secret_template(container: dict[str, Any]) -> None:
    keys_mount = next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == "controller-keys")
    secret_keys = set(find("Secret")["stringData"])
    assert secret_keys == {"controller.key", "node-1.key_secret"}
    server_key = Path(_config_toml()["controller"]["server_key"])
    assert str(server_key.parent) == keys_mount and server_key.name in secret_keys
    # each node reads its own key: the controller binds a key to one node name
    env = {e["name"]: e for e in container["env"]}
    client_key = env["ENFORCER_CONTROLLER_CLIENT_KEY"]["value"]
    assert client_key == f"{keys_mount}/$(ENFORCER_NODE).key_secret"
    assert env["ENFORCER_NODE"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    names = [e["name"] for e in container["env"]]
    assert names.index("ENFORCER_NODE") < names.index("ENFORCER_CONTROLLER_CLIENT_KEY")  # $(…) expands
    assert client_key.replace("$(ENFORCER_NODE)", "node-1").rsplit("/", 1)[1] in secret_keys


def test_container_script_reads_the_same_capabilities() -> None:
    """.ci/container-test.sh runs the image with the capabilities it reads from the manifest."""
    script = shlex.quote(str(REPO / ".ci" / "container-test.sh"))
    extract = f'source <(sed -n "/^daemonset_caps()/,/^}}/p" {script}); REPO={shlex.quote(str(REPO))}'
    out = subprocess.run(
        ["bash", "-c", f"{extract}; daemonset_caps"],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout.split()
    container = find("DaemonSet")["spec"]["template"]["spec"]["containers"][0]
    assert out == container["securityContext"]["capabilities"]["add"]


def _daemonset_environ(container: dict[str, Any]) -> dict[str, str]:
    """The container's environment as the kubelet would give it on a node (198.18.0.7, `node-a`)."""
    field_values = {"spec.nodeName": "node-a", "status.hostIP": "198.18.0.7"}
    environ: dict[str, str] = {}
    for e in container["env"]:
        if "value" in e:
            value = e["value"]
            for name, resolved in environ.items():
                value = value.replace(f"$({name})", resolved)
            environ[e["name"]] = value
        else:
            environ[e["name"]] = field_values[e["valueFrom"]["fieldRef"]["fieldPath"]]
    return environ


def test_configmap_and_environment_load_as_the_enforcer_configuration(container: dict[str, Any]) -> None:
    from node.config import config_from_dict

    environ = _daemonset_environ(container)
    config = config_from_dict(_config_toml(), environ)
    assert config.queues.readers == int(environ["ENFORCER_READERS"])
    assert config.workers.count == int(environ["ENFORCER_WORKERS"])
    assert config.controller.join_addr == environ["CLUSTER_JOIN_ADDR"]
    assert config.node.name == "node-a"
    assert config.metrics.listen == "198.18.0.7:9464"
    assert config.paths.run_dir == "/run/enforcer"
    assert config.netfilter.hooks == ("FORWARD",)


def test_every_enforcer_variable_of_the_daemonset_is_a_config_override(container: dict[str, Any]) -> None:
    """A misspelt variable would be ignored silently by the enforcer: each must name a config key."""
    import dataclasses
    from typing import get_type_hints

    from node.config import ALIASES, CONFIG_PATH_ENV, Config

    known = set(ALIASES) | {CONFIG_PATH_ENV}
    for section, section_type in get_type_hints(Config).items():
        if dataclasses.is_dataclass(section_type):
            known |= {f"ENFORCER_{section}_{f.name}".upper() for f in dataclasses.fields(section_type)}
        else:
            known.add(f"ENFORCER_{section}".upper())
    names = {e["name"] for e in container["env"]} - {"HOST_IP"}  # HOST_IP only feeds $(HOST_IP)
    assert names <= known, names - known


def test_container_lab_reads_the_configmap_toml_as_yaml_does() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("container_lab", REPO / ".ci" / "container-lab.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.configmap_toml() == find("ConfigMap")["data"]["enforcer.toml"]


def test_secret_template_has_the_certificate_format_the_enforcer_loads(tmp_path: Path) -> None:
    """With its placeholders replaced by real keys, the template is what the controller link loads."""
    import zmq

    from policy.controller_link import load_keys

    controller_public, _ = zmq.curve_keypair()
    enforcer_public, enforcer_secret = zmq.curve_keypair()
    data = find("Secret")["stringData"]
    real = {
        "REPLACE-WITH-THE-CONTROLLER-PUBLIC-KEY": controller_public.decode(),
        "REPLACE-WITH-THE-ENFORCER-PUBLIC-KEY-": enforcer_public.decode(),
        "REPLACE-WITH-THE-ENFORCER-SECRET-KEY-": enforcer_secret.decode(),
    }
    for name, text in data.items():
        for placeholder, key in real.items():
            text = text.replace(placeholder, key)
        (tmp_path / name).write_text(text)
    server_public, public, secret = load_keys(
        str(tmp_path / "controller.key"), str(tmp_path / "node-1.key_secret")
    )
    assert (server_public, public, secret) == (controller_public, enforcer_public, enforcer_secret)
