#!/usr/bin/env python3
"""The options netavark's setup/teardown read on stdin for one container, as the single-host
benchmarks make them (run.sh, neighbours.sh).

nvopts.py I NETWORK BRIDGE SUBNET_BASE PORT: container I on NETWORK (kernel bridge BRIDGE,
subnet SUBNET_BASE.0.0/16, gateway SUBNET_BASE.0.1) with a static address derived from I; with
PORT=1 also one published port, 127.0.0.1:(20000+I) -> 80/tcp."""
import hashlib, json, sys

i, net, br, base, port = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5] == "1"
ip = f"{base}.{(i + 1) // 250}.{(i + 1) % 250 + 2}"
o = {"container_id": f"{i:064x}", "container_name": f"plxb-c{i}",
     "networks": {net: {"static_ips": [ip], "aliases": [f"alias{i}"], "interface_name": "eth0"}},
     "network_info": {net: {"name": net, "id": hashlib.sha256(net.encode()).hexdigest(), "driver": "bridge",
         "network_interface": br, "subnets": [{"subnet": f"{base}.0.0/16", "gateway": f"{base}.0.1"}],
         "ipv6_enabled": False, "internal": False, "dns_enabled": False,
         "ipam_options": {"driver": "host-local"}}}}
if port:
    o["port_mappings"] = [{"host_ip": "127.0.0.1", "container_port": 80, "host_port": 20000 + i,
                           "range": 1, "protocol": "tcp"}]
print(json.dumps(o))
