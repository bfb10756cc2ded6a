"""Our iptables chains (IPv4 and IPv6): install atomically, replace stale ones, remove on exit.

The enforcer owns one chain per family in the filter table and one jump to it from each configured hook;
it touches nothing else. Marks are masked to our three bits, so other users of marks (CNI plugins,
kube-proxy) are not disturbed. The chain, in order:

  packet mark PASS           → RETURN    (a packet we judged, re-injected by an NF_REPEAT verdict)
  jump to <chain>-BLOCK                  (sources a block-source action cut off: `-s ADDR -j DROP`)
  bare SYN, ctstate ESTABLISHED → clear our connmark bits (a new connection reopening the conntrack
                                         entry of one that saw a reply: it must not inherit its verdict)
  connmark DROP              → DROP      (a connection we blocked: never reaches user space again)
  packet mark DROP           → save it to the connmark, DROP (before the accept bit: a block wins)
  UDP, connmark ACCEPT without FLOOD, over the flow rate → goto <chain>-FLOOD (below)
  connmark ACCEPT            → RETURN    (a connection we allowed: offloaded to the kernel)
  packet mark ACCEPT         → save it to the connmark, RETURN
  bare ACK, connmark QUIET   → goto <chain>-ACKS (below)
  everything else            → NFQUEUE --queue-balance first:last [--queue-bypass]

with, ahead of the first rule, packet mark QUIET → save it to the connmark (a reader's verdict sets it).

Quiet ACKs: a connection under inspection sends every packet to a reader, and most of them are bare
ACKs, which no worker verdict could change. Once a reader has let a connection's first bare ACK through
(its worker saw the handshake complete), its verdict carries the QUIET bit and the kernel passes the
connection's later bare ACKs itself: <chain>-ACKS returns (lets on) a packet only if it provably carries
no payload: IPv4 without options whose total length is 20 + the TCP header's, or IPv6 whose payload is
only the TCP header, for each of the 11 possible TCP header lengths (`u32` matches, no arithmetic in
iptables); and whose raw window is at least `QUIET_ACK_MIN_WINDOW` (the default `tcp_small_window`
threshold, so a shrinking window still reaches the threat checks). Anything else there is queued as
usual: one byte of payload, IP options, extension headers or a tiny window all go to a reader.

Single-flow UDP floods: an allowed UDP flow is offloaded after its inspection window, and a flood tool
that keeps one socket (one 5-tuple) would then never meet a reader. A `hashlimit` match counts the
datagrams of each direction of every offloaded UDP flow (`netfilter.udp_flow_rate` per second, a tenth of
it as a burst; datagrams up to `UDP_FLOOD_MAX_LENGTH` bytes, as floods send them, not a bulk flow's
full-size ones); the first datagram over it goes to <chain>-FLOOD, which sets the FLOOD bit in the
connection mark and clears ACCEPT (the flow is no longer offloaded), and queues it with the FLOOD bit in
its packet mark. The reader reports `udp_flood` and answers with the drop bit (Protect: the flow is cut in
the kernel) or the accept bit (Discover, Monitor: offloaded again, and with FLOOD set the rate is not
checked again), so a flood costs the readers a handful of packets either way.

RETURN rather than ACCEPT lets the rest of the hook's rules (other people's) see the packet too.

CNIs and kube-proxy insert their own rules at the top of FORWARD/INPUT/OUTPUT (Calico, kube-router and
others re-insert them periodically), which would put their ACCEPTs ahead of our jump. `check_jumps` finds
a hook whose first rule is not our jump (or that lost it), and `repair_jumps` puts it back first in one
iptables-restore transaction (delete ours, insert at 1): no packet sees the hook without it.

Conntrack keeps a closed or reset TCP entry (and its mark) for a while, and a SYN reusing its ports moves it
back to SYN_SENT rather than starting a fresh one; a connection that was established and later blocked
(an injection reset) would hand its drop bit to the next connection from the same client port. A bare SYN
(no ACK, RST or FIN) on an entry that saw a reply (`--ctstate ESTABLISHED`: conntrack's word for "seen
both ways") therefore has our bits cleared and is queued: the readers start a new flow for it. A SYN
retransmitted for a connection refused at its first SYN finds an entry that never saw a reply (`NEW`) and
stays dropped by the drop bit.
"""

from __future__ import annotations

import logging
import subprocess
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from core import anomalies as A
from core.packet import IPPROTO_TCP, TCP_ACK, PacketMeta
from node.config import PASS, Config

log = logging.getLogger(__name__)

# iptables waits for the xtables lock this many seconds instead of failing at once.
XTABLES_WAIT_S = 5
_TOOLS = {4: ("iptables", "iptables-restore"), 6: ("ip6tables", "ip6tables-restore")}
# A bare ACK: of the flags that make a packet's kind, ACK alone (PSH or URG without payload is odd: queued).
_TCP_FLAGS = "SYN,ACK,RST,FIN,PSH,URG"


# ICMPv6 neighbour discovery (router/neighbour solicitation and advertisement, redirect) and multicast
# listener messages.
NDP_AND_MLD_TYPES = (130, 131, 132, 133, 134, 135, 136, 137, 143)

# A bare ACK advertising a smaller raw window is always queued: the threat checks look at small windows
# (`tcp_small_window`, default 64 bytes; window scaling only makes a raw window larger).
QUIET_ACK_MIN_WINDOW = 64


class NetfilterError(RuntimeError):
    """iptables refused our rules."""


@dataclass(frozen=True, slots=True)
class ChainSpec:
    chain: str
    hooks: tuple[str, ...]
    in_interfaces: tuple[str, ...]
    out_interfaces: tuple[str, ...]
    first_queue: int
    last_queue: int
    bypass: bool
    accept_mark: int
    drop_mark: int
    pass_mark: int
    quiet_ack_mark: int  # 0: quiet ACKs off
    families: tuple[int, ...]
    flood_mark: int = 0
    udp_flow_rate: int = 0  # datagrams/s per direction of an offloaded UDP flow (0: not checked)

    @classmethod
    def from_config(cls, config: Config) -> ChainSpec:
        n = config.netfilter
        queues = config.queue_numbers
        return cls(
            chain=n.chain,
            hooks=n.hooks,
            in_interfaces=n.in_interfaces,
            out_interfaces=n.out_interfaces,
            first_queue=queues[0],
            last_queue=queues[-1],
            bypass=config.failure.no_reader == PASS,
            accept_mark=n.accept_mark,
            drop_mark=n.drop_mark,
            pass_mark=n.pass_mark,
            quiet_ack_mark=n.quiet_ack_mark if n.quiet_acks else 0,
            families=(4, 6) if n.ipv6 else (4,),
            flood_mark=n.flood_mark,
            udp_flow_rate=n.udp_flow_rate,
        )


def kernel_passes_quiet_ack(meta: PacketMeta) -> bool:
    """What <chain>-ACKS lets on (for `enforcer replay`'s model of the chain): a bare ACK carrying
    provably no payload, without IP options or IPv6 extension headers, with a raw window of at least
    `QUIET_ACK_MIN_WINDOW`."""
    return (
        meta.proto == IPPROTO_TCP
        and meta.tcp_flags & 0x3F == TCP_ACK
        and meta.l4_offset == (20 if meta.family == 4 else 40)
        and meta.ip_len == meta.payload_offset
        and meta.window >= QUIET_ACK_MIN_WINDOW
    )


def _m(bit: int) -> str:
    return f"0x{bit:x}/0x{bit:x}"


def chain_rules(spec: ChainSpec, family: int = 4) -> list[str]:
    """The body of our chain for one family, as iptables-restore lines."""
    c = spec.chain
    a, d, p, q = spec.accept_mark, spec.drop_mark, spec.pass_mark, spec.quiet_ack_mark
    rules = []
    if q:
        rules.append(
            f"-A {c} -m mark --mark {_m(q)} -j CONNMARK --save-mark --nfmask 0x{q:x} --ctmask 0x{q:x}"
        )
    rules += [f"-A {c} -m mark --mark {_m(p)} -j RETURN", f"-A {c} -j {block_chain(spec)}"]
    if family == 6:
        # Neighbour discovery and other link-local or multicast control traffic is the network's own
        # plumbing, not a workload's connection: never queue it (blocking it would cut the node off).
        rules += [f"-A {c} -s fe80::/10 -j RETURN", f"-A {c} -d ff00::/8 -j RETURN"]
        rules += [f"-A {c} -p ipv6-icmp -m icmp6 --icmpv6-type {t} -j RETURN" for t in NDP_AND_MLD_TYPES]
    ours = a | d | q
    rules += [
        f"-A {c} -p tcp --tcp-flags SYN,ACK,RST,FIN SYN -m conntrack --ctstate ESTABLISHED "
        f"-m connmark ! --mark 0x0/0x{ours:x} -j CONNMARK --set-xmark 0x0/0x{ours:x}",
        f"-A {c} -m connmark --mark {_m(d)} -j DROP",
        # a reader's block wins over an accept bit saved meanwhile (a flow cut while packets were out)
        f"-A {c} -m mark --mark {_m(d)} -j CONNMARK --save-mark --nfmask 0x{d:x} --ctmask 0x{d:x}",
        f"-A {c} -m mark --mark {_m(d)} -j DROP",
        *_udp_rate_rules(spec),
        f"-A {c} -m connmark --mark {_m(a)} -j RETURN",
        f"-A {c} -m mark --mark {_m(a)} -j CONNMARK --save-mark --nfmask 0x{a:x} --ctmask 0x{a:x}",
        f"-A {c} -m mark --mark {_m(a)} -j RETURN",
    ]
    if q:
        # a goto: the ACK chain's RETURN leaves our chain (the packet is let on), its end queues
        rules.append(
            f"-A {c} -p tcp --tcp-flags {_TCP_FLAGS} ACK -m connmark --mark {_m(q)} -g {ack_chain(spec)}"
        )
    return rules + _queue_rules(spec, c)


# Datagrams the rate check counts: up to this IP length. Flood tools send small datagrams, to send the most
# (hping3's are empty by default); a bulk flow's are full-size (a QUIC download, a tunnel, video) and a
# fast one of those is bandwidth a workload asked for, not a flood of packets.
UDP_FLOOD_MAX_LENGTH = 1200


def _udp_rate_rules(spec: ChainSpec) -> list[str]:
    """The datagram rate check of offloaded UDP flows (see the module's docstring)."""
    rate, f, a = spec.udp_flow_rate, spec.flood_mark, spec.accept_mark
    if not rate or not f:
        return []
    return [
        f"-A {spec.chain} -p udp -m length --length 0:{UDP_FLOOD_MAX_LENGTH} -m connmark --mark 0x{a:x}/0x{a | f:x} "
        f"-m hashlimit --hashlimit-above "
        f"{rate}/sec --hashlimit-burst {udp_flow_burst(rate)} --hashlimit-mode srcip,srcport,dstip,dstport "
        f"--hashlimit-name {flood_chain(spec)} -g {flood_chain(spec)}"
    ]


def udp_flow_burst(rate: int) -> int:
    """Datagrams a flow may send over its rate at once: a tenth of a second's worth."""
    return max(rate // 10, 1)


def flood_chain_rules(spec: ChainSpec) -> list[str]:
    """Mark the connection as flooding (no longer offloaded, not rate-checked again) and queue the datagram
    with the FLOOD bit: a reader reports it and decides the flow."""
    c, f, a = flood_chain(spec), spec.flood_mark, spec.accept_mark
    return [
        f"-A {c} -j CONNMARK --set-xmark 0x{f:x}/0x{a | f:x}",
        f"-A {c} -j MARK --set-xmark 0x{f:x}/0x{f:x}",
        *_queue_rules(spec, c),
    ]


def ack_chain_rules(spec: ChainSpec, family: int = 4) -> list[str]:
    """The quiet-ACK chain: RETURN for a packet that provably carries no payload, else queue it."""
    c = ack_chain(spec)
    window = f"{QUIET_ACK_MIN_WINDOW}:0xffff"
    rules = []
    for words in range(5, 16):  # the TCP header's length in 32-bit words
        header = 4 * words
        if family == 4:  # version 4, header length 5 words; total length; data offset; window
            test = f"0>>24=0x45&&0&0xffff={20 + header}&&32>>28={words}&&32&0xffff={window}"
        else:  # version 6; payload length and next header TCP; data offset; window
            test = f"0>>28=6&&4>>8=0x{header << 8 | 6:x}&&52>>28={words}&&52&0xffff={window}"
        rules.append(f'-A {c} -m u32 --u32 "{test}" -j RETURN')
    return rules + _queue_rules(spec, c)


def _queue_rules(spec: ChainSpec, chain: str) -> list[str]:
    if spec.first_queue == spec.last_queue:
        target = f"NFQUEUE --queue-num {spec.first_queue}"
    else:
        target = f"NFQUEUE --queue-balance {spec.first_queue}:{spec.last_queue}"
    if spec.bypass:
        target += " --queue-bypass"
    return [
        f"-A {chain}{match} -j {target}"
        for match in _interface_matches(spec.in_interfaces, spec.out_interfaces)
    ]


def _interface_matches(ins: tuple[str, ...], outs: tuple[str, ...]) -> Iterable[str]:
    for i in ins or ("",):
        for o in outs or ("",):
            yield (f" -i {i}" if i else "") + (f" -o {o}" if o else "")


def jump_rules(spec: ChainSpec) -> list[str]:
    """Jumps from the hooks to our chain, first in each hook. Loopback is never queued on INPUT/OUTPUT:
    the enforcer's own and the node's local plumbing must not depend on the enforcer."""
    jumps = []
    for hook in spec.hooks:
        lo = {"INPUT": " ! -i lo", "OUTPUT": " ! -o lo"}.get(hook, "")
        jumps.append(f"-I {hook} 1{lo} -j {spec.chain}")
    return jumps


def jump_listing_line(spec: ChainSpec, hook: str) -> str:
    """Our jump in `hook` as `iptables -S HOOK` prints it."""
    lo = {"INPUT": " ! -i lo", "OUTPUT": " ! -o lo"}.get(hook, "")
    return f"-A {hook}{lo} -j {spec.chain}"


@dataclass(frozen=True, slots=True)
class JumpProblem:
    """A hook where our jump is not first and alone: `ours` copies of it are present, `first` is the rule
    above them ("" when ours is first but repeated)."""

    family: int
    hook: str
    ours: int
    first: str

    def describe(self) -> str:
        where = f"IPv{self.family} {self.hook}"
        if not self.ours:
            return f"{where}: our jump was deleted"
        if not self.first:
            return f"{where}: our jump is there {self.ours} times"
        return f"{where}: our jump is no longer first; above it: {self.first!r}"


def find_jump_problem(spec: ChainSpec, family: int, hook: str, listing: str) -> JumpProblem | None:
    """What is wrong with `hook`, from its `iptables -S HOOK` listing (None: our jump is first)."""
    rules = [line for line in listing.splitlines() if line.startswith(f"-A {hook} ")]
    ours = jump_listing_line(spec, hook)
    count = rules.count(ours)
    if rules and rules[0] == ours and count == 1:
        return None
    return JumpProblem(family, hook, count, rules[0] if rules and rules[0] != ours else "")


def repair_script(spec: ChainSpec, problems: Iterable[JumpProblem]) -> str:
    """One transaction for one family: remove our jumps from the hooks named, insert each first again."""
    lines = ["*filter"]
    for p in problems:
        rule = jump_listing_line(spec, p.hook).removeprefix(f"-A {p.hook}")
        lines += [f"-D {p.hook}{rule}"] * p.ours + [f"-I {p.hook} 1{rule}"]
    return "\n".join([*lines, "COMMIT", ""])


def block_chain(spec: ChainSpec) -> str:
    return f"{spec.chain}-BLOCK"


def ack_chain(spec: ChainSpec) -> str:
    return f"{spec.chain}-ACKS"


def flood_chain(spec: ChainSpec) -> str:
    return f"{spec.chain}-FLOOD"


def _checks_udp_rate(spec: ChainSpec) -> bool:
    return bool(spec.udp_flow_rate and spec.flood_mark)


def _chains(spec: ChainSpec) -> tuple[str, ...]:
    return (
        (spec.chain, block_chain(spec))
        + ((ack_chain(spec),) if spec.quiet_ack_mark else ())
        + ((flood_chain(spec),) if _checks_udp_rate(spec) else ())
    )


def restore_script(spec: ChainSpec, family: int = 4) -> str:
    # Declaring our chains in --noflush mode creates them, or flushes them if a crashed run left them.
    lines = ["*filter", *(f":{chain} - [0:0]" for chain in _chains(spec))]
    if spec.quiet_ack_mark:
        lines += ack_chain_rules(spec, family)
    if _checks_udp_rate(spec):
        lines += flood_chain_rules(spec)
    lines += [*chain_rules(spec, family), *jump_rules(spec), "COMMIT", ""]
    return "\n".join(lines)


def block_script(spec: ChainSpec, add: Iterable[str], remove: Iterable[str]) -> str:
    """iptables-restore lines that add and remove source drops (addresses as text, one family)."""
    c = block_chain(spec)
    lines = ["*filter", *(f"-D {c} -s {a} -j DROP" for a in remove), *(f"-A {c} -s {a} -j DROP" for a in add)]
    return "\n".join([*lines, "COMMIT", ""])


class Netfilter:
    """Installs and removes our chains. `install()` first removes leftovers of an earlier run."""

    def __init__(self, spec: ChainSpec) -> None:
        self.spec = spec
        self.installed = False

    def install(self) -> None:
        self.remove()
        for family in self.spec.families:
            try:
                _restore(family, restore_script(self.spec, family), "our chain")
            except NetfilterError:
                self.remove()
                raise
        self.installed = True
        log.info("netfilter chain %s installed on %s", self.spec.chain, ",".join(self.spec.hooks))

    def remove(self) -> None:
        """Remove every jump to our chain (duplicates included) and the chain itself. Idempotent."""
        for family in self.spec.families:
            tool, _ = _TOOLS[family]
            for hook in ("FORWARD", "INPUT", "OUTPUT"):
                for lo in ("", "! -i lo", "! -o lo"):
                    rule = [hook, *lo.split(), "-j", self.spec.chain]
                    for _ in range(16):  # bounded: a crashed run leaves at most a few duplicates
                        if _ipt(tool, "-D", *rule).returncode != 0:
                            break
            chains = (self.spec.chain, block_chain(self.spec), ack_chain(self.spec), flood_chain(self.spec))
            for chain in chains:
                _ipt(tool, "-F", chain)
            for chain in chains:
                _ipt(tool, "-X", chain)
        self.installed = False

    def update_blocks(self, family: int, add: list[str], remove: list[str]) -> None:
        """Add and remove source drops in one atomic change of one family's block chain."""
        if not add and not remove or family not in self.spec.families:
            return
        _restore(family, block_script(self.spec, add, remove), "the source blocks")

    def check_jumps(self) -> list[JumpProblem]:
        """Hooks (both families) where our jump is not first. A hook iptables cannot list is skipped."""
        problems = []
        for family in self.spec.families:
            for hook in self.spec.hooks:
                listed = _ipt(_TOOLS[family][0], "-S", hook)
                if listed.returncode == 0:
                    problem = find_jump_problem(self.spec, family, hook, listed.stdout)
                    if problem is not None:
                        problems.append(problem)
        return problems

    def repair_jumps(self, problems: list[JumpProblem]) -> None:
        """Put our jumps back first, one atomic transaction per family; NetfilterError if refused."""
        for family in self.spec.families:
            mine = [p for p in problems if p.family == family]
            if not mine:
                continue
            _restore(family, repair_script(self.spec, mine), "to put our jump first")

    def listing(self) -> dict[int, str]:
        """`iptables -S` of the filter table per family (for status and tests)."""
        return {f: _ipt(_TOOLS[f][0], "-S").stdout for f in self.spec.families}


def _ipt(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool, "-w", str(XTABLES_WAIT_S), *args], capture_output=True, text=True)


def _restore(family: int, script: str, what: str) -> None:
    """One atomic `iptables-restore --noflush` transaction of `family`; NetfilterError naming `what`."""
    restore = _TOOLS[family][1]
    result = subprocess.run(
        [restore, "-w", str(XTABLES_WAIT_S), "--noflush"], input=script, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise NetfilterError(f"{restore} refused {what}: {result.stderr.strip()}")


class JumpWatch:
    """Every `interval` seconds: our jumps first in their hooks, put back if not (counted, logged with
    what was found); and `also` (the bridge check), whose changed finding is logged. A thread of its own,
    so a held xtables lock never stalls the supervisor's loop."""

    def __init__(self, netfilter: Netfilter, interval: float, also: Callable[[], None] | None = None) -> None:
        self.netfilter = netfilter
        self.interval = interval
        self.also = also
        self.counters: Counter[str] = Counter()
        self.last_repair = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="jump-watch", daemon=True)

    def start(self) -> None:
        if self.interval > 0:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2 * XTABLES_WAIT_S + 1)

    def check_once(self) -> list[JumpProblem]:
        problems = self.netfilter.check_jumps()
        self.counters["netfilter.jump_checks"] += 1
        if not problems:
            return problems
        found = "; ".join(p.describe() for p in problems)
        try:
            self.netfilter.repair_jumps(problems)
        except NetfilterError as exc:
            self.counters[A.NETFILTER_JUMP_REPAIR_FAILED] += 1
            log.error("%s; cannot repair it: %s", found, exc)
            return problems
        self.counters[A.NETFILTER_JUMP_REPAIRED] += len(problems)
        self.last_repair = found
        log.warning("%s; put our jump back first (%s)", found, A.NETFILTER_JUMP_REPAIRED)
        return problems

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check_once()
                if self.also is not None:
                    self.also()
            except Exception:  # a bug here must not end the checks for good
                log.exception("netfilter check failed")
