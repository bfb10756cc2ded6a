"""The ground every process stands on: packet decoding, flow keys, anomaly names, wire messages, the
policy lookup contract, the event schema and verdicts. Imports nothing of the enforcer's own."""

__version__ = "0.1.0"
