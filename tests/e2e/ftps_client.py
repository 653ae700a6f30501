#!/usr/bin/env python3
"""FTPS client helper for ftp6proxy's FTPS/CCC tests, run inside the client namespace.

  ftps_client.py --host H --port P --mode pasv|epsv|port|eprt --cafile PEM --user NAME
                 [--no-ccc] [--prot P|C] [--tls-max 1.2] [--timeout S] ACTION...
      ACTION: list | get:REMOTE:LOCAL

Python's ftplib.FTP_TLS, the way its documentation shows it: login() (which sends
AUTH TLS and does the handshake, verifying the server's certificate against --cafile),
PBSZ 0 + PROT (prot_p() / prot_c()), then ccc() unless --no-ccc (CCC, then
SSLSocket.unwrap(): close_notify in both directions), then the actions, with the
data-connection command forced to --mode as in ftplib_client.py. Debug level 1: every
command and reply on stdout (`*cmd* 'CCC'`, `*resp* '229 ...'`). Exit status 0 only if
every action worked.
"""
import argparse
import ftplib
import os
import ssl
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ftplib_client import ModeFTP, run_actions  # noqa: E402


class ModeFTPS(ModeFTP, ftplib.FTP_TLS):
    """FTP_TLS whose data connections use exactly one of PASV, EPSV, PORT, EPRT."""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, default=21)
    ap.add_argument("--mode", choices=["pasv", "epsv", "port", "eprt"], required=True)
    ap.add_argument("--cafile", required=True)
    ap.add_argument("--user", default="anonymous")
    ap.add_argument("--no-ccc", dest="ccc", action="store_false")
    ap.add_argument("--prot", choices=["P", "C"], default="P")
    ap.add_argument("--tls-max", choices=["1.2", "1.3"], default="1.3")
    ap.add_argument("--timeout", type=float, default=10)
    ap.add_argument("actions", nargs="+")
    args = ap.parse_args()

    ctx = ssl.create_default_context(cafile=args.cafile)
    if args.tls_max == "1.2":
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ftp = ModeFTPS(context=ctx, timeout=args.timeout)
    ftp.mode = args.mode
    ftp.set_debuglevel(1)
    ftp.connect(args.host, args.port)
    ftp.login(args.user, "lab@example.com")
    print(f"TLS {ftp.sock.version()}", flush=True)
    if args.prot == "P":
        ftp.prot_p()  # PBSZ 0, PROT P
    else:
        ftp.voidcmd("PBSZ 0")  # prot_c() sends PROT C alone; RFC 4217 wants PBSZ first
        ftp.prot_c()
    if args.ccc:
        ftp.ccc()
        print("CCC done: the control connection is clear", flush=True)
    ftp.set_pasv(args.mode in ("pasv", "epsv"))
    run_actions(ftp, args.actions, say_got=True)
    ftp.quit()


if __name__ == "__main__":
    main()
