#!/usr/bin/env python3
"""Rewrites an Ethernet pcap (link type 1) as raw IP (RAW, 101) or BSD loopback: NULL (0)
or LOOP (108).

Usage: relink.py raw|null|loop IN.pcap OUT.pcap

Each frame loses its 14-byte Ethernet header; for RAW that is all, for NULL and LOOP it
gains the 4-byte address family that a BSD loopback interface puts in front of the IP
packet: for NULL in the capturing host's byte order (little-endian here, as on amd64
FreeBSD), for LOOP (OpenBSD) in network byte order. AF_INET is 2; AF_INET6 is 28 for NULL (FreeBSD's value) and 24 for LOOP
(OpenBSD's). Timestamps, the snap length and the timestamp precision are kept. Only
IPv4/IPv6 frames are written. Standard library only; the file header must be a classic
little-endian pcap (what tcpdump writes here).
"""
import struct
import sys

ETHERTYPE = {0x0800: 4, 0x86DD: 6}


def main():
    kind, src, dst = sys.argv[1:4]
    family = {"null": {4: 2, 6: 28}, "loop": {4: 2, 6: 24}}.get(kind)
    pack = "<I" if kind == "null" else ">I"
    link = {"raw": 101, "null": 0, "loop": 108}[kind]
    data = open(src, "rb").read()
    magic, major, minor, zone, sigfigs, snaplen, network = struct.unpack("<IHHiIII", data[:24])
    if magic not in (0xA1B2C3D4, 0xA1B23C4D) or network != 1:
        sys.exit(f"relink.py: {src}: not a little-endian Ethernet pcap")
    out = [struct.pack("<IHHiIII", magic, major, minor, zone, sigfigs, snaplen, link)]
    at = 24
    while at + 16 <= len(data):
        sec, frac, caplen, origlen = struct.unpack("<IIII", data[at:at + 16])
        frame = data[at + 16:at + 16 + caplen]
        at += 16 + caplen
        (ethertype,) = struct.unpack(">H", frame[12:14])
        if ethertype not in ETHERTYPE:
            continue
        head = struct.pack(pack, family[ETHERTYPE[ethertype]]) if family else b""
        packet = head + frame[14:]
        out.append(struct.pack("<IIII", sec, frac, len(packet), origlen - 14 + len(head)))
        out.append(packet)
    open(dst, "wb").write(b"".join(out))


if __name__ == "__main__":
    main()
