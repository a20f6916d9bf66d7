"""`vnest controlplane run`: the entrypoint both drivers start (not for everyday use)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

# vnest.controlplane.run is imported by the command, not with this module: it brings the config
# models and the Kubernetes client, which `vnest --help` and every other command would pay for too.


@click.group()
def controlplane() -> None:
    """Run a virtual control plane (what the drivers start; rarely run by hand)."""


@controlplane.command()
@click.option("--name", required=True, help="Name of the virtual cluster.")
@click.option("--namespace", required=True, help="Host namespace it lives in.")
@click.option(
    "--config", "config", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True
)
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option(
    "--bin-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder with kube-apiserver, kube-controller-manager, kine, etcd (default: the pinned build).",
)
@click.option("--listen-address", default="127.0.0.1", show_default=True)
@click.option("--api-port", type=int, default=0, help="API server port (0: any free port).")
@click.option(
    "--host-kubeconfig",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Kubeconfig for the host cluster (default: in-cluster service account).",
)
@click.option("--advertise-address", default=lambda: os.environ.get("POD_IP", "127.0.0.1"))
@click.option("--public-server", default="", help="API server URL written into the published kubeconfig.")
@click.option(
    "--host-dns",
    help="The host cluster's DNS (ip[:port]) for networking.advanced.fallbackHostCluster "
    "(default: in a pod, its nameserver; elsewhere none).",
)
def run(
    name: str,
    namespace: str,
    config: Path,
    data_dir: Path,
    bin_dir: Path | None,
    listen_address: str,
    api_port: int,
    host_kubeconfig: Path | None,
    advertise_address: str,
    public_server: str,
    host_dns: str | None,
) -> None:
    """Start the datastore, API server, controller manager (and scheduler) and the syncer; keep them running."""
    from vnest.controlplane.run import Options, main

    options = Options(
        name=name,
        namespace=namespace,
        config=config,
        data_dir=data_dir,
        bin_dir=bin_dir,
        listen_address=listen_address,
        api_port=api_port,
        host_kubeconfig=host_kubeconfig,
        advertise_address=advertise_address,
        public_server=public_server,
        host_dns=host_dns,
    )
    sys.exit(main(options))
