"""The syncer against the real local host: the seed's deployment and service demo, and its edges."""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import ssl
from pathlib import Path

import httpx
import pytest

from vnest import naming
from vnest.host.kwok import SIMULATED_LOG
from vnest.procs import wait_until

from .vcluster import VirtualCluster

HOST = "vnest-host"


@pytest.fixture
def env(host_env):
    yield host_env
    host_env.kubectl("config", "use-context", HOST)


class Cluster(VirtualCluster):
    """A virtual cluster made for one test, deleted after it."""

    def host_json(self, *args: str) -> dict:
        out = self.env.kubectl("--context", HOST, *args, "-n", self.namespace, "-o", "json").stdout
        return json.loads(out)

    def host_pods(self, selector: str = "") -> list[dict]:
        return self.host_json("get", "pods", "-l", selector or f"vnest.io/managed-by={self.name}")["items"]


@pytest.fixture
def make_cluster(env):
    made: list[Cluster] = []

    def make(name: str, namespace: str) -> Cluster:
        env.vnest("create", name, "-n", namespace, "--no-connect")
        made.append(Cluster(env, name, namespace))
        return made[-1]

    yield make
    for c in made:
        env.vnest("delete", c.name, "-n", c.namespace, check=False)


def _running(pods: list[dict]) -> list[dict]:
    return [p for p in pods if p["status"].get("phase") == "Running" and p["status"].get("podIP")]


def test_seed_demo_deployment_and_service(make_cluster):
    vc = make_cluster("my-vcluster", "vcluster1")
    vc.kubectl("create", "namespace", "nginx1")
    vc.kubectl("create", "deployment", "nginx-vcluster1", "-n", "nginx1", "--image=nginx", "--replicas=2")

    def virtual_running():
        pods = _running(vc.json("get", "pods", "-n", "nginx1")["items"])
        return pods if len(pods) == 2 else None

    vpods = wait_until(virtual_running, 60, "2 Running virtual pods")
    hpods = wait_until(
        lambda: (p := _running(vc.host_pods())) and len(p) == 2 and p, 30, "2 Running host pods"
    )
    names = sorted(p["metadata"]["name"] for p in hpods)
    for name in names:
        assert re.fullmatch(r"nginx-vcluster1-[a-z0-9]+-[a-z0-9]{5}-x-nginx1-x-my-vcluster", name), name
    assert names == sorted(f"{p['metadata']['name']}-x-nginx1-x-my-vcluster" for p in vpods)
    # Status came back: the virtual pods carry their host pods' IPs and nodes.
    host_by_name = {p["metadata"]["name"]: p for p in hpods}
    for vpod in vpods:
        hpod = host_by_name[f"{vpod['metadata']['name']}-x-nginx1-x-my-vcluster"]
        assert vpod["status"]["podIP"] == hpod["status"]["podIP"]
        assert vpod["spec"]["nodeName"] == hpod["spec"]["nodeName"]
    assert vc.host_json("get", "deployments")["items"] == []
    nodes = vc.json("get", "nodes")["items"]
    assert {n["metadata"]["name"] for n in nodes} == {p["spec"]["nodeName"] for p in hpods}

    vc.kubectl("create", "service", "clusterip", "nginx-vcluster1", "--tcp=80:80", "-n", "nginx1")
    host_svc = wait_until(
        lambda: _get_host(vc.env, "service", "nginx-vcluster1-x-nginx1-x-my-vcluster", "vcluster1"),
        30,
        "the host Service",
    )
    assert host_svc["metadata"]["labels"][naming.LABEL_MANAGED_BY] == "my-vcluster"
    assert host_svc["spec"]["selector"] == {
        "app": "nginx-vcluster1",
        "vnest.io/managed-by": "my-vcluster",
        "vnest.io/namespace": "nginx1",
    }
    wait_until(
        lambda: (
            vc.json("get", "service", "nginx-vcluster1", "-n", "nginx1")["spec"]["clusterIP"]
            == host_svc["spec"]["clusterIP"]
        ),
        30,
        "the virtual ClusterIP to equal the host's",
    )
    pod_ips = {p["status"]["podIP"] for p in hpods}

    def virtual_endpoint_ips():
        ep = vc.json("get", "endpoints", "nginx-vcluster1", "-n", "nginx1")
        return {a["ip"] for s in ep.get("subsets") or [] for a in s.get("addresses") or []} == pod_ips

    wait_until(virtual_endpoint_ips, 30, "the virtual Endpoints to list the 2 pod IPs")

    # In-pod clients reach the virtual API at host Service NAME: so does `kubernetes.default`.
    api_ip = vc.host_json("get", "service", "my-vcluster")["spec"]["clusterIP"]
    wait_until(
        lambda: vc.json("get", "service", "kubernetes", "-n", "default")["spec"]["clusterIP"] == api_ip,
        30,
        "the virtual kubernetes Service to carry the host Service's IP",
    )
    env_of = {e["name"]: e.get("value") for e in hpods[0]["spec"]["containers"][0]["env"]}
    assert env_of["KUBERNETES_SERVICE_HOST"] == api_ip

    # Deletion both ways: a host pod deleted takes its virtual pod (the ReplicaSet makes a new one).
    gone = hpods[0]["metadata"]["name"]
    vc.env.kubectl("--context", HOST, "delete", "pod", gone, "-n", "vcluster1", "--wait=false")
    wait_until(
        lambda: (
            gone.split("-x-")[0]
            not in {p["metadata"]["name"] for p in vc.json("get", "pods", "-n", "nginx1")["items"]}
        ),
        30,
        "the virtual pod of the deleted host pod to go",
    )
    wait_until(virtual_running, 60, "the ReplicaSet's replacement to run")
    vc.kubectl("delete", "service", "nginx-vcluster1", "-n", "nginx1")
    wait_until(
        lambda: _get_host(vc.env, "service", "nginx-vcluster1-x-nginx1-x-my-vcluster", "vcluster1") is None,
        30,
        "the host Service to go with the virtual one",
    )


def test_configmaps_and_secrets_follow_the_pods_that_use_them(env, make_cluster):
    vc = make_cluster("cfg", "cfg-host")
    vc.kubectl("create", "namespace", "app")
    vc.kubectl("create", "configmap", "settings", "-n", "app", "--from-literal=mode=fast")
    vc.kubectl("create", "secret", "generic", "creds", "-n", "app", "--from-literal=password=s3cret")
    vc.kubectl("create", "configmap", "unused", "-n", "app", "--from-literal=x=y")
    # A Secret that exists only on the host: the tenant must not get it by naming it.
    env.kubectl(
        "--context", HOST, "create", "secret", "generic", "hostonly", "-n", "cfg-host", "--from-literal=k=v"
    )
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": "app"},
        "spec": {
            "containers": [
                {
                    "name": "web",
                    "image": "nginx",
                    "env": [
                        {
                            "name": "MODE",
                            "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}},
                        },
                        {
                            "name": "PASSWORD",
                            "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}},
                        },
                    ],
                    "volumeMounts": [
                        {"name": "cfg", "mountPath": "/cfg"},
                        {"name": "sec", "mountPath": "/sec"},
                    ],
                }
            ],
            "volumes": [
                {"name": "cfg", "configMap": {"name": "settings"}},
                {"name": "sec", "secret": {"secretName": "creds"}},
                {"name": "other", "secret": {"secretName": "hostonly"}},
            ],
        },
    }
    manifest = env.root / "pod.json"
    manifest.write_text(json.dumps(pod))
    vc.kubectl("apply", "-f", str(manifest))
    hpod = wait_until(lambda: vc.host_pods(), 30, "the host pod")[0]
    vols = {v["name"]: v for v in hpod["spec"]["volumes"]}
    assert vols["cfg"]["configMap"]["name"] == "settings-x-app-x-cfg"
    assert vols["sec"]["secret"]["secretName"] == "creds-x-app-x-cfg"
    assert vols["other"]["secret"]["secretName"] == "hostonly-x-app-x-cfg"  # never the host's own "hostonly"
    env_vars = {e["name"]: e for e in hpod["spec"]["containers"][0]["env"]}
    assert env_vars["MODE"]["valueFrom"]["configMapKeyRef"]["name"] == "settings-x-app-x-cfg"
    assert env_vars["PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "creds-x-app-x-cfg"
    assert hpod["spec"]["automountServiceAccountToken"] is False

    cm = wait_until(
        lambda: _get_host(env, "configmap", "settings-x-app-x-cfg", "cfg-host"), 30, "the host ConfigMap"
    )
    assert cm["data"] == {"mode": "fast"}
    assert cm["metadata"]["labels"][naming.LABEL_MANAGED_BY] == "cfg"
    secret = wait_until(
        lambda: _get_host(env, "secret", "creds-x-app-x-cfg", "cfg-host"), 30, "the host Secret"
    )
    assert secret["data"]["password"] == "czNjcmV0"
    assert _get_host(env, "configmap", "unused-x-app-x-cfg", "cfg-host") is None  # not used by any pod
    assert _get_host(env, "secret", "hostonly-x-app-x-cfg", "cfg-host") is None

    vc.kubectl("patch", "configmap", "settings", "-n", "app", "-p", '{"data":{"mode":"slow"}}')
    wait_until(
        lambda: (
            (_get_host(env, "configmap", "settings-x-app-x-cfg", "cfg-host") or {}).get("data")
            == {"mode": "slow"}
        ),
        30,
        "the edit to reach the host copy",
    )
    host_only = _get_host(env, "secret", "hostonly", "cfg-host")
    assert host_only is not None
    assert naming.LABEL_MANAGED_BY not in (host_only["metadata"].get("labels") or {})

    vc.kubectl("delete", "pod", "web", "-n", "app", "--wait=false")
    wait_until(
        lambda: _get_host(env, "configmap", "settings-x-app-x-cfg", "cfg-host") is None,
        30,
        "the unused copy to go",
    )
    assert _get_host(env, "secret", "hostonly", "cfg-host") is not None


def _get_host(env, kind: str, name: str, namespace: str) -> dict | None:
    scope = ["-n", namespace] if namespace else []
    proc = env.kubectl("--context", HOST, "get", kind, name, *scope, "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def test_tenants_cannot_forge_ownership_or_touch_each_others_pods(make_cluster):
    a = make_cluster("tenant-a", "tenant-a-host")
    b = make_cluster("tenant-b", "tenant-b-host")
    for vc in (a, b):
        vc.kubectl("create", "namespace", "team")
        vc.kubectl("run", "same", "-n", "team", "--image=nginx")  # same virtual names in both clusters
    # Tenant A labels a pod as if tenant B managed it.
    a.kubectl("run", "forger", "-n", "team", "--image=nginx", "--labels=vnest.io/managed-by=tenant-b")
    wait_until(lambda: len(a.host_pods()) == 2 and len(b.host_pods()) == 1, 30, "both clusters' host pods")
    forged = next(p for p in a.host_pods() if p["metadata"]["name"].startswith("forger-"))
    labels = forged["metadata"]["labels"]
    assert labels[naming.LABEL_MANAGED_BY] == "tenant-a"
    assert (
        labels["vnest.io/label-" + __import__("hashlib").sha256(b"vnest.io/managed-by").hexdigest()[:10]]
        == "tenant-b"
    )
    assert {p["metadata"]["name"] for p in b.host_pods()} == {"same-x-team-x-tenant-b"}

    # Deleting tenant A's pods never touches tenant B's.
    a.kubectl("delete", "pod", "--all", "-n", "team", "--wait=false")
    wait_until(lambda: not a.host_pods(), 30, "tenant A's host pods to go")
    assert {p["metadata"]["name"] for p in b.host_pods()} == {"same-x-team-x-tenant-b"}
    # A host object vnest does not manage, at the name a copy would get, is left alone and reported:
    # tests/unit/test_reconcile_pods.py (rows not-ours-*).


def test_long_names_translate_and_map_back(make_cluster):
    vc = make_cluster("long", "long-host")
    ns = "a-rather-long-virtual-namespace-name"
    pod = "a-pod-with-a-name-long-enough-to-push-the-host-name-over"
    vc.kubectl("create", "namespace", ns)
    vc.kubectl("run", pod, "-n", ns, "--image=nginx")
    hpod = wait_until(lambda: _running(vc.host_pods()), 60, "the host pod to run")[0]
    assert hpod["metadata"]["name"] == naming.host_name(pod, ns, "long")
    assert len(hpod["metadata"]["name"]) == 63
    assert hpod["metadata"]["annotations"][naming.ANNOTATION_NAME] == pod
    wait_until(
        lambda: vc.json("get", "pod", pod, "-n", ns)["status"].get("podIP") == hpod["status"]["podIP"],
        30,
        "the status to map back",
    )


def _control_plane_pid(state: Path) -> int | None:
    """The process running the control plane (and, in it, the syncer) of the cluster kept at `state`."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if "controlplane\0run" in cmdline and str(state) in cmdline:
                return int(entry)
    return None


def test_killed_control_plane_converges_exactly_after_restart(env, make_cluster):
    """The syncer runs in the control plane's process: what can kill it mid-burst kills them all (an OOM
    kill, a lost node). Started again (`vnest resume`, as a pod's restart), nothing is lost or left."""
    vc = make_cluster("burst", "burst-host")
    vc.kubectl("create", "namespace", "load")
    pods = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"p{i:03d}", "namespace": "load", "labels": {"burst": "yes"}},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]},
            }
            for i in range(200)
        ],
    }
    manifest = env.root / "burst.json"
    manifest.write_text(json.dumps(pods))
    vc.kubectl("create", "-f", str(manifest))
    deleted = [f"p{i:03d}" for i in range(0, 200, 10)]
    vc.kubectl("delete", "pod", *deleted, "-n", "load", "--wait=false")
    pid = _control_plane_pid(vc.state())
    assert pid is not None
    os.killpg(os.getpgid(pid), signal.SIGKILL)  # mid-burst: supervisor, syncer and servers at once
    wait_until(lambda: _control_plane_pid(vc.state()) is None, 30, "the control plane to be gone")
    env.vnest("resume", vc.name, "-n", vc.namespace)

    want = {f"p{i:03d}-x-load-x-burst" for i in range(200)} - {f"{n}-x-load-x-burst" for n in deleted}

    def converged():
        host = {p["metadata"]["name"] for p in vc.host_pods("burst=yes,vnest.io/managed-by=burst")}
        virtual = {
            p["metadata"]["name"] + "-x-load-x-burst" for p in vc.json("get", "pods", "-n", "load")["items"]
        }
        return host == want and virtual == want

    wait_until(converged, 180, "host and virtual pods to converge", interval=2)
    new_pid = _control_plane_pid(vc.state())
    assert new_pid is not None and new_pid != pid
    # Status comes back after the host copies exist: every pod reaches Running, none is lost.
    wait_until(
        lambda: len(_running(vc.json("get", "pods", "-n", "load")["items"])) == len(want),
        120,
        "every pod to be Running",
        interval=2,
    )


def _phase_is_running(vc: VirtualCluster, pod: str) -> bool:
    return vc.json("get", "pod", pod)["status"].get("phase") == "Running"


def test_kubelet_api_reaches_the_host_pod_and_only_this_clusters_pods(make_cluster):
    a = make_cluster("klet-a", "klet-a-host")
    b = make_cluster("klet-b", "klet-b-host")
    a.kubectl("run", "web", "--image=nginx")
    b.kubectl("run", "only-in-b", "--image=nginx")
    for vc, pod in ((a, "web"), (b, "only-in-b")):
        wait_until(functools.partial(_phase_is_running, vc, pod), 60, pod)
    assert a.kubectl("logs", "web") == SIMULATED_LOG
    assert a.kubectl("exec", "web", "--", "echo", "hello from the host pod") == "hello from the host pod\n"

    assert _port_forward_echo(a, "web", b"through the virtual API\n") == b"through the virtual API\n"

    # Straight at cluster A's kubelet endpoint, as the virtual API server would call it.
    node = a.json("get", "pod", "web")["spec"]["nodeName"]
    port = a.json("get", "node", node)["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
    pki = a.state() / "data" / "pki"

    def get(path: str, identity: str) -> httpx.Response:
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        ctx.load_cert_chain(pki / f"{identity}.crt", pki / f"{identity}.key")
        return httpx.get(f"https://127.0.0.1:{port}{path}", verify=ctx, timeout=10)

    ok = get("/containerLogs/default/web/web", "apiserver-kubelet-client")
    assert ok.status_code == 200 and ok.text == SIMULATED_LOG
    other = get("/containerLogs/default/only-in-b/only-in-b", "apiserver-kubelet-client")
    assert other.status_code == 404  # cluster B's pod, though it runs on the same host
    with pytest.raises(httpx.TransportError):  # only the API server's identity, from a CA of its own
        get("/containerLogs/default/web/web", "admin")


def test_pvcs_bind_on_the_host_and_events_come_back(env, make_cluster):
    vc = make_cluster("vol", "vol-host")
    # Storage the host offers: a PV of a class only this test uses.
    pv = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": "vnest-e2e-vol"},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "vnest-e2e-manual",
            "hostPath": {"path": "/tmp/vnest-e2e-vol"},
        },
    }
    manifest = env.root / "pv.json"
    manifest.write_text(json.dumps(pv))
    env.kubectl("--context", HOST, "apply", "-f", str(manifest))
    try:
        claim = {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data", "namespace": "default"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "vnest-e2e-manual",
                "resources": {"requests": {"storage": "1Gi"}},
            },
        }
        manifest = env.root / "pvc.json"
        manifest.write_text(json.dumps(claim))
        vc.kubectl("apply", "-f", str(manifest))
        host_claim = wait_until(
            lambda: _get_host(env, "pvc", "data-x-default-x-vol", "vol-host"), 30, "the host PVC"
        )
        assert host_claim["metadata"]["labels"][naming.LABEL_MANAGED_BY] == "vol"
        wait_until(
            lambda: vc.json("get", "pvc", "data")["status"].get("phase") == "Bound",
            60,
            "the virtual PVC to be Bound",
        )
        assert vc.json("get", "pvc", "data")["status"]["capacity"]["storage"] == "1Gi"
        # Bound in the virtual cluster too, to a volume named after the host's.
        assert vc.json("get", "pvc", "data")["spec"]["volumeName"] == "vnest-e2e-vol"
        pv = vc.json("get", "pv", "vnest-e2e-vol")
        assert pv["spec"]["claimRef"]["name"] == "data"
        assert pv["spec"]["capacity"]["storage"] == "1Gi"

        # A pod using the claim: on the host it uses the host claim; the host scheduler's event comes back.
        vc.kubectl("run", "user", "--image=nginx", "--overrides", json.dumps(_pod_with_claim()))
        hpod = wait_until(lambda: vc.host_pods(), 30, "the host pod")[0]
        assert hpod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == "data-x-default-x-vol"
        events = wait_until(
            lambda: [
                e
                for e in vc.json("get", "events", "--field-selector", "involvedObject.name=user")["items"]
                if e["reason"] == "Scheduled"
            ],
            60,
            "the host scheduler's event on the virtual pod",
        )
        assert events[0]["involvedObject"]["uid"] == vc.json("get", "pod", "user")["metadata"]["uid"]
        assert "-x-" not in events[0]["message"] and "user" in events[0]["message"]

        vc.kubectl("delete", "pod", "user", "--wait=false")
        vc.kubectl("delete", "pvc", "data", "--wait=false")
        wait_until(
            lambda: _get_host(env, "pvc", "data-x-default-x-vol", "vol-host") is None,
            60,
            "the host PVC to go",
        )
    finally:
        env.kubectl("--context", HOST, "delete", "pv", "vnest-e2e-vol", "--wait=false", check=False)


def _pod_with_claim() -> dict:
    return {
        "spec": {
            "containers": [
                {"name": "user", "image": "nginx", "volumeMounts": [{"name": "d", "mountPath": "/d"}]}
            ],
            "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}],
        }
    }


def test_ingresses_sync_when_enabled_with_their_tls_secrets(env):
    env.vnest(
        "create", "ing", "-n", "ing-host", "--no-connect", "--set", "sync.toHost.ingresses.enabled=true"
    )
    vc = Cluster(env, "ing", "ing-host")
    try:
        vc.kubectl(
            "create",
            "secret",
            "tls",
            "site-tls",
            "--cert",
            str(_tls_pair(env)[0]),
            "--key",
            str(_tls_pair(env)[1]),
        )
        vc.kubectl("create", "service", "clusterip", "site", "--tcp=80:80")
        vc.kubectl("create", "ingress", "site", "--rule=site.example/*=site:80,tls=site-tls")
        hing = wait_until(
            lambda: _get_host(env, "ingress", "site-x-default-x-ing", "ing-host"), 30, "the host Ingress"
        )
        rule = hing["spec"]["rules"][0]
        assert rule["host"] == "site.example"
        assert rule["http"]["paths"][0]["backend"]["service"]["name"] == "site-x-default-x-ing"
        assert hing["spec"]["tls"][0]["secretName"] == "site-tls-x-default-x-ing"
        secret = wait_until(
            lambda: _get_host(env, "secret", "site-tls-x-default-x-ing", "ing-host"), 30, "the TLS Secret"
        )
        assert secret["type"] == "kubernetes.io/tls"
        vc.kubectl("delete", "ingress", "site")
        wait_until(
            lambda: _get_host(env, "ingress", "site-x-default-x-ing", "ing-host") is None,
            30,
            "the host Ingress to go",
        )
        wait_until(
            lambda: _get_host(env, "secret", "site-tls-x-default-x-ing", "ing-host") is None,
            30,
            "the Secret to go",
        )
    finally:
        env.vnest("delete", "ing", "-n", "ing-host", check=False)


def _tls_pair(env) -> tuple[Path, Path]:
    from vnest import certs

    crt, key = env.root / "site.crt", env.root / "site.key"
    if not crt.exists():
        ca = certs.new_ca("e2e")
        certs.issue(ca, "site.example", dns_names=("site.example",), server=True).write(env.root, "site")
    return crt, key


def test_network_policies_sync_when_enabled_and_stay_within_the_cluster(env):
    env.vnest(
        "create",
        "netpol",
        "-n",
        "netpol-host",
        "--no-connect",
        "--set",
        "sync.toHost.networkPolicies.enabled=true",
    )
    vc = Cluster(env, "netpol", "netpol-host")
    try:
        vc.kubectl("create", "namespace", "web")
        vc.kubectl("label", "namespace", "web", "team=frontend")
        vc.kubectl("run", "api", "-n", "web", "--image=nginx", "--labels=app=api")
        policy = {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "allow-frontend", "namespace": "web"},
            "spec": {
                "podSelector": {"matchLabels": {"app": "api"}},
                "policyTypes": ["Ingress"],
                "ingress": [
                    {
                        "from": [
                            {"namespaceSelector": {"matchLabels": {"team": "frontend"}}},
                            {"podSelector": {"matchLabels": {"role": "client"}}},
                            {"ipBlock": {"cidr": "10.0.0.0/8"}},
                        ],
                        "ports": [{"port": 80, "protocol": "TCP"}],
                    }
                ],
            },
        }
        manifest = env.root / "netpol.json"
        manifest.write_text(json.dumps(policy))
        vc.kubectl("apply", "-f", str(manifest))
        hpol = wait_until(
            lambda: _get_host(env, "networkpolicy", "allow-frontend-x-web-x-netpol", "netpol-host"),
            30,
            "the host policy",
        )
        ns_key = "vnest.io/ns-" + __import__("hashlib").sha256(b"team").hexdigest()[:10]
        spec = hpol["spec"]
        assert spec["podSelector"]["matchLabels"] == {
            "app": "api",
            "vnest.io/managed-by": "netpol",
            "vnest.io/namespace": "web",
        }
        peers = spec["ingress"][0]["from"]
        assert peers[0] == {
            "podSelector": {"matchLabels": {ns_key: "frontend", "vnest.io/managed-by": "netpol"}}
        }
        assert peers[1]["podSelector"]["matchLabels"] == {
            "role": "client",
            "vnest.io/managed-by": "netpol",
            "vnest.io/namespace": "web",
        }
        assert peers[2] == {"ipBlock": {"cidr": "10.0.0.0/8"}}
        # The namespace's labels ride on its pods, so the namespaceSelector above can match them.
        hpod = wait_until(lambda: vc.host_pods(), 30, "the host pod")[0]
        assert hpod["metadata"]["labels"][ns_key] == "frontend"
        vc.kubectl("label", "namespace", "web", "team=backend", "--overwrite")
        wait_until(
            lambda: vc.host_pods()[0]["metadata"]["labels"][ns_key] == "backend", 30, "the relabelled pod"
        )
    finally:
        env.vnest("delete", "netpol", "-n", "netpol-host", check=False)


def test_real_nodes_sync_with_a_selector_and_pods_stay_on_them(env):
    env.kubectl("--context", HOST, "label", "node", "worker2", "vnest-e2e-nodes=selected", "--overwrite")
    env.vnest(
        "create", "realnodes", "-n", "realnodes-host", "--no-connect",
        "--set", "sync.fromHost.nodes.enabled=true",
        "--set", "sync.fromHost.nodes.selector.labels.vnest-e2e-nodes=selected",
    )  # fmt: skip
    vc = Cluster(env, "realnodes", "realnodes-host")
    try:
        role = _get_host(env, "clusterrole", naming.cluster_role("realnodes", "realnodes-host"), "")
        assert role is not None
        assert role["rules"][0]["resources"] == ["nodes"]
        nodes = wait_until(lambda: vc.json("get", "nodes")["items"], 30, "the synced node")
        assert [n["metadata"]["name"] for n in nodes] == ["worker2"]  # worker1 is not selected
        node = nodes[0]
        assert node["metadata"]["labels"]["vnest-e2e-nodes"] == "selected"
        assert {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"] == "True"
        vc.kubectl("create", "deployment", "pinned", "--image=nginx", "--replicas=3")
        hpods = wait_until(
            lambda: (p := _running(vc.host_pods())) and len(p) == 3 and p, 60, "3 running host pods"
        )
        assert {p["spec"]["nodeName"] for p in hpods} == {"worker2"}
        assert all(p["spec"]["nodeSelector"]["vnest-e2e-nodes"] == "selected" for p in hpods)
        vpod = _running(vc.json("get", "pods")["items"])[0]["metadata"]["name"]
        assert vc.kubectl("logs", vpod) == SIMULATED_LOG  # through vnest's kubelet API, not the host's
    finally:
        env.vnest("delete", "realnodes", "-n", "realnodes-host", check=False)
        env.kubectl("--context", HOST, "label", "node", "worker2", "vnest-e2e-nodes-", check=False)
    assert _get_host(env, "clusterrole", naming.cluster_role("realnodes", "realnodes-host"), "") is None


def test_pods_resolve_through_the_virtual_clusters_dns(make_cluster):
    vc = make_cluster("dnscfg", "dnscfg-host")  # the syncer makes kube-system/kube-dns itself
    dns_ip = wait_until(
        lambda: (
            (ip := vc.json("get", "service", "kube-dns", "-n", "kube-system")["spec"]["clusterIP"])
            and (host := _get_host(vc.env, "service", "kube-dns-x-kube-system-x-dnscfg", "dnscfg-host"))
            and host["spec"]["clusterIP"] == ip
            and ip
        ),
        30,
        "the virtual kube-dns Service and its host copy to share an IP",
    )
    vc.kubectl("create", "namespace", "app")
    vc.kubectl("run", "client", "-n", "app", "--image=nginx")
    vc.kubectl(
        "run",
        "own",
        "-n",
        "app",
        "--image=nginx",
        "--overrides",
        json.dumps({"spec": {"dnsPolicy": "Default"}}),
    )
    host_pods = wait_until(lambda: (p := vc.host_pods()) and len(p) == 2 and p, 30, "the host pods")
    pods = {p["metadata"]["annotations"][naming.ANNOTATION_NAME]: p for p in host_pods}
    spec = pods["client"]["spec"]
    assert spec["dnsPolicy"] == "None"
    assert spec["dnsConfig"]["nameservers"] == [dns_ip]
    assert spec["dnsConfig"]["searches"] == ["app.svc.cluster.local", "svc.cluster.local", "cluster.local"]
    assert {"name": "ndots", "value": "5"} in spec["dnsConfig"]["options"]
    assert pods["own"]["spec"]["dnsPolicy"] == "Default"  # the pod's own choice stands


def _port_forward_echo(vc: Cluster, pod: str, payload: bytes) -> bytes:
    """`kubectl port-forward` in the virtual cluster; KWOK's simulated pod port echoes what it gets."""
    import socket
    import subprocess

    config = vc.env.root / f"{vc.name}.kubeconfig"
    vc.env.vnest("connect", vc.name, "-n", vc.namespace, "--kube-config", str(config))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [vc.env.kubectl_path, "--kubeconfig", str(config), "port-forward", f"pod/{pod}", f"{port}:80"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        stdout = proc.stdout
        assert stdout is not None
        wait_until(lambda: "Forwarding from" in stdout.readline(), 30, "the port-forward to listen")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(payload)
            return conn.recv(len(payload) + 100)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
