"""The embedded DNS server of a virtual cluster: answers its names from the syncer's caches.

- ``DnsIndex`` (index.py): lookup tables fed by informer handlers (services, EndpointSlices, pods);
- ``DnsServer`` (server.py): UDP + TCP, forwards other names to the host DNS or upstreams;
- ``DnsMetrics`` (metrics.py): counters and a latency histogram, in Prometheus text format;
- ``pod_dns_config`` (podconfig.py): the dnsPolicy/dnsConfig for synced pods.
"""

from vnest.dns.index import Answer, DnsIndex
from vnest.dns.metrics import DnsMetrics
from vnest.dns.podconfig import pod_dns_config
from vnest.dns.server import DnsServer

__all__ = ["Answer", "DnsIndex", "DnsMetrics", "DnsServer", "pod_dns_config"]
