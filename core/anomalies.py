"""One catalogue of anomaly names.

Dotted lowercase names, defined once, used as counter keys, log values and in the docs. Code refers to
the constants, never to string literals, so a typo is an import error rather than a silent new counter.
"""

from __future__ import annotations

# Header decoding (pipeline/packet.py)
DECODE_EMPTY = "decode.empty"
DECODE_BAD_VERSION = "decode.ip.bad_version"
DECODE_IPV4_TRUNCATED = "decode.ipv4.truncated"
DECODE_IPV4_BAD_IHL = "decode.ipv4.bad_ihl"
DECODE_IPV4_BAD_LENGTH = "decode.ipv4.bad_length"
DECODE_IPV6_TRUNCATED = "decode.ipv6.truncated"
DECODE_IPV6_BAD_LENGTH = "decode.ipv6.bad_length"
DECODE_IPV6_EXT_TRUNCATED = "decode.ipv6.ext_truncated"
DECODE_IPV6_EXT_TOO_MANY = "decode.ipv6.ext_too_many"
DECODE_TCP_TRUNCATED = "decode.tcp.truncated"
DECODE_TCP_BAD_OFFSET = "decode.tcp.bad_offset"
DECODE_UDP_TRUNCATED = "decode.udp.truncated"
DECODE_UDP_BAD_LENGTH = "decode.udp.bad_length"
DECODE_ICMP_TRUNCATED = "decode.icmp.truncated"

# Flow table (pipeline/flow.py)
FLOW_EVICTED_FULL = "flow.evicted_full"
FLOW_EXPIRED = "flow.expired"

# Queue and reader (pipeline/nfqueue.py, pipeline/reader.py)
QUEUE_MSG_MALFORMED = "queue.msg_malformed"
QUEUE_RECV_OVERRUN = "queue.recv_overrun"
READER_INFLIGHT_FULL = "reader.inflight_full"
READER_TRUNCATED = "reader.truncated"  # a packet of an inspected flow cut short by the queue's copy range
READER_JUDGE_ERROR = "reader.judge_error"  # an exception while judging a packet (a bug; logged once)
WORKER_VERDICT_TIMEOUT = "worker.verdict_timeout"
WORKER_UNKNOWN_REF = "worker.unknown_ref"

# Messages between processes (pipeline/messages.py)
MESSAGE_MALFORMED = "message.malformed"
MESSAGE_BAD_VERSION = "message.bad_version"
MESSAGE_UNKNOWN_TYPE = "message.unknown_type"

DECODE_ANOMALIES = (
    DECODE_EMPTY,
    DECODE_BAD_VERSION,
    DECODE_IPV4_TRUNCATED,
    DECODE_IPV4_BAD_IHL,
    DECODE_IPV4_BAD_LENGTH,
    DECODE_IPV6_TRUNCATED,
    DECODE_IPV6_BAD_LENGTH,
    DECODE_IPV6_EXT_TRUNCATED,
    DECODE_IPV6_EXT_TOO_MANY,
    DECODE_TCP_TRUNCATED,
    DECODE_TCP_BAD_OFFSET,
    DECODE_UDP_TRUNCATED,
    DECODE_UDP_BAD_LENGTH,
    DECODE_ICMP_TRUNCATED,
)

# ---- Policy process and controller link (policy/) -------------------------------------------------
POLICY_REJECTED = "policy.rejected"  # a snapshot failed validation and was not applied
POLICY_STALE = "policy.stale_version"  # a snapshot older than the applied one was refused
POLICY_TABLES_FULL = "policy.tables_full"  # a compiled policy did not fit the shared tables
POLICY_LKG_UNREADABLE = "policy.lkg_unreadable"  # the persisted last-known-good policy could not be loaded
EVENTS_SPOOL_DROPPED = "events.spool_dropped"  # events dropped because the disk spool was full
EVENTS_AGGREGATED = "events.aggregated"  # identical events folded into one with a count
CONTROL_MALFORMED = "control.malformed"  # a controller-protocol message that does not decode
CONTROL_BAD_VERSION = "control.bad_version"  # a peer speaking another protocol or software version
CONTROL_UNKNOWN_TYPE = "control.unknown_type"
CONTROL_AUTH_FAILED = "control.auth_failed"  # a CURVE handshake refused
CONTROL_REFUSED = "control.refused"  # the controller refused our HELLO (version, node binding): reason in status
CONTROL_TIMEOUT = "control.timeout"  # the peer fell silent; the link is re-established

# ---- DPI (workers/dpi/) -------------------------------------------------------------------------------
# TCP reassembly (workers/dpi/stream.py)
DPI_STREAM_RETRANSMISSION = "dpi.stream.retransmission"
DPI_STREAM_OVERLAP = "dpi.stream.overlap"
DPI_STREAM_OVERLAP_MISMATCH = "dpi.stream.overlap_mismatch"
DPI_STREAM_BUFFER_FULL = "dpi.stream.buffer_full"
DPI_STREAM_GAP = "dpi.stream.gap"
DPI_STREAM_MIDSTREAM = "dpi.stream.midstream"
# IP defragmentation (workers/dpi/defrag.py)
DPI_FRAG_TABLE_FULL = "dpi.frag.table_full"
DPI_FRAG_TOO_BIG = "dpi.frag.too_big"
DPI_FRAG_TOO_MANY = "dpi.frag.too_many"
DPI_FRAG_TIMEOUT = "dpi.frag.timeout"
DPI_FRAG_OVERLAP = "dpi.frag.overlap"
DPI_FRAG_MALFORMED = "dpi.frag.malformed"
# Flow table and identification (workers/dpi/engine.py)
DPI_FLOW_EVICTED = "dpi.flow.evicted"
DPI_FLOW_REUSED = "dpi.flow.reused"
DPI_UNIDENTIFIED = "dpi.app.unidentified"
DPI_PARSER_EXCEPTION = "dpi.parser.exception"
DPI_PARSER_BUFFER_FULL = "dpi.parser.buffer_full"
DPI_DETECTOR_EXCEPTION = "dpi.detector.exception"
DPI_FQDN_EVICTED = "dpi.fqdn.evicted"
# Inspection windows (workers/dpi/window.py): an allowed flow offloaded after its protocol's window
DPI_WINDOW_CLOSED = "dpi.window.closed"
DPI_WINDOW_REQUEST_CAP = "dpi.window.request_cap"  # a request/response flow cut at its cap, not done
# Parser anomalies (workers/dpi/parsers/*)
DPI_HTTP_HEAD_TOO_LONG = "dpi.http.head_too_long"
DPI_HTTP_BAD_CHUNK = "dpi.http.bad_chunk"
DPI_HTTP_CL_TE = "dpi.http.content_length_and_chunked"
DPI_HTTP_BAD_CONTENT_LENGTH = "dpi.http.bad_content_length"
DPI_TLS_BAD_RECORD = "dpi.tls.bad_record"
DPI_DNS_POINTER_LOOP = "dpi.dns.pointer_loop"
DPI_DNS_BAD_POINTER = "dpi.dns.bad_pointer"
DPI_DNS_TRUNCATED = "dpi.dns.truncated"
DPI_DNS_TOO_MANY_RECORDS = "dpi.dns.too_many_records"
DPI_DNS_NAME_TOO_LONG = "dpi.dns.name_too_long"

# ---- Runtime security (runtime/) ----------------------------------------------------------------------
# Process connector and /proc scan (runtime/proc_connector.py)
RUNTIME_CONNECTOR_UNAVAILABLE = "runtime.connector.unavailable"  # fell back to /proc polling
RUNTIME_CONNECTOR_OVERRUN = "runtime.connector.overrun"  # kernel dropped events (ENOBUFS)
RUNTIME_CONNECTOR_MALFORMED = "runtime.connector.malformed"  # a message that does not decode
RUNTIME_EVENT_QUEUE_FULL = "runtime.event_queue.full"  # decoded event dropped: queue at its bound
RUNTIME_PROCESS_UNEXAMINED = "runtime.process.unexamined"  # gone (or unreadable) before it was examined
RUNTIME_PROCESS_TABLE_FULL = "runtime.process_table.full"  # oldest tracked process forgotten
RUNTIME_SCAN_FOUND = "runtime.scan.found"  # process found by the /proc scan that no event announced
# Profiles and enforcement (runtime/profiles.py, runtime/process_monitor.py)
RUNTIME_LEARN_GROUP_FULL = "runtime.learn.group_full"  # Discover: group's learned set at its bound
RUNTIME_KILL_EXCLUDED = "runtime.kill.excluded"  # a kill refused: enforcer's own or a node process
RUNTIME_KILL_FAILED = "runtime.kill.failed"  # the process could not be signalled
RUNTIME_EXEC_PERM_UNAVAILABLE = "runtime.exec_perm.unavailable"  # no FAN_OPEN_EXEC_PERM: kill only
RUNTIME_EXEC_PERM_DENIED = "runtime.exec_perm.denied"  # an execution refused before it ran
RUNTIME_EXEC_PERM_ERROR = "runtime.exec_perm.error"  # a permission check failed: execution allowed
RUNTIME_PROFILE_ERROR = "runtime.profile.error"  # get_profiles() failed; previous profiles kept
RUNTIME_OUTBOX_FULL = "runtime.outbox.full"  # an event dropped: outgoing events at their bound
RUNTIME_REVERSE_SHELL_PENDING_FULL = "runtime.reverse_shell.pending_full"  # re-check skipped
RUNTIME_NET_TABLE_TRUNCATED = "runtime.net_table.truncated"  # /proc/net/tcp* longer than its bound
# File monitor (runtime/file_monitor.py)
RUNTIME_FILE_FANOTIFY_UNAVAILABLE = "runtime.file.fanotify_unavailable"  # inotify fallback in use
RUNTIME_FILE_MARKS_FULL = "runtime.file.marks_full"  # a path left unwatched: marks at their bound
RUNTIME_FILE_MARK_FAILED = "runtime.file.mark_failed"  # a path could not be watched
RUNTIME_FILE_QUEUE_OVERFLOW = "runtime.file.queue_overflow"  # the kernel's notification queue overflowed
RUNTIME_FILE_AGGREGATE_FULL = "runtime.file.aggregate_full"  # event dropped: aggregator at its bound
RUNTIME_FILE_DENIED = "runtime.file.denied"  # an open refused (Protect)
RUNTIME_FILE_UNATTRIBUTED = "runtime.file.unattributed"  # writer gone before it could be identified
RUNTIME_FILE_CHANGES_FULL = "runtime.file.changes_full"  # a change dropped: identified changes at their bound
RUNTIME_FILE_PERM_ERROR = "runtime.file.perm_error"  # an open permission check failed: open allowed

RUNTIME_ANOMALIES = (
    RUNTIME_CONNECTOR_UNAVAILABLE,
    RUNTIME_CONNECTOR_OVERRUN,
    RUNTIME_CONNECTOR_MALFORMED,
    RUNTIME_EVENT_QUEUE_FULL,
    RUNTIME_PROCESS_UNEXAMINED,
    RUNTIME_PROCESS_TABLE_FULL,
    RUNTIME_SCAN_FOUND,
    RUNTIME_LEARN_GROUP_FULL,
    RUNTIME_KILL_EXCLUDED,
    RUNTIME_KILL_FAILED,
    RUNTIME_EXEC_PERM_UNAVAILABLE,
    RUNTIME_EXEC_PERM_DENIED,
    RUNTIME_EXEC_PERM_ERROR,
    RUNTIME_PROFILE_ERROR,
    RUNTIME_OUTBOX_FULL,
    RUNTIME_REVERSE_SHELL_PENDING_FULL,
    RUNTIME_NET_TABLE_TRUNCATED,
    RUNTIME_FILE_FANOTIFY_UNAVAILABLE,
    RUNTIME_FILE_MARKS_FULL,
    RUNTIME_FILE_MARK_FAILED,
    RUNTIME_FILE_QUEUE_OVERFLOW,
    RUNTIME_FILE_AGGREGATE_FULL,
    RUNTIME_FILE_DENIED,
    RUNTIME_FILE_UNATTRIBUTED,
    RUNTIME_FILE_CHANGES_FULL,
    RUNTIME_FILE_PERM_ERROR,
)
# ---- end of runtime security -----------------------------------------------------------------------------

# ---- Threat detection (workers/detect/) -------------------------------------------------------------
# A bounded table of the detectors evicted its least recently used entry (state lost for that key).
DETECT_FLOWS_EVICTED = "detect.flows.evicted"  # PacketLimits.max_flows
DETECT_DATAGRAMS_EVICTED = "detect.frag.evicted"  # PacketLimits.max_datagrams
DETECT_HOSTS_EVICTED = "detect.hosts.evicted"  # per-source/destination counters (PacketLimits.max_hosts)
DETECT_AGGREGATE_EVICTED = "detect.aggregate.evicted"  # DetectLimits.max_aggregate_keys (summary sent early)
# A packet dropped because its source is blocked by a block-source threat action.
DETECT_SOURCE_BLOCKED = "detect.source_blocked"
# Packet-context sensor streams at DetectLimits.max_sensor_streams: a packet scanned on its own.
DETECT_SENSOR_STREAMS_FULL = "detect.sensor.streams_full"
# An exception in the packet-level detectors (a bug): the packet goes on to the DPI engine.
DETECT_EXCEPTION = "detect.exception"
# A sensor pattern Hyperscan cannot compile runs on Python re instead (counted per compile).
DETECT_SENSOR_RE_FALLBACK = "detect.sensor.re_fallback"

# ---- Netfilter hooks (node/netfilter.py) ------------------------------------------------------------
# Our jump was no longer first in a hook (another rule above it, or it was deleted): put back first.
NETFILTER_JUMP_REPAIRED = "netfilter.jump_repaired"
# The repair itself failed (iptables refused it); tried again at the next check.
NETFILTER_JUMP_REPAIR_FAILED = "netfilter.jump_repair_failed"
# Bridges in the namespace without br_netfilter: bridged (same-node pod) traffic skips FORWARD.
NETFILTER_BRIDGE_UNFILTERED = "netfilter.bridge_unfiltered"
