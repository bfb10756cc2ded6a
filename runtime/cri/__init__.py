"""Workload identity from the node's container runtime over the Kubernetes CRI (gRPC, runtime.v1).

`client` is the thin gRPC shell over the runtime's unix socket, `pods` turns CRI answers into pod
identities (pure), `watcher` follows the runtime (events where it has them, else polling, with a periodic
resync) and survives its restarts. `cri_api_pb2` is generated from `cri_api.proto` (`generate.py`).
"""
