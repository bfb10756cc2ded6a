"""The reference controller (`enforcer controller`): its own program, beside the per-node enforcer.

Small and solid, not a UI. It serves the policy of a directory of YAML files (native format and
NeuVector CRD exports, merged and validated), pushes each change to every connected enforcer, and
stores their events in SQLite, acknowledging each batch. One module per job:

- `policy_dir`: the directory read and merged, versions by content digest (monotonic across restarts);
- `store`: the SQLite event store (idempotent on node + event id), known nodes, learned rules;
- `server`: the ROUTER socket over CURVE, the ZAP handler, peers, pushes and acknowledgements;
- `cli`: `register(subparsers)`: serve, and the `events`, `nodes`, `learned` and `keys` actions.

The wire format is `core.control`.
"""
