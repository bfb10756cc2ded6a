"""Our iptables chains (IPv4 and IPv6): install atomically, replace stale ones, remove on exit.

The enforcer owns one chain per family in the filter table and one jump to it from each configured hook;
it touches nothing else. Marks are masked to our three bits, so other users of marks (CNI plugins,
kube-proxy) are not disturbed. The chain, in order:

  packet mark PASS           → RETURN    (a packet we judged, re-injected by an NF_REPEAT verdict)
  jump to <chain>-BLOCK                  (sources a block-source action cut off: `-s ADDR -j DROP`)
  bare SYN, ctstate ESTABLISHED → clear our connmark bits (a new connection reopening the conntrack
                                         entry of one that saw a reply: it must not inherit its verdict)
  connmark DROP              → DROP      (a connection we blocked: never reaches user space again)
  connmark ACCEPT            → RETURN    (a connection we allowed: offloaded to the kernel)
  packet mark ACCEPT         → save it to the connmark, RETURN
  packet mark DROP           → save it to the connmark, DROP
  everything else            → NFQUEUE --queue-balance first:last [--queue-bypass]

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
from node.config import PASS, Config

log = logging.getLogger(__name__)

# iptables waits for the xtables lock this many seconds instead of failing at once.
XTABLES_WAIT_S = 5
_TOOLS = {4: ("iptables", "iptables-restore"), 6: ("ip6tables", "ip6tables-restore")}


# ICMPv6 neighbour discovery (router/neighbour solicitation and advertisement, redirect) and multicast
# listener messages.
NDP_AND_MLD_TYPES = (130, 131, 132, 133, 134, 135, 136, 137, 143)


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
    families: tuple[int, ...]

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
            families=(4, 6) if n.ipv6 else (4,),
        )


def _m(bit: int) -> str:
    return f"0x{bit:x}/0x{bit:x}"


def chain_rules(spec: ChainSpec, family: int = 4) -> list[str]:
    """The body of our chain for one family, as iptables-restore lines."""
    c = spec.chain
    a, d, p = spec.accept_mark, spec.drop_mark, spec.pass_mark
    rules = [f"-A {c} -m mark --mark {_m(p)} -j RETURN", f"-A {c} -j {block_chain(spec)}"]
    if family == 6:
        # Neighbour discovery and other link-local or multicast control traffic is the network's own
        # plumbing, not a workload's connection: never queue it (blocking it would cut the node off).
        rules += [f"-A {c} -s fe80::/10 -j RETURN", f"-A {c} -d ff00::/8 -j RETURN"]
        rules += [f"-A {c} -p ipv6-icmp -m icmp6 --icmpv6-type {t} -j RETURN" for t in NDP_AND_MLD_TYPES]
    ours = a | d
    rules += [
        f"-A {c} -p tcp --tcp-flags SYN,ACK,RST,FIN SYN -m conntrack --ctstate ESTABLISHED "
        f"-m connmark ! --mark 0x0/0x{ours:x} -j CONNMARK --set-xmark 0x0/0x{ours:x}",
        f"-A {c} -m connmark --mark {_m(d)} -j DROP",
        f"-A {c} -m connmark --mark {_m(a)} -j RETURN",
        f"-A {c} -m mark --mark {_m(a)} -j CONNMARK --save-mark --nfmask 0x{a:x} --ctmask 0x{a:x}",
        f"-A {c} -m mark --mark {_m(a)} -j RETURN",
        f"-A {c} -m mark --mark {_m(d)} -j CONNMARK --save-mark --nfmask 0x{d:x} --ctmask 0x{d:x}",
        f"-A {c} -m mark --mark {_m(d)} -j DROP",
    ]
    if spec.first_queue == spec.last_queue:
        target = f"NFQUEUE --queue-num {spec.first_queue}"
    else:
        target = f"NFQUEUE --queue-balance {spec.first_queue}:{spec.last_queue}"
    if spec.bypass:
        target += " --queue-bypass"
    for match in _interface_matches(spec.in_interfaces, spec.out_interfaces):
        rules.append(f"-A {c}{match} -j {target}")
    return rules


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


def restore_script(spec: ChainSpec, family: int = 4) -> str:
    # Declaring our chains in --noflush mode creates them, or flushes them if a crashed run left them.
    lines = ["*filter", f":{spec.chain} - [0:0]", f":{block_chain(spec)} - [0:0]"]
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
            for chain in (self.spec.chain, block_chain(self.spec)):
                _ipt(tool, "-F", chain)
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
