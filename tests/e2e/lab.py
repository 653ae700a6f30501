"""Helpers for ftp6proxy's end-to-end tests: the namespace lab (tests/lab/lab.sh),
the gateway's nftables sets, FTP clients run in the client namespace, and the daemon.

Every network operation here is bounded by a timeout.
"""
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LAB_SH = REPO / "tests" / "lab" / "lab.sh"
HELPER = Path(__file__).resolve().parent / "ftplib_client.py"
STATE = Path(os.environ.get("F6P_LAB_STATE", "/run/f6p-lab"))

CLIENT_NS, GW_NS, SERVER_NS, THIRD_NS = "f6p-client", "f6p-gw", "f6p-server", "f6p-third"
# Held by every user of the lab for as long as it uses it (the demo and the capture maker
# take it too, with flock(1)): the namespaces have fixed names, one lab per machine.
LOCK_PATH = "/run/f6p-lab.lock"
CLIENT = {6: "2001:db8:1::10", 4: "192.0.2.10"}
SERVER = {6: "2001:db8:2::21", 4: "198.51.100.21"}
THIRD = {6: "2001:db8:3::99", 4: "203.0.113.99"}
SET = {6: "ftp6proxy6", 4: "ftp6proxy4"}
TABLE = ("inet", "filter")
QUEUE = 10004
VSFTPD, PYFTPD, HOSTILE = 21, 2121, 2122
FTPS = 2123                       # ftps_ccc_server.py: explicit FTPS with CCC
FTPS_ROOT = STATE / "srv" / "ftps"
FTPS_CERT = STATE / "tls" / "cert.pem"  # self-signed, for SERVER's addresses
PROBE_PORT = 50999                # plain listener in the server namespace
THIRD_PORTS = range(50500, 50510) # recorder ports on the third-party host
SERVER_ROOT = {VSFTPD: STATE / "srv" / "ftp", PYFTPD: STATE / "srv" / "py"}
BIG = "big.bin"

# A line in the daemon's log that says it refused to open a hole. The daemon should use
# one of these words when policy denies an announcement (bounce, low port, ...).
DENY_RE = re.compile(r"(?i)\b(den(y|ied|ies)|refus\w*|reject\w*|bounce|forbidden|not allowed|disallow\w*)\b")

PY = sys.executable


def run(cmd, timeout=60, check=False, input=None):
    """Run cmd (a list), capture text output; a timeout raises subprocess.TimeoutExpired."""
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                          timeout=timeout, check=check, input=input)


def in_ns(ns, *cmd, timeout=60, check=False, input=None):
    return run(["ip", "netns", "exec", ns, *cmd], timeout=timeout, check=check, input=input)


def url_host(family):
    return f"[{SERVER[6]}]" if family == 6 else SERVER[4]


# ------------------------------------------------------------------ lab up / down

def lab_up():
    r = run([LAB_SH, "up"], timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"lab.sh up failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")


def lab_down():
    return run([LAB_SH, "down"], timeout=120)


# ------------------------------------------------------------------ firewall state

def _norm_port(p):
    if isinstance(p, int):
        return p
    if isinstance(p, str) and p.isdigit():
        return int(p)
    import socket
    return socket.getservbyname(p, "tcp")


def set_elements(family):
    """The elements of the gateway's hole set for family (4 or 6), as (src, dst, port)."""
    r = in_ns(GW_NS, "nft", "-j", "list", "set", *TABLE, SET[family], timeout=20, check=True)
    out = set()
    for obj in json.loads(r.stdout)["nftables"]:
        s = obj.get("set")
        if not s:
            continue
        for e in s.get("elem", []):
            val = e["elem"]["val"] if isinstance(e, dict) and "elem" in e else e
            if isinstance(val, dict) and "concat" in val:
                a, b, p = val["concat"]
                out.add((a, b, _norm_port(p)))
            else:
                out.add(("?", "?", json.dumps(val)))
    return out


def all_elements():
    return set_elements(6) | set_elements(4)


def add_element(family, src, dst, port, timeout_s=60):
    in_ns(GW_NS, "nft", "add", "element", *TABLE, SET[family],
          f"{{ {src} . {dst} . {port} timeout {timeout_s}s }}", timeout=20, check=True)


def delete_element(family, src, dst, port):
    in_ns(GW_NS, "nft", "delete", "element", *TABLE, SET[family],
          f"{{ {src} . {dst} . {port} }}", timeout=20)


def drop_counter():
    r = in_ns(GW_NS, "nft", "-j", "list", "counter", *TABLE, "f6p_dropped", timeout=20, check=True)
    for obj in json.loads(r.stdout)["nftables"]:
        if "counter" in obj:
            return obj["counter"]["packets"]
    raise AssertionError("no counter f6p_dropped")


def queue_bound():
    """True when some process is bound to NFQUEUE QUEUE in the gateway namespace."""
    r = in_ns(GW_NS, "cat", "/proc/net/netfilter/nfnetlink_queue", timeout=20)
    return any(line.split()[:1] == [str(QUEUE)] for line in r.stdout.splitlines())


def nflog_bound(group=QUEUE):
    """True when some process is bound to NFLOG group `group` in the gateway namespace
    (/proc/net/netfilter/nfnetlink_log lists bound groups, first column)."""
    r = in_ns(GW_NS, "cat", "/proc/net/netfilter/nfnetlink_log", timeout=20)
    return any(line.split()[:1] == [str(group)] for line in r.stdout.splitlines())


# How long a hole may take to appear after its announcement was answered. Inline modes
# open it before the announcing packet goes on: 0 (checked at once). Copy mode opens it
# as fast as it can after the packet has gone: tests of copy mode set this for their
# duration, and a check that nothing was opened waits this long first.
HOLE_SETTLE = 0.0


def holes_settle():
    """Waits HOLE_SETTLE seconds, so that "no hole" means no hole even in copy mode."""
    if HOLE_SETTLE:
        time.sleep(HOLE_SETTLE)


def expect_set(family, want):
    """The hole set of `family` is `want`: at once inline, within HOLE_SETTLE in copy mode."""
    got = wait_until(lambda: set_elements(family) == want, HOLE_SETTLE, interval=0.01)
    assert got, f"set {SET[family]} is {set_elements(family)}, want {want}"


def expect_hole(family, hole):
    """`hole` is in the set of `family`: at once inline, within HOLE_SETTLE in copy mode."""
    assert wait_until(lambda: hole in set_elements(family), HOLE_SETTLE, interval=0.01), \
        f"no hole {hole} in {SET[family]}: {set_elements(family)}"


def wait_until(pred, timeout, interval=0.2):
    """Poll pred() until it is true or timeout seconds have passed; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)


# ------------------------------------------------------------------ probes

_PROBE = r"""
import socket, sys
a, p, t = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
try:
    s = socket.create_connection((a, p), timeout=t)
    try:
        s.settimeout(1.0); b = s.recv(200)
    except OSError:
        b = b""
    print("ok " + b.decode("latin-1").strip()); s.close()
except ConnectionRefusedError:
    print("refused")
except socket.timeout:
    print("timeout")
except OSError as e:
    print("error " + str(e))
"""


def tcp_probe(ns, addr, port, timeout=2.0):
    """Try a TCP connection from namespace ns: 'ok <banner>', 'refused', 'timeout' (dropped)."""
    r = in_ns(ns, PY, "-c", _PROBE, addr, str(port), str(timeout), timeout=timeout + 20)
    return r.stdout.strip() or ("error " + r.stderr.strip())


def third_connections():
    p = STATE / "third-connections.log"
    return p.read_text().splitlines() if p.exists() else []


def probe_connections():
    p = STATE / "probe-connections.log"
    return p.read_text().splitlines() if p.exists() else []


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ------------------------------------------------------------------ clients

CURL_MODE_ARGS = {
    "epsv": [],
    "pasv": ["--disable-epsv"],
    "eprt": ["--ftp-port", "-"],
    "port": ["--ftp-port", "-", "--disable-eprt"],
}
# The command each mode must show in the client's trace.
MODE_CMD = {"epsv": "EPSV", "pasv": "PASV", "eprt": "EPRT", "port": "PORT"}


def curl(family, port, path, mode, *extra, max_time=30, connect_timeout=5):
    """curl in the client namespace; -v trace in stderr."""
    url = f"ftp://{url_host(family)}:{port}/{path}"
    return in_ns(CLIENT_NS, "curl", "-v", "-sS", "--connect-timeout", str(connect_timeout),
                 "--max-time", str(max_time), *CURL_MODE_ARGS[mode], *extra, url,
                 timeout=max_time + 20)


def lftp(family, port, mode, commands, max_time=60):
    """lftp in the client namespace with the data-connection mode forced; debug trace in stderr.

    lftp has no knob for EPRT on IPv4: mode 'eprt' is IPv6 only, 'port' IPv4 only."""
    passive = mode in ("epsv", "pasv")
    settings = [
        "set ftp:ssl-allow no", "set net:timeout 3", "set net:max-retries 1",
        "set net:reconnect-interval-base 1", "set net:reconnect-interval-max 2",
        "set cmd:fail-exit yes", "set xfer:clobber yes",
        f"set ftp:passive-mode {'on' if passive else 'off'}",
        f"set ftp:prefer-epsv {'yes' if mode == 'epsv' else 'no'}",
        "debug 9",
        f"open -u anonymous,lab@example.com ftp://{url_host(family)}:{port}",
    ]
    script = "; ".join(settings + list(commands))
    return in_ns(CLIENT_NS, "timeout", "-s", "KILL", str(max_time), "lftp", "-c", script,
                 timeout=max_time + 20)


def ftplib_transfer(family, port, mode, *actions, timeout=15):
    return in_ns(CLIENT_NS, PY, HELPER, "transfer", "--host", SERVER[family], "--port", str(port),
                 "--mode", mode, "--timeout", str(timeout), *actions, timeout=timeout * 6 + 30)


class Bridge:
    """A raw FTP control connection from the client namespace (see ftplib_client.py bridge)."""

    def __init__(self, family, port, timeout=10):
        self.p = subprocess.Popen(
            ["ip", "netns", "exec", CLIENT_NS, PY, str(HELPER), "bridge",
             "--host", SERVER[family], "--port", str(port), "--timeout", str(timeout)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.greeting = self._answer(timeout + 10).get("reply")
        if not self.greeting or not self.greeting.startswith("220"):
            self.close()
            raise AssertionError(f"no FTP greeting on port {port}: {self.greeting!r}")

    def _answer(self, timeout):
        import selectors
        sel = selectors.DefaultSelector()
        sel.register(self.p.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            raise AssertionError("bridge helper did not answer in time")
        line = self.p.stdout.readline()
        if not line:
            raise AssertionError("bridge helper exited")
        return json.loads(line)

    def _req(self, wait, **req):
        self.p.stdin.write(json.dumps(req) + "\n")
        self.p.stdin.flush()
        return self._answer(wait)

    def cmd(self, line, timeout=10):
        return self._req(timeout + 10, op="cmd", line=line, timeout=timeout)["reply"]

    def reply(self, timeout=3):
        return self._req(timeout + 10, op="reply", timeout=timeout)["reply"]

    def split(self, parts, delay=0.3, timeout=10):
        return self._req(timeout + 10 + delay * len(parts), op="split", parts=parts,
                         delay=delay, timeout=timeout)["reply"]

    def listen(self, port):
        return self._req(10, op="listen", port=port)

    def accept(self, timeout=10):
        return self._req(timeout + 10, op="accept", timeout=timeout)

    def connect(self, port, timeout=10):
        return self._req(timeout + 10, op="connect", port=port, timeout=timeout)

    def login(self, user="anonymous"):
        r = self.cmd(f"USER {user}")
        assert r and r[0] in "23", r
        if r.startswith("331"):
            r = self.cmd("PASS lab@example.com")
        assert r and r.startswith("230"), r
        return r

    def close(self):
        if self.p.poll() is None:
            try:
                self.p.stdin.write(json.dumps({"op": "close"}) + "\n")
                self.p.stdin.flush()
                self.p.wait(5)
            except (OSError, subprocess.TimeoutExpired, ValueError):
                self.p.kill()
                self.p.wait(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def parse_229(reply):
    m = re.search(r"\(\|\|\|(\d+)\|\)", reply or "")
    assert m, f"not a 229 reply: {reply!r}"
    return int(m.group(1))


def parse_227(reply):
    m = re.search(r"(\d+),(\d+),(\d+),(\d+),(\d+),(\d+)", reply or "")
    assert m, f"not a 227 reply: {reply!r}"
    n = [int(x) for x in m.groups()]
    return ".".join(map(str, n[:4])), n[4] * 256 + n[5]


def port_arg(addr4, port):
    return ",".join(addr4.split(".") + [str(port >> 8), str(port & 255)])


def eprt_arg(family, addr, port):
    return f"|{1 if family == 4 else 2}|{addr}|{port}|"


# ------------------------------------------------------------------ the daemon

def daemon_binary():
    env = os.environ.get("FTP6PROXY_BIN")
    if env:
        p = Path(env)
        return p.resolve() if p.is_absolute() or p.exists() else REPO / p
    return REPO / "target" / "debug" / "ftp6proxy"


LAB_FTP_PORTS = f"21,2121,2122,{FTPS}"


def daemon_argv(timeout_s=2, extra=()):
    return [str(daemon_binary()), "-d", "-d", "-j", GW_NS, "--firewall", "nft",
            "--ftp-ports", LAB_FTP_PORTS, "-p", str(QUEUE), "-t", str(timeout_s), *extra]


class Daemon:
    """ftp6proxy running against the lab gateway; stderr+stdout go to log_path. With
    copy=True it runs in copy mode (--intercept nflog): ready when NFLOG group QUEUE is
    bound instead of the NFQUEUE."""

    def __init__(self, log_path, copy=False):
        self.log_path = Path(log_path)
        self.proc = None
        self.killed = False
        self.argv = None
        self.copy = copy
        self.bound = nflog_bound if copy else queue_bound
        self.what = f"NFLOG group {QUEUE}" if copy else f"NFQUEUE {QUEUE}"

    def start(self, timeout_s=2, ready_within=20):
        binary = daemon_binary()
        if not (binary.is_file() and os.access(binary, os.X_OK)):
            raise AssertionError(f"ftp6proxy binary not found at {binary}: build it "
                                 "(cargo build) or set FTP6PROXY_BIN")
        assert not self.bound(), f"another process is already bound to the lab's {self.what}"
        self.argv = daemon_argv(timeout_s, ["--intercept", "nflog"] if self.copy else [])
        with open(self.log_path, "a") as log:
            log.write(f"### start: {' '.join(self.argv)}\n")
            log.flush()
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        self.killed = False
        ok = wait_until(lambda: self.proc.poll() is not None or self.bound(), ready_within)
        if self.proc.poll() is not None:
            raise AssertionError(f"ftp6proxy exited with {self.proc.returncode} at start:\n"
                                 + self.log())
        assert ok, f"ftp6proxy did not bind {self.what} within {ready_within}s:\n" + self.log()
        return self

    def log(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_mark(self):
        return len(self.log())

    def log_since(self, mark):
        return self.log()[mark:]

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, within=15):
        """SIGTERM; returns the exit status (None if it had to be killed)."""
        if not self.running():
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(within)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            return None

    def kill9(self):
        self.proc.kill()
        self.proc.wait(10)
        self.killed = True
        # The kernel unbinds the queue (or group) when the socket dies.
        assert wait_until(lambda: not self.bound(), 10), f"{self.what} still bound after kill -9"


class NflogFeed:
    """The gateway copies FTP control packets of both directions to NFLOG group `group`
    for the duration (iptables/ip6tables -j NFLOG in mangle FORWARD, inserted before the
    lab's NFQUEUE rules, whose bypass lets the packets themselves pass while no daemon is
    bound to the queue). Removed on exit, whatever happened."""

    def __init__(self, group=QUEUE, ports=LAB_FTP_PORTS):
        self.rules = [["-p", "tcp", "-m", "multiport", f"--{d}", ports,
                       "-j", "NFLOG", "--nflog-group", str(group)]
                      for d in ("dports", "sports")]
        self.added = []

    def __enter__(self):
        for ipt in ("iptables", "ip6tables"):
            for rule in self.rules:
                in_ns(GW_NS, ipt, "-w", "-t", "mangle", "-I", "FORWARD", "1", *rule,
                      check=True)
                self.added.append((ipt, rule))
        return self

    def __exit__(self, *exc):
        for ipt, rule in self.added:
            in_ns(GW_NS, ipt, "-w", "-t", "mangle", "-D", "FORWARD", *rule, check=True)
        self.added = []
