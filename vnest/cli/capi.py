"""`vnest capi`: vnest as a Cluster API provider (vnest.integrations.capi)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

_kubeconfig = click.option(
    "--kubeconfig",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The management cluster's kubeconfig (default: $KUBECONFIG, ~/.kube/config, else in-cluster).",
)
_context = click.option("--context", help="Its context (default: the current one).")


def _default_root() -> Path:
    from vnest.host.local import vnest_home

    return vnest_home() / "capi"


@click.group()
def capi() -> None:
    """vnest as a Cluster API infrastructure provider: `clusterctl init --infrastructure vnest`.

    \b
    vnest capi repository                 write the clusterctl repository and clusterctl.yaml
    clusterctl init --infrastructure vnest --config <that clusterctl.yaml>
    vnest capi local start                on the KWOK host only: run the controllers here
    clusterctl generate cluster NAME --infrastructure vnest --target-namespace NS | kubectl apply -f -
    """


@capi.command()
@click.option(
    "--dir",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to write it (default: $VNEST_HOME/capi/repository).",
)
def repository(folder: Path | None) -> None:
    """Write the clusterctl local repository (cert-manager, Cluster API, vnest) and its clusterctl.yaml.

    Prints the clusterctl.yaml's path: give it to clusterctl with --config, or copy its
    `providers` and `cert-manager` entries into ~/.config/cluster-api/clusterctl.yaml.
    """
    from vnest.integrations.capi import repository as repo

    path = repo.write((folder or _default_root() / "repository").resolve())
    click.echo(str(path))


@capi.command()
@_kubeconfig
@_context
@click.option(
    "--driver",
    type=click.Choice(["kubernetes", "process"]),
    help="How virtual clusters run (default: process on the KWOK local host, kubernetes elsewhere).",
)
def provider(kubeconfig: Path | None, context: str | None, driver: str | None) -> None:
    """Run the VNestCluster controller (what the provider's Deployment runs)."""
    from vnest.integrations.capi.provider import serve

    asyncio.run(serve(kubeconfig, context, driver))


@capi.command("cert-issuer")
@_kubeconfig
@_context
def cert_issuer(kubeconfig: Path | None, context: str | None) -> None:
    """Serve cert-manager's Certificates and CA injection (what `clusterctl init`'s providers ask for)."""
    from vnest.integrations.capi.certissuer import serve

    asyncio.run(serve(kubeconfig, context))


@capi.group()
def local() -> None:
    """On the KWOK local host: Cluster API's controllers as local processes."""


def _host_kubeconfig() -> tuple[Path, str | None]:
    from vnest.host.local import LocalHost

    local_host = LocalHost()
    if local_host.state() is None:
        from vnest.errors import VnestError

        raise VnestError("no local host is running", hint="vnest host up --runtime kwok")
    return local_host.admin_kubeconfig, None


@local.command("start")
def local_start() -> None:
    """Start the certificate issuer, the provider and Cluster API's core manager (after clusterctl init)."""
    from vnest.integrations.capi import local as capi_local

    path, context = _host_kubeconfig()
    asyncio.run(capi_local.start(_default_root() / "local", path, context))


@local.command("stop")
def local_stop() -> None:
    """Stop them (`vnest host down` does too)."""
    from vnest import log
    from vnest.host.local import LocalHost
    from vnest.integrations.capi import local as capi_local

    state = LocalHost().state()
    stopped = capi_local.stop(_default_root() / "local", state.ports.apiserver if state else None)
    log.get("capi").done("stopped", processes=",".join(stopped) or "nothing")


@capi.command(hidden=True)
@_kubeconfig
@_context
@click.option("--netns", "namespace", required=True)
@click.option("--webhook-port", type=int, required=True)
def bridge(kubeconfig: Path | None, context: str | None, namespace: str, webhook_port: int) -> None:
    """Join Cluster API's network namespace to the machine's loopback (started by `local start`)."""
    from vnest.integrations.capi.local import bridge as serve

    assert kubeconfig is not None
    asyncio.run(serve(kubeconfig, context, namespace, webhook_port))
