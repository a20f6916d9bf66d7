"""`vnest syncer run`: a syncer on its own (the control plane runs one in its process; for debugging)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

# vnest.config and vnest.syncer.run are imported by the command, not with this module: they bring
# the config models and the Kubernetes client, which `vnest --help` and every other command would
# pay for too. Their defaults are copied here so that the help needs no import.
HOST_QPS = 200.0  # vnest.syncer.run.HOST_QPS
HOST_BURST = 400  # vnest.syncer.run.HOST_BURST

_file = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.group()
def syncer() -> None:
    """Run a virtual cluster's syncer on its own (the control plane runs one itself; rarely run by hand)."""


@syncer.command()
@click.option("--name", required=True, help="Name of the virtual cluster.")
@click.option("--namespace", required=True, help="Host namespace it lives in.")
@click.option("--config", type=_file, required=True, help="The config in effect (vcluster.yaml shape).")
@click.option("--virtual-kubeconfig", type=_file, required=True)
@click.option("--host-kubeconfig", type=_file, help="Default: in-cluster service account.")
@click.option(
    "--ready-file", type=click.Path(dir_okay=False, path_type=Path), help="Written once caches synced."
)
@click.option(
    "--pki-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="The control plane's PKI; with it, the syncer serves the fake nodes' kubelet API.",
)
@click.option(
    "--kubelet-address", default="127.0.0.1", show_default=True, help="Where the kubelet API listens."
)
@click.option(
    "--host-qps",
    type=float,
    default=HOST_QPS,
    show_default=True,
    envvar="VNEST_HOST_QPS",
    help="Average requests a second to the host API (0: no cap).",
)
@click.option("--host-burst", type=int, default=HOST_BURST, show_default=True, envvar="VNEST_HOST_BURST")
@click.option("--dns-address", help="Serve the embedded DNS here (default: no DNS server).")
@click.option("--dns-port", type=int, default=0, show_default=True, help="0: any free port.")
@click.option(
    "--dns-fallback",
    envvar="VNEST_DNS_FALLBACK",
    help="The host cluster's DNS (ip[:port]), asked when networking.advanced.fallbackHostCluster is on.",
)
@click.option("--metrics-address", help="Serve /metrics here (default: no metrics endpoint).")
@click.option("--metrics-port", type=int, default=0, show_default=True, help="0: any free port.")
@click.option(
    "--pod-security-check",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The pinned pod-security-check binary; required unless policies.podSecurityStandard is privileged.",
)
def run(
    name: str,
    namespace: str,
    config: Path,
    virtual_kubeconfig: Path,
    host_kubeconfig: Path | None,
    ready_file: Path | None,
    pki_dir: Path | None,
    kubelet_address: str,
    host_qps: float,
    host_burst: int,
    dns_address: str | None,
    dns_port: int,
    dns_fallback: str | None,
    metrics_address: str | None,
    metrics_port: int,
    pod_security_check: Path | None,
) -> None:
    """Sync pods, services, configmaps and secrets between the virtual cluster and its host namespace."""
    from vnest.config import load_config
    from vnest.syncer.run import Options, main

    cluster_config = load_config([config], [])
    level = cluster_config.policies.pod_security_standard
    if pod_security_check is None and level != "privileged":
        raise click.UsageError(
            "--pod-security-check is required: policies.podSecurityStandard is "
            f"{level!r}, and pods are checked before they reach the host"
        )
    sys.exit(
        main(
            Options(
                name=name,
                namespace=namespace,
                virtual_kubeconfig=virtual_kubeconfig,
                host_kubeconfig=host_kubeconfig,
                config=cluster_config,
                ready_file=ready_file,
                pki_dir=pki_dir,
                kubelet_address=kubelet_address,
                host_qps=host_qps,
                host_burst=host_burst,
                dns_address=dns_address,
                dns_port=dns_port,
                dns_fallback=dns_fallback,
                metrics=(metrics_address, metrics_port) if metrics_address else None,
                pod_security_check=pod_security_check,
            )
        )
    )
