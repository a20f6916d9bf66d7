"""Addresses a tenant may put on the host: the admin's CIDR allow-lists (`policies.allowed*`).

A Service's `externalIPs` and a selector-less Service's endpoints are addresses the host's
proxies route to for everyone on the host, so a tenant naming the host API server, another
tenant's pod or a public address would take or intercept traffic that is not its own
(CVE-2020-8554 for external IPs). Only what the admin allowed crosses; the rest is dropped
and the tenant told.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class AllowList:
    def __init__(self, cidrs: Iterable[str]) -> None:
        self.networks: list[Network] = [ipaddress.ip_network(c, strict=False) for c in cidrs]

    def __contains__(self, address: object) -> bool:
        if not isinstance(address, str):
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False  # not an IP (an FQDN endpoint, say): never routed on the host's say-so
        return any(ip.version == net.version and ip in net for net in self.networks)

    def split(self, addresses: Iterable[str]) -> tuple[list[str], list[str]]:
        """(allowed, dropped), each in the given order."""
        allowed: list[str] = []
        dropped: list[str] = []
        for address in addresses:
            (allowed if address in self else dropped).append(address)
        return allowed, dropped
