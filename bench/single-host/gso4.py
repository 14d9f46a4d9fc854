#!/usr/bin/env python3
"""A link's IPv4 GSO limit (IFLA_GSO_IPV4_MAX_SIZE), which iproute2 before 6.3 neither shows
nor sets. Run inside the link's namespace.

gso4.py IFNAME: prints the limit, or "n/a" if the kernel does not report it (before 6.3).
gso4.py IFNAME SIZE: first sets the link's IPv4 GSO and GRO limits (IFLA_GSO_IPV4_MAX_SIZE and
IFLA_GRO_IPV4_MAX_SIZE) to SIZE, as Plexus does on both ends of its veth pairs, then prints the
limit read back; exits 1 if the kernel refuses."""
import os
import socket
import struct
import sys

IFLA_GSO_IPV4_MAX_SIZE, IFLA_GRO_IPV4_MAX_SIZE = 63, 64
RTM_NEWLINK, RTM_GETLINK, NLMSG_ERROR = 16, 18, 2
NLM_F_REQUEST, NLM_F_ACK = 1, 4

index = socket.if_nametoindex(sys.argv[1])
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)


def request(kind, flags, attrs=b""):
    body = struct.pack("BxHiII", socket.AF_UNSPEC, 0, index, 0, 0) + attrs
    s.send(struct.pack("IHHII", 16 + len(body), kind, flags, 1, 0) + body)
    return s.recv(65536)


if len(sys.argv) > 2:
    size = int(sys.argv[2])
    attrs = b"".join(struct.pack("HHI", 8, t, size) for t in (IFLA_GSO_IPV4_MAX_SIZE, IFLA_GRO_IPV4_MAX_SIZE))
    ack = request(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, attrs)
    if struct.unpack_from("H", ack, 4)[0] == NLMSG_ERROR:
        err = struct.unpack_from("i", ack, 16)[0]
        if err:
            sys.exit(f"gso4.py: setting {sys.argv[1]}'s IPv4 GSO/GRO limit to {size}: {os.strerror(-err)}")

msg = request(RTM_GETLINK, NLM_F_REQUEST)
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
