"""A hostile tenant against the local host: what it tries, what reaches the host (SPEC.md section 7).

Each attack is shown working first, with the guard off (`podSecurityStandard: privileged`),
so that a test that passes proves the guard, not a broken attack.
"""

from __future__ import annotations

import functools
import json

import pytest

from vnest import naming
from vnest.procs import wait_until

from .vcluster import HOST, VirtualCluster

# What a tenant that is admin in its virtual cluster would like to run on the host's nodes.
ATTACKS: dict[str, dict] = {
    "privileged": {"containers": [{"name": "c", "image": "nginx", "securityContext": {"privileged": True}}]},
    "host-path": {
        "containers": [
            {"name": "c", "image": "nginx", "volumeMounts": [{"name": "root", "mountPath": "/host"}]}
        ],
        "volumes": [{"name": "root", "hostPath": {"path": "/"}}],
    },
    "host-network": {"hostNetwork": True, "containers": [{"name": "c", "image": "nginx"}]},
    "host-pid": {"hostPID": True, "containers": [{"name": "c", "image": "nginx"}]},
    "host-ipc": {"hostIPC": True, "containers": [{"name": "c", "image": "nginx"}]},
    "host-port": {
        "containers": [{"name": "c", "image": "nginx", "ports": [{"containerPort": 80, "hostPort": 8080}]}]
    },
    "capabilities": {
        "containers": [
            {
                "name": "c",
                "image": "nginx",
                "securityContext": {"capabilities": {"add": ["SYS_ADMIN", "NET_ADMIN"]}},
            }
        ]
    },
}
# A pod that meets `restricted`.
COMPLIANT = {
    "securityContext": {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "seccompProfile": {"type": "RuntimeDefault"},
    },
    "containers": [
        {
            "name": "c",
            "image": "nginx",
            "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
        }
    ],
}


@pytest.fixture
def env(host_env):
    yield host_env
    host_env.kubectl("config", "use-context", HOST)


def _pod(name: str, spec: dict) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "attack"},
        "spec": spec,
    }


def _host_pod(env, vc: VirtualCluster, name: str) -> dict | None:
    proc = env.kubectl(
        "--context", HOST, "get", "pod", naming.host_name(name, "attack", vc.name), "-n", vc.namespace,
        "-o", "json", check=False,
    )  # fmt: skip
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def _debug(vc: VirtualCluster, pod: str) -> None:
    """`kubectl debug` adding a privileged ephemeral container `dbg` (profile sysadmin)."""
    vc.kubectl(
        "debug", pod, "-n", "attack", "-c", "dbg", "--image=busybox", "--profile=sysadmin", "--", "true"
    )


def _ephemeral(env, vc: VirtualCluster, name: str) -> list[dict]:
    return ((_host_pod(env, vc, name) or {}).get("spec") or {}).get("ephemeralContainers") or []


def _warnings(vc: VirtualCluster, name: str) -> list[dict]:
    events = vc.json("get", "events", "-n", "attack")["items"]
    return [e for e in events if e["involvedObject"]["name"] == name and e["type"] == "Warning"]


def _create(env, name: str, level: str) -> VirtualCluster:
    env.vnest(
        "create", name, "-n", f"{name}-host", "--no-connect", "--set", f"policies.podSecurityStandard={level}"
    )
    vc = VirtualCluster(env, name, f"{name}-host")
    vc.kubectl("create", "namespace", "attack")
    return vc


def test_with_the_guard_off_every_attack_reaches_the_host(env):
    vc = _create(env, "psa-off", "privileged")
    try:
        for name, spec in ATTACKS.items():
            vc.apply(_pod(name, spec))
        hpods = {
            n: wait_until(functools.partial(_host_pod, env, vc, n), 30, f"host pod {n}") for n in ATTACKS
        }
        assert hpods["privileged"]["spec"]["containers"][0]["securityContext"]["privileged"] is True
        assert hpods["host-path"]["spec"]["volumes"][0]["hostPath"]["path"] == "/"
        assert hpods["host-network"]["spec"]["hostNetwork"] is True
        assert hpods["host-pid"]["spec"]["hostPID"] is True
        assert hpods["host-ipc"]["spec"]["hostIPC"] is True
        assert hpods["host-port"]["spec"]["containers"][0]["ports"][0]["hostPort"] == 8080
        assert (
            "SYS_ADMIN"
            in hpods["capabilities"]["spec"]["containers"][0]["securityContext"]["capabilities"]["add"]
        )
        labels = json.loads(
            env.kubectl("--context", HOST, "get", "namespace", "psa-off-host", "-o", "json").stdout
        )
        assert labels["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
        # kubectl debug with a privileged container: it joins the host pod.
        _debug(vc, "host-network")
        wait_until(lambda: _ephemeral(env, vc, "host-network"), 30, "the ephemeral container on the host")
        assert _ephemeral(env, vc, "host-network")[0]["securityContext"]["privileged"] is True
    finally:
        env.vnest("delete", "psa-off", "-n", "psa-off-host", check=False)


@pytest.mark.parametrize("level", ["baseline", "restricted"])
def test_no_violating_pod_reaches_the_host_even_after_the_tenant_relabels_its_namespace(env, level):
    name = f"psa-{level}"
    vc = _create(env, name, level)
    try:
        host_ns = json.loads(
            env.kubectl("--context", HOST, "get", "namespace", f"{name}-host", "-o", "json").stdout
        )
        assert host_ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == level

        # An honest mistake is refused at create by the virtual API server, with upstream's words.
        refused = vc.env.vnest(
            "connect", name, "-n", f"{name}-host", "--", vc.env.kubectl_path,
            "run", "priv", "-n", "attack", "--image=nginx", "--privileged", check=False,
        )  # fmt: skip
        assert refused.returncode != 0
        assert f'violates PodSecurity "{level}:latest": privileged' in refused.stderr

        # The tenant is admin inside: it switches its namespace's admission off. The syncer still says no.
        vc.kubectl(
            "label", "namespace", "attack", "pod-security.kubernetes.io/enforce=privileged", "--overwrite"
        )
        for pod_name, spec in ATTACKS.items():
            vc.apply(_pod(pod_name, spec))
        vc.apply(_pod("compliant", COMPLIANT))
        wait_until(lambda: _host_pod(env, vc, "compliant"), 30, "the compliant pod's host copy")
        for pod_name in ATTACKS:
            warnings = wait_until(
                functools.partial(_warnings, vc, pod_name), 30, f"a Warning event on {pod_name}"
            )
            assert warnings[0]["reason"] == "PodSecurity"
            assert warnings[0]["message"].startswith(f'violates PodSecurity "{level}:latest": ')
            assert _host_pod(env, vc, pod_name) is None
        # kubectl debug with a privileged container: refused on the host, the tenant told why.
        _debug(vc, "compliant")
        wait_until(
            lambda: any("dbg" in w["message"] for w in _warnings(vc, "compliant")),
            30,
            "a Warning on compliant",
        )
        assert _ephemeral(env, vc, "compliant") == []
        privileged = _warnings(vc, "privileged")[0]["message"]
        assert 'privileged (container "c" must not set securityContext.privileged=true)' in privileged

        if level == "restricted":
            # What baseline allows, restricted does not: a plain pod running as root.
            vc.apply(_pod("plain", {"containers": [{"name": "c", "image": "nginx"}]}))
            warnings = wait_until(lambda: _warnings(vc, "plain"), 30, "a Warning event on the plain pod")
            assert "runAsNonRoot != true" in warnings[0]["message"]
            assert _host_pod(env, vc, "plain") is None
    finally:
        env.vnest("delete", name, "-n", f"{name}-host", check=False)


def test_a_tenant_pod_with_the_control_planes_labels_never_serves_its_services(env):
    vc = _create(env, "impostor", "baseline")
    try:
        labels = {**naming.control_plane_pod_selector("impostor"), "app": "vnest", "release": "impostor"}
        pod = _pod("api-impostor", {"containers": [{"name": "c", "image": "nginx"}]})
        pod["metadata"]["labels"] = labels  # the vnest.io ones included: forged
        vc.apply(pod)
        hpod = wait_until(
            lambda: (p := _host_pod(env, vc, "api-impostor")) and p["status"].get("podIP") and p,
            60,
            "the impostor's host pod to get an IP",
        )
        assert hpod["metadata"]["labels"]["app"] == "vnest"  # what the old selector alone matched
        assert naming.LABEL_CLUSTER not in hpod["metadata"]["labels"]  # hashed away

        def endpoint_ips(service: str) -> set[str]:
            slices = json.loads(
                env.kubectl(
                    "--context", HOST, "get", "endpointslices", "-n", "impostor-host",
                    "-l", f"kubernetes.io/service-name={service}", "-o", "json",
                ).stdout
            )["items"]  # fmt: skip
            return {a for s in slices for e in s.get("endpoints") or [] for a in e["addresses"]}

        # Every host Service that selects the control plane (the API's in process mode, the DNS copy).
        services = json.loads(
            env.kubectl("--context", HOST, "get", "services", "-n", "impostor-host", "-o", "json").stdout
        )
        selecting = [
            s["metadata"]["name"]
            for s in services["items"]
            if (s["spec"].get("selector") or {}).get("release") == "impostor"
        ]
        assert {"impostor", naming.host_name("kube-dns", "kube-system", "impostor")} <= set(selecting)

        def slice_names(service: str) -> str:
            return env.kubectl(
                "--context", HOST, "get", "endpointslices", "-n", "impostor-host",
                "-l", f"kubernetes.io/service-name={service}", "-o", "name",
            ).stdout.strip()  # fmt: skip

        for service in selecting:
            # The endpoint controllers have had the pod's IP as long as its slice took to exist.
            wait_until(functools.partial(slice_names, service), 30, f"the EndpointSlice of {service}")
            assert hpod["status"]["podIP"] not in endpoint_ips(service)
    finally:
        env.vnest("delete", "impostor", "-n", "impostor-host", check=False)


def _service(name: str, **spec: object) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "attack"},
        "spec": {"ports": [{"name": "main", "port": 443, "protocol": "TCP"}], **spec},
    }


def _endpoints(service: str, addresses: list[str]) -> dict:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": service,
            "namespace": "attack",
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [a]} for a in addresses],
        "ports": [{"name": "main", "port": 443, "protocol": "TCP"}],
    }


def _host_obj(env, kind: str, name: str, namespace: str) -> dict | None:
    proc = env.kubectl("--context", HOST, "get", kind, name, "-n", namespace, "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


@pytest.mark.parametrize("guard", [False, True], ids=["guard-off", "guard-on"])
def test_external_ips_and_foreign_endpoints_stay_off_the_host(env, guard):
    name = "addr-on" if guard else "addr-off"
    args = ["create", name, "-n", f"{name}-host", "--no-connect"]
    if not guard:  # the admin allows every address: what a tenant could do without the guard
        args += [
            "--set",
            "policies.allowedExternalIPs=[0.0.0.0/0]",
            "--set",
            "policies.allowedEndpointCIDRs=[0.0.0.0/0]",
        ]
    env.vnest(*args)
    vc = VirtualCluster(env, name, f"{name}-host")
    try:
        vc.kubectl("create", "namespace", "attack")
        # The host API server's Service IP, and a pod of this very cluster, which may be an endpoint.
        api_ip = json.loads(
            env.kubectl("--context", HOST, "get", "service", "kubernetes", "-o", "json").stdout
        )["spec"]["clusterIP"]
        vc.apply(_pod("own", {"containers": [{"name": "c", "image": "nginx"}]}))
        own = wait_until(
            lambda: (p := _host_pod(env, vc, "own")) and p["status"].get("podIP"), 60, "the own pod's IP"
        )
        # CVE-2020-8554: an external IP makes every node route that address to the tenant's Service.
        vc.apply(_service("intercept", selector={"app": "x"}, externalIPs=["203.0.113.10"]))
        vc.apply(_service("to-api"))
        vc.apply(_endpoints("to-api", [api_ip, own]))

        hsvc = wait_until(
            lambda: _host_obj(env, "service", naming.host_name("intercept", "attack", name), vc.namespace),
            30,
            "the host Service",
        )
        hslice = wait_until(
            lambda: _host_obj(env, "endpointslice", naming.host_name("to-api", "attack", name), vc.namespace),
            30,
            "the host EndpointSlice",
        )
        addresses = [a for e in hslice.get("endpoints") or [] for a in e["addresses"]]
        if not guard:
            assert hsvc["spec"]["externalIPs"] == ["203.0.113.10"]
            assert addresses == [api_ip, own]
            return
        assert "externalIPs" not in hsvc["spec"]
        assert addresses == [own]  # its own pod stays; the host API server does not
        wait_until(
            lambda: (
                {"ExternalIPsDropped", "EndpointsDropped"}
                <= {e["reason"] for e in vc.json("get", "events", "-n", "attack")["items"]}
            ),
            30,
            "Warning events naming what was dropped",
        )
        reasons = {e["reason"]: e["message"] for e in vc.json("get", "events", "-n", "attack")["items"]}
        assert (
            "203.0.113.10" in reasons["ExternalIPsDropped"]
            and "CVE-2020-8554" in reasons["ExternalIPsDropped"]
        )
        assert api_ip in reasons["EndpointsDropped"] and own not in reasons["EndpointsDropped"]
    finally:
        env.vnest("delete", name, "-n", f"{name}-host", check=False)


def test_quota_limits_and_network_policies_hold_on_the_host(env):
    name, ns = "quota", "quota-host"
    values = env.root / "quota.yaml"
    values.write_text(
        json.dumps(
            {
                "policies": {
                    "resourceQuota": {"enabled": True, "quota": {"count/pods": 2}},
                    "limitRange": {"enabled": True},
                    "networkPolicy": {"enabled": True},
                }
            }
        )
    )
    env.vnest("create", name, "-n", ns, "--no-connect", "-f", str(values))
    vc = VirtualCluster(env, name, ns)
    try:
        quota = _host_obj(env, "resourcequota", f"vc-{name}", ns)
        assert quota is not None
        assert quota["spec"]["hard"]["count/pods"] == "2"
        assert quota["spec"]["hard"]["requests.cpu"] == "10"  # vCluster's defaults for the rest
        limits = _host_obj(env, "limitrange", f"vc-{name}", ns)
        assert limits is not None
        assert limits["spec"]["limits"][0]["defaultRequest"]["cpu"] == "100m"
        work = _host_obj(env, "networkpolicy", f"vc-work-{name}", ns)
        assert work is not None
        assert work["spec"]["podSelector"]["matchLabels"] == {naming.LABEL_MANAGED_BY: name}
        assert _host_obj(env, "networkpolicy", f"vc-cp-{name}", ns) is not None

        vc.kubectl("create", "namespace", "attack")
        for pod in ("one", "two", "three"):
            vc.apply(_pod(pod, {"containers": [{"name": "c", "image": "nginx"}]}))
        made = wait_until(
            lambda: (
                (p := [n for n in ("one", "two", "three") if _host_pod(env, vc, n)]) and len(p) == 2 and p
            ),
            30,
            "two host pods",
        )
        (refused,) = {"one", "two", "three"} - set(made)
        warnings = wait_until(lambda: _warnings(vc, refused), 30, "a Warning event on the pod over quota")
        assert warnings[0]["reason"] == "SyncError"
        assert "exceeded quota" in warnings[0]["message"] and "count/pods" in warnings[0]["message"]
        assert _host_pod(env, vc, refused) is None
        # The LimitRange gave the host pods the requests the quota needs.
        hpod = _host_pod(env, vc, made[0])
        assert hpod is not None
        assert hpod["spec"]["containers"][0]["resources"]["requests"]["cpu"] == "100m"

        # A policy turned off goes from the host with --upgrade.
        values.write_text(
            json.dumps({"policies": {"resourceQuota": {"enabled": True}, "limitRange": {"enabled": True}}})
        )
        env.vnest("create", name, "-n", ns, "--no-connect", "--upgrade", "-f", str(values))
        assert _host_obj(env, "networkpolicy", f"vc-work-{name}", ns) is None
        quota = _host_obj(env, "resourcequota", f"vc-{name}", ns)
        assert quota is not None and quota["spec"]["hard"]["count/pods"] == "20"
    finally:
        env.vnest("delete", name, "-n", ns, check=False)
    for kind in ("resourcequota", "limitrange"):
        assert _host_obj(env, kind, f"vc-{name}", ns) is None


def _cpu(requests: str, limits: str) -> dict:
    return {"requests": {"cpu": requests, "memory": "64Mi"}, "limits": {"cpu": limits, "memory": "64Mi"}}


def _host_cpu(hpod: dict) -> tuple[str, str]:
    resources = hpod["spec"]["containers"][0]["resources"]
    return resources["requests"]["cpu"], resources["limits"]["cpu"]


def test_a_resize_past_the_hosts_quota_is_refused_and_the_tenant_told(env):
    """An in-place resize is the host's to admit, quota included: the tenant cannot grow a running
    pod past what the platform gave its cluster; without the quota the same resize goes through."""
    name, ns = "resize", "resize-host"
    values = env.root / "resize.yaml"
    policy = {"resourceQuota": {"enabled": True, "quota": {"requests.cpu": "1", "limits.cpu": "1"}}}
    values.write_text(json.dumps({"policies": policy}))
    env.vnest("create", name, "-n", ns, "--no-connect", "-f", str(values))
    vc = VirtualCluster(env, name, ns)
    try:
        vc.kubectl("create", "namespace", "attack")
        vc.apply(
            _pod("grow", {"containers": [{"name": "c", "image": "nginx", "resources": _cpu("100m", "200m")}]})
        )
        wait_until(lambda: _host_pod(env, vc, "grow"), 30, "the host copy")
        wanted = json.dumps({"spec": {"containers": [{"name": "c", "resources": _cpu("1500m", "2")}]}})
        vc.kubectl("patch", "pod", "grow", "-n", "attack", "--subresource", "resize", "--patch", wanted)

        def refusals() -> list[dict]:
            return [w for w in _warnings(vc, "grow") if w["reason"] == "SyncError"]

        (refusal,) = wait_until(refusals, 30, "a SyncError event on the resized pod")
        assert "the host refused the resize" in refusal["message"]
        assert "exceeded quota" in refusal["message"]
        assert naming.host_name("grow", "attack", name) not in refusal["message"]  # the tenant's name
        hpod = _host_pod(env, vc, "grow")
        assert hpod is not None and _host_cpu(hpod) == ("100m", "200m")

        # The guard off (no quota on the host): the retried resize reaches the host copy.
        policy["resourceQuota"]["enabled"] = False
        values.write_text(json.dumps({"policies": policy}))
        env.vnest("create", name, "-n", ns, "--no-connect", "--upgrade", "-f", str(values))

        def resized() -> bool:
            hpod = _host_pod(env, vc, "grow")
            return hpod is not None and _host_cpu(hpod) == ("1500m", "2")

        wait_until(resized, 60, "the resize on the host once no quota holds it")
    finally:
        env.vnest("delete", name, "-n", ns, check=False)


def test_the_syncers_host_identity_has_only_what_the_syncers_use(env):
    name, ns = "rbac", "rbac-host"
    env.vnest("create", name, "-n", ns, "--no-connect")
    try:
        who = f"system:serviceaccount:{ns}:{naming.service_account(name)}"

        def can(verb: str, resource: str, *args: str) -> bool:
            kind, _, sub = resource.partition("/")  # `can-i VERB pods/x` would mean the pod named x
            more = [f"--subresource={sub}"] if sub else []
            proc = env.kubectl(
                "--context", HOST, "auth", "can-i", verb, kind, *more, *args, "--as", who, check=False
            )
            return proc.stdout.strip() == "yes"

        # What the syncer does.
        assert can("create", "pods", "-n", ns)
        assert can("create", "pods/exec", "-n", ns)
        assert can("delete", "secrets", "-n", ns)
        # What it must not: mint tokens for the namespace's ServiceAccounts (the host's own
        # `default` included), touch other namespaces, or anything its syncers never use.
        for verb, resource in (
            ("create", "serviceaccounts/token"),
            ("create", "serviceaccounts"),  # sync.toHost.serviceAccounts is off
            ("update", "pods/status"),
            ("deletecollection", "pods"),
            ("create", "leases.coordination.k8s.io"),
            ("create", "ingresses.networking.k8s.io"),
            ("create", "networkpolicies.networking.k8s.io"),
            ("create", "rolebindings.rbac.authorization.k8s.io"),
        ):
            assert not can(verb, resource, "-n", ns), (verb, resource)
        assert not can("get", "secrets", "-n", "kube-system")
        assert not can("list", "nodes")  # fake nodes need no ClusterRole
    finally:
        env.vnest("delete", name, "-n", ns, check=False)


def test_a_certificate_the_tenant_has_signed_never_opens_the_kubelet_api(env):
    import base64
    import ssl

    import httpx
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    name, ns = "csr", "csr-host"
    env.vnest("create", name, "-n", ns, "--no-connect")
    vc = VirtualCluster(env, name, ns)
    try:
        vc.kubectl("run", "web", "--image=nginx")
        pod = wait_until(
            lambda: (p := vc.get("pod", "web", "default")) and p["status"].get("phase") == "Running" and p,
            60,
            "the pod to run",
        )
        node = vc.json("get", "node", pod["spec"]["nodeName"])
        port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]

        # Admin inside, the tenant has the controller manager sign the API server's kubelet identity.
        key = ec.generate_private_key(ec.SECP256R1())
        # (Kubernetes refuses system:masters in a CSR; the kubelet API checks the name only.)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver-kubelet-client")])
        csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
        vc.apply(
            {
                "apiVersion": "certificates.k8s.io/v1",
                "kind": "CertificateSigningRequest",
                "metadata": {"name": "kubelet-client"},
                "spec": {
                    "request": base64.b64encode(csr.public_bytes(serialization.Encoding.PEM)).decode(),
                    "signerName": "kubernetes.io/kube-apiserver-client",
                    "usages": ["client auth"],
                },
            }
        )
        vc.kubectl("certificate", "approve", "kubelet-client")
        issued = wait_until(
            lambda: (vc.get("csr", "kubelet-client") or {}).get("status", {}).get("certificate"),
            30,
            "the signed certificate",
        )
        cert, key_file = env.root / "tenant.crt", env.root / "tenant.key"
        cert.write_bytes(base64.b64decode(issued))
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        tls = ssl.create_default_context()
        tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE
        tls.load_cert_chain(cert, key_file)
        # With the cluster CA trusted by the kubelet API, this read the pod's logs (200).
        with pytest.raises(httpx.TransportError):
            httpx.get(f"https://127.0.0.1:{port}/containerLogs/default/web/web", verify=tls, timeout=10)
        assert vc.kubectl("logs", "web")  # the API server's own identity still works
    finally:
        env.vnest("delete", name, "-n", ns, check=False)
