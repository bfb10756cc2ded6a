"""Threat detection and DLP/WAF sensors.

Layout (grammar → detector → mapping, as elsewhere in the workers):

- `catalogue`  the ordered registry of built-in threats (stable id, name, severity, default action and
               thresholds) and the `Finding`/`Hit` types detectors return;
- `settings`   per-group threat settings (`compile_group_settings`, `effective_action`);
- `window`     bounded LRU tables and windowed counters every detector uses;
- `packets`    packet/flow-level threats (floods, malformed packets, fragments, handshakes, scans, ICMP
               tunnels, ExternalIP MITM) — `PacketDetector`;
- `decode`, `injection`   evasion decoding, SQLi/XSS (libinjection) and protocol-SQL rules;
- `http`, `dns`, `tls`, `database`   application threats on plain values;
- `sensors`    DLP/WAF sensors on Hyperscan (block and stream mode) with a Python `re` fallback;
- `aggregate`  `threat` events from findings and the windowed `EventAggregator`;
- `evidence`   per-flow packet rings snapshotted into pcap captures;
- `engine`     `ThreatEngine` (DPI hooks + raw packet path), `DetectingEngine`, `build_engine`,
               `compile_threat_policy`, `threat_policy_from_snapshot`;
- `replay`, `cli`   detection over captures; `enforcer threats list|check|replay`.

Wiring in a worker: `build_engine(dpi_settings, tables, emit, node, threat_policy)` returns the engine
the worker drives (`on_packet`, `expire`, `stats`); on a new policy generation call
`engine.set_policy(threat_policy_from_snapshot(snapshot), tables)`.
"""
