"""The daemon as administrators run it, not only in -d -d: privilege drop (the worker keeps
only CAP_NET_ADMIN, the parser nothing), detaching with a locked pidfile, chroot, status on
SIGUSR1, SIGHUP, --check, and a second instance that must not disturb the first."""
import os
import re
import signal
import subprocess
import time

import pytest

import lab

BASE_ARGS = ["-j", lab.GW_NS, "--firewall", "nft", "--ftp-ports", "21,2121,2122",
             "-p", str(lab.QUEUE), "-t", "2"]
CAP_NET_ADMIN = 1 << 12
CAP_KILL = 1 << 5
CAP_SETGID = 1 << 6
CAP_SETUID = 1 << 7
CAP_SYS_CHROOT = 1 << 18


def start(tmp_path, *flags, name="daemon.log"):
    log = open(tmp_path / name, "a")
    argv = [str(lab.daemon_binary()), *flags, *BASE_ARGS]
    proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    assert lab.wait_until(lambda: proc.poll() is not None or lab.queue_bound(), 20), \
        f"{argv} did not bind the queue"
    return proc


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    status = proc.wait(15)
    assert status == 0, f"exit status {status} after SIGTERM"
    assert lab.wait_until(lambda: lab.all_elements() == set(), 2 + 5), \
        "holes left long after SIGTERM and -t"
    assert lab.wait_until(lambda: not lab.queue_bound(), 10), "queue still bound after exit"


def children(pid):
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                         text=True).stdout
    return [int(p) for p in out.split()]


def roles(monitor_pid):
    """The monitor's children by role (each names itself: ftp6proxy-wkr, ftp6proxy-prs)."""
    found = {}
    for pid in children(monitor_pid):
        try:
            with open(f"/proc/{pid}/comm") as f:
                comm = f.read().strip()
            if proc_status(pid).get("State", "").startswith("Z"):
                continue  # dead, not collected yet
        except FileNotFoundError:
            continue  # gone since ps listed it
        role = {"ftp6proxy-wkr": "worker", "ftp6proxy-prs": "parser"}.get(comm)
        if role is None:
            # Forked a moment ago and not named yet (the monitor is starting a child).
            assert comm == "ftp6proxy", f"unexpected child {pid} ({comm}) of {monitor_pid}"
            continue
        assert role not in found, f"two {role}s under {monitor_pid}: {found[role]} and {pid}"
        found[role] = pid
    return found


def proc_status(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def passive_download_works(family=6):
    r = lab.curl(family, lab.VSFTPD, "hello.txt", "epsv")
    assert r.returncode == 0, f"curl failed with the daemon running:\n{r.stderr}"


def test_each_process_keeps_only_what_it_needs(tmp_path):
    proc = start(tmp_path, "-d")
    try:
        found = roles(proc.pid)
        assert set(found) == {"worker", "parser"}, f"the monitor's children: {found}"
        status = proc_status(found["worker"])
        uids = status["Uid"].split()
        gids = status["Gid"].split()
        assert set(uids) == {"65535"}, f"worker uids {uids}"
        assert set(gids) == {"65535"}, f"worker gids {gids}"
        assert int(status["CapEff"], 16) == CAP_NET_ADMIN, status["CapEff"]
        assert int(status["CapPrm"], 16) == CAP_NET_ADMIN, status["CapPrm"]
        assert status["NoNewPrivs"] == "1"
        # The parser, the worker's sibling, reads the untrusted bytes with no capability.
        parser = proc_status(found["parser"])
        assert set(parser["Uid"].split()) == {"65535"}, parser["Uid"]
        assert int(parser["CapEff"], 16) == 0 and int(parser["CapPrm"], 16) == 0, parser
        assert parser["NoNewPrivs"] == "1"
        assert parser["Seccomp"] == "2", "the parser runs under its seccomp filter"
        # The monitor stays uid 0 (pidfile, outlives its children) with only CAP_NET_ADMIN
        # (nftables), CAP_KILL (to signal its children) and what starting a replacement
        # child that drops its privileges takes (CAP_SETUID, CAP_SETGID, CAP_SYS_CHROOT).
        monitor = proc_status(proc.pid)
        assert monitor["Uid"].split()[0] == "0"
        want = CAP_NET_ADMIN | CAP_KILL | CAP_SETUID | CAP_SETGID | CAP_SYS_CHROOT
        assert int(monitor["CapEff"], 16) == want, monitor["CapEff"]
        assert int(monitor["CapPrm"], 16) == want, monitor["CapPrm"]
        passive_download_works(6)
        r = lab.curl(4, lab.PYFTPD, "hello.txt", "port")
        assert r.returncode == 0, r.stderr
        # -d logs to syslog, or to stderr when no syslog daemon listens: never nowhere.
        if not syslog_listening():
            text = (tmp_path / "daemon.log").read_text()
            assert "starting: firewall=nft" in text and "hole open" in text, text[-2000:]
    finally:
        stop(proc)


def test_cpu_pins_every_process_and_ftp_goes_on(tmp_path):
    """--cpu N: the monitor, the worker and the parser all run on CPU N only (the monitor
    pins itself before it forks), and transfers are helped as before; a worker or parser
    started again later inherits the CPU too. A CPU the machine lacks is a start failure
    that names it."""
    cpu = os.cpu_count() - 1
    proc = start(tmp_path, "-d", "--cpu", str(cpu))
    try:
        assert lab.wait_until(lambda: len(roles(proc.pid)) == 2, 5), "worker and parser"
        pids = {"monitor": proc.pid, **roles(proc.pid)}
        for role, pid in pids.items():
            allowed = proc_status(pid)["Cpus_allowed_list"]
            assert allowed == str(cpu), f"{role} {pid} may run on CPUs {allowed}, not {cpu} only"
        passive_download_works(6)
        os.kill(pids["parser"], signal.SIGKILL)
        assert lab.wait_until(
            lambda: parser_of(proc.pid)[1] not in (None, pids["parser"]), 5), "a new parser"
        new_parser = parser_of(proc.pid)[1]
        assert proc_status(new_parser)["Cpus_allowed_list"] == str(cpu), "the new parser"
        passive_download_works(4)
    finally:
        stop(proc)
    missing = subprocess.run([str(lab.daemon_binary()), "-d", "--cpu", "1023", *BASE_ARGS],
                             capture_output=True, text=True, timeout=20)
    assert missing.returncode != 0 and "--cpu 1023" in missing.stderr, missing.stderr


def sched_policy(pid):
    """The scheduling policy of pid (field 41 of /proc/PID/stat): 0 SCHED_OTHER,
    3 SCHED_BATCH, 5 SCHED_IDLE."""
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[38])


@pytest.mark.parametrize("wrapper,flags,want", [
    ([], [], 3),
    ([], ["--sched-policy", "other"], 0),
    (["chrt", "--idle", "0"], [], 5),
], ids=["default-batch", "other", "started-idle-kept"])
def test_sched_policy_of_every_process(tmp_path, wrapper, flags, want):
    """--sched-policy: by default the monitor puts itself under SCHED_BATCH before it forks,
    so the worker, the parser and a parser started again later run under it too (a woken
    one never preempts the running process); `other` leaves SCHED_OTHER; a policy the
    daemon was started with (here chrt --idle) is kept. Transfers are helped in each."""
    log = open(tmp_path / "daemon.log", "a")
    argv = [*wrapper, str(lab.daemon_binary()), "-d", *flags, *BASE_ARGS]
    proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        assert lab.wait_until(lambda: proc.poll() is not None or lab.queue_bound(), 20), argv
        assert lab.wait_until(lambda: len(roles(proc.pid)) == 2, 5), "worker and parser"
        pids = {"monitor": proc.pid, **roles(proc.pid)}
        for role, pid in pids.items():
            assert sched_policy(pid) == want, (role, sched_policy(pid))
        passive_download_works(6)
        os.kill(pids["parser"], signal.SIGKILL)
        assert lab.wait_until(
            lambda: parser_of(proc.pid)[1] not in (None, pids["parser"]), 5), "a new parser"
        assert sched_policy(parser_of(proc.pid)[1]) == want, "the new parser"
        passive_download_works(4)
    finally:
        stop(proc)


def test_busy_poll_helps_transfers_and_every_process_lives(tmp_path):
    """--busy-poll 200: the worker and the parser poll between packets instead of sleeping
    (a poll with no timeout, and the clock, which the parser's seccomp filter must allow:
    a call it refuses kills the parser, and the monitor would start a new one). Transfers in
    both directions and families are helped, and the same worker and parser serve them
    all. A value past 1000 us is refused naming the option."""
    proc = start(tmp_path, "-d", "--busy-poll", "200")
    try:
        assert lab.wait_until(lambda: len(roles(proc.pid)) == 2, 5), "worker and parser"
        before = roles(proc.pid)
        for _ in range(3):
            passive_download_works(6)
            r = lab.curl(4, lab.PYFTPD, "hello.txt", "port")
            assert r.returncode == 0, r.stderr
        assert roles(proc.pid) == before, "a process died while busy polling"
        assert proc_status(before["parser"])["Seccomp"] == "2"
    finally:
        stop(proc)
    refused = subprocess.run([str(lab.daemon_binary()), "-d", "--busy-poll", "1001", *BASE_ARGS],
                             capture_output=True, text=True, timeout=20)
    assert refused.returncode == 64 and "--busy-poll 1001" in refused.stderr, refused.stderr


# Bare TCP acknowledgments for the FTP port from the client, as fast as a raw socket sends
# them: no connection is opened anywhere, and each one the gateway queues is a message in
# the queue socket's buffer. The kernel fills in the TCP checksum (IPV6_CHECKSUM, offset 16).
_FLOOD = r"""
import socket, struct, sys
dst, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_TCP)
s.setsockopt(socket.IPPROTO_IPV6, getattr(socket, "IPV6_CHECKSUM", 7), 16)
for i in range(count):
    tcp = struct.pack("!HHIIBBHHH", 20000 + i % 40000, port, i, 1, 5 << 4, 0x10, 512, 0, 0)
    s.sendto(tcp, (dst, 0))
print(count)
"""


def test_queue_overflow_is_counted_and_ftp_goes_on(tmp_path):
    """Issue 10 item 5: with the worker stopped (SIGSTOP), a flood of control-port packets
    fills the queue socket's buffer, and fail-open passes the rest without a verdict. The
    kernel counts none of them with fail-open (nfnetlink_queue.c), but each had its packet
    id: once the worker reads again it finds the ids missing, logs the count as a warning
    and shows it on its status line (passed_unseen, next to socket_overflows). The same
    processes then go on helping FTP."""
    proc = start(tmp_path, "-d", "-d")
    log = tmp_path / "daemon.log"
    try:
        passive_download_works(6)
        worker, parser = parser_of(proc.pid)
        os.kill(worker, signal.SIGSTOP)
        try:
            r = lab.in_ns(lab.CLIENT_NS, lab.PY, "-c", _FLOOD, lab.SERVER[6], "21", "60000",
                          timeout=120)
            assert r.returncode == 0, r.stderr
        finally:
            os.kill(worker, signal.SIGCONT)
        assert lab.wait_until(lambda: "packets passed unseen so far" in log.read_text(), 30), \
            log.read_text()[-3000:]
        proc.send_signal(signal.SIGUSR1)

        def worker_status():
            found = re.findall(r"worker held=.*", log.read_text())
            return found[-1] if found else None
        assert lab.wait_until(worker_status, 10), log.read_text()[-3000:]
        status = worker_status()
        unseen = int(re.search(r"passed_unseen=(\d+)", status).group(1))
        overflows = int(re.search(r"socket_overflows=(\d+)", status).group(1))
        assert unseen > 0 and overflows > 0, status
        # The ids the kernel gave (each flood packet, and the server's RST to those the
        # gateway let through): those that passed unseen are fewer, the rest were read.
        fields = lab.in_ns(lab.GW_NS, "cat", "/proc/net/netfilter/nfnetlink_queue").stdout.split()
        given = int(fields[fields.index(str(lab.QUEUE)) + 7])
        assert unseen < given, (unseen, given)
        passive_download_works(6)
        r = lab.curl(4, lab.VSFTPD, "hello.txt", "port")
        assert r.returncode == 0, r.stderr[-2000:]
        assert parser_of(proc.pid) == (worker, parser), "the same worker and parser go on"
    finally:
        stop(proc)


def syslog_listening():
    import socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
            probe.connect("/dev/log")
        return True
    except OSError:
        return False


def test_chrooted_worker_still_works(tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    proc = start(tmp_path, "-d", "-r", str(root))
    try:
        found = roles(proc.pid)
        worker, parser = found["worker"], found["parser"]
        assert os.readlink(f"/proc/{worker}/root") == str(root)
        assert os.readlink(f"/proc/{parser}/root") == str(root)
        passive_download_works(4)
    finally:
        stop(proc)


def test_detached_daemon_writes_locks_and_removes_its_pidfile(tmp_path):
    pidfile = tmp_path / "ftp6proxy.pid"
    argv = [str(lab.daemon_binary()), "-i", str(pidfile), *BASE_ARGS]
    launcher = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    assert launcher.returncode == 0, launcher.stderr
    # No silent daemon: without a syslog daemon, detaching says so first.
    import socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
            probe.connect("/dev/log")
        syslog_up = True
    except OSError:
        syslog_up = False
    assert ("no syslog daemon answers at /dev/log" in launcher.stderr) == (not syslog_up), \
        launcher.stderr
    assert lab.wait_until(lambda: pidfile.exists() and pidfile.read_text().strip()
                          and lab.queue_bound(), 20), "no pidfile or queue after detaching"
    pid = int(pidfile.read_text())
    try:
        # The pidfile names the detached monitor, not the launcher that already exited.
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            assert b"ftp6proxy" in f.read()
        passive_download_works(6)
        second = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        assert second.returncode == 1
        assert f"another ftp6proxy is running (pid {pid})" in second.stderr, second.stderr
    finally:
        os.kill(pid, signal.SIGTERM)
    assert lab.wait_until(lambda: not os.path.exists(f"/proc/{pid}")
                          or proc_status(pid).get("State", "").startswith("Z"), 10), \
        "daemon still running 10 s after SIGTERM"
    assert lab.wait_until(lambda: not pidfile.exists(), 5), "pidfile not removed at exit"
    assert lab.wait_until(lambda: lab.all_elements() == set(), 2 + 5)
    assert lab.wait_until(lambda: not lab.queue_bound(), 10)


def test_used_holes_free_their_slots_at_once(tmp_path):
    """Issue 10 item 6: the lab's hole rule consumes its element on the data connection's
    first packet (nft `delete @set`), the monitor sees it gone and the engine frees the slot
    at once. Four slots and a 5 s timeout then carry twelve transfers in a row, passive and
    active; without it the fifth would be refused (table_full) until the first expired."""
    log = open(tmp_path / "daemon.log", "a")
    args = [a if a != "2" or i == 0 or BASE_ARGS[i - 1] != "-t" else "5"
            for i, a in enumerate(BASE_ARGS)]
    assert args[args.index("-t") + 1] == "5", args
    argv = [str(lab.daemon_binary()), "-d", "-d", "-c", "4", *args]
    proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        assert lab.wait_until(lambda: proc.poll() is not None or lab.queue_bound(), 20)
        for i in range(12):
            family, mode = [(6, "epsv"), (4, "port"), (4, "pasv"), (6, "eprt")][i % 4]
            r = lab.curl(family, lab.VSFTPD, "hello.txt", mode)
            assert r.returncode == 0, f"transfer {i} ({family}/{mode}): {r.stderr[-1500:]}"
        text = (tmp_path / "daemon.log").read_text()
        assert "table_full" not in text, text[-3000:]
        assert text.count("hole used") >= 8, text[-3000:]
    finally:
        stop(proc)


def test_sigusr1_logs_every_process_status(tmp_path):
    """Issue 10 item 7: one SIGUSR1 to the monitor gives each process's counters: the
    monitor's (uptime, requests, restarts, the queue's drop totals), the worker's (held,
    passed late/unread, its socket's overflows) and the engine's (connections, holes,
    evictions, reorder drops, fragments, gaps, refusals by reason)."""
    proc = start(tmp_path, "-d", "-d")
    try:
        passive_download_works(6)
        proc.send_signal(signal.SIGUSR1)
        log = tmp_path / "daemon.log"
        wanted = ["status connections=", "monitor uptime=", "worker held="]
        assert lab.wait_until(lambda: all(w in log.read_text() for w in wanted), 5), \
            log.read_text()[-3000:]
        lines = log.read_text().splitlines()

        def line_with(marker):
            return next(l for l in lines if marker in l)
        engine = line_with("status connections=")
        for field in ["opened=1", "holes=", "evicted=", "reorder_drops=", "fragments=", "gaps=",
                      "denied_unsolicited=", "hole_latency_us_p50=", "hole_latency_us_p99="]:
            assert field in engine, (field, engine)
        monitor = line_with("monitor uptime=")
        for field in ["requests=", "parser_restarts=0", "worker_restarts=0", "queue_dropped=",
                      "holes_used=", "closes_left_to_expire="]:
            assert field in monitor, (field, monitor)
        worker = line_with("worker held=")
        for field in ["passed_late=", "passed_unread=", "socket_overflows="]:
            assert field in worker, (field, worker)
    finally:
        stop(proc)


def test_sighup_reopens_the_log_and_keeps_working(tmp_path):
    proc = start(tmp_path, "-d", "-d")
    try:
        proc.send_signal(signal.SIGHUP)
        log = tmp_path / "daemon.log"
        assert lab.wait_until(lambda: "log reopened" in log.read_text(), 5), log.read_text()
        assert proc.poll() is None, "SIGHUP must not stop the daemon"
        passive_download_works(4)
    finally:
        stop(proc)


def test_check_passes_on_the_lab_and_names_missing_sets(tmp_path):
    ok = subprocess.run([str(lab.daemon_binary()), "--check", *BASE_ARGS],
                        capture_output=True, text=True, timeout=20)
    assert ok.returncode == 0, ok.stderr
    assert "configuration OK" in ok.stdout
    bad = subprocess.run([str(lab.daemon_binary()), "--check", "--anchor", "nosuch", *BASE_ARGS],
                         capture_output=True, text=True, timeout=20)
    assert bad.returncode == 1
    assert "nft add set inet filter nosuch6" in bad.stderr, bad.stderr
    assert not lab.queue_bound(), "--check left the queue bound"


def test_second_instance_leaves_the_first_ones_holes_alone(tmp_path):
    proc = start(tmp_path, "-d", "-d")
    try:
        with lab.Bridge(6, lab.VSFTPD) as b:
            b.login()
            port = lab.parse_229(b.cmd("EPSV"))
            hole = (lab.CLIENT[6], lab.SERVER[6], port)
            assert lab.set_elements(6) == {hole}
            second = subprocess.run([str(lab.daemon_binary()), "-d", "-d", *BASE_ARGS],
                                    capture_output=True, text=True, timeout=20)
            assert second.returncode == 1
            assert "another process holds queue" in second.stderr, second.stderr
            assert lab.set_elements(6) == {hole}, "the second instance removed a live hole"
    finally:
        stop(proc)


def launch_detached(argv, pidfile):
    launcher = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    assert launcher.returncode == 0, launcher.stderr
    assert lab.wait_until(lambda: pidfile.exists() and pidfile.read_text().strip()
                          and lab.queue_bound(), 20), "no pidfile or queue after detaching"
    return int(pidfile.read_text())


def stop_detached(pid, pidfile):
    os.kill(pid, signal.SIGTERM)
    assert lab.wait_until(lambda: not os.path.exists(f"/proc/{pid}")
                          or proc_status(pid).get("State", "").startswith("Z"), 10), \
        "daemon still running 10 s after SIGTERM"
    assert lab.wait_until(lambda: not pidfile.exists(), 5), "pidfile not removed at exit"


@pytest.mark.parametrize("graceful", [True, False], ids=["sigterm", "kill9"])
def test_restart_hands_connections_over_only_when_graceful(tmp_path, graceful):
    """Invariant 9 end to end: a control connection opened before a restart. After a
    graceful stop (SIGTERM) the next instance takes it over from the state file and helps
    its very first passive reply; after a crash (kill -9) it is joined mid-stream: the
    first exchange is cut (its line starts were never seen), and from the next whole
    exchange on, passive replies and EPRT are helped again."""
    pidfile = tmp_path / "ftp6proxy.pid"
    state = tmp_path / "ftp6proxy.state"
    argv = [str(lab.daemon_binary()), "-i", str(pidfile), *BASE_ARGS]
    # Holes of an earlier test outlive its daemon by up to -t.
    assert lab.wait_until(lambda: lab.all_elements() == set(), 2 + 5)
    pid = launch_detached(argv, pidfile)
    c, s = lab.CLIENT[6], lab.SERVER[6]
    with lab.Bridge(6, lab.VSFTPD) as b:
        try:
            b.login()
            assert b.cmd("TYPE I").startswith("200")
            if graceful:
                stop_detached(pid, pidfile)
                assert state.exists() and state.stat().st_size > 0, "no hand-over written"
            else:
                os.kill(pid, signal.SIGKILL)
                assert lab.wait_until(lambda: not lab.queue_bound(), 10)
                pidfile.unlink()
            pid = launch_detached(argv, pidfile)
            port = lab.parse_229(b.cmd("EPSV"))
            if graceful:
                assert lab.set_elements(6) == {(c, s, port)}, "first EPSV after restart"
                assert not state.exists() or state.stat().st_size == 0, \
                    "the hand-over must be taken once"
            else:
                assert (c, s, port) not in lab.set_elements(6), \
                    "a reply whose line start was never seen was helped after a crash"
                port = lab.parse_229(b.cmd("EPSV"))
                assert lab.set_elements(6) == {(c, s, port)}, "the next whole EPSV exchange"
                r = b.cmd(f"EPRT {lab.eprt_arg(6, c, 50640)}")
                assert r.startswith("200"), r
                assert (s, c, 50640) in lab.set_elements(6), "EPRT after a crash"
        finally:
            os.kill(pid, signal.SIGTERM)
    assert lab.wait_until(lambda: not pidfile.exists(), 10), "pidfile not removed at exit"
    assert lab.wait_until(lambda: not lab.queue_bound(), 10)
    assert lab.wait_until(lambda: lab.all_elements() == set(), 2 + 5)


class QueueWithoutBypass:
    """The gateway's NFQUEUE rules without --queue-bypass for the duration: with no daemon
    bound, control packets are then dropped (TCP sends them again) instead of passing
    unseen. That is the set-up for restarts that lose nothing (see the man page)."""

    def _rules(self, ipt):
        out = lab.in_ns(lab.GW_NS, ipt, "-t", "mangle", "-S", "FORWARD", check=True).stdout
        return [line.split()[2:] for line in out.splitlines()
                if line.startswith("-A FORWARD") and "--queue-bypass" in line]

    def _swap(self, drop_bypass):
        for ipt in ("iptables", "ip6tables"):
            for spec in self._rules(ipt) if drop_bypass else self.saved[ipt]:
                plain = [w for w in spec if w != "--queue-bypass"]
                old, new = (spec, plain) if drop_bypass else (plain, spec)
                lab.in_ns(lab.GW_NS, ipt, "-t", "mangle", "-D", "FORWARD", *old, check=True)
                lab.in_ns(lab.GW_NS, ipt, "-t", "mangle", "-A", "FORWARD", *new, check=True)

    def __enter__(self):
        self.saved = {ipt: self._rules(ipt) for ipt in ("iptables", "ip6tables")}
        assert all(self.saved.values()), "the lab's NFQUEUE rules are not there"
        self._swap(True)
        return self

    def __exit__(self, *exc):
        self._swap(False)


def test_restarts_under_load_lose_no_transfer(tmp_path):
    """Issue 10: SIGTERM and restart, again and again, while four download loops run (both
    families, passive and active): not one transfer fails. Live holes outlive the stop,
    the next instance adopts them and takes the connections over, and with the queue rules
    without bypass a packet sent while no instance is bound is sent again by TCP."""
    import threading
    pidfile = tmp_path / "ftp6proxy.pid"
    state = tmp_path / "ftp6proxy.state"
    # Four loops reach 80 transfers a second here: more than -c 100 slots held for -t 2 s
    # each can serve (50 a second). Slot sizing is not what this test is about.
    argv = [str(lab.daemon_binary()), "-i", str(pidfile), "-c", "1000", *BASE_ARGS]
    want = (lab.SERVER_ROOT[lab.VSFTPD] / "small.txt").read_bytes()
    done = threading.Event()
    failures, transfers = [], []

    def loop(family, mode):
        out = tmp_path / f"small-{family}-{mode}.txt"
        while not done.is_set():
            # A SYN sent while no instance is bound is dropped and sent again by TCP (1 s,
            # then 3 s later): give connects the time real clients give them.
            r = lab.curl(family, lab.VSFTPD, "small.txt", mode, "-o", out, max_time=30,
                         connect_timeout=20)
            if r.returncode != 0 or out.read_bytes() != want:
                failures.append(f"{family}/{mode}: curl exit {r.returncode}: {r.stderr[-300:]}")
            transfers.append((family, mode))

    with QueueWithoutBypass():
        pid = launch_detached(argv, pidfile)
        loops = [threading.Thread(target=loop, args=fm)
                 for fm in ((6, "epsv"), (6, "eprt"), (4, "pasv"), (4, "port"))]
        for t in loops:
            t.start()
        try:
            for n in range(6):
                time.sleep(1.0)
                stop_detached(pid, pidfile)
                # Each stop hands its connections over. A stop that stalled until the
                # monitor killed its parser left the file empty (a CI failure: the
                # parser lost the stop order, and a PORT's hole expired in the stall).
                assert state.stat().st_size > 0, f"stop {n + 1} handed nothing over"
                pid = launch_detached(argv, pidfile)
            time.sleep(1.0)
        finally:
            done.set()
            for t in loops:
                t.join(60)
            stop_detached(pid, pidfile)
    assert len(transfers) >= 24, f"only {len(transfers)} transfers ran"
    assert failures == [], f"{len(failures)} of {len(transfers)} transfers failed: {failures[:3]}"
    assert lab.wait_until(lambda: lab.all_elements() == set(), 2 + 5)


def test_evicted_connection_resumes_and_its_next_epsv_is_helped(tmp_path):
    """Invariant 9 end to end: with a table of 16, seventeen more control connections
    evict the first one (and one more); when it speaks again it resumes from its record
    (records are kept for a quarter of the table), and its next EPSV gets its hole
    (joined mid-stream, it would not)."""
    assert lab.wait_until(lambda: lab.all_elements() == set(), 2 + 5)
    proc = start(tmp_path, "-d", "-d", "--max-connections", "16")
    c, s = lab.CLIENT[6], lab.SERVER[6]
    others = []
    try:
        with lab.Bridge(6, lab.VSFTPD) as first:
            first.login()
            for _ in range(17):
                b = lab.Bridge(4, lab.PYFTPD)
                others.append(b)
                b.login()
            log = (tmp_path / "daemon.log").read_text()
            assert "connection table full (16): evicted" in log, log[-2000:]
            port = lab.parse_229(first.cmd("EPSV"))
            assert lab.set_elements(6) == {(c, s, port)}, "the evicted connection's EPSV"
            assert " resumed" in (tmp_path / "daemon.log").read_text()
    finally:
        for b in others:
            b.close()
        stop(proc)


def parser_of(monitor_pid):
    """The worker and the parser process (None while one is being replaced)."""
    found = roles(monitor_pid)
    return found.get("worker"), found.get("parser")


@pytest.mark.parametrize("flags", [["-d", "-d"], ["-d"]], ids=["debug-log", "dropped"])
def test_killed_parser_is_replaced_and_ftp_goes_on(tmp_path, flags):
    """Issue 10, self-healing: kill -9 the parser; a fresh one runs at once (well within a
    second) — sandboxed, with no capability, when privileges are dropped — and transfers,
    passive and active, go on."""
    proc = start(tmp_path, *flags)
    try:
        passive_download_works(6)
        worker, parser = parser_of(proc.pid)
        os.kill(parser, signal.SIGKILL)
        assert lab.wait_until(lambda: parser_of(proc.pid)[1] not in (None, parser), 1.0), \
            "no new parser within a second"
        passive_download_works(6)
        r = lab.curl(4, lab.VSFTPD, "hello.txt", "port")
        assert r.returncode == 0, r.stderr[-2000:]
        new_parser = parser_of(proc.pid)[1]
        if flags == ["-d"]:
            status = proc_status(new_parser)
            assert status["Seccomp"] == "2", "the new parser is in its seccomp sandbox"
            assert int(status["CapEff"], 16) == 0, "the new parser has no capability"
            assert status["Uid"].split()[0] != "0", "the new parser is not root"
        else:
            log = (tmp_path / "daemon.log").read_text()
            assert "parser died" in log and "started a new one" in log, log[-2000:]
    finally:
        stop(proc)


def test_killed_worker_is_replaced_and_ftp_goes_on(tmp_path):
    """Issue 10, self-healing: kill -9 the worker; the monitor starts a new worker and a new
    parser on the same queue, which never stops being bound, so control packets sent
    meanwhile wait in it and nothing is lost: a control connection open across the kill
    goes on, and transfers, passive and active, work."""
    proc = start(tmp_path, "-d")
    try:
        passive_download_works(6)
        worker, parser = parser_of(proc.pid)
        with lab.Bridge(6, lab.VSFTPD) as b:
            b.login()
            os.kill(worker, signal.SIGKILL)
            # Sent while the worker is dead or just restarting: it waits in the queue.
            assert b.cmd("NOOP").startswith("200"), "a command across the worker's death"
            assert lab.wait_until(
                lambda: None not in parser_of(proc.pid) and parser_of(proc.pid)[0] != worker,
                1.0), "no new worker and parser within a second"
            new_worker, new_parser = parser_of(proc.pid)
            assert new_parser != parser, "the old parser was replaced too"
            assert lab.queue_bound(), "the queue stays bound"
            port = lab.parse_229(b.cmd("EPSV"))
            assert port > 0
        passive_download_works(6)
        r = lab.curl(4, lab.VSFTPD, "hello.txt", "port")
        assert r.returncode == 0, r.stderr[-2000:]
        status = proc_status(new_worker)
        assert status["Uid"].split()[0] == "65535", "the new worker dropped its user"
        assert int(status["CapEff"], 16) == CAP_NET_ADMIN, status["CapEff"]
        assert proc_status(new_parser)["Seccomp"] == "2"
    finally:
        stop(proc)


def test_parser_crash_loop_ends_the_daemon_with_a_clear_line(tmp_path):
    """Five restarts within a minute are a crash loop: the sixth death ends the daemon."""
    proc = start(tmp_path, "-d", "-d")
    for _ in range(6):
        assert lab.wait_until(lambda: proc.poll() is not None or parser_of(proc.pid)[1], 2)
        if proc.poll() is not None:
            break
        os.kill(parser_of(proc.pid)[1], signal.SIGKILL)
        time.sleep(0.2)
    assert proc.wait(15) == 1, "the daemon must end after a crash loop"
    log = (tmp_path / "daemon.log").read_text()
    assert "crash loop" in log, log[-2000:]
    assert lab.wait_until(lambda: not lab.queue_bound(), 10)
    assert lab.wait_until(lambda: lab.all_elements() == set(), 2 + 5)
