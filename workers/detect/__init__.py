"""Threat detection and DLP/WAF sensors.

Layout (grammar → detector → mapping, as elsewhere in the workers):

- `catalogue`  the ordered registry of built-in threats (stable id, name, severity, default action and
               thresholds) and the `Finding`/`Hit` types detectors return;
- `settings`   per-group threat settings (`compile_group_settings`, `effective_action`);
- `window`     bounded LRU tables and windowed counters every detector uses;
- `threats.packets`   flow-level packet threats (malformed packets, fragments, handshakes, refused
               probes, ICMP tunnels) — `PacketDetector`; connection attempts (floods, scans) are
               `threats.attempts`, counted by the readers' guard;
- `decode`, `injection`   evasion decoding, the request-level injection checks (SQLi and XSS with
               libinjection, `sqli` scoring; `shell` command injection; `ldap` LDAP injection) and
               protocol-SQL rules;
- `http`, `dns`, `tls`, `database`   application threats on plain values;
- `sensors`    DLP/WAF sensors on Hyperscan (block and stream mode) with a Python `re` fallback;
- `aggregate`  `threat` events from findings and the windowed `EventAggregator`;
- `evidence`   per-flow packet rings snapshotted into pcap captures;
- `threat_engine`  `ThreatEngine`: the raw packet path and the state the hooks share;
- `hooks`      the DPI detector hooks (`AppThreats`); `policy` the compiled `ThreatPolicy` and the
               snapshot adapters; `limits` `DetectLimits`;
- `engine`     `DetectingEngine`, `build_engine` (and re-exports of the above);
- `replay`, `cli`   detection over captures; `enforcer threats list|check|replay`.

Wiring in a worker: `build_engine(dpi_settings, tables, emit, node, threat_policy)` returns the engine
the worker drives (`on_packet`, `expire`, `stats`); on a new policy generation call
`engine.set_policy(threat_policy_from_snapshot(snapshot), tables)`.
"""
