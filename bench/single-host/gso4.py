#!/usr/bin/env python3
"""Prints a link's IPv4 GSO limit (IFLA_GSO_IPV4_MAX_SIZE), which iproute2 before 6.3 does
not show. Run inside the link's namespace: gso4.py IFNAME. Prints "n/a" if the kernel does
not report it (before 6.3)."""
import socket
import struct
import sys

IFLA_GSO_IPV4_MAX_SIZE = 63
RTM_GETLINK, NLM_F_REQUEST = 18, 1

index = socket.if_nametoindex(sys.argv[1])
body = struct.pack("BxHiII", socket.AF_UNSPEC, 0, index, 0, 0)
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
s.send(struct.pack("IHHII", 16 + len(body), RTM_GETLINK, NLM_F_REQUEST, 1, 0) + body)
msg = s.recv(65536)
off, end = 16 + 16, struct.unpack_from("I", msg)[0]
value = "n/a"
while off + 4 <= end:
    alen, atype = struct.unpack_from("HH", msg, off)
    if alen < 4:
        break
    if atype & 0x3FFF == IFLA_GSO_IPV4_MAX_SIZE:
        value = str(struct.unpack_from("I", msg, off + 4)[0])
    off += (alen + 3) & ~3
print(value)
