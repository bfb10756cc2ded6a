"""Every bound and choice of the DPI engine, named, defaulted and explained (one frozen object).

The worker builds one `DpiSettings` from the `[dpi]` table of the enforcer config and passes it down;
nothing in the DPI reads configuration on its own. Each limit, when exceeded, raises the anomaly named
beside it (`core.anomalies`, DPI block) and the listed fallback decides.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

# What to do with a flow the DPI cannot finish: "policy" asks the tables with the application known so
# far ("" if none: it matches no rule that names applications; no tables → allow); the others are fixed.
FALLBACKS = ("policy", "allow", "block", "reset")


@dataclass(frozen=True, slots=True)
class DpiSettings:
    # --- flow table
    max_flows: int = 65536  # flows tracked per worker; the oldest idle is evicted (dpi.flow.evicted)
    tcp_idle_timeout: float = 3600.0  # established TCP flow with no packet
    tcp_embryonic_timeout: float = 30.0  # TCP flow that never completed the handshake
    tcp_closed_timeout: float = 10.0  # after FIN both ways or RST
    # A flow handed to the kernel (ALLOW_FLOW): its later packets bypass the workers, so its end is never
    # seen here; kept this long for packets already queued and for a policy change that takes it back
    # (`workers.inspect = "all"` never offloads: there the idle timeout applies).
    tcp_offloaded_timeout: float = 60.0
    udp_timeout: float = 60.0  # UDP/other flow with no packet
    # --- TCP reassembly
    max_buffered_bytes: int = 65536  # out-of-order + unconsumed bytes per direction (dpi.stream.buffer_full)
    max_ooo_segments: int = 64  # out-of-order segments held per direction (dpi.stream.buffer_full)
    # --- IP fragments
    max_frag_datagrams: int = 1024  # datagrams being reassembled per worker (dpi.frag.table_full)
    max_frag_bytes: int = 65535 + 8  # bytes per datagram being reassembled (dpi.frag.too_big)
    max_frags_per_datagram: int = 64  # fragments per datagram (dpi.frag.too_many)
    frag_timeout: float = 30.0  # a datagram not complete by then is dropped (dpi.frag.timeout)
    # --- identification
    identify_bytes: int = 4096  # payload bytes (both ways) within which the app must be identified
    identify_packets: int = 16  # payload-carrying packets within which the app must be identified
    unidentified_fallback: str = "policy"  # one of FALLBACKS: decision for a flow never identified
    buffer_full_fallback: str = "policy"  # one of FALLBACKS: stream cap exceeded
    parser_error_fallback: str = "policy"  # one of FALLBACKS: parser exception
    midstream_pickup: bool = True  # follow TCP flows whose handshake we did not see
    inspect_after_identify: bool = True  # keep parsing (for detectors) after the app is allowed
    # --- inspection windows of allowed flows (workers/dpi/window.py), then offloaded
    request_window_requests: int = (
        1000  # requests (HTTP, SQL …, DNS messages) per flow (dpi.window.request_cap)
    )
    request_window_bytes: int = 16 << 20  # payload bytes both ways of such a flow (dpi.window.request_cap)
    tls_window_bytes: int = 65536  # TLS: the handshake with its certificates and early heartbeats
    ssh_window_bytes: int = 16384  # SSH: banners, key exchange (post-quantum: ~6 KiB) and authentication
    unknown_window_bytes: int = 8192  # other or unidentified protocols: their opening bytes
    # --- parsers
    max_event_bytes: int = 4096  # bytes of body / SQL text / command copied into one event
    max_headers: int = 64  # headers kept per HTTP message
    max_header_bytes: int = 16384  # an HTTP head longer than this is an anomaly; the parser gives up
    max_dns_records: int = 64  # records decoded per DNS section
    max_dns_pointer_hops: int = 32  # compression pointers followed per name (loop protection)
    # --- FQDN cache (DNS answers → names)
    max_fqdn_entries: int = 16384  # address → names entries (oldest evicted, counted)
    max_names_per_address: int = 8  # names kept per address (the most recent)
    min_fqdn_ttl: float = 5.0  # a TTL below this is raised to it (connection follows the lookup)
    max_fqdn_ttl: float = 86400.0  # and above this is lowered to it
    # --- events
    max_events_per_flow: int = 256  # events a candidate parser holds until it wins; per flow in replay output

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("_fallback"):
                if value not in FALLBACKS:
                    raise ValueError(f"dpi.{f.name}: expected one of {', '.join(FALLBACKS)}, got {value!r}")
            elif isinstance(value, bool):
                continue
            elif isinstance(value, int | float) and value <= 0:
                raise ValueError(f"dpi.{f.name}: expected a positive number, got {value!r}")

    @classmethod
    def from_mapping(cls, table: dict[str, Any]) -> DpiSettings:
        """Build from a config table (the `[dpi]` TOML table); unknown keys and wrong types name the key."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for key, value in table.items():
            f = known.get(key)
            if f is None:
                raise ValueError(f"dpi.{key}: unknown key")
            default = f.default
            if isinstance(default, bool):
                ok = isinstance(value, bool)
            elif isinstance(default, int):
                ok = isinstance(value, int) and not isinstance(value, bool)
            elif isinstance(default, float):
                ok = isinstance(value, int | float) and not isinstance(value, bool)
                value = float(value)
            else:
                ok = isinstance(value, str)
            if not ok:
                raise ValueError(f"dpi.{key}: expected {type(default).__name__}, got {type(value).__name__}")
            values[key] = value
        return cls(**values)
