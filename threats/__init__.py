"""The threat library shared by the readers' guard and the workers: the catalogue of built-in threats,
per-group settings, windowed counters, threat events and the one packet-threat core."""
