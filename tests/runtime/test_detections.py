from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from runtime import detections as d
from runtime.settings import DEFAULT_SANCTIONED_ESCALATION, DEFAULT_SHELLS, DEFAULT_SUSPICIOUS_TOOLS

TOOLS = d.compile_tools(DEFAULT_SUSPICIOUS_TOOLS)


def test_suspicious_tools_by_name_and_flags() -> None:
    assert d.suspicious_tool("nmap", ("nmap", "-sS", "198.18.0.1"), TOOLS) == "nmap"
    assert d.suspicious_tool("nc", ("nc", "198.18.0.1", "80"), TOOLS) is None  # a plain client
    assert d.suspicious_tool("nc", ("nc", "-lvp", "4444"), TOOLS) == "nc"  # clustered short flags
    assert d.suspicious_tool("ncat", ("ncat", "--exec", "/bin/sh", "h", "1"), TOOLS) == "ncat"
    assert d.suspicious_tool("ncat", ("ncat", "--exec=/bin/sh", "h", "1"), TOOLS) == "ncat"
    assert d.suspicious_tool("ncat", ("ncat", "--execute-nothing"), TOOLS) is None
    assert d.suspicious_tool("ls", ("ls", "-l"), TOOLS) is None
    custom = d.compile_tools(["mytool", " bad:-x ", ""])
    assert set(custom) == {"mytool", "bad"} and custom["bad"].flags == ("-x",)


def test_privilege_escalation() -> None:
    s = DEFAULT_SANCTIONED_ESCALATION
    # a setuid binary executed by a non-root process, or setuid(0) after an exploit
    assert d.privilege_escalation("exploit", 0, 1000, ["bash"], s)
    assert d.privilege_escalation("exploit", 0, 65534, [], s)
    # sanctioned paths
    assert not d.privilege_escalation("sudo", 0, 1000, ["bash"], s)
    assert not d.privilege_escalation("id", 0, 1000, ["su", "bash"], s)
    # nothing gained: still non-root, root all along, or nothing known before
    assert not d.privilege_escalation("x", 1000, 1000, [], s)
    assert not d.privilege_escalation("x", 0, 0, [], s)
    assert not d.privilege_escalation("x", 0, None, [], s)


TAIL = " 00000000:00000000 00:00000000 00000000     0        0 "
NET_TCP = (
    "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    "   0: 0100007F:1F90 00000000:0000 0A" + TAIL + "1111 1 0 100 0 0 10 0\n"
    "   1: 0100007F:C350 0100007F:1F90 01" + TAIL + "2222 1 0 20 4 30 10 -1\n"
    "   2: garbage\n"
)
NET_TCP6 = (
    "  sl  local_address remote_address st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    "   0: 00000000000000000000000001000000:C350 000000FD000000000000000001000000:115C 01"
    + TAIL
    + "3333 1 0 20 4 30 10 -1\n"
)


def test_parse_net_tcp_and_remote_text() -> None:
    tcp, truncated = d.parse_net_tcp(NET_TCP, 100)
    assert not truncated
    assert tcp == {1111: (0x0A, "00000000:0000"), 2222: (0x01, "0100007F:1F90")}
    assert d.remote_text("0100007F:1F90") == "127.0.0.1:8080"
    tcp6, _ = d.parse_net_tcp(NET_TCP6, 100)
    assert d.remote_text(tcp6[3333][1]) == "[fd00::1]:4444"
    _, truncated = d.parse_net_tcp(NET_TCP, 1)
    assert truncated


def test_reverse_shell() -> None:
    tcp, _ = d.parse_net_tcp(NET_TCP, 100)
    sock = {0: "socket:[2222]", 1: "socket:[2222]"}
    assert d.reverse_shell("bash", sock, tcp, DEFAULT_SHELLS) == "0100007F:1F90"
    assert d.reverse_shell("bash", {0: "/dev/pts/0", 1: "socket:[2222]"}, tcp, DEFAULT_SHELLS)
    assert d.reverse_shell("bash", {0: "socket:[1111]"}, tcp, DEFAULT_SHELLS) is None  # a listener
    assert d.reverse_shell("bash", {0: "socket:[9999]"}, tcp, DEFAULT_SHELLS) is None  # unix socket
    assert d.reverse_shell("bash", {0: "pipe:[2222]"}, tcp, DEFAULT_SHELLS) is None
    assert d.reverse_shell("nginx", sock, tcp, DEFAULT_SHELLS) is None


@given(st.text(max_size=600))
def test_net_tcp_parser_never_raises(text: str) -> None:
    table, longer = d.parse_net_tcp(text, 50)
    assert len(table) <= 50 and longer == (len(text.splitlines()) > 51)
    assert isinstance(d.remote_text(text), str)
    inode = d.socket_inode(text)
    assert inode is None or (inode >= 0 and str(inode) in text)
