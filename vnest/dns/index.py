"""The DNS view of one virtual cluster, kept up to date by the syncer's informer handlers.

The records follow the Kubernetes DNS specification (kube-dns / CoreDNS's kubernetes plugin):
- ``<svc>.<ns>.svc.<domain>``: A/AAAA of the ClusterIPs; for a headless service, one record
  per ready endpoint address; for an ExternalName service, a CNAME to ``spec.externalName``;
- ``<host>.<svc>.<ns>.svc.<domain>`` for each ready endpoint of a headless service, ``<host>``
  being the endpoint's hostname (StatefulSet pods) or its dashed IP (what SRV targets name);
- ``_<port>._<proto>.<svc>.<ns>.svc.<domain>`` SRV for named ports;
- ``<a-b-c-d>.<ns>.pod.<domain>`` A/AAAA for pod IPs; by default only for pods that exist in
  that namespace (CoreDNS's ``pods verified``), so one virtual cluster never answers a pod
  name of another; ``pods="insecure"`` gives kube-dns's answer-any-well-formed-name mode;
- PTR for ClusterIPs, ready headless endpoints and pod IPs (the service's name wins over the
  pod's when both claim an IP, as in CoreDNS which only knows the former);
- ``dns-version.<domain>`` TXT "1.1.0" (the spec's schema version) and the apex SOA.

Existence is proper DNS: a name exists if it has records, is a service or pod name (even
with no address yet: a headless service with no ready endpoint is NODATA, CoreDNS's default),
or is an ancestor of one (an empty non-terminal such as ``<ns>.svc.<domain>`` or
``_tcp.<svc>...``). Everything else under the cluster domain is NXDOMAIN.

Every change is folded into lookup tables at event time so that a query is a few dict
lookups: each object ("owner") contributes rdata to (name, type) pairs, and the merged RRsets
are rebuilt only for the pairs an event touched.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.CNAME
import dns.rdtypes.ANY.PTR
import dns.rdtypes.ANY.SOA
import dns.rdtypes.ANY.TXT
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA
import dns.rdtypes.IN.SRV
import dns.reversename
import dns.rrset

from vnest import log

_log = log.get("dns")

Obj = dict[str, Any]
Key = tuple[bytes, ...]  # a name's labels, lowercased, root label included
Owner = tuple[str, str, str]  # (kind, namespace, name)
Rdatas = tuple[dns.rdata.Rdata, ...]
Records = dict[tuple[Key, int], Rdatas]  # what one owner contributes, by (name, type)

TTL = 30  # kube-dns's default for service records
NEGATIVE_TTL = 5  # SOA minimum: short, so a name created right after a miss is not hidden long
SCHEMA_VERSION = "1.1.0"
MAX_CNAME_HOPS = 8
SERVICE_NAME_LABEL = "kubernetes.io/service-name"

IN = dns.rdataclass.IN
A, AAAA, CNAME, PTR, SRV, SOA, TXT, ANY = (
    dns.rdatatype.A,
    dns.rdatatype.AAAA,
    dns.rdatatype.CNAME,
    dns.rdatatype.PTR,
    dns.rdatatype.SRV,
    dns.rdatatype.SOA,
    dns.rdatatype.TXT,
    dns.rdatatype.ANY,
)
EXISTS = dns.rdatatype.NONE  # a contribution that only makes a name exist
_STATIC: Owner = ("static", "", "")


def key_of(name: dns.name.Name) -> Key:
    return tuple(label.lower() for label in name.labels)


@dataclass
class Answer:
    """What the index says about one question.

    ``in_cluster`` is False when the index is not authoritative for the name (outside the
    cluster domain and not a reverse name it knows): the server forwards those. ``chase`` is
    set when the answer ends in a CNAME to a name outside the cluster domain, which the
    server resolves upstream as a recursive resolver would.
    """

    rcode: dns.rcode.Rcode = dns.rcode.NOERROR
    answer: list[dns.rrset.RRset] = field(default_factory=list)
    authority: list[dns.rrset.RRset] = field(default_factory=list)
    additional: list[dns.rrset.RRset] = field(default_factory=list)
    in_cluster: bool = True
    chase: dns.name.Name | None = None


def dashed(ip: str) -> str:
    """``10.0.0.1`` → ``10-0-0-1``, ``fd00::1`` → ``fd00--1`` (the form kube-dns names use)."""
    return ip.replace(".", "-").replace(":", "-")


def _undashed(label: str) -> str | None:
    """The IP a dashed label names, or None (IPv4 first: ``1-2-3-4`` is not an IPv6 address)."""
    for candidate in (label.replace("-", "."), label.replace("-", ":")):
        try:
            return str(ipaddress.ip_address(candidate))
        except ValueError:
            continue
    return None


def _addr_rdata(ip: str) -> dns.rdata.Rdata | None:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if addr.version == 4:
        return dns.rdtypes.IN.A.A(IN, A, str(addr))
    return dns.rdtypes.IN.AAAA.AAAA(IN, AAAA, str(addr))


def _is_ready(endpoint: Obj) -> bool:
    ready = (endpoint.get("conditions") or {}).get("ready")
    return ready is None or bool(ready)  # absent means ready (EndpointSlice API)


class DnsIndex:
    """Lookup tables for one virtual cluster, fed by ``on_service``/``on_endpointslice``/``on_pod``.

    Handlers and lookups must run on the same thread (the syncer's event loop).
    """

    def __init__(
        self, cluster_domain: str = "cluster.local", pods: Literal["verified", "insecure"] = "verified"
    ) -> None:
        self.domain = dns.name.from_text(cluster_domain.strip(".") + ".")
        self.pods_mode = pods
        self.generation = 0  # bumped on every change: the server's response cache keys on it
        self._zone: Key = key_of(self.domain)
        self._zlen = len(self._zone)
        self._svc_zone: Key = (b"svc", *self._zone)
        self._pod_zone: Key = (b"pod", *self._zone)
        self._services: dict[tuple[str, str], Obj] = {}
        self._slices: dict[tuple[str, str], Obj] = {}
        self._slices_of: dict[tuple[str, str], set[str]] = {}  # (ns, svc) → slice names
        # owner → {(key, rdtype): rdatas}: what each object put in, to take it out again
        self._owned: dict[Owner, Records] = {}
        # key → rdtype → owner → rdatas: the contributions, merged into _rrsets
        self._contrib: dict[Key, dict[int, dict[Owner, Rdatas]]] = {}
        self._rrsets: dict[Key, dict[int, dns.rrset.RRset]] = {}
        self._names: dict[Key, dns.name.Name] = {}
        self._below: dict[Key, int] = {}  # empty non-terminals: how many existing names lie below
        serial = int(time.time()) & 0xFFFFFFFF
        self._soa = dns.rrset.from_rdata(
            self.domain,
            NEGATIVE_TTL,
            dns.rdtypes.ANY.SOA.SOA(
                IN,
                SOA,
                dns.name.from_text("ns.dns", self.domain),
                dns.name.from_text("hostmaster", self.domain),
                serial,
                7200,
                1800,
                86400,
                NEGATIVE_TTL,
            ),
        )
        static: Records = {
            (self._zone, SOA): tuple(self._soa),
            ((b"dns-version", *self._zone), TXT): (dns.rdtypes.ANY.TXT.TXT(IN, TXT, [SCHEMA_VERSION]),),
            # these two always exist (NODATA), as in CoreDNS, even in an empty cluster
            (self._svc_zone, EXISTS): (),
            (self._pod_zone, EXISTS): (),
        }
        self._set_owner(_STATIC, static)

    # ---- informer handlers -------------------------------------------------------------

    def on_service(self, old: Obj | None, new: Obj | None) -> None:
        obj = new or old
        if not obj:
            return
        ns, name = obj["metadata"].get("namespace", ""), obj["metadata"]["name"]
        if new is None:
            self._services.pop((ns, name), None)
        else:
            self._services[(ns, name)] = new
        self._rebuild_service(ns, name)

    def on_endpointslice(self, old: Obj | None, new: Obj | None) -> None:
        obj = new or old
        if not obj:
            return
        ns, name = obj["metadata"].get("namespace", ""), obj["metadata"]["name"]
        touched = {svc for o in (old, new) if o and (svc := _service_of(o))}
        for svc in touched:
            self._slices_of.get((ns, svc), set()).discard(name)
        if new is None:
            self._slices.pop((ns, name), None)
        else:
            self._slices[(ns, name)] = new
            if svc := _service_of(new):
                self._slices_of.setdefault((ns, svc), set()).add(name)
        for svc in touched:
            if not self._slices_of.get((ns, svc)):
                self._slices_of.pop((ns, svc), None)
            self._rebuild_service(ns, svc)

    def on_pod(self, old: Obj | None, new: Obj | None) -> None:
        obj = new or old
        if not obj:
            return
        ns, name = obj["metadata"].get("namespace", ""), obj["metadata"]["name"]
        owner: Owner = ("pod", ns, name)
        try:
            records = self._pod_records(ns, new) if new is not None else {}
        except Exception:  # a strange object must not leave the index half-updated
            _log.warning("dns: skipping unusable pod", pod=f"{ns}/{name}", exc_info=True)
            records = {}
        self._set_owner(owner, records)

    # ---- queries -------------------------------------------------------------------------

    def in_domain(self, name: dns.name.Name) -> bool:
        return self.key_in_domain(key_of(name))

    def key_in_domain(self, key: Key) -> bool:
        return key[-self._zlen :] == self._zone

    def exists(self, name: dns.name.Name) -> bool:
        key = key_of(name)
        return key in self._contrib or key in self._below

    @property
    def soa(self) -> dns.rrset.RRset:
        """The apex SOA, which negative answers carry in their authority section."""
        return self._soa

    def lookup(self, name: dns.name.Name, rdtype: int) -> Answer:
        return self.lookup_key(key_of(name), rdtype)

    def lookup_key(self, key: Key, rdtype: int) -> Answer:
        """``lookup`` for a name given as its lowercased labels, root included."""
        if key[-self._zlen :] != self._zone:
            if key in self._rrsets:  # a reverse name of one of our IPs
                return self._answer_at(key, rdtype)
            return Answer(in_cluster=False)
        return self._answer_at(key, rdtype)

    def _answer_at(self, key: Key, rdtype: int) -> Answer:
        out = Answer()
        for _ in range(MAX_CNAME_HOPS):
            rrsets = self._rrsets.get(key)
            if rrsets is None:
                if key in self._contrib or key in self._below:
                    out.authority.append(self._soa)  # NODATA: the name exists, no records
                    return out
                synthesized = self._synthesized(key)
                if synthesized is None:
                    out.rcode = dns.rcode.NXDOMAIN  # after a CNAME too (RFC 6604)
                    out.authority.append(self._soa)
                    return out
                rrsets = synthesized
            if rdtype == ANY:
                out.answer.extend(rrsets.values())
                return out
            rrset = rrsets.get(rdtype)
            if rrset is not None:
                out.answer.append(rrset)
                if rdtype == SRV:
                    self._add_targets(rrset, out)
                return out
            cname = rrsets.get(CNAME)
            if cname is None:
                out.authority.append(self._soa)
                return out
            out.answer.append(cname)
            target = cname[0].target
            tkey = key_of(target)
            if tkey[-self._zlen :] != self._zone:
                out.chase = target
                return out
            key = tkey
        out.rcode = dns.rcode.SERVFAIL  # a CNAME loop between ExternalName services
        out.answer.clear()
        return out

    def _synthesized(self, key: Key) -> dict[int, dns.rrset.RRset] | None:
        """kube-dns's ``pods insecure``: ``<dashed-ip>.<ns>.pod.<domain>`` names its own IP.

        None: no such name; an empty dict: the name exists without records.
        """
        if self.pods_mode != "insecure" or key[-self._zlen - 1 :] != self._pod_zone:
            return None
        depth = len(key) - self._zlen - 1
        if depth == 1:
            return {}  # any namespace exists under pod.<domain>
        if depth != 2:
            return None
        ip = _undashed(key[0].decode("ascii", "replace"))
        rdata = _addr_rdata(ip) if ip else None
        if rdata is None:
            return None
        return {rdata.rdtype: dns.rrset.from_rdata(dns.name.Name(key), TTL, rdata)}

    def _add_targets(self, srv: dns.rrset.RRset, out: Answer) -> None:
        seen: set[Key] = set()
        for rdata in srv:
            tkey = key_of(rdata.target)
            if tkey in seen:
                continue
            seen.add(tkey)
            for rdtype in (A, AAAA):
                rrset = self._rrsets.get(tkey, {}).get(rdtype)
                if rrset is not None:
                    out.additional.append(rrset)

    # ---- building records ----------------------------------------------------------------

    def _name(self, *labels: str) -> Key:
        return tuple(label.lower().encode("ascii") for label in labels) + self._zone

    def _rebuild_service(self, ns: str, name: str) -> None:
        owner: Owner = ("svc", ns, name)
        svc = self._services.get((ns, name))
        try:
            records = self._service_records(ns, name, svc) if svc is not None else {}
        except Exception:
            _log.warning("dns: skipping unusable service", service=f"{ns}/{name}", exc_info=True)
            records = {}
        self._set_owner(owner, records)

    def _service_records(self, ns: str, name: str, svc: Obj) -> Records:
        spec = svc.get("spec") or {}
        base = self._name(name, ns, "svc")
        base_name = dns.name.Name(base)
        out: dict[tuple[Key, int], list[dns.rdata.Rdata]] = {(base, EXISTS): []}

        def add(key: Key, rdata: dns.rdata.Rdata) -> None:
            out.setdefault((key, rdata.rdtype), []).append(rdata)

        if spec.get("type") == "ExternalName":
            if not spec.get("externalName"):
                return _frozen(out)
            target = dns.name.from_text(spec["externalName"], dns.name.root)
            add(base, dns.rdtypes.ANY.CNAME.CNAME(IN, CNAME, target))
            for port in spec.get("ports") or []:
                if port.get("name"):
                    add(_srv_key(port, base), _srv(0, 100, int(port["port"]), target))
            return _frozen(out)

        ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
        if ips and ips[0] != "None":
            for ip in ips:
                rdata = _addr_rdata(ip)
                if rdata is None:
                    continue
                add(base, rdata)
                add(_reverse(ip), dns.rdtypes.ANY.PTR.PTR(IN, PTR, base_name))
            for port in spec.get("ports") or []:
                if port.get("name"):
                    add(_srv_key(port, base), _srv(0, 100, int(port["port"]), base_name))
            return _frozen(out)

        # headless: the ready endpoints of every slice of this service
        srv: dict[Key, list[tuple[int, dns.name.Name]]] = {}
        for slice_name in sorted(self._slices_of.get((ns, name), ())):
            eps = self._slices.get((ns, slice_name)) or {}
            if eps.get("addressType") not in ("IPv4", "IPv6"):
                continue  # FQDN slices are deprecated and name no IP
            ports = [p for p in eps.get("ports") or [] if p.get("name") and p.get("port")]
            for endpoint in eps.get("endpoints") or []:
                if not _is_ready(endpoint):
                    continue
                for ip in endpoint.get("addresses") or []:
                    rdata = _addr_rdata(ip)
                    if rdata is None:
                        continue
                    host = endpoint.get("hostname") or dashed(str(ipaddress.ip_address(ip)))
                    host_key = (host.lower().encode("ascii"), *base)
                    host_name = dns.name.Name(host_key)
                    add(base, rdata)
                    add(host_key, rdata)
                    add(_reverse(ip), dns.rdtypes.ANY.PTR.PTR(IN, PTR, host_name))
                    for port in ports:
                        srv.setdefault(_srv_key(port, base), []).append((int(port["port"]), host_name))
        for key, targets in srv.items():
            unique = sorted(set(targets))
            weight = max(1, 100 // len(unique))  # an equal share each, as CoreDNS does
            out[(key, SRV)] = [_srv(0, weight, port, target) for port, target in unique]
        return _frozen(out)

    def _pod_records(self, ns: str, pod: Obj) -> Records:
        status = pod.get("status") or {}
        if status.get("phase") in ("Succeeded", "Failed"):
            return {}  # its IP is free for another pod
        ips = [p.get("ip") for p in status.get("podIPs") or []] or [status.get("podIP")]
        out: dict[tuple[Key, int], list[dns.rdata.Rdata]] = {}
        host_network = bool((pod.get("spec") or {}).get("hostNetwork"))
        for ip in ips:
            rdata = _addr_rdata(ip) if ip else None
            if rdata is None:
                continue
            key = self._name(dashed(str(ipaddress.ip_address(ip))), ns, "pod")
            if self.pods_mode == "verified":
                out.setdefault((key, rdata.rdtype), []).append(rdata)
            if not host_network:  # the node's IP is not the pod's to name
                ptr = dns.rdtypes.ANY.PTR.PTR(IN, PTR, dns.name.Name(key))
                out.setdefault((_reverse(ip), PTR), []).append(ptr)
        return _frozen(out)

    # ---- the merge -----------------------------------------------------------------------

    def _set_owner(self, owner: Owner, records: Records) -> None:
        old = self._owned.get(owner, {})
        if old == records:
            return
        self.generation += 1
        if records:
            self._owned[owner] = records
        else:
            self._owned.pop(owner, None)
        for pair in old.keys() - records.keys():
            self._put(pair, owner, None)
        for pair, rdatas in records.items():
            if old.get(pair) != rdatas:
                self._put(pair, owner, rdatas)

    def _put(self, pair: tuple[Key, int], owner: Owner, rdatas: Rdatas | None) -> None:
        key, rdtype = pair
        by_type = self._contrib.get(key)
        if rdatas is None:
            if by_type is None:
                return
            owners = by_type.get(rdtype, {})
            owners.pop(owner, None)
            if not owners:
                by_type.pop(rdtype, None)
            if not by_type:
                del self._contrib[key]
                self._names.pop(key, None)
                self._count_ancestors(key, -1)
        else:
            if by_type is None:
                by_type = self._contrib[key] = {}
                self._names[key] = dns.name.Name(key)
                self._count_ancestors(key, +1)
            by_type.setdefault(rdtype, {})[owner] = rdatas
        if rdtype != EXISTS:
            self._materialize(key, rdtype)

    def _materialize(self, key: Key, rdtype: int) -> None:
        owners = (self._contrib.get(key) or {}).get(rdtype) or {}
        if rdtype == PTR and any(o[0] == "svc" for o in owners):
            owners = {o: r for o, r in owners.items() if o[0] == "svc"}
        rdatas = [r for _, rs in sorted(owners.items()) for r in rs]
        rrsets = self._rrsets.get(key)
        if not rdatas:
            if rrsets is not None:
                rrsets.pop(rdtype, None)
                if not rrsets:
                    del self._rrsets[key]
            return
        ttl = NEGATIVE_TTL if rdtype == SOA else TTL
        rrset = dns.rrset.from_rdata_list(self._names[key], ttl, rdatas)  # duplicates merge here
        self._rrsets.setdefault(key, {})[rdtype] = rrset

    def _count_ancestors(self, key: Key, delta: int) -> None:
        if key[-self._zlen :] != self._zone:
            return  # reverse names: only the exact names we know are ours
        for i in range(1, len(key) - self._zlen + 1):
            parent = key[i:]
            count = self._below.get(parent, 0) + delta
            if count > 0:
                self._below[parent] = count
            else:
                self._below.pop(parent, None)

    # ---- introspection for tests and debugging -------------------------------------------

    def names(self) -> Iterable[dns.name.Name]:
        return list(self._names.values())


def _service_of(eps: Obj) -> str | None:
    return ((eps.get("metadata") or {}).get("labels") or {}).get(SERVICE_NAME_LABEL)


def _srv_key(port: Obj, base: Key) -> Key:
    proto = (port.get("protocol") or "TCP").lower()
    return (f"_{port['name']}".lower().encode("ascii"), f"_{proto}".encode(), *base)


def _srv(priority: int, weight: int, port: int, target: dns.name.Name) -> dns.rdata.Rdata:
    return dns.rdtypes.IN.SRV.SRV(IN, SRV, priority, weight, port, target)


def _reverse(ip: str) -> Key:
    return key_of(dns.reversename.from_address(ip))


def _frozen(out: dict[tuple[Key, int], list[dns.rdata.Rdata]]) -> Records:
    for key, _ in out:
        dns.name.Name(key)  # raises here, inside the caller's guard, for a label or name too long
    return {pair: tuple(rdatas) for pair, rdatas in out.items()}
