"""The DNS settings the syncer puts on a virtual pod's host copy.

Kubernetes' own ``ClusterFirst`` policy would point the pod at the *host's* DNS with the host
namespace's search path; the virtual cluster's pods must ask the virtual cluster's DNS
server instead and search their *virtual* namespace, so the syncer sets ``dnsPolicy: None``
and spells out what kubelet would have written for ClusterFirst in the virtual cluster.
"""

from __future__ import annotations

from typing import Any

NDOTS = 5  # kubelet's value: names with fewer dots try the search list first


def pod_dns_config(namespace: str, nameserver_ip: str, domain: str = "cluster.local") -> dict[str, Any]:
    """``{"dnsPolicy": "None", "dnsConfig": {...}}`` to merge into a host pod's spec."""
    domain = domain.strip(".")
    return {
        "dnsPolicy": "None",
        "dnsConfig": {
            "nameservers": [nameserver_ip],
            "searches": [f"{namespace}.svc.{domain}", f"svc.{domain}", domain],
            "options": [{"name": "ndots", "value": str(NDOTS)}],
        },
    }
