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
