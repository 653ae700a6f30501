#!/usr/bin/env python3
"""A small explicit-FTPS server with CCC for the ftp6proxy lab (standard library only).

Usage: ftps_ccc_server.py --root DIR --cert PEM --key PEM [--port 2123] [--pasv LOW-HIGH]

Why it exists: the lab needs a server that leaves TLS on `CCC` (RFC 2228, RFC 4217 §6) so
that the daemon can be shown to read PASV/EPSV/PORT/EPRT again afterwards. Debian's
pyftpdlib has no CCC and Debian's proftpd (mod_tls has it) conflicts with vsftpd.

What it does, and nothing more: one dual-stack socket, one thread per control connection,
anonymous login (any USER/PASS), the commands USER PASS SYST FEAT PWD CWD CDUP TYPE PBSZ
PROT AUTH(TLS|SSL) CCC PASV EPSV PORT EPRT RETR STOR LIST NLST SIZE NOOP QUIT, in ROOT
(uploads wherever the directory allows). Plain FTP works too; TLS is never required.

TLS on the control connection is an ssl.SSLObject over two MemoryBIOs on the raw socket.
Bytes from the socket collect in a buffer and only whole TLS records are handed to
OpenSSL, so when TLS ends the first clear-text byte is still in that buffer. On `CCC`:
reply 200 inside TLS, send our close_notify, then look at the client's next byte: a TLS
record (content type 20-24) is fed to OpenSSL until the client's close_notify has come
(ftplib, curl --ftp-ssl-ccc-mode active); anything else is clear text and is read as the
next command (curl's default passive mode sends no close_notify). The log says which.

Data connections follow PROT: clear (C) or TLS with this server as the TLS server in both
directions (P, RFC 4217 §9), after the 150 reply, so that clients which start their
handshake only after reading 150 (ftplib in active mode) do not deadlock. A PORT/EPRT
naming any address other than the client's is refused, as is a data connection to a
passive port from any address other than the client's.

Log (stderr): one line per command and per event, prefixed with the client's address and
port; at the end of each session one line
    end user=NAME tls=VERSION ccc=close_notify|cleartext|none prot=P|C transfers=N
which tests use to tell what the client did on the wire.
"""
import argparse
import ipaddress
import os
import posixpath
import random
import socket
import ssl
import sys
import threading
import time

TLS_RECORD_TYPES = range(20, 25)  # change_cipher_spec, alert, handshake, app data, heartbeat
MAX_LINE = 4096
CONTROL_TIMEOUT = 120
DATA_TIMEOUT = 10


class ProtocolError(Exception):
    pass


def log(prefix, msg):
    stamp = time.strftime("%H:%M:%S", time.gmtime())
    print(f"{stamp} {prefix} {msg}", file=sys.stderr, flush=True)


def unmapped(addr):
    """'::ffff:192.0.2.10' -> '192.0.2.10'; anything else unchanged."""
    ip = ipaddress.ip_address(addr.split("%")[0])
    if ip.version == 6 and ip.ipv4_mapped:
        return str(ip.ipv4_mapped)
    return str(ip)


def family_of(addr):
    return socket.AF_INET if ipaddress.ip_address(addr).version == 4 else socket.AF_INET6


# ------------------------------------------------------------------ the control channel

class Channel:
    """The control connection: clear lines, or TLS records through an SSLObject."""

    def __init__(self, sock):
        self.sock = sock
        self.raw = bytearray()    # bytes from the socket not yet consumed
        self.plain = bytearray()  # decrypted bytes not yet read as lines
        self.tls = None
        self.incoming = self.outgoing = None

    # -- raw bytes and records
    def _fill(self, n):
        while len(self.raw) < n:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("the client closed the control connection")
            self.raw += data

    def _next_is_record(self):
        self._fill(1)
        return self.raw[0] in TLS_RECORD_TYPES

    def _feed_record(self):
        """Hand exactly one whole TLS record from the socket to OpenSSL."""
        if not self._next_is_record():
            raise ProtocolError(f"clear text inside TLS: {bytes(self.raw[:16])!r}")
        self._fill(5)
        end = 5 + int.from_bytes(self.raw[3:5], "big")
        self._fill(end)
        self.incoming.write(bytes(self.raw[:end]))
        del self.raw[:end]

    def _flush(self):
        data = self.outgoing.read()
        if data:
            self.sock.sendall(data)

    # -- TLS on and off
    def start_tls(self, ctx):
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.incoming, self.outgoing, server_side=True)
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                self._feed_record()
        self._flush()  # our last flight, and TLS 1.3 session tickets
        return self.tls.version(), self.tls.cipher()[0]

    def leave_tls(self):
        """Called after the 200 to CCC went out inside TLS. Sends our close_notify, then
        consumes the client's if its next bytes are TLS records. Returns how the client
        left TLS: 'close_notify' or 'cleartext' (clear text without a close_notify)."""
        how = None
        try:
            self.tls.unwrap()
            how = "close_notify"  # the client's had come already
        except ssl.SSLWantReadError:
            pass
        self._flush()  # our close_notify
        while how is None:
            if not self._next_is_record():
                how = "cleartext"
                break
            self._feed_record()
            try:
                self.tls.unwrap()
                how = "close_notify"
            except ssl.SSLWantReadError:
                pass
        self._flush()
        leftover = bytes(self.plain)
        self.tls = self.incoming = self.outgoing = None
        self.plain.clear()
        if leftover:
            raise ProtocolError(f"protected data after CCC: {leftover[:40]!r}")
        return how

    # -- lines
    def read_line(self):
        while True:
            buf = self.plain if self.tls else self.raw
            i = buf.find(b"\n")
            if i >= 0:
                line = bytes(buf[: i + 1])
                del buf[: i + 1]
                return line.decode("latin-1").rstrip("\r\n")
            if len(buf) > MAX_LINE:
                raise ProtocolError("command line too long")
            if not self.tls:
                self._fill(len(self.raw) + 1)
                continue
            try:
                data = self.tls.read(65536)
            except ssl.SSLWantReadError:
                self._flush()
                self._feed_record()
                continue
            if not data:
                raise EOFError("the client sent close_notify without CCC")
            self.plain += data
            self._flush()

    def send(self, text):
        data = text.encode("latin-1")
        if self.tls:
            self.tls.write(data)
            self._flush()
        else:
            self.sock.sendall(data)


# ------------------------------------------------------------------ one session

FEATURES = ["AUTH TLS", "AUTH SSL", "PBSZ", "PROT", "CCC", "EPSV", "EPRT", "PASV", "SIZE"]
NEEDS_LOGIN = {"PWD", "CWD", "CDUP", "TYPE", "PASV", "EPSV", "PORT", "EPRT", "RETR", "STOR",
               "LIST", "NLST", "SIZE"}


class Session:
    def __init__(self, sock, cfg):
        self.sock, self.cfg = sock, cfg
        peer, local = sock.getpeername(), sock.getsockname()
        self.peer, self.local = unmapped(peer[0]), unmapped(local[0])
        self.family = family_of(self.local)
        self.prefix = f"[{self.peer}]:{peer[1]}"
        self.chan = Channel(sock)
        self.user, self.logged_in = None, False
        self.tls_version, self.tls_used, self.ccc = "none", False, "none"
        self.prot = "C"
        self.cwd = "/"
        self.passive = None   # listening socket after PASV/EPSV
        self.active = None    # (address, port) after PORT/EPRT
        self.epsv_all = False
        self.transfers = 0

    def log(self, msg):
        log(self.prefix, msg)

    def reply(self, text):
        self.log(f"<- {text.splitlines()[-1] if text else text}")
        self.chan.send(text + "\r\n")

    # -- main loop
    def run(self):
        self.sock.settimeout(CONTROL_TIMEOUT)
        try:
            self.reply("220 ftp6proxy lab FTPS server (AUTH TLS, CCC)")
            while True:
                line = self.chan.read_line()
                verb, _, arg = line.partition(" ")
                verb = verb.upper()
                self.log(f"-> {verb} ****" if verb == "PASS" else f"-> {line}")
                if verb == "QUIT":
                    self.reply("221 Goodbye.")
                    break
                if verb in NEEDS_LOGIN and not self.logged_in:
                    self.reply("530 Please login with USER and PASS.")
                    continue
                handler = getattr(self, "do_" + verb, None) if verb.isalpha() else None
                if handler is None:
                    self.reply(f"502 {verb} not implemented.")
                    continue
                handler(arg.strip())
        except (EOFError, OSError, ProtocolError, ssl.SSLError) as e:
            self.log(f"session ends: {type(e).__name__}: {e}")
        finally:
            self.close_data_setup()
            self.sock.close()
            self.log(f"end user={self.user} tls={self.tls_version} ccc={self.ccc} "
                     f"prot={self.prot} transfers={self.transfers}")

    # -- login and chatter
    def do_USER(self, arg):
        self.user, self.logged_in = arg or "anonymous", False
        self.reply("331 Any password will do.")

    def do_PASS(self, arg):
        if self.user is None:
            self.reply("503 Login with USER first.")
            return
        self.logged_in = True
        self.reply("230 Login successful.")

    def do_SYST(self, arg):
        self.reply("215 UNIX Type: L8")

    def do_FEAT(self, arg):
        self.reply("211-Features:\r\n" + "".join(f" {f}\r\n" for f in FEATURES) + "211 End")

    def do_NOOP(self, arg):
        self.reply("200 NOOP ok.")

    def do_TYPE(self, arg):
        if arg.upper() in ("A", "A N", "I", "L 8"):
            self.reply(f"200 Type set to {arg.upper()}.")
        else:
            self.reply("504 Type not supported.")

    # -- TLS: AUTH, PBSZ, PROT, CCC
    def do_AUTH(self, arg):
        if arg.upper() not in ("TLS", "SSL", "TLS-C", "TLS-P"):
            self.reply("504 AUTH TLS or AUTH SSL only.")
            return
        if self.tls_used:
            self.reply("503 Security data exchange already done.")
            return
        self.reply(f"234 AUTH {arg.upper()} ok, start the TLS handshake.")
        self.tls_used = True
        self.tls_version, cipher = self.chan.start_tls(self.cfg.ctx)
        self.log(f"tls handshake done: {self.tls_version} {cipher}")

    def do_PBSZ(self, arg):
        if not self.tls_used:
            self.reply("503 PBSZ needs AUTH first.")
        elif not arg.isdigit():
            self.reply("501 PBSZ needs a number.")
        else:
            self.reply("200 PBSZ=0")

    def do_PROT(self, arg):
        # RFC 4217 wants PBSZ first; ftplib's prot_c() sends PROT C alone, and vsftpd
        # takes that, so only AUTH is required here.
        level = arg.upper()
        if not self.tls_used:
            self.reply("503 PROT needs AUTH first.")
        elif level in ("C", "P"):
            self.prot = level
            self.reply(f"200 Protection level set to {level}.")
        elif level in ("S", "E"):
            self.reply("536 Only PROT C and PROT P are supported.")
        else:
            self.reply("504 Unknown protection level.")

    def do_CCC(self, arg):
        if self.chan.tls is None:
            self.reply("533 The command channel is not protected.")
            return
        self.reply("200 CCC ok, the command channel is clear from now on.")
        self.ccc = self.chan.leave_tls()
        self.log("ccc: sent close_notify; the client " + {
            "close_notify": "sent its close_notify too",
            "cleartext": "resumed clear text without a close_notify",
        }[self.ccc])

    # -- directories
    def resolve(self, arg):
        """(virtual path, real path) of arg relative to the current directory; '..' stops
        at ROOT."""
        virtual = posixpath.normpath(posixpath.join(self.cwd, arg or "."))
        if virtual.startswith("//"):
            virtual = "/" + virtual.lstrip("/")
        return virtual, os.path.join(self.cfg.root, virtual.lstrip("/"))

    def do_PWD(self, arg):
        self.reply(f'257 "{self.cwd}" is the current directory.')

    def do_CWD(self, arg):
        virtual, real = self.resolve(arg)
        if os.path.isdir(real):
            self.cwd = virtual
            self.reply("250 Directory changed.")
        else:
            self.reply("550 No such directory.")

    def do_CDUP(self, arg):
        self.do_CWD("..")

    def do_SIZE(self, arg):
        _, real = self.resolve(arg)
        if os.path.isfile(real):
            self.reply(f"213 {os.path.getsize(real)}")
        else:
            self.reply("550 No such file.")

    # -- announcing data connections
    def close_data_setup(self):
        if self.passive is not None:
            self.passive.close()
        self.passive = self.active = None

    def listen_passive(self):
        self.close_data_setup()
        ports = list(self.cfg.pasv_ports)
        random.shuffle(ports)
        for port in ports:
            s = socket.socket(self.family, socket.SOCK_STREAM)
            try:
                s.bind((self.local, port))
                s.listen(1)
            except OSError:
                s.close()
                continue
            self.passive = s
            return port
        return None

    def do_PASV(self, arg):
        if self.epsv_all:
            self.reply("503 EPSV ALL in effect.")
            return
        if self.family != socket.AF_INET:
            self.reply("522 PASV is IPv4 only here, use EPSV.")
            return
        port = self.listen_passive()
        if port is None:
            self.reply("425 No passive port free.")
            return
        h = self.local.replace(".", ",")
        self.reply(f"227 Entering Passive Mode ({h},{port >> 8},{port & 255}).")

    def do_EPSV(self, arg):
        proto = "1" if self.family == socket.AF_INET else "2"
        if arg.upper() == "ALL":
            self.epsv_all = True
            self.reply("200 EPSV ALL ok.")
            return
        if arg and arg != proto:
            self.reply(f"522 Network protocol not supported, use ({proto})")
            return
        port = self.listen_passive()
        if port is None:
            self.reply("425 No passive port free.")
            return
        self.reply(f"229 Entering Extended Passive Mode (|||{port}|)")

    def set_active(self, addr, port):
        if self.epsv_all:
            self.reply("503 EPSV ALL in effect.")
            return
        if addr != self.peer:
            self.reply("500 Illegal PORT/EPRT: not your address.")
            return
        if not 1024 <= port <= 65535:
            self.reply("504 Port below 1024 refused.")
            return
        self.close_data_setup()
        self.active = (addr, port)
        self.reply("200 PORT command successful.")

    def do_PORT(self, arg):
        try:
            n = [int(x) for x in arg.split(",")]
            if len(n) != 6 or not all(0 <= x <= 255 for x in n):
                raise ValueError
        except ValueError:
            self.reply("501 Syntax error in PORT.")
            return
        if self.family != socket.AF_INET:
            self.reply("522 PORT is IPv4 only, use EPRT (2).")
            return
        self.set_active(".".join(map(str, n[:4])), n[4] * 256 + n[5])

    def do_EPRT(self, arg):
        try:
            d = arg[0]
            _, proto, addr, port, _ = arg.split(d)
            addr = str(ipaddress.ip_address(addr))
            port = int(port)
            if proto not in ("1", "2") or family_of(addr) != (
                    socket.AF_INET if proto == "1" else socket.AF_INET6):
                raise ValueError
        except (ValueError, IndexError):
            self.reply("501 Syntax error in EPRT.")
            return
        self.set_active(addr, port)

    # -- transfers
    def open_data(self):
        """The data connection announced last (after 150), TLS if PROT P; None if it fails
        (the 425 is sent here)."""
        passive, active = self.passive, self.active
        self.passive = self.active = None
        conn = None
        try:
            if passive is not None:
                passive.settimeout(DATA_TIMEOUT)
                try:
                    conn, addr = passive.accept()
                finally:
                    passive.close()
                if unmapped(addr[0]) != self.peer:
                    conn.close()
                    raise ProtocolError(f"data connection from {addr[0]}, not the client")
            else:
                conn = socket.socket(self.family, socket.SOCK_STREAM)
                conn.settimeout(DATA_TIMEOUT)
                conn.bind((self.local, 0))
                conn.connect(active)
            conn.settimeout(DATA_TIMEOUT)
            if self.prot == "P":
                conn = self.cfg.ctx.wrap_socket(conn, server_side=True)
            self.log(f"data connection {'passive' if passive else 'active'} "
                     f"{'TLS ' + conn.version() if self.prot == 'P' else 'clear'}")
            return conn
        except (OSError, ProtocolError, ssl.SSLError) as e:
            if conn is not None:
                conn.close()
            self.log(f"data connection failed: {type(e).__name__}: {e}")
            self.reply(f"425 Can't open data connection: {type(e).__name__}.")
            return None

    def end_data(self, conn):
        if isinstance(conn, ssl.SSLSocket):
            try:
                conn.unwrap()  # our close_notify; waits (bounded) for the client's
            except (OSError, ValueError, ssl.SSLError):
                pass
        conn.close()

    def transfer(self, what, send_bytes=None, sink=None):
        if self.passive is None and self.active is None:
            self.reply("425 Use PORT, EPRT, PASV or EPSV first.")
            return
        self.reply(f"150 Opening data connection for {what}.")
        conn = self.open_data()
        if conn is None:
            return
        try:
            if send_bytes is not None:
                for chunk in send_bytes:
                    conn.sendall(chunk)
            else:
                while True:
                    data = conn.recv(65536)
                    if not data:
                        break
                    sink(data)
        except (OSError, ssl.SSLError) as e:
            self.log(f"transfer failed: {type(e).__name__}: {e}")
            conn.close()
            self.reply("426 Connection closed; transfer aborted.")
            return
        self.end_data(conn)
        self.transfers += 1
        self.reply("226 Transfer complete.")

    def do_RETR(self, arg):
        _, real = self.resolve(arg)
        if not os.path.isfile(real):
            self.reply("550 No such file.")
            return
        size = os.path.getsize(real)

        def chunks():
            with open(real, "rb") as f:
                yield from iter(lambda: f.read(65536), b"")
        self.transfer(f"{arg} ({size} bytes)", send_bytes=chunks())

    def do_STOR(self, arg):
        _, real = self.resolve(arg)
        if not arg or not os.path.isdir(os.path.dirname(real)):
            self.reply("553 No such directory.")
            return
        with open(real, "wb") as f:
            self.transfer(arg, sink=f.write)

    def listing(self, arg, names_only):
        _, real = self.resolve("" if arg.startswith("-") else arg)
        if os.path.isdir(real):
            names = sorted(os.listdir(real))
        elif os.path.exists(real):
            real, names = os.path.dirname(real), [os.path.basename(real)]
        else:
            return None
        if names_only:
            return "".join(f"{n}\r\n" for n in names)
        lines = []
        for n in names:
            st = os.stat(os.path.join(real, n))
            mode = "drwxr-xr-x" if os.path.isdir(os.path.join(real, n)) else "-rw-r--r--"
            mtime = time.strftime("%b %d %H:%M", time.gmtime(st.st_mtime))
            lines.append(f"{mode} 1 ftp ftp {st.st_size:>12} {mtime} {n}\r\n")
        return "".join(lines)

    def list_command(self, arg, names_only):
        text = self.listing(arg, names_only)
        if text is None:
            self.reply("550 No such file or directory.")
            return
        self.transfer("the listing", send_bytes=[text.encode("latin-1")])

    def do_LIST(self, arg):
        self.list_command(arg, False)

    def do_NLST(self, arg):
        self.list_command(arg, True)


# ------------------------------------------------------------------ main

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--port", type=int, default=2123)
    ap.add_argument("--pasv", default="50700-50799", help="passive port range LOW-HIGH")
    cfg = ap.parse_args()
    low, high = (int(x) for x in cfg.pasv.split("-"))
    cfg.pasv_ports = range(low, high + 1)
    cfg.root = os.path.realpath(cfg.root)
    cfg.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cfg.ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    cfg.ctx.load_cert_chain(cfg.cert, cfg.key)

    # One IPv6 socket with IPV6_V6ONLY off serves IPv4 clients too (as ::ffff:a.b.c.d).
    ls = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    ls.bind(("::", cfg.port))
    ls.listen(16)
    log("server", f"listening on [::]:{cfg.port}, root {cfg.root}, passive {cfg.pasv}")
    while True:
        sock, _ = ls.accept()
        try:
            session = Session(sock, cfg)
        except OSError as e:  # gone before we looked at it
            log("server", f"dropped a connection: {e}")
            sock.close()
            continue
        threading.Thread(target=session.run, daemon=True).start()


if __name__ == "__main__":
    main()
