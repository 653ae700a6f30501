#!/usr/bin/env python3
"""pyftpdlib server for the ftp6proxy lab: anonymous read/write, one dual-stack socket.

Usage: pyftpd_server.py ROOT [PORT]   (default port 2121, passive ports 50200-50300)
"""
import logging
import socket
import sys

from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import FTPServer


def main():
    root = sys.argv[1]
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 2121
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    auth = DummyAuthorizer()
    auth.add_anonymous(root, perm="elradfmwMT")

    class Handler(FTPHandler):
        authorizer = auth
        passive_ports = range(50200, 50301)
        permit_foreign_addresses = False
        timeout = 60

    # One IPv6 socket with IPV6_V6ONLY off serves IPv4 clients too (as ::ffff:a.b.c.d);
    # pyftpdlib turns mapped addresses back into IPv4 in its 227 replies.
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(("::", port))
    sock.listen(16)
    server = FTPServer(sock, Handler)
    server.serve_forever()


if __name__ == "__main__":
    main()
