"""ftp6proxy --replay on captures made here and now: while the daemon helps real transfers
through the lab's gateway, a packet recorder in the gateway namespace writes a pcap; the
replay of that pcap must open the same holes the daemon opened, in the same slots, and
find every data connection covered. A transfer the firewall blocks makes it exit 1.

The recorder is a few lines of Python on an AF_PACKET socket (Ethernet frames of every
interface, each packet where it came in), so the test needs no tcpdump; tests/captures/
holds captures made with tcpdump and dumpcap."""
import re
import signal
import subprocess
import time

import lab

RECORDER = r"""
import signal, socket, struct, sys, time
out = open(sys.argv[1], "wb", buffering=0)
out.write(struct.pack("<IHHiIII", 0xa1b2c3d4, 2, 4, 0, 0, 262144, 1))  # pcap, Ethernet
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))  # ETH_P_ALL
s.settimeout(0.2)
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
print("ready", flush=True)
while not stop:
    try:
        frame, addr = s.recvfrom(262144)
    except socket.timeout:
        continue
    except InterruptedError:
        continue
    if addr[0] == "lo" or addr[2] == socket.PACKET_OUTGOING:
        continue
    now = time.time_ns()
    out.write(struct.pack("<IIII", now // 10**9, now % 10**9 // 1000, len(frame), len(frame)))
    out.write(frame)
out.close()
"""

PORTS = ["--ftp-ports", "21,2121,2122"]
HOLE_RE = re.compile(r"hole open (slot=\d+ mode=\w+ from=\S+ to=\S+)")


class Recorder:
    """The packet recorder in the gateway namespace, writing to path."""

    def __init__(self, path):
        self.path = path
        self.p = subprocess.Popen(["ip", "netns", "exec", lab.GW_NS, lab.PY, "-c", RECORDER,
                                   str(path)], stdout=subprocess.PIPE, text=True)
        assert self.p.stdout.readline().strip() == "ready", "the recorder did not start"

    def stop(self):
        time.sleep(0.5)  # the last packets of the last transfer
        self.p.send_signal(signal.SIGTERM)
        self.p.wait(10)
        return self.path


def replay(path, *extra):
    return lab.run([lab.daemon_binary(), "--replay", path, *PORTS, *extra], timeout=60)


def test_replay_opens_the_holes_the_daemon_opened(daemon, tmp_path):
    mark = daemon.log_mark()
    rec = Recorder(tmp_path / "live.pcap")
    try:
        r = lab.curl(6, lab.VSFTPD, "hello.txt", "epsv")
        assert r.returncode == 0, r.stderr[-2000:]
        r = lab.curl(4, lab.PYFTPD, "hello.txt", "port")
        assert r.returncode == 0, r.stderr[-2000:]
        r = lab.ftplib_transfer(4, lab.VSFTPD, "pasv", "list")
        assert r.returncode == 0, (r.stdout + r.stderr)[-2000:]
        r = lab.ftplib_transfer(6, lab.PYFTPD, "eprt", "list")
        assert r.returncode == 0, (r.stdout + r.stderr)[-2000:]
    finally:
        path = rec.stop()
    live = HOLE_RE.findall(daemon.log_since(mark))
    assert len(live) == 4, daemon.log_since(mark)

    r = replay(path)
    report = r.stdout
    assert r.returncode == 0, report + r.stderr
    assert r.stderr == ""
    assert HOLE_RE.findall(report) == live, report
    assert len(re.findall(r" data \S+ > \S+ passed: hole slot=", report)) == 4, report
    assert "BLOCKED" not in report and " deny " not in report, report
    assert re.search(r"^summary: .* data=4 passed=4 blocked=0 holes=4 unused=0 ", report, re.M), \
        report


def test_replay_exits_1_for_a_transfer_the_firewall_blocks(daemon, tmp_path):
    rec = Recorder(tmp_path / "blocked.pcap")
    try:
        # The hostile server answers PASV with port 80: refused, and curl's SYN is dropped.
        r = lab.curl(4, lab.HOSTILE, "x", "pasv", "--user", "lowport:x", max_time=8,
                     connect_timeout=3)
        assert r.returncode != 0, "the transfer to port 80 must fail"
    finally:
        path = rec.stop()
    r = replay(path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "deny reason=low_port port=80 cmd=227" in r.stdout, r.stdout
    assert re.search(r" data 192\.0\.2\.10:\d+ > 198\.51\.100\.21:80 BLOCKED: no hole", r.stdout), \
        r.stdout
    # The same capture cut short is a clear error naming the offset, exit 65.
    data = path.read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[:len(data) - 3])
    r = replay(cut)
    assert r.returncode == 65, r.stdout + r.stderr
    assert re.fullmatch(rf"ftp6proxy: {re.escape(str(cut))}: byte offset \d+: truncated capture: "
                        r"the file ends \d+ bytes into a record\n", r.stderr), r.stderr
