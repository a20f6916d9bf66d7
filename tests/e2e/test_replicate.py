"""networking.replicateServices against the real local host: both directions, ownership, clean-up."""

from __future__ import annotations

import json

import dns.message
import dns.query
import yaml

from vnest import naming
from vnest.procs import wait_until

from .vcluster import VirtualCluster

HOST = "vnest-host"
NAME = "rep"  # two virtual clusters of this one name, in two host namespaces
NS_A, NS_B = "rep-a", "rep-b"
SOURCE_NS = "rep-db"  # host namespace of the host services replicated in
EXPOSED_NS = "rep-exposed"  # host namespace the virtual services are exposed in
REPLICATED = "vnest.io/replicated"
SLICE_MANAGER = "endpointslice.kubernetes.io/managed-by"


class Cluster(VirtualCluster):
    def __init__(self, env, namespace: str) -> None:
        super().__init__(env, NAME, namespace)

    def dns_port(self) -> int:
        return json.loads((self.state() / "data" / "status.json").read_text())["dnsPort"]


def _host(env, *args: str) -> dict:
    return json.loads(env.kubectl("--context", HOST, *args, "-o", "json").stdout)


def _host_get(env, kind: str, name: str, namespace: str) -> dict | None:
    out = env.kubectl(
        "--context", HOST, "get", kind, name, "-n", namespace, "-o", "json", "--ignore-not-found"
    ).stdout
    return json.loads(out) if out.strip() else None


def _slice_ips(slices: list[dict]) -> set[str]:
    return {a for s in slices for e in s.get("endpoints") or [] for a in e["addresses"]}


def _host_pod_ips(env, namespace: str, selector: str, count: int) -> set[str] | None:
    pods = _host(env, "get", "pods", "-n", namespace, "-l", selector)["items"]
    ips = {p["status"].get("podIP") for p in pods if p["status"].get("phase") == "Running"}
    ips.discard(None)
    return ips if len(ips) == count else None


def _values(env, file: str, mappings: dict) -> str:
    path = env.root / file
    path.write_text(yaml.safe_dump({"networking": {"replicateServices": mappings}}))
    return str(path)


def test_services_replicate_both_ways_and_go_with_their_mappings(host_env):
    env = host_env
    # Host side: a Deployment behind a ClusterIP and a headless Service, KWOK running its pods.
    env.kubectl("--context", HOST, "create", "namespace", SOURCE_NS)
    env.kubectl("--context", HOST, "create", "namespace", EXPOSED_NS)
    env.kubectl(
        "--context", HOST, "create", "deployment", "db", "-n", SOURCE_NS, "--image=postgres", "--replicas=2"
    )
    env.kubectl("--context", HOST, "expose", "deployment", "db", "-n", SOURCE_NS, "--port=5432")
    env.kubectl(
        "--context", HOST, "expose", "deployment", "db", "-n", SOURCE_NS, "--name=db-hl", "--port=5432",
        "--cluster-ip=None",
    )  # fmt: skip
    # A host Service nobody gave vnest, at a name a mapping asks for.
    env.kubectl("--context", HOST, "create", "service", "clusterip", "taken", "-n", EXPOSED_NS, "--tcp=81:81")
    taken = _host_get(env, "service", "taken", EXPOSED_NS)
    assert taken is not None
    a, b = Cluster(env, NS_A), Cluster(env, NS_B)
    mappings_a = {
        "fromHost": [
            {"from": f"{SOURCE_NS}/db", "to": "data/db"},
            {"from": f"{SOURCE_NS}/db-hl", "to": "data/db-hl"},
        ],
        "toHost": [
            {"from": "shop/web", "to": f"{EXPOSED_NS}/web-a"},
            {"from": "shop/web", "to": f"{EXPOSED_NS}/taken"},
        ],
    }
    try:
        env.vnest("create", NAME, "-n", NS_A, "--no-connect", "-f", _values(env, "a.yaml", mappings_a))
        env.vnest(
            "create", NAME, "-n", NS_B, "--no-connect",
            "-f", _values(env, "b.yaml", {"toHost": [{"from": "shop/web", "to": f"{EXPOSED_NS}/web-b"}]}),
        )  # fmt: skip
        for vc in (a, b):
            vc.kubectl("create", "namespace", "shop")
        a.kubectl("create", "deployment", "web", "-n", "shop", "--image=nginx", "--replicas=2")
        for vc in (a, b):
            vc.kubectl("create", "service", "clusterip", "web", "-n", "shop", "--tcp=80:8080")

        # ---- fromHost: the host Service in the virtual cluster, with the host's ClusterIP and endpoints
        host_db = _host_get(env, "service", "db", SOURCE_NS)
        assert host_db is not None
        db_ips = wait_until(lambda: _host_pod_ips(env, SOURCE_NS, "app=db", 2), 60, "the host db pods")
        vdb = wait_until(lambda: a.get("service", "db", "data"), 60, "the replicated virtual Service")
        assert vdb["spec"]["clusterIP"] == host_db["spec"]["clusterIP"]
        assert "selector" not in vdb["spec"]
        assert [(p["port"], p["protocol"]) for p in vdb["spec"]["ports"]] == [(5432, "TCP")]
        labels = vdb["metadata"]["labels"]
        assert labels[naming.LABEL_MANAGED_BY] == NAME and labels[REPLICATED] == "from-host"

        def virtual_slices(service: str) -> list[dict]:
            return a.json(
                "get", "endpointslices", "-n", "data", "-l", f"kubernetes.io/service-name={service}"
            )["items"]

        wait_until(lambda: _slice_ips(virtual_slices("db")) == db_ips, 60, "the virtual slices of db")
        assert {s["metadata"]["labels"][SLICE_MANAGER] for s in virtual_slices("db")} == {
            "replicated-services.vnest.io"
        }
        vhl = wait_until(lambda: a.get("service", "db-hl", "data"), 60, "the replicated headless Service")
        assert vhl["spec"]["clusterIP"] == "None"
        wait_until(lambda: _slice_ips(virtual_slices("db-hl")) == db_ips, 60, "the virtual slices of db-hl")
        # The virtual cluster's DNS answers the host ClusterIP, and the host pods' IPs for the headless one.
        port = a.dns_port()

        def resolve(qname: str) -> set[str]:
            reply = dns.query.udp(dns.message.make_query(qname, "A"), "127.0.0.1", port=port, timeout=2)
            return {r.address for rrset in reply.answer for r in rrset}

        assert resolve("db.data.svc.cluster.local") == {host_db["spec"]["clusterIP"]}
        wait_until(lambda: resolve("db-hl.data.svc.cluster.local") == db_ips, 30, "db-hl to resolve")
        # Kept up to date: a third host pod shows up in the virtual slices.
        env.kubectl("--context", HOST, "scale", "deployment", "db", "-n", SOURCE_NS, "--replicas=3")
        db_ips = wait_until(lambda: _host_pod_ips(env, SOURCE_NS, "app=db", 3), 60, "the third db pod")
        wait_until(lambda: _slice_ips(virtual_slices("db")) == db_ips, 60, "the virtual slices to follow")
        # Never synced back to the host as a tenant's own Service would be.
        assert _host_get(env, "service", naming.host_name("db", "data", NAME), NS_A) is None

        # ---- toHost: the virtual Service in a host namespace, with the synced pods as endpoints
        web_ips = wait_until(
            lambda: _host_pod_ips(env, NS_A, f"{naming.LABEL_MANAGED_BY}={NAME},app=web", 2),
            60,
            "web's host pods",
        )
        hweb = wait_until(
            lambda: _host_get(env, "service", "web-a", EXPOSED_NS), 60, "the exposed host Service"
        )
        assert "selector" not in hweb["spec"]
        assert [(p["port"], p["targetPort"]) for p in hweb["spec"]["ports"]] == [(80, 8080)]
        hlabels = hweb["metadata"]["labels"]
        assert hlabels[naming.LABEL_MANAGED_BY] == NAME
        assert hlabels["vnest.io/vcluster-namespace"] == NS_A
        assert hlabels[REPLICATED] == "to-host"
        assert hweb["metadata"]["ownerReferences"][0]["name"] == naming.to_host_cluster_role(NAME, NS_A)

        def host_slices(service: str) -> list[dict]:
            return _host(
                env, "get", "endpointslices", "-n", EXPOSED_NS, "-l", f"kubernetes.io/service-name={service}"
            )["items"]

        wait_until(lambda: _slice_ips(host_slices("web-a")) == web_ips, 60, "the exposed Service's endpoints")
        # The other cluster of the same name exposes its own.
        wait_until(lambda: _host_get(env, "service", "web-b", EXPOSED_NS), 60, "cluster B's exposed Service")

        # ---- an object vnest was not given is left alone, and the tenant is told
        events = wait_until(
            lambda: [
                e
                for e in a.json("get", "events", "-n", "shop", "--field-selector", "reason=SyncError")[
                    "items"
                ]
                if f"{EXPOSED_NS}/taken" in e["message"]
            ],
            60,
            "a SyncError event about the taken name",
        )
        assert events[0]["involvedObject"]["name"] == "web"
        now = _host_get(env, "service", "taken", EXPOSED_NS)
        assert now is not None
        assert now["metadata"]["resourceVersion"] == taken["metadata"]["resourceVersion"]
        assert not [
            s
            for s in host_slices("taken")
            if s["metadata"]["labels"][SLICE_MANAGER] != "endpointslice-controller.k8s.io"
        ]

        # ---- upgrade with some mappings removed: the syncer removes their replicas, by label
        synced = _host_get(env, "service", naming.host_name("web", "shop", NAME), NS_A)
        assert synced is not None
        pods = {p["metadata"]["uid"] for p in _host(env, "get", "pods", "-n", NS_A, "-l", "app=web")["items"]}
        partial = {"fromHost": mappings_a["fromHost"][1:], "toHost": mappings_a["toHost"][1:]}
        env.vnest(
            "create", NAME, "-n", NS_A, "--upgrade", "--no-connect", "-f", _values(env, "some.yaml", partial)
        )
        wait_until(lambda: a.get("service", "db", "data") is None, 60, "the virtual replica db to go")
        wait_until(lambda: not virtual_slices("db"), 60, "its slices to go")
        # toHost's ClusterRole stays for the other mapping: this is the syncer's own doing.
        wait_until(
            lambda: _host_get(env, "service", "web-a", EXPOSED_NS) is None and not host_slices("web-a"),
            60,
            "the host replica web-a to go",
        )
        assert a.get("service", "db-hl", "data") is not None

        # ---- upgrade without any: the rest goes, on both sides; nothing else is touched
        env.vnest(
            "create", NAME, "-n", NS_A, "--upgrade", "--no-connect", "-f", _values(env, "none.yaml", {})
        )
        wait_until(lambda: a.get("service", "db-hl", "data") is None, 60, "the virtual replica db-hl to go")
        wait_until(lambda: not virtual_slices("db-hl"), 60, "its slices to go")
        assert _host_get(env, "service", "web-b", EXPOSED_NS) is not None  # cluster B's is not ours
        now = _host_get(env, "service", "taken", EXPOSED_NS)
        assert now is not None
        assert now["metadata"]["resourceVersion"] == taken["metadata"]["resourceVersion"]
        again = _host_get(env, "service", naming.host_name("web", "shop", NAME), NS_A)
        assert again is not None
        assert again["metadata"]["uid"] == synced["metadata"]["uid"]
        now_pods = _host(env, "get", "pods", "-n", NS_A, "-l", "app=web")["items"]
        assert {p["metadata"]["uid"] for p in now_pods} == pods
        assert a.get("service", "web", "shop") is not None
        # The namespace made for the replicas may hold other things: it stays.
        assert a.kubectl("get", "namespace", "data", "-o", "name").strip() == "namespace/data"

        # ---- deleting the virtual cluster takes its host replicas in other namespaces along
        env.vnest("delete", NAME, "-n", NS_B)
        wait_until(
            lambda: _host_get(env, "service", "web-b", EXPOSED_NS) is None, 60, "cluster B's replica to go"
        )
    finally:
        for ns in (NS_A, NS_B):
            env.vnest("delete", NAME, "-n", ns, check=False)
        for ns in (SOURCE_NS, EXPOSED_NS):
            env.kubectl("--context", HOST, "delete", "namespace", ns, "--wait=false", check=False)
