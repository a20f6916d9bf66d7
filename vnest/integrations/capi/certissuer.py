"""The part of cert-manager that `clusterctl init` and Cluster API's providers use, served by vnest.

`clusterctl init` installs cert-manager before any provider, and every provider's components
ask it for the serving certificate of their webhooks: a self-signed `Issuer`, a `Certificate`
naming the webhook Service, and `cert-manager.io/inject-ca-from` on the webhook configurations
and CRDs, so that the API server trusts that certificate. cert-manager's own commands
(cmd/controller, cmd/cainjector, cmd/webhook) are Go modules of their own that the module
proxy does not serve, so vnest cannot build them like its other binaries. This controller
serves that subset instead, on cert-manager's real CRDs (from the pinned cert-manager module's
chart, see repository.py):

- `Certificate`s of `selfSigned` and `ca` Issuers and ClusterIssuers: the key, certificate and
  CA in the named `kubernetes.io/tls` Secret, `Ready` in the status, renewed `renewBefore` the
  end (cert-manager's defaults: 90 days, renewed at two thirds), issued again when the spec
  changes. Any other issuer type (ACME, Vault, ...) gets `Ready=False` saying so;
- `Issuer`/`ClusterIssuer` readiness;
- CA injection (cainjector): `cert-manager.io/inject-ca-from: NS/CERTIFICATE` and
  `cert-manager.io/inject-ca-from-secret: NS/SECRET` on Validating/MutatingWebhookConfigurations,
  CRDs (their conversion webhook) and APIServices.
No admission webhook: the CRDs' schemas check what they can, the rest shows in the status.
"""

from __future__ import annotations

import base64
import copy
import datetime
import functools
import hashlib
import ipaddress
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from vnest import log
from vnest.errors import VnestError
from vnest.integrations.capi.api import set_condition
from vnest.kube.client import ApiError, KubeClient, Obj, Resource, register, resource_of
from vnest.syncer.engine.controller import Controller
from vnest.syncer.engine.informer import Handlers, Informer

_log = log.get("capi.certs")

GROUP = "cert-manager.io"
INJECT_FROM = f"{GROUP}/inject-ca-from"
INJECT_FROM_SECRET = f"{GROUP}/inject-ca-from-secret"
# What the issued Secret remembers of the spec it was issued for: a spec change means a new one.
ANNOTATION_SPEC = "vnest.io/certificate-spec"
DEFAULT_DURATION = datetime.timedelta(days=90)  # cert-manager's default
# The kinds whose objects may carry an inject annotation, and where their CA bundles go.
INJECTABLE = (
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
    "CustomResourceDefinition",
    "APIService",
)
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|m|s|ms)")


def register_kinds() -> None:
    for kind, resource in (
        ("Certificate", Resource(f"{GROUP}/v1", "certificates")),
        ("Issuer", Resource(f"{GROUP}/v1", "issuers")),
        ("ClusterIssuer", Resource(f"{GROUP}/v1", "clusterissuers", namespaced=False)),
        (
            "ValidatingWebhookConfiguration",
            Resource("admissionregistration.k8s.io/v1", "validatingwebhookconfigurations", namespaced=False),
        ),
        (
            "MutatingWebhookConfiguration",
            Resource("admissionregistration.k8s.io/v1", "mutatingwebhookconfigurations", namespaced=False),
        ),
        (
            "CustomResourceDefinition",
            Resource("apiextensions.k8s.io/v1", "customresourcedefinitions", namespaced=False),
        ),
        ("APIService", Resource("apiregistration.k8s.io/v1", "apiservices", namespaced=False)),
    ):
        register(kind, resource)


def parse_duration(text: str) -> datetime.timedelta:
    """A Go duration as cert-manager's fields take them: "2160h", "1h30m", "90s"."""
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"{text!r} is not a duration such as 2160h or 1h30m")
    unit = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    return datetime.timedelta(seconds=sum(float(n) * unit[u] for n, u in parts))


@dataclass(frozen=True)
class Issued:
    cert_pem: bytes
    key_pem: bytes
    ca_pem: bytes
    not_before: datetime.datetime
    not_after: datetime.datetime


def _new_key(spec: Obj) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    key_spec = spec.get("privateKey") or {}
    if key_spec.get("algorithm", "RSA") == "RSA":  # cert-manager's default algorithm
        return rsa.generate_private_key(public_exponent=65537, key_size=int(key_spec.get("size") or 2048))
    if key_spec["algorithm"] == "ECDSA":
        curves = {256: ec.SECP256R1(), 384: ec.SECP384R1(), 521: ec.SECP521R1()}
        return ec.generate_private_key(curves[int(key_spec.get("size") or 256)])
    raise ValueError(f"spec.privateKey.algorithm {key_spec['algorithm']!r}: RSA and ECDSA are served")


def issue(
    spec: Obj, signer: tuple[x509.Certificate, Any] | None, at: datetime.datetime | None = None
) -> Issued:
    """A certificate for a Certificate's spec, signed by `signer` (a CA's certificate and key),
    or by its own key when `signer` is None (a selfSigned issuer: it is then its own CA)."""
    key = _new_key(spec)
    start = at or datetime.datetime.now(datetime.UTC)
    duration = parse_duration(spec["duration"]) if spec.get("duration") else DEFAULT_DURATION
    names = [str(n) for n in spec.get("dnsNames") or []]
    # As cert-manager: the subject is spec.commonName or empty, never a DNS name, which may be
    # longer than a common name can be (64; Cluster API's webhook Services' names are 72).
    common = str(spec.get("commonName") or "")
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)] if common else [])
    is_ca = bool(spec.get("isCA"))
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(signer[0].subject if signer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + duration)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=isinstance(key, rsa.RSAPrivateKey),
                key_cert_sign=is_ca,
                crl_sign=False,
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    if not is_ca:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    sans += [x509.IPAddress(ipaddress.ip_address(str(i))) for i in spec.get("ipAddresses") or []]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=not common)
    cert = builder.sign(signer[1] if signer else key, hashes.SHA256())
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    ca_pem = signer[0].public_bytes(serialization.Encoding.PEM) if signer else cert_pem
    return Issued(cert_pem, key_pem, ca_pem, cert.not_valid_before_utc, cert.not_valid_after_utc)


def spec_digest(spec: Obj) -> str:
    """What decides a certificate's content; the Secret carries it, and a new one means a new cert."""
    wanted = {
        k: spec.get(k)
        for k in ("dnsNames", "ipAddresses", "commonName", "isCA", "duration", "issuerRef", "privateKey")
    }
    return hashlib.sha256(json.dumps(wanted, sort_keys=True).encode()).hexdigest()[:16]


def renewal_time(spec: Obj, not_before: datetime.datetime, not_after: datetime.datetime) -> datetime.datetime:
    if spec.get("renewBefore"):
        return not_after - parse_duration(spec["renewBefore"])
    return not_before + (not_after - not_before) * 2 / 3  # cert-manager renews at two thirds


def _time(at: datetime.datetime) -> str:
    return at.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class CertificateIssuer(Controller):
    """Keys: `Certificate:NS/NAME`, `Issuer:NS/NAME`, `ClusterIssuer:NAME`, `<injectable kind>:NAME`."""

    kind = "Certificate"
    workers = 4

    def __init__(self, host: KubeClient) -> None:
        super().__init__()
        register_kinds()
        self.host = host
        self.informers = {
            kind: Informer(host, resource_of(kind), kind, name=kind)
            for kind in ("Certificate", "Issuer", "ClusterIssuer", *INJECTABLE)
        }

    def setup(self) -> None:
        for kind, informer in self.informers.items():
            informer.add_handlers(Handlers.each(functools.partial(self._changed, kind)))

    def _changed(self, kind: str, obj: Obj) -> None:
        meta = obj["metadata"]
        if kind in INJECTABLE and not (
            {INJECT_FROM, INJECT_FROM_SECRET} & set(meta.get("annotations") or {})
        ):
            return
        self.queue.add(
            f"{kind}:{meta['namespace']}/{meta['name']}"
            if meta.get("namespace")
            else f"{kind}:{meta['name']}"
        )

    def resync(self) -> None:
        for kind, informer in self.informers.items():
            for obj in list(informer.store.values()):
                self._changed(kind, obj)

    async def start(self) -> None:
        """Runs until cancelled."""
        await self.run_with(
            list(self.informers.values()),
            "serving cert-manager's Certificates and CA injection",
            host=self.host.server,
        )

    async def reconcile(self, key: str) -> None:
        kind, _, rest = key.partition(":")
        obj = self.informers[kind].get(rest)
        if obj is None:
            return
        if kind == "Certificate":
            await self._certificate(copy.deepcopy(obj))
        elif kind in ("Issuer", "ClusterIssuer"):
            await self._issuer(copy.deepcopy(obj))
        else:
            await self._inject(kind, copy.deepcopy(obj))

    # ---- issuers ---------------------------------------------------------------------------

    async def _issuer(self, issuer: Obj) -> None:
        spec = issuer.get("spec") or {}
        ok, reason, message = True, "IsReady", "Signing CA verified" if "ca" in spec else "Issuer is ready"
        if "ca" not in spec and "selfSigned" not in spec:
            ok, reason, message = False, "Unsupported", "vnest serves selfSigned and ca issuers only"
        await self._set_status(issuer, ok, reason, message)

    def _issuer_of(self, cert: Obj) -> Obj | None:
        ref = cert["spec"].get("issuerRef") or {}
        if ref.get("kind", "Issuer") == "ClusterIssuer":
            return self.informers["ClusterIssuer"].get(ref["name"])
        return self.informers["Issuer"].get(f"{cert['metadata']['namespace']}/{ref.get('name')}")

    async def _signer(self, issuer: Obj, cert: Obj) -> tuple[x509.Certificate, Any] | None:
        """The CA that signs for `issuer`: None for selfSigned; a CA Issuer's Secret otherwise."""
        spec = issuer.get("spec") or {}
        if "selfSigned" in spec:
            return None
        if "ca" not in spec:
            raise VnestError(
                f"issuer {issuer['metadata']['name']}: vnest serves selfSigned and ca issuers only"
            )
        # A ClusterIssuer's CA Secret lives in cert-manager's namespace, as cert-manager reads it.
        namespace = issuer["metadata"].get("namespace") or "cert-manager"
        secret = await self.host.get_or_none("Secret", spec["ca"]["secretName"], namespace)
        if secret is None or "tls.crt" not in secret.get("data", {}):
            raise VnestError(f"the CA Secret {namespace}/{spec['ca']['secretName']} is not there yet")
        ca_cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
        ca_key = serialization.load_pem_private_key(base64.b64decode(secret["data"]["tls.key"]), None)
        return ca_cert, ca_key

    # ---- certificates ------------------------------------------------------------------------

    async def _certificate(self, cert: Obj) -> None:
        meta, spec = cert["metadata"], cert["spec"]
        key = f"Certificate:{meta['namespace']}/{meta['name']}"
        issuer = self._issuer_of(cert)
        if issuer is None:
            await self._set_status(
                cert, False, "Pending", f"issuer {spec.get('issuerRef', {}).get('name')!r} not found"
            )
            return
        secret = await self.host.get_or_none("Secret", spec["secretName"], meta["namespace"])
        digest = spec_digest(spec)
        current = (secret or {}).get("metadata", {}).get("annotations", {}).get(ANNOTATION_SPEC)
        if secret is not None and current == digest and "tls.crt" in secret.get("data", {}):
            cert_obj = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
            renew = renewal_time(spec, cert_obj.not_valid_before_utc, cert_obj.not_valid_after_utc)
            if renew > datetime.datetime.now(datetime.UTC):
                await self._issued(cert, cert_obj.not_valid_before_utc, cert_obj.not_valid_after_utc, renew)
                self.queue.add_after(key, (renew - datetime.datetime.now(datetime.UTC)).total_seconds() + 1)
                return
        try:
            issued = issue(spec, await self._signer(issuer, cert))
        except (ValueError, VnestError) as e:
            await self._set_status(cert, False, "Failed", str(e))
            self.queue.add_after(key, 5)
            return
        template = spec.get("secretTemplate") or {}
        ref = spec.get("issuerRef") or {}
        body: Obj = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": {
                "name": spec["secretName"],
                "namespace": meta["namespace"],
                "labels": {**(template.get("labels") or {}), "controller.cert-manager.io/fao": "true"},
                "annotations": {
                    **(template.get("annotations") or {}),
                    f"{GROUP}/certificate-name": meta["name"],
                    f"{GROUP}/issuer-name": str(ref.get("name", "")),
                    f"{GROUP}/issuer-kind": str(ref.get("kind", "Issuer")),
                    f"{GROUP}/alt-names": ",".join(spec.get("dnsNames") or []),
                    f"{GROUP}/ip-sans": ",".join(spec.get("ipAddresses") or []),
                    ANNOTATION_SPEC: digest,
                },
            },
            "data": {
                "tls.crt": _b64(issued.cert_pem),
                "tls.key": _b64(issued.key_pem),
                "ca.crt": _b64(issued.ca_pem),
            },
        }
        await self.host.apply(body)
        _log.info("issued", certificate=f"{meta['namespace']}/{meta['name']}", secret=spec["secretName"])
        renew = renewal_time(spec, issued.not_before, issued.not_after)
        revision = int((cert.get("status") or {}).get("revision") or 0) + 1
        await self._issued(cert, issued.not_before, issued.not_after, renew, revision=revision)
        self._requeue_injections(meta["namespace"], meta["name"], spec["secretName"])

    def _requeue_injections(self, namespace: str, certificate: str, secret: str) -> None:
        for kind in INJECTABLE:
            for obj in list(self.informers[kind].store.values()):
                annotations = obj["metadata"].get("annotations") or {}
                if (
                    annotations.get(INJECT_FROM) == f"{namespace}/{certificate}"
                    or annotations.get(INJECT_FROM_SECRET) == f"{namespace}/{secret}"
                ):
                    self.queue.add(f"{kind}:{obj['metadata']['name']}")

    async def _issued(
        self,
        cert: Obj,
        not_before: datetime.datetime,
        not_after: datetime.datetime,
        renew: datetime.datetime,
        **fields: Any,
    ) -> None:
        await self._set_status(
            cert,
            True,
            "Ready",
            "Certificate is up to date and has not expired",
            notBefore=_time(not_before),
            notAfter=_time(not_after),
            renewalTime=_time(renew),
            **fields,
        )

    async def _set_status(self, obj: Obj, ok: bool, reason: str, message: str, **fields: Any) -> None:
        status = copy.deepcopy(obj.get("status") or {})
        status["conditions"] = set_condition(
            status.get("conditions") or [],
            "Ready",
            ok,
            reason,
            message,
            int(obj["metadata"].get("generation", 1)),
        )
        status.update(fields)
        if status == obj.get("status"):
            return
        meta = obj["metadata"]
        await self.host.patch(obj["kind"], meta["name"], {"status": status}, meta.get("namespace"), "status")

    # ---- CA injection ------------------------------------------------------------------------

    async def _ca_bundle(self, annotations: dict[str, str]) -> str | None:
        """The base64 CA bundle an inject annotation names, or None while it is not issued."""
        if source := annotations.get(INJECT_FROM):
            namespace, _, name = source.partition("/")
            cert = self.informers["Certificate"].get(f"{namespace}/{name}")
            if cert is None:
                return None
            secret_name = cert["spec"]["secretName"]
        elif source := annotations.get(INJECT_FROM_SECRET):
            namespace, _, secret_name = source.partition("/")
        else:
            return None
        secret = await self.host.get_or_none("Secret", secret_name, namespace)
        data = (secret or {}).get("data") or {}
        ca = data.get("ca.crt") or data.get("tls.crt")
        return str(ca) if ca else None

    async def _inject(self, kind: str, obj: Obj) -> None:
        bundle = await self._ca_bundle(obj["metadata"].get("annotations") or {})
        if bundle is None:
            return  # comes back when the certificate is issued
        changed = False
        if kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
            for webhook in obj.get("webhooks") or []:
                if webhook.setdefault("clientConfig", {}).get("caBundle") != bundle:
                    webhook["clientConfig"]["caBundle"] = bundle
                    changed = True
        elif kind == "CustomResourceDefinition":
            conversion = obj["spec"].get("conversion") or {}
            if conversion.get("strategy") == "Webhook":
                config = conversion.setdefault("webhook", {}).setdefault("clientConfig", {})
                if config.get("caBundle") != bundle:
                    config["caBundle"] = bundle
                    changed = True
        elif obj["spec"].get("caBundle") != bundle:  # APIService
            obj["spec"]["caBundle"] = bundle
            changed = True
        if changed:
            try:
                await self.host.replace(obj)
            except ApiError as e:
                if not e.conflict:
                    raise
                self.queue.add_after(f"{kind}:{obj['metadata']['name']}", 0.5)
                return
            _log.info("injected CA bundle", kind=kind, name=obj["metadata"]["name"])


async def serve(kubeconfig_path: Path | None, context: str | None) -> None:
    host = KubeClient.from_kubeconfig(kubeconfig_path, context)
    try:
        await CertificateIssuer(host).start()
    finally:
        await host.close()
