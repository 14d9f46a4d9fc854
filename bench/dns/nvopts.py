#!/usr/bin/env python3
"""The options netavark 1.4's setup/teardown read on stdin for container I of the DNS benchmark:
container plxb-aI on a bridge network with dns_enabled (so netavark starts aardvark-dns on the
gateway), a static address derived from I.

nvopts.py I NETWORK BRIDGE SUBNET_BASE: subnet SUBNET_BASE.0/24, gateway SUBNET_BASE.1,
container I at SUBNET_BASE.(10+I)."""
import hashlib, json, sys

i, net, br, base = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
print(json.dumps({
    "container_id": f"{i:064x}",
    "container_name": f"plxb-a{i}",
    "networks": {net: {"static_ips": [f"{base}.{10 + i}"], "aliases": [], "interface_name": "eth0"}},
    "network_info": {net: {
        "name": net, "id": hashlib.sha256(net.encode()).hexdigest(), "driver": "bridge",
        "network_interface": br,
        "subnets": [{"subnet": f"{base}.0/24", "gateway": f"{base}.1"}],
        "ipv6_enabled": False, "internal": False, "dns_enabled": True,
        "ipam_options": {"driver": "host-local"}}},
}))
