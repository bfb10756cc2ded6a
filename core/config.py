"""The configuration's sections as every process sees them: frozen dataclasses whose fields carry their
default and a one-line help. The node host (`node.config`) loads them from TOML and the environment,
checks them and hands each process the sections it needs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def setting(default: Any, help: str) -> Any:
    """A config field: its default and the help `enforcer config check` shows."""
    if isinstance(default, list | tuple):
        return field(default=tuple(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})

# Actions for the fail-open/fail-closed table: what happens to traffic under each failure condition.
PASS = "pass"  # let the packet (and its flow) through unenforced
DROP = "drop"  # drop the packet
FAILURE_ACTIONS = (PASS, DROP)
HOOKS = ("FORWARD", "INPUT", "OUTPUT")
INSPECT_MODES = ("app", "new", "all")
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True, slots=True)
class NodeConfig:
    name: str = setting("", "node name reported in events; empty means the host name")


@dataclass(frozen=True, slots=True)
class QueuesConfig:
    first: int = setting(0, "first NFQUEUE number; readers bind first..first+readers-1")
    readers: int = setting(2, "number of reader processes, one per queue")
    reader_cpus: tuple[int, ...] = setting(
        (), "CPU of each reader, in order; empty spreads them over the top-level cpus"
    )
    max_len: int = setting(8192, "packets the kernel may hold per queue awaiting a verdict")
    copy_range: int = setting(65535, "bytes of each packet copied to user space: whole packets, GSO "
                              "super-packets included (a packet of an inspected flow cut shorter takes "
                              "failure.truncated)")  # fmt: skip
    gso: bool = setting(True, "let the kernel queue GSO super-packets whole instead of segmenting them")
    socket_buffer: int = setting(8 << 20, "netlink receive buffer per queue in bytes")
    recv_batch: int = setting(128, "packets a reader takes from its queue before it sends verdicts")

    @property
    def numbers(self) -> tuple[int, ...]:
        """The NFQUEUE numbers, one per reader."""
        return tuple(range(self.first, self.first + self.readers))


@dataclass(frozen=True, slots=True)
class WorkersConfig:
    count: int = setting(2, "number of DPI worker processes")
    cpus: tuple[int, ...] = setting((), "CPU of each worker, in order; empty spreads them over the top-level cpus")
    batch_size: int = setting(64, "packets per message from a reader to a worker")
    inflight_max: int = setting(4096, "packets a reader may have out at workers awaiting verdicts")
    verdict_timeout_ms: int = setting(
        250, "a packet whose worker verdict takes longer gets the verdict_timeout action"
    )
    inspect: str = setting(
        "new",
        "which flows workers see: new (default: every new flow, until its protocol's inspection window "
        "closes), app (L4 only: just flows whose rule names an application), all (every packet, no "
        "offload; labs)",
    )
    spin_us: int = setting(
        0,
        "after sending packets that wait, a reader polls for their verdicts (and a worker, after answering, "
        "for its next batch) up to this long before sleeping; saves a wake-up, costs CPU (0: never)",
    )
    payload_pattern: str = setting("", "hex bytes: a packet whose payload contains them is blocked (lab check of "
                              "the worker path until the DPI rules arrive); empty disables")  # fmt: skip


@dataclass(frozen=True, slots=True)
class NetfilterConfig:
    hooks: tuple[str, ...] = setting(
        ("FORWARD",), "netfilter hooks our chain is jumped to from: FORWARD, INPUT, OUTPUT"
    )
    in_interfaces: tuple[str, ...] = setting(
        (), "only queue packets entering through these interfaces (empty: all)"
    )
    out_interfaces: tuple[str, ...] = setting(
        (), "only queue packets leaving through these interfaces (empty: all)"
    )
    chain: str = setting("ENFORCER", "name of our chain in the filter table (IPv4 and IPv6)")
    ipv6: bool = setting(True, "install the IPv6 chain too")
    accept_mark: int = setting(0x00100000, "mark bit: connection allowed, offloaded to the kernel")
    drop_mark: int = setting(0x00200000, "mark bit: connection blocked, dropped in the kernel")
    pass_mark: int = setting(0x00400000, "mark bit: this packet was judged; let it continue through the table")
    quiet_ack_mark: int = setting(
        0x00800000, "mark bit: an inspected connection whose further bare ACKs the kernel passes unqueued"
    )
    quiet_acks: bool = setting(
        True, "pass an inspected connection's bare ACKs in the kernel once its worker has seen its handshake"
    )
    flood_mark: int = setting(
        0x01000000, "mark bit: an offloaded UDP flow went over udp_flow_rate (a reader is shown one datagram)"
    )
    udp_flow_rate: int = setting(
        50000,
        "datagrams/s one direction of an offloaded UDP flow may carry (a tenth of it as a burst) before the "
        "kernel shows a reader its next one: udp_flood on a single 5-tuple (0: off)",
    )
    reject_tcp: bool = setting(True, "answer a blocked TCP connection with resets instead of silence")
    jump_check_ms: int = setting(
        5000, "how often our jumps are checked to be first in their hooks and put back first (0: never)"
    )
    load_br_netfilter: bool = setting(
        False, "load br_netfilter at start when bridges are present without it (bridged traffic skips FORWARD)"
    )

    @property
    def our_marks(self) -> int:
        """Every mark bit of ours (the only bits we set or clear)."""
        return self.accept_mark | self.drop_mark | self.pass_mark | self.quiet_ack_mark | self.flood_mark


@dataclass(frozen=True, slots=True)
class FlowsConfig:
    max_flows: int = setting(131072, "flows tracked per reader; the oldest is evicted beyond this")
    tcp_timeout_s: int = setting(3600, "idle time after which an established TCP flow is forgotten")
    tcp_closed_timeout_s: int = setting(10, "idle time after FIN/RST after which a TCP flow is forgotten")
    udp_timeout_s: int = setting(60, "idle time after which a UDP flow is forgotten")
    icmp_timeout_s: int = setting(30, "idle time after which an ICMP flow is forgotten")
    other_timeout_s: int = setting(60, "idle time for flows of other protocols")


@dataclass(frozen=True, slots=True)
class FailureConfig:
    no_reader: str = setting(PASS, "no reader bound to a queue (crash, restart): pass = kernel bypass, drop")
    queue_full: str = setting(PASS, "the kernel queue is full: pass (fail-open) or drop")
    verdict_timeout: str = setting(PASS, "a worker did not answer in time: pass or drop")
    worker_down: str = setting(PASS, "the flow's worker is not running: pass or drop")
    memory_cap: str = setting(PASS, "a reader's in-flight or flow table is full: pass or drop")
    malformed: str = setting(DROP, "a packet whose headers cannot be decoded: pass or drop")
    no_policy: str = setting(PASS, "no policy has been published yet: pass or drop")
    truncated: str = setting(DROP, "a packet of an inspected flow reached us cut short (longer than "
                             "queues.copy_range): drop (the sender retransmits) or pass (the flow's DPI "
                             "stops at the gap)")  # fmt: skip
    budget_spent: str = setting(PASS, "restart budget spent, the enforcer exits: pass = remove our rules, "
                           "drop = leave the queue rule in place without bypass")  # fmt: skip


@dataclass(frozen=True, slots=True)
class SupervisorConfig:
    heartbeat_interval_ms: int = setting(500, "how often each child reports that it is alive (and its counters)")
    heartbeat_timeout_ms: int = setting(1500, "a child silent this long is considered hung and restarted")
    startup_timeout_ms: int = setting(10000, "a new child has this long to send its first heartbeat")
    restart_budget: int = setting(10, "restarts allowed within restart_window_s before the enforcer gives up")
    restart_window_s: int = setting(60, "window over which restarts are counted")
    stable_after_s: int = setting(10, "a child running this long counts as started well")
    shutdown_grace_ms: int = setting(2000, "time children get to answer pending packets when stopping")
    runtime_monitor: bool = setting(True, "run the runtime-security monitor (processes and files of workloads)")
    packet_nice: int = setting(-10, "nice value of readers and workers (-20..19): lower is scheduled sooner")


@dataclass(frozen=True, slots=True)
class RuntimeDirsConfig:
    run_dir: str = setting("/run/enforcer", "sockets and shared memory (created with mode 0700)")
    state_dir: str = setting("/var/lib/enforcer", "last-known-good policy, event spool")


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    file: str = setting("", "local policy file used when no controller is configured (re-read when it changes)")
    startup: str = setting("monitor", "policy before any is known: monitor (allow and report) or protect (deny)")
    table_bytes: int = setting(8 << 20, "bytes of each half of the shared-memory rule tables")
    reuse_wait_ms: int = setting(10, "how long the policy writer waits for readers to leave a table half")
    watch_interval_ms: int = setting(1000, "how often the local policy file is checked for changes")


@dataclass(frozen=True, slots=True)
class EventsConfig:
    aggregate_window_ms: int = setting(1000, "identical events within this window become one event with a count")
    batch_max: int = setting(512, "events per batch sent to the controller")
    spool_max_bytes: int = setting(64 << 20, "disk spool of events the controller has not acknowledged")
    log_file: str = setting("", "without a controller, events go to this JSON-lines file (default: "
                       "state_dir/events.jsonl; - for standard output)")  # fmt: skip


@dataclass(frozen=True, slots=True)
class ControllerConfig:
    join_addr: str = setting("", "controller address host:port; empty runs from the local policy file")
    server_key: str = setting("", "file with the controller's CURVE public key")
    client_key: str = setting("", "file with this enforcer's CURVE secret key")
    heartbeat_s: int = setting(2, "seconds between heartbeats to the controller")
    timeout_s: int = setting(6, "a controller silent this long is reconnected")
    reconnect_max_s: int = setting(10, "ceiling of the reconnect back-off")
    inflight_batches: int = setting(8, "event batches sent to the controller and not yet acknowledged")


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    listen: str = setting(
        "127.0.0.1:9464", "address of the Prometheus metrics and health endpoint; empty disables"
    )


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: str = setting("info", "debug, info, warning or error")
    json: bool = setting(False, "structured (JSON lines) logs instead of text")
