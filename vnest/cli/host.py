"""`vnest host`: the embedded local host cluster."""

from __future__ import annotations

import json

import click

# vnest.host.local is imported by the commands, not with this module: it brings TLS, DNS and HTTP
# libraries (about 0.1 s) that `vnest --help` and every other command would pay for too.

DEFAULT_PORT = 16443  # vnest.host.local.DEFAULT_PORT, copied so that the help needs no import


@click.group()
def host() -> None:
    """The embedded local host cluster, for machines with no Kubernetes cluster.

    Real etcd, kube-apiserver, kube-controller-manager and kube-scheduler on
    loopback, with KWOK simulating the nodes and the pod lifecycle, and CoreDNS
    as the cluster DNS.
    """


@host.command()
@click.option(
    "--nodes",
    type=click.IntRange(min=1, max=100),
    default=2,
    show_default=True,
    help="Number of simulated (KWOK) nodes.",
)
@click.option(
    "--port",
    type=click.IntRange(min=1024, max=65530),
    default=DEFAULT_PORT,
    show_default=True,
    help="Loopback port of the API server; the next six go to etcd (client, peer), "
    "controller manager, scheduler, KWOK and CoreDNS (UDP and TCP).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=180,
    show_default=True,
    help="Seconds to wait for readiness.",
)
def up(nodes: int, port: int, timeout: float) -> None:
    """Start the local host cluster (harmless when it already runs) and switch to its context."""
    from vnest.host.local import LocalHost, Ports

    LocalHost().up(nodes, Ports.starting_at(port), wait=timeout)


@host.command()
@click.option("--keep-data", is_flag=True, help="Keep the datastore and PKI for the next `up`.")
def down(keep_data: bool) -> None:
    """Stop every process of the local host cluster and remove its kube context."""
    from vnest.host.local import LocalHost

    LocalHost().down(keep_data=keep_data)


@host.command()
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
def status(output: str) -> None:
    """Show whether the local host cluster runs, and its nodes."""
    from vnest.host.local import CONTEXT, LocalHost

    st = LocalHost().status()
    if output == "json":
        click.echo(json.dumps(st, indent=2))
        return
    click.echo(f"context:    {CONTEXT}")
    click.echo(f"api server: {st['apiServer'] or '-'}")
    click.echo(f"dns:        {st['dns'] or '-'}")
    click.echo(f"state:      {st['stateDir']}")
    click.echo(f"ready:      {'yes' if st['ready'] else 'no'}")
    for name, comp in st["components"].items():
        click.echo(f"  {name:<24} {'running pid ' + str(comp['pid']) if comp['running'] else 'stopped'}")
    for node in st["nodes"]:
        click.echo(f"  node {node['name']:<19} {'Ready' if node['ready'] else 'NotReady'}")
