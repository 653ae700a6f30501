#!/usr/bin/env python3
"""TCP listener that records every connection it accepts (the 'third-party host').

Usage: recorder.py LOGFILE PORT [PORT...]
Listens on [::]:PORT dual-stack; appends "peer_addr peer_port local_port" per accepted
connection to LOGFILE (flushed at once) and closes the connection.
"""
import selectors
import socket
import sys


def main():
    log = open(sys.argv[1], "a", buffering=1)
    sel = selectors.DefaultSelector()
    for p in sys.argv[2:]:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.bind(("::", int(p)))
        s.listen(16)
        sel.register(s, selectors.EVENT_READ)
    while True:
        for key, _ in sel.select():
            try:
                conn, peer = key.fileobj.accept()
            except OSError:
                continue
            addr = peer[0]
            if addr.startswith("::ffff:"):
                addr = addr[7:]
            log.write(f"{addr} {peer[1]} {key.fileobj.getsockname()[1]}\n")
            conn.close()


if __name__ == "__main__":
    main()
