#!/usr/bin/env python3
"""A crude stand-in for ftp6proxy, only to test the end-to-end harness itself:

    FTP6PROXY_BIN=tests/e2e/fake_ftp6proxy.py python3 -m pytest -v tests/e2e

Same command line subset (-d -d -j NS --firewall nft --ftp-ports P,.. -p QUEUE -t SECS).
It binds the NFQUEUE through raw netlink, cuts lines from each segment with a per-direction
buffer (no TCP sequence tracking: this is NOT the real design), applies the address/port/
pairing checks, adds `nft` set elements with a timeout, and accepts every packet.
"""
import ipaddress
import os
import re
import signal
import socket
import struct
import subprocess
import sys

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG = 0, 1, 2
NFQA_CFG_CMD, NFQA_CFG_PARAMS = 1, 2
NFQA_PACKET_HDR, NFQA_VERDICT_HDR, NFQA_PAYLOAD = 1, 2, 10
NF_ACCEPT = 1
# FAKE_NAIVE=1: no policy at all (any address, any port, any reply line counts), to show
# that the attack tests fail against a helper that does not check.
NAIVE = os.environ.get("FAKE_NAIVE") == "1"


def log(*a):
    print("fake-ftp6proxy:", *a, file=sys.stderr, flush=True)


def args():
    a = sys.argv[1:]
    o = {"ns": None, "ports": {21}, "queue": 10004, "t": 2}
    i = 0
    while i < len(a):
        if a[i] == "-j":
            o["ns"] = a[i + 1]; i += 1
        elif a[i] == "--ftp-ports":
            o["ports"] = {int(x) for x in a[i + 1].split(",")}; i += 1
        elif a[i] == "-p":
            o["queue"] = int(a[i + 1]); i += 1
        elif a[i] == "-t":
            o["t"] = int(a[i + 1]); i += 1
        elif a[i] == "--firewall":
            i += 1
        i += 1
    return o


def nlmsg(mtype, flags, queue, attrs, seq=0):
    body = struct.pack("!BBH", socket.AF_UNSPEC, 0, queue)
    for t, v in attrs:
        ln = 4 + len(v)
        body += struct.pack("=HH", ln, t) + v + b"\0" * ((4 - ln % 4) % 4)
    return struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_QUEUE << 8) | mtype, flags, seq, 0) + body


def parse_attrs(b):
    out, i = {}, 0
    while i + 4 <= len(b):
        ln, t = struct.unpack_from("=HH", b, i)
        if ln < 4:
            break
        out[t & 0x7FFF] = b[i + 4:i + ln]
        i += (ln + 3) & ~3
    return out


def nft(*cmd):
    r = subprocess.run(["nft", *cmd], capture_output=True, text=True)
    if r.returncode:
        log("nft failed:", " ".join(cmd), r.stderr.strip())


class Fake:
    def __init__(self, o):
        self.o = o
        self.conns = {}

    def open(self, src, dst, port):
        fam = 6 if ":" in src else 4
        log(f"open hole {src} . {dst} . {port} for {self.o['t']}s")
        nft("add", "element", "inet", "filter", f"ftp6proxy{fam}",
            f"{{ {src} . {dst} . {port} timeout {self.o['t']}s }}")

    def client_line(self, st, cli, srv, line):
        u = line.upper()
        if NAIVE and re.match(r"22[79] ", line):
            return self.server_line(st, cli, srv, line)
        st["pending"] = u.startswith(("PASV", "EPSV"))
        m = re.match(r"PORT (\d+),(\d+),(\d+),(\d+),(\d+),(\d+)$", line, re.I)
        e = re.match(r"EPRT (.)(\d)\1([^|]*)\1(\d+)\1$", line, re.I)
        if m:
            n = [int(x) for x in m.groups()]
            addr, port = ".".join(map(str, n[:4])), n[4] * 256 + n[5]
        elif e:
            addr, port = e.group(3), int(e.group(4))
        else:
            return
        self.check_open(srv, cli, addr, port, "client")

    def check_open(self, src, dst, addr, port, who):
        try:
            same = ipaddress.ip_address(addr) == ipaddress.ip_address(dst)
        except ValueError:
            same = False
        if NAIVE:
            self.open(src, dst, port)
        elif not same:
            log(f"deny: {who} announced {addr} port {port}, not its own address {dst} (bounce)")
        elif port < 1024:
            log(f"deny: {who} announced port {port} below 1024")
        else:
            self.open(src, dst, port)

    def server_line(self, st, cli, srv, line):
        if NAIVE:
            st["pending"], st["multi"] = True, None
        if st.get("multi"):
            if line.startswith(st["multi"] + " "):
                st["multi"] = None
            return
        if re.match(r"\d{3}-", line):
            st["multi"] = line[:3]
            return
        pending, st["pending"] = st.get("pending"), False
        if not pending:
            if line[:3] in ("227", "229"):
                log(f"ignore unsolicited {line[:3]} reply")
            return
        if line.startswith("227"):
            m = re.search(r"(\d+),(\d+),(\d+),(\d+),(\d+),(\d+)", line)
            if m:
                n = [int(x) for x in m.groups()]
                self.check_open(cli, srv, ".".join(map(str, n[:4])), n[4] * 256 + n[5], "server")
        elif line.startswith("229"):
            m = re.search(r"\((.)\1\1(\d+)\1\)", line)
            if m:
                self.check_open(cli, srv, srv, int(m.group(2)), "server")

    def packet(self, pkt):
        v = pkt[0] >> 4
        if v == 4:
            ihl = (pkt[0] & 15) * 4
            if pkt[9] != 6:
                return
            src, dst, tcp = socket.inet_ntop(socket.AF_INET, pkt[12:16]), socket.inet_ntop(socket.AF_INET, pkt[16:20]), pkt[ihl:]
        elif v == 6:
            if pkt[6] != 6:
                return
            src, dst, tcp = socket.inet_ntop(socket.AF_INET6, pkt[8:24]), socket.inet_ntop(socket.AF_INET6, pkt[24:40]), pkt[40:]
        else:
            return
        sport, dport = struct.unpack_from("!HH", tcp)
        data = tcp[(tcp[12] >> 4) * 4:]
        if dport in self.o["ports"]:
            key, to_server, cli, srv = (src, sport, dst, dport), True, src, dst
        else:
            key, to_server, cli, srv = (dst, dport, src, sport), False, dst, src
        st = self.conns.setdefault(key, {"buf": {True: b"", False: b""}})
        if not data:
            return
        buf = st["buf"][to_server] + data
        *lines, st["buf"][to_server] = buf.split(b"\n")
        for ln in lines:
            line = ln.rstrip(b"\r").decode("latin-1")
            log(("C> " if to_server else "S> ") + line)
            (self.client_line if to_server else self.server_line)(st, cli, srv, line)

    def run(self):
        q = self.o["queue"]
        for fam in (4, 6):
            nft("flush", "set", "inet", "filter", f"ftp6proxy{fam}")
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        s.bind((0, 0))
        s.send(nlmsg(NFQNL_MSG_CONFIG, 1 | 4, q, [(NFQA_CFG_CMD, struct.pack("!BBH", 1, 0, 0))]))
        s.send(nlmsg(NFQNL_MSG_CONFIG, 1 | 4, q, [(NFQA_CFG_PARAMS, struct.pack("!IB", 0xFFFF, 2))]))
        log(f"bound to queue {q}")

        def stop(*_):
            for fam in (4, 6):
                nft("flush", "set", "inet", "filter", f"ftp6proxy{fam}")
            log("stopped")
            os._exit(0)

        signal.signal(signal.SIGTERM, stop)
        while True:
            b = s.recv(1 << 17)
            i = 0
            while i + 16 <= len(b):
                ln, mtype = struct.unpack_from("=IH", b, i)
                msg = b[i:i + ln]
                i += (ln + 3) & ~3
                if mtype != (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
                    if mtype == 2:  # NLMSG_ERROR
                        err = struct.unpack_from("=i", msg, 16)[0]
                        if err:
                            log("netlink error", err)
                            sys.exit(1)
                    continue
                a = parse_attrs(msg[20:])
                pid = struct.unpack_from("!I", a[NFQA_PACKET_HDR])[0]
                try:
                    self.packet(a.get(NFQA_PAYLOAD, b""))
                except Exception as e:
                    log("packet error", repr(e))
                s.send(nlmsg(NFQNL_MSG_VERDICT, 1, q,
                             [(NFQA_VERDICT_HDR, struct.pack("!II", NF_ACCEPT, pid))]))


def main():
    o = args()
    if o["ns"] and os.environ.get("FAKE_IN_NS") != o["ns"]:
        os.environ["FAKE_IN_NS"] = o["ns"]
        os.execvp("ip", ["ip", "netns", "exec", o["ns"], sys.executable, *sys.argv])
    Fake(o).run()


if __name__ == "__main__":
    main()
