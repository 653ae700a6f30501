#!/usr/bin/env python3
"""Anonymous, read-only pyftpdlib server for tests/freebsd/lab (runs in the server jail).

Usage: ftp_server.py --addr ADDR --root DIR [--port 21] [--passive 50000-50099]

One server per address family: the lab starts one on the server's IPv6 address and one on
its IPv4 address, so nothing depends on IPv4-mapped addresses (FreeBSD sets
net.inet6.ip6.v6only=1 by default). PORT/EPRT naming another host than the client are
refused by pyftpdlib itself (permit_foreign_addresses = False); the lab checks that
ftp6proxy opened no hole for them before the server ever saw them.
"""
import argparse
import logging
import sys

from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import FTPServer


def port_range(text):
    lo, _, hi = text.partition("-")
    lo, hi = int(lo), int(hi or lo)
    if not 1024 <= lo <= hi <= 65535:
        raise argparse.ArgumentTypeError(f"bad passive port range {text!r}")
    return range(lo, hi + 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--addr", required=True, help="address to listen on")
    ap.add_argument("--port", type=int, default=21)
    ap.add_argument("--root", required=True, help="directory served to anonymous")
    ap.add_argument("--passive", type=port_range, default=port_range("50000-50099"))
    args = ap.parse_args()

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s ftp_server[%(process)d] %(message)s")
    authorizer = DummyAuthorizer()
    authorizer.add_anonymous(args.root, perm="elr")  # list and retrieve only

    class Handler(FTPHandler):
        pass

    Handler.authorizer = authorizer
    Handler.passive_ports = args.passive
    Handler.permit_foreign_addresses = False
    Handler.timeout = 120
    Handler.banner = "ftp6proxy FreeBSD lab"

    server = FTPServer((args.addr, args.port), Handler)
    server.serve_forever()


if __name__ == "__main__":
    main()
