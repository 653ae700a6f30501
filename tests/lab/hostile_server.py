#!/usr/bin/env python3
"""A scripted, hostile FTP-ish server for ftp6proxy's attack tests (lab port 2122).

Usage: hostile_server.py [PORT]   (default 2122; dual-stack [::]:PORT)

The USER name picks the behaviour of the session (the password is ignored):
  any other name  behaves: PASV/EPSV open a real listener in 50410-50499, PORT/EPRT are
                  accepted for ANY address ("promiscuous", so it is the bounce victim:
                  LIST/RETR then connect to whatever the client announced).
  unsolicited     after 230 sends an extra `229 Entering Extended Passive Mode (|||50400|)`
                  that no EPSV asked for; NOOP is answered with the same 229. The server
                  also listens on 50400, so a test can prove no hole was opened.
  multiline       FEAT, STAT, HELP and EPSV are answered with a multi-line 211 reply that
                  carries a `229 Entering Extended Passive Mode (|||50401|)` line inside it;
                  listens on 50401.
  bounce          PASV is answered with a 227 carrying the third-party host's address
                  203.0.113.99 port 50402 (a bounce from the server side).
  lowport         PASV/EPSV are answered with port 80 (below 1024).
Everything it receives and sends is logged to stderr.
"""
import re
import socket
import sys
import threading

THIRD_V4 = "203.0.113.99"
UNSOLICITED_PORT = 50400
MULTILINE_PORT = 50401
BOUNCE_PORT = 50402
PASV_RANGE = range(50410, 50500)
DATA_TIMEOUT = 4.0


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def plain(addr):
    return addr[7:] if addr.startswith("::ffff:") else addr


def bait_listener(port):
    """Listen on port so that a connection that gets through would succeed."""
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", port))
    s.listen(8)

    def loop():
        while True:
            c, peer = s.accept()
            log(f"BAIT port {port}: connection from {peer[0]} (a hole must have been open)")
            c.close()

    threading.Thread(target=loop, daemon=True).start()


class Session:
    def __init__(self, conn, peer):
        self.c = conn
        self.peer = plain(peer[0])
        self.me = plain(conn.getsockname()[0])
        self.v4 = "." in self.me
        self.mode = "normal"
        self.pasv = None      # listening socket for passive mode
        self.active = None    # (addr, port) for active mode
        self.buf = b""

    def send(self, text):
        log(f"[{self.peer}] > {text!r}")
        self.c.sendall(text.encode() + b"\r\n")

    def readline(self):
        while b"\n" not in self.buf:
            d = self.c.recv(4096)
            if not d:
                return None
            self.buf += d
        line, _, self.buf = self.buf.partition(b"\n")
        return line.rstrip(b"\r").decode("latin-1")

    def open_pasv(self):
        if self.pasv:
            self.pasv.close()
        fam = socket.AF_INET6
        for p in PASV_RANGE:
            s = socket.socket(fam, socket.SOCK_STREAM)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            try:
                s.bind(("::", p))
            except OSError:
                s.close()
                continue
            s.listen(1)
            s.settimeout(DATA_TIMEOUT)
            self.pasv, self.active = s, None
            return p
        raise RuntimeError("no passive port free")

    def data_conn(self):
        if self.pasv:
            s, self.pasv = self.pasv, None
            try:
                d, _ = s.accept()
                return d
            except OSError as e:
                log(f"[{self.peer}] passive accept failed: {e}")
                return None
            finally:
                s.close()
        if self.active:
            addr, port = self.active
            self.active = None
            try:
                return socket.create_connection((addr, port), timeout=DATA_TIMEOUT)
            except OSError as e:
                log(f"[{self.peer}] active connect to {addr} {port} failed: {e}")
                return None
        return None

    def multiline_211(self):
        self.send("211-Status of the hostile server")
        self.send(f"229 Entering Extended Passive Mode (|||{MULTILINE_PORT}|)")
        self.send(" EPSV")
        self.send("211 End")

    def run(self):
        self.send("220 ftp6proxy lab hostile server ready")
        while True:
            line = self.readline()
            if line is None:
                return
            log(f"[{self.peer}] < {line!r}")
            verb, _, arg = line.partition(" ")
            verb = verb.upper()
            m = self.mode
            if verb == "USER":
                self.mode = arg.strip().lower() or "normal"
                self.send("331 Any password will do")
            elif verb == "PASS":
                self.send("230 Logged in")
                if m == "unsolicited":
                    self.send(f"229 Entering Extended Passive Mode (|||{UNSOLICITED_PORT}|)")
            elif verb == "QUIT":
                self.send("221 Bye")
                return
            elif verb == "SYST":
                self.send("215 UNIX Type: L8")
            elif verb in ("TYPE", "MODE", "STRU"):
                self.send("200 OK")
            elif verb == "PWD":
                self.send('257 "/" is the current directory')
            elif verb == "CWD":
                self.send("250 OK")
            elif verb == "NOOP":
                if m == "unsolicited":
                    self.send(f"229 Entering Extended Passive Mode (|||{UNSOLICITED_PORT}|)")
                else:
                    self.send("200 NOOP")
            elif verb in ("FEAT", "STAT", "HELP"):
                if m == "multiline":
                    self.multiline_211()
                else:
                    self.send("211-Features:")
                    self.send(" EPSV")
                    self.send(" EPRT")
                    self.send("211 End")
            elif verb == "PASV":
                if not self.v4:
                    self.send("500 PASV is IPv4 only, use EPSV")
                elif m == "bounce":
                    a = THIRD_V4.replace(".", ",")
                    self.send(f"227 Entering Passive Mode ({a},{BOUNCE_PORT >> 8},{BOUNCE_PORT & 255})")
                elif m == "lowport":
                    a = self.me.replace(".", ",")
                    self.send(f"227 Entering Passive Mode ({a},0,80)")
                else:
                    p = self.open_pasv()
                    a = self.me.replace(".", ",")
                    self.send(f"227 Entering Passive Mode ({a},{p >> 8},{p & 255})")
            elif verb == "EPSV":
                if m == "multiline":
                    self.multiline_211()
                elif m == "lowport":
                    self.send("229 Entering Extended Passive Mode (|||80|)")
                else:
                    p = self.open_pasv()
                    self.send(f"229 Entering Extended Passive Mode (|||{p}|)")
            elif verb == "PORT":
                try:
                    h = [int(x) for x in arg.split(",")]
                    self.active = (".".join(map(str, h[:4])), h[4] * 256 + h[5])
                    self.pasv = None
                    self.send("200 PORT command successful")
                except (ValueError, IndexError):
                    self.send("501 Bad PORT")
            elif verb == "EPRT":
                mm = re.match(r"^(.)(\d)\1([^|]+)\1(\d+)\1$", arg.strip())
                if mm:
                    self.active = (mm.group(3), int(mm.group(4)))
                    self.pasv = None
                    self.send("200 EPRT command successful")
                else:
                    self.send("501 Bad EPRT")
            elif verb in ("LIST", "NLST", "RETR"):
                d = self.data_conn()
                if d is None:
                    self.send("425 Can't open data connection")
                    continue
                self.send("150 Here it comes")
                if verb == "RETR":
                    d.sendall(b"hostile data\n")
                elif verb == "NLST":
                    d.sendall(b"hello.txt\r\n")
                else:
                    d.sendall(b"-rw-r--r-- 1 ftp ftp 13 Jan 01 00:00 hello.txt\r\n")
                d.close()
                self.send("226 Transfer complete")
            elif verb == "STOR":
                d = self.data_conn()
                if d is None:
                    self.send("425 Can't open data connection")
                    continue
                self.send("150 Send it")
                d.settimeout(DATA_TIMEOUT)
                try:
                    while d.recv(65536):
                        pass
                except OSError:
                    pass
                d.close()
                self.send("226 Stored")
            else:
                self.send("500 Unknown command")


def serve(conn, peer):
    try:
        conn.settimeout(120)
        Session(conn, peer).run()
    except Exception as e:  # one bad session must not kill the server
        log(f"session error: {e!r}")
    finally:
        conn.close()


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 2122
    for p in (UNSOLICITED_PORT, MULTILINE_PORT):
        bait_listener(p)
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", port))
    s.listen(16)
    log(f"hostile server listening on [::]:{port}")
    while True:
        conn, peer = s.accept()
        threading.Thread(target=serve, args=(conn, peer), daemon=True).start()


if __name__ == "__main__":
    main()
