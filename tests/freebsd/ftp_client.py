#!/usr/bin/env python3
"""FTP client for tests/freebsd/lab, run inside the client jail with Python's ftplib.

  ftp_client.py probe    --host H [--port P] [--timeout T]
        Open a control connection and read the 220 greeting.
  ftp_client.py get      --host H --mode M --file NAME --out PATH [--timeout T]
        Log in anonymously and RETR NAME into PATH, forcing the data connection
        command M: pasv | epsv (passive), port | eprt (active).
  ftp_client.py announce --host H --mode M [--release FILE] [--hold S] [--timeout T]
        Log in, announce one data connection (PASV/EPSV, or PORT/EPRT naming a port
        this client listens on), print the hole ftp6proxy must open for it, then keep
        the control connection open until FILE exists (or S seconds have passed).
  ftp_client.py bounce   --host H --mode port|eprt --addr A --dport P [--timeout T]
        Log in and send PORT/EPRT naming A:P, a host that is not this client (FTP
        bounce), with ftplib's sendcmd; print the server's answer.

Every step prints one line on stdout:
  CONTROL <reply>        logged in
  HOLE <src> <dst> <port>  (announce) the hole expected: from <src> to <dst> port <port>
  REPLY <reply>          (announce, bounce) the server's answer to the announcement
  DATA ok <bytes>        (get) transfer complete
  ERROR <stage>: <text>
Exit status: 0 done; 1 no control connection or login; 2 logged in, but the
announcement or the data transfer failed; 64 bad arguments.
"""
import argparse
import ftplib
import os
import socket
import sys
import time

CONTROL_FAILED = 1
DATA_FAILED = 2


def say(*words):
    print(*words, flush=True)


def family_of(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


class ModeFTP(ftplib.FTP):
    """ftplib.FTP that opens every data connection with exactly one command."""

    mode = "epsv"

    def makepasv(self):
        if self.mode == "pasv":
            _, port = ftplib.parse227(self.sendcmd("PASV"))
            # ftplib's own default: connect to the control peer, not the 227 address.
            return self.sock.getpeername()[0], port
        return ftplib.parse229(self.sendcmd("EPSV"), self.sock.getpeername())

    def makeport(self):
        local = self.sock.getsockname()[0]
        listener = socket.create_server((local, 0), family=self.af, backlog=1)
        port = listener.getsockname()[1]
        if self.mode == "port":
            self.sendport(local, port)
        else:
            self.sendeprt(local, port)
        if self.timeout is not None:
            listener.settimeout(self.timeout)
        return listener


def login(args, cls=ftplib.FTP):
    """Connect and log in; exit CONTROL_FAILED when that is not possible."""
    try:
        ftp = cls(timeout=args.timeout)
        ftp.connect(args.host, args.port)
        reply = ftp.login("anonymous", "lab@example.com")
    except (OSError, EOFError, ftplib.Error) as e:
        say(f"ERROR control: {type(e).__name__}: {e}")
        sys.exit(CONTROL_FAILED)
    say(f"CONTROL {reply.splitlines()[0]}")
    return ftp


def cmd_probe(args):
    try:
        with socket.create_connection((args.host, args.port), timeout=args.timeout) as s:
            s.settimeout(args.timeout)
            greeting = s.recv(512).decode("latin-1").strip()
    except OSError as e:
        say(f"ERROR control: {type(e).__name__}: {e}")
        return CONTROL_FAILED
    if not greeting.startswith("220"):
        say(f"ERROR control: no 220 greeting: {greeting!r}")
        return CONTROL_FAILED
    say(f"CONTROL {greeting.splitlines()[0]}")
    return 0


def cmd_get(args):
    ftp = login(args, ModeFTP)
    ftp.mode = args.mode
    ftp.set_pasv(args.mode in ("pasv", "epsv"))
    try:
        with open(args.out, "wb") as out:
            ftp.retrbinary("RETR " + args.file, out.write)
        size = os.path.getsize(args.out)
        ftp.quit()
    except (OSError, EOFError, ftplib.Error) as e:
        say(f"ERROR data ({args.mode}): {type(e).__name__}: {e}")
        return DATA_FAILED
    say(f"DATA ok {size}")
    return 0


def wait_release(path, hold):
    deadline = time.monotonic() + hold
    while time.monotonic() < deadline:
        if path and os.path.exists(path):
            return
        time.sleep(0.2)


def cmd_announce(args):
    ftp = login(args)
    client = ftp.sock.getsockname()[0]
    server = ftp.sock.getpeername()[0]
    listener = None
    try:
        if args.mode == "pasv":
            reply = ftp.sendcmd("PASV")
            _, port = ftplib.parse227(reply)
            say(f"HOLE {client} {server} {port}")
        elif args.mode == "epsv":
            reply = ftp.sendcmd("EPSV")
            _, port = ftplib.parse229(reply, ftp.sock.getpeername())
            say(f"HOLE {client} {server} {port}")
        else:
            # A real listener, so that a server connecting at once (pyftpdlib does, on
            # PORT) completes its data connection through the hole.
            listener = socket.create_server((client, 0), family=ftp.af, backlog=1)
            port = listener.getsockname()[1]
            say(f"HOLE {server} {client} {port}")
            if args.mode == "port":
                reply = ftp.sendport(client, port)
            else:
                reply = ftp.sendeprt(client, port)
    except (OSError, EOFError, ftplib.Error) as e:
        say(f"ERROR announce ({args.mode}): {type(e).__name__}: {e}")
        return DATA_FAILED
    say(f"REPLY {reply.splitlines()[0]}")
    wait_release(args.release, args.hold)
    if listener is not None:
        listener.close()
    # No QUIT: by now the daemon may be stopped, and a diverted QUIT would wait for
    # nothing (divert(4) drops packets no socket is bound for).
    ftp.close()
    return 0


def cmd_bounce(args):
    ftp = login(args)
    if args.mode == "port":
        packed = socket.inet_pton(socket.AF_INET, args.addr)
        numbers = list(packed) + [args.dport >> 8, args.dport & 255]
        line = "PORT " + ",".join(str(n) for n in numbers)
    else:
        af = 2 if ":" in args.addr else 1
        line = f"EPRT |{af}|{args.addr}|{args.dport}|"
    say(f"SENT {line}")
    try:
        reply = ftp.sendcmd(line)
    except ftplib.Error as e:  # 4xx/5xx: the answer we expect from a careful server
        reply = str(e)
    except (OSError, EOFError) as e:
        say(f"ERROR announce ({args.mode}): {type(e).__name__}: {e}")
        return DATA_FAILED
    say(f"REPLY {reply.splitlines()[0]}")
    try:
        ftp.quit()
    except (OSError, EOFError, ftplib.Error):
        ftp.close()
    return 0


class Parser(argparse.ArgumentParser):
    """Bad arguments exit 64 (EX_USAGE), not 2, which means "data failed" here."""

    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(64, f"{self.prog}: error: {message}\n")


def main():
    ap = Parser(description="FTP client for tests/freebsd/lab")
    sub = ap.add_subparsers(dest="what", required=True)

    def common(p):
        p.add_argument("--host", required=True)
        p.add_argument("--port", type=int, default=21)
        p.add_argument("--timeout", type=float, default=10.0)
        return p

    common(sub.add_parser("probe"))
    g = common(sub.add_parser("get"))
    g.add_argument("--mode", choices=["pasv", "epsv", "port", "eprt"], required=True)
    g.add_argument("--file", required=True)
    g.add_argument("--out", required=True)
    a = common(sub.add_parser("announce"))
    a.add_argument("--mode", choices=["pasv", "epsv", "port", "eprt"], required=True)
    a.add_argument("--release", help="return once this file exists")
    a.add_argument("--hold", type=float, default=30.0)
    b = common(sub.add_parser("bounce"))
    b.add_argument("--mode", choices=["port", "eprt"], required=True)
    b.add_argument("--addr", required=True, help="the third party's address")
    b.add_argument("--dport", type=int, default=50500, help="the third party's port")
    args = ap.parse_args()

    if args.what in ("get", "announce") and args.mode in ("pasv", "port") \
            and family_of(args.host) == socket.AF_INET6:
        ap.error(f"{args.mode.upper()} is IPv4 only; use epsv or eprt with IPv6")
    if args.what == "bounce" and args.mode == "port" and ":" in args.addr:
        ap.error("PORT carries IPv4 addresses only")
    handler = {"probe": cmd_probe, "get": cmd_get, "announce": cmd_announce,
               "bounce": cmd_bounce}[args.what]
    sys.exit(handler(args))


if __name__ == "__main__":
    main()
