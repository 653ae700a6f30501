#!/usr/bin/env python3
"""FTP client helper for the ftp6proxy lab, run inside the client namespace.

  ftplib_client.py transfer --host H --port P --mode pasv|epsv|port|eprt ACTION...
      ACTION: list | get:REMOTE:LOCAL | put:LOCAL:REMOTE | sleep:SECONDS
      Uses Python's ftplib with the data-connection command forced to --mode, with
      debug level 1 so every command sent shows on stdout (`*cmd* 'EPSV'`).

  ftplib_client.py bridge --host H --port P
      A raw control connection (TCP_NODELAY) driven by JSON lines on stdin; one JSON
      answer per request on stdout. Requests ("op"):
        cmd   {"line"}              send line+CRLF, read one (multi-line) reply
        reply {"timeout"}           read one reply (null if none in time)
        split {"parts","delay"}     send the parts in separate send() calls with a
                                    sleep between, then read one reply
        listen {"port"}             listen on the control connection's local address
        accept {"timeout"}          accept on it and read until EOF
        connect {"port","timeout"}  connect to the server's address:port, read until EOF
        close                       close and exit
      Data answers: {"ok": true, "len", "sha256", "head"} or {"ok": false, "error"}.
"""
import argparse
import ftplib
import hashlib
import json
import socket
import sys
import time

TIMEOUT = 10


class ModeFTP(ftplib.FTP):
    """ftplib.FTP that uses exactly one of PASV, EPSV, PORT, EPRT for data connections."""

    mode = "epsv"

    def makepasv(self):
        peer = self.sock.getpeername()[0]
        if self.mode == "pasv":
            _, port = ftplib.parse227(self.sendcmd("PASV"))
            return peer, port
        return ftplib.parse229(self.sendcmd("EPSV"), self.sock.getpeername())

    def makeport(self):
        local = self.sock.getsockname()[0]
        sock = socket.create_server((local, 0), family=self.af, backlog=1)
        port = sock.getsockname()[1]
        if self.mode == "port":
            self.sendport(local, port)
        else:
            self.sendeprt(local, port)
        if self.timeout is not None:
            sock.settimeout(self.timeout)
        return sock


def transfer(args):
    ftp = ModeFTP(timeout=args.timeout)
    ftp.mode = args.mode
    ftp.set_debuglevel(1)
    ftp.connect(args.host, args.port)
    ftp.login("anonymous", "lab@example.com")
    ftp.set_pasv(args.mode in ("pasv", "epsv"))
    run_actions(ftp, args.actions)
    ftp.quit()


def run_actions(ftp, actions, say_got=False):
    """list | get:REMOTE:LOCAL | put:LOCAL:REMOTE | sleep:SECONDS, in order (also used by
    ftps_client.py). A sleep keeps the control connection idle, for a restart meanwhile."""
    for action in actions:
        kind, *rest = action.split(":")
        if kind == "list":
            lines = []
            ftp.retrlines("LIST", lines.append)
            print("LISTING " + json.dumps(lines), flush=True)
        elif kind == "get":
            with open(rest[1], "wb") as f:
                ftp.retrbinary("RETR " + rest[0], f.write)
            if say_got:
                print(f"GOT {rest[0]}", flush=True)
        elif kind == "put":
            with open(rest[0], "rb") as f:
                ftp.storbinary("STOR " + rest[1], f)
        elif kind == "sleep":
            print(f"SLEEP {rest[0]}", flush=True)
            time.sleep(float(rest[0]))
        else:
            raise SystemExit(f"unknown action {action}")


class Bridge:
    def __init__(self, host, port, timeout):
        self.c = socket.create_connection((host, port), timeout=timeout)
        self.c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.listener = None

    def line(self, timeout):
        self.c.settimeout(timeout)
        while b"\n" not in self.buf:
            d = self.c.recv(4096)
            if not d:
                raise EOFError("control connection closed")
            self.buf += d
        ln, _, self.buf = self.buf.partition(b"\n")
        return ln.rstrip(b"\r").decode("latin-1")

    def reply(self, timeout=TIMEOUT):
        try:
            first = self.line(timeout)
            lines = [first]
            if len(first) >= 4 and first[3] == "-":
                end = first[:3] + " "
                while True:
                    ln = self.line(timeout)
                    lines.append(ln)
                    if ln.startswith(end):
                        break
            return "\n".join(lines)
        except socket.timeout:
            return None

    def send(self, data):
        self.c.sendall(data.encode("latin-1"))


def read_all(s, timeout):
    s.settimeout(timeout)
    h, n, head = hashlib.sha256(), 0, b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        h.update(d)
        n += len(d)
        if len(head) < 400:
            head += d[: 400 - len(head)]
    s.close()
    return {"ok": True, "len": n, "sha256": h.hexdigest(), "head": head.decode("latin-1")}


def bridge(args):
    out = sys.stdout
    try:
        b = Bridge(args.host, args.port, args.timeout)
        out.write(json.dumps({"reply": b.reply()}) + "\n")
    except OSError as e:
        out.write(json.dumps({"error": str(e)}) + "\n")
        return
    out.flush()
    for raw in sys.stdin:
        req = json.loads(raw)
        op = req["op"]
        try:
            if op == "cmd":
                b.send(req["line"] + "\r\n")
                ans = {"reply": b.reply(req.get("timeout", TIMEOUT))}
            elif op == "reply":
                ans = {"reply": b.reply(req.get("timeout", TIMEOUT))}
            elif op == "split":
                parts = req["parts"]
                for i, p in enumerate(parts):
                    b.send(p)
                    if i + 1 < len(parts):
                        time.sleep(req.get("delay", 0.3))
                ans = {"reply": b.reply(req.get("timeout", TIMEOUT))}
            elif op == "listen":
                fam = b.c.family
                ls = socket.socket(fam, socket.SOCK_STREAM)
                ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                ls.bind((b.c.getsockname()[0], req["port"]))
                ls.listen(1)
                b.listener = ls
                ans = {"ok": True}
            elif op == "accept":
                b.listener.settimeout(req.get("timeout", TIMEOUT))
                d, peer = b.listener.accept()
                ans = read_all(d, req.get("timeout", TIMEOUT))
                ans["peer"] = [peer[0], peer[1]]
            elif op == "connect":
                d = socket.create_connection(
                    (b.c.getpeername()[0], req["port"]), timeout=req.get("timeout", TIMEOUT))
                ans = read_all(d, req.get("timeout", TIMEOUT))
            elif op == "close":
                b.c.close()
                out.write(json.dumps({"ok": True}) + "\n")
                out.flush()
                return
            else:
                ans = {"error": f"unknown op {op}"}
        except socket.timeout:
            ans = {"ok": False, "error": "timeout"}
        except OSError as e:
            ans = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        except EOFError as e:
            ans = {"ok": False, "error": str(e)}
        out.write(json.dumps(ans) + "\n")
        out.flush()


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="what", required=True)
    t = sub.add_parser("transfer")
    t.add_argument("--host", required=True)
    t.add_argument("--port", type=int, default=21)
    t.add_argument("--mode", choices=["pasv", "epsv", "port", "eprt"], required=True)
    t.add_argument("--timeout", type=float, default=TIMEOUT)
    t.add_argument("actions", nargs="+")
    br = sub.add_parser("bridge")
    br.add_argument("--host", required=True)
    br.add_argument("--port", type=int, default=21)
    br.add_argument("--timeout", type=float, default=TIMEOUT)
    args = ap.parse_args()
    transfer(args) if args.what == "transfer" else bridge(args)


if __name__ == "__main__":
    main()
