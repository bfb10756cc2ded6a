"""The enforcer's inline packet path: config, decoding, flows, NFQUEUE, readers, supervisor."""

__version__ = "0.1.0"
