"""Copy mode (issue 11) end to end: the gateway copies FTP control packets to NFLOG group
10004 (iptables -j NFLOG in mangle FORWARD, for each test's duration: lab.NflogFeed) and
ftp6proxy runs as --intercept nflog. Nothing is held: the hole follows the announcement,
so every hole check allows lab.HOLE_SETTLE (0.5 s) for it to appear, and every check that
nothing was opened waits as long first.

- the whole transfer matrix (curl, lftp, ftplib; vsftpd, pyftpdlib; IPv6/IPv4; active and
  passive) and the attack cases of test_daemon.py, run here against the copy-mode daemon
  (the `daemon` fixture below overrides conftest's for this module);
- two processes: the monitor and a parser with no capability, no_new_privs and seccomp,
  which holds the NFLOG socket and nothing of the worker's;
- kill -9 the parser: a new one reads the same bound group at once and FTP goes on;
- the status line counts copies and lost copies;
- --check binds the group and finds (or names as missing) the rules feeding it.
"""
import os
import signal
import subprocess

import pytest

import lab
from test_modes import (
    CAP_KILL, CAP_NET_ADMIN, CAP_SETGID, CAP_SETUID, CAP_SYS_CHROOT, proc_status, sched_policy)
from test_daemon import (  # noqa: F401  (run here, in copy mode)
    test_227_with_foreign_address_opens_nothing, test_229_inside_multiline_reply_opens_nothing,
    test_client_bounce_opens_nothing, test_client_low_port_opens_nothing,
    test_client_sending_reply_line_opens_nothing, test_command_split_across_segments,
    test_hole_appears_then_expires, test_server_low_port_opens_nothing,
    test_unsolicited_229_opens_nothing)
from test_transfers import big_sha, test_transfer  # noqa: F401  (run here, in copy mode)

COPY_ARGS = ["-j", lab.GW_NS, "--firewall", "nft", "--ftp-ports", lab.LAB_FTP_PORTS,
             "-p", str(lab.QUEUE), "-t", "2", "--intercept", "nflog"]


@pytest.fixture
def daemon(copy_daemon):
    """This module's tests, and those it imports, run against the copy-mode daemon."""
    return copy_daemon


def start(tmp_path, *flags):
    log = open(tmp_path / "daemon.log", "a")
    argv = [str(lab.daemon_binary()), *flags, *COPY_ARGS]
    assert not lab.nflog_bound(), "NFLOG group already bound before the daemon started"
    proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    assert lab.wait_until(lambda: proc.poll() is not None or lab.nflog_bound(), 20), \
        f"{argv} did not bind NFLOG group {lab.QUEUE}"
    assert proc.poll() is None, (tmp_path / "daemon.log").read_text()
    return proc


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    status = proc.wait(15)
    assert status == 0, f"exit status {status} after SIGTERM"
    assert lab.wait_until(lambda: not lab.nflog_bound(), 10), "group still bound after exit"
    assert lab.wait_until(lambda: lab.all_elements() == set(), 2 + 5), \
        "holes left long after SIGTERM and -t"


def children(pid):
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                         text=True).stdout
    found = {}
    for child in (int(p) for p in out.split()):
        with open(f"/proc/{child}/comm") as f:
            found.setdefault(f.read().strip(), []).append(child)
    return found


def the_parser(monitor_pid):
    """The monitor's one child, the parser (None while it is being replaced); fails if
    there is any other child (copy mode has no worker)."""
    found = children(monitor_pid)
    assert set(found) <= {"ftp6proxy-prs"}, f"the monitor's children in copy mode: {found}"
    parsers = found.get("ftp6proxy-prs", [])
    assert len(parsers) <= 1, found
    return parsers[0] if parsers else None


def sockets_of(pid):
    """The kinds of socket `pid` holds: "netlink/PROTO" or "unix". Its netlink sockets may
    have been made in the gateway's namespace (-j), so both namespaces' tables are read."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    tables = [
        # netlink: sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode
        ("netlink", 9, open(f"/proc/{pid}/net/netlink").read()),
        ("netlink", 9, lab.in_ns(lab.GW_NS, "cat", "/proc/net/netlink", check=True).stdout),
        # unix: Num RefCount Protocol Flags Type St Inode Path
        ("unix", 6, open(f"/proc/{pid}/net/unix").read()),
    ]
    kinds = []
    for table, at, text in tables:
        for row in (line.split() for line in text.splitlines()[1:]):
            if len(row) > at and row[at] in inodes:
                inodes.discard(row[at])
                kinds.append(f"netlink/{row[1]}" if table == "netlink" else "unix")
    return kinds + [f"unknown socket {i}" for i in sorted(inodes)]


def downloads_work():
    for family, mode in ((6, "epsv"), (4, "port"), (4, "pasv"), (6, "eprt")):
        r = lab.curl(family, lab.VSFTPD, "hello.txt", mode)
        assert r.returncode == 0, f"curl v{family} {mode} in copy mode:\n{r.stderr[-2000:]}"


def test_two_processes_and_the_parser_keeps_nothing(tmp_path, copy_mode):
    """Issue 11 item 2: the monitor and one parser. The parser runs as 65535 with no
    capability, no_new_privs and its seccomp filter, and holds the NFLOG socket (netlink
    family 12, NETLINK_NETFILTER), its link to the monitor and the log link: nothing that
    passes, reinjects or changes a packet."""
    proc = start(tmp_path, "-d")
    try:
        parser = the_parser(proc.pid)
        assert parser, "no parser"
        status = proc_status(parser)
        assert set(status["Uid"].split()) == {"65535"}, status["Uid"]
        assert set(status["Gid"].split()) == {"65535"}, status["Gid"]
        assert int(status["CapEff"], 16) == 0 and int(status["CapPrm"], 16) == 0, status
        assert status["NoNewPrivs"] == "1"
        assert status["Seccomp"] == "2", "the parser runs under its seccomp filter"
        kinds = sockets_of(parser)
        assert sorted(kinds) == ["netlink/12", "unix", "unix"], f"the parser's sockets: {kinds}"
        monitor = proc_status(proc.pid)
        want = CAP_NET_ADMIN | CAP_KILL | CAP_SETUID | CAP_SETGID | CAP_SYS_CHROOT
        assert int(monitor["CapEff"], 16) == want, monitor["CapEff"]
        downloads_work()
    finally:
        stop(proc)


@pytest.mark.parametrize("flags", [["-d", "-d"], ["-d"]], ids=["debug-log", "dropped"])
def test_killed_parser_is_replaced_and_ftp_goes_on(tmp_path, copy_mode, flags):
    """kill -9 the parser: the monitor starts a new one at once, which reads the same bound
    group (the monitor keeps its copy of the socket: the group is never unbound), and FTP
    goes on, passive and active."""
    proc = start(tmp_path, *flags)
    try:
        downloads_work()
        parser = the_parser(proc.pid)
        os.kill(parser, signal.SIGKILL)
        assert lab.wait_until(lambda: the_parser(proc.pid) not in (None, parser), 1.0), \
            "no new parser within a second"
        assert lab.nflog_bound(), "the group stays bound across the parser's death"
        downloads_work()
        # Copy mode keeps SCHED_OTHER by default (no hand-over to spare; a woken parser
        # may preempt to open its hole sooner), the new parser too.
        assert sched_policy(proc.pid) == 0 and sched_policy(the_parser(proc.pid)) == 0
        new = proc_status(the_parser(proc.pid))
        if flags == ["-d"]:
            assert new["Seccomp"] == "2" and int(new["CapEff"], 16) == 0, new
            assert new["Uid"].split()[0] == "65535"
        else:  # -d -d logs to stderr
            log = (tmp_path / "daemon.log").read_text()
            assert "parser died" in log and "started a new one" in log, log[-2000:]
    finally:
        stop(proc)


def test_status_line_counts_copies(tmp_path, copy_mode):
    proc = start(tmp_path, "-d", "-d")
    try:
        downloads_work()
        proc.send_signal(signal.SIGUSR1)
        log = tmp_path / "daemon.log"
        assert lab.wait_until(lambda: "copies_lost=" in log.read_text(), 5), log.read_text()
        line = next(l for l in log.read_text().splitlines() if "copies_lost=" in l)
        assert "status connections=" in line and "opened=4" in line, line
        copies = int(line.split(" copies=")[1].split()[0])
        assert copies >= 4 * 10, f"four sessions are more than 40 control packets: {line}"
        assert " copies_lost=0 " in line, line
    finally:
        stop(proc)


def check(*extra):
    return subprocess.run([str(lab.daemon_binary()), "--check", *COPY_ARGS, *extra],
                          capture_output=True, text=True, timeout=30)


def test_check_binds_the_group_and_reads_the_rules_feeding_it(tmp_path):
    """--check in copy mode: the group can be bound, and rules feed it both directions
    of every FTP port (here iptables-nft NFLOG with multiport); without them, or with the
    group held by a running daemon, exit 1 naming what is wrong."""
    r = check()
    assert r.returncode == 1, r.stdout + r.stderr
    assert "no rule feeds NFLOG group 10004 with FTP control packets" in r.stderr, r.stderr
    assert "ftp6proxy-queue --intercept nflog -p 10004" in r.stderr, r.stderr
    with lab.NflogFeed():
        r = check()
        assert r.returncode == 0, r.stdout + r.stderr
        assert "copy source: nflog 10004 can be bound" in r.stdout, r.stdout
        for fam, table in (("IPv6", "ip6"), ("IPv4", "ip")):
            for d in ("dport", "sport"):
                ports = ", ".join(f"{d} {p}" for p in lab.LAB_FTP_PORTS.split(","))
                line = (f"nflog group 10004: {table} mangle FORWARD (hook forward) feeds it "
                        f"{fam} tcp {ports}")
                assert line in r.stdout, r.stdout
        assert "configuration OK" in r.stdout
        assert not lab.nflog_bound(), "--check left the group bound"
        # The lab's NFQUEUE rules feed the queue, not the group: in inline mode the same
        # ruleset is fine, and the NFLOG rules do not count for it.
        inline = subprocess.run(
            [str(lab.daemon_binary()), "--check", *COPY_ARGS[:-2]],
            capture_output=True, text=True, timeout=30)
        assert inline.returncode == 0, inline.stderr
        assert "nflog group" not in inline.stdout, inline.stdout
        d = lab.Daemon(tmp_path / "daemon.log", copy=True)
        d.start()
        try:
            r = check()
            assert r.returncode == 1
            assert "another process holds group 10004" in r.stderr, r.stderr
        finally:
            assert d.stop() == 0
