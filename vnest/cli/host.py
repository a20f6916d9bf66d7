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
    loopback, CoreDNS as the cluster DNS, and nodes that are real (containerd,
    kubelet and kube-proxy in network namespaces of their own, images from a
    local registry) or simulated by KWOK.
    """


@host.command()
@click.option(
    "--nodes",
    type=click.IntRange(min=1, max=100),
    default=2,
    show_default=True,
    help="Number of nodes.",
)
@click.option(
    "--runtime",
    type=click.Choice(["containerd", "kwok"]),
    default=None,
    help="Real nodes (containerd) or simulated ones (kwok). Default: containerd where the machine "
    "allows it (root, cgroup v1, overlayfs, containerd, runc, CNI plugins), else kwok; an existing "
    "host keeps its own.",
)
@click.option(
    "--port",
    type=click.IntRange(min=1024, max=65530),
    default=DEFAULT_PORT,
    show_default=True,
    help="Loopback port of the API server; the next seven go to etcd (client, peer), "
    "controller manager, scheduler, KWOK, CoreDNS (UDP and TCP) and the image registry.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=180,
    show_default=True,
    help="Seconds to wait for readiness.",
)
def up(nodes: int, runtime: str | None, port: int, timeout: float) -> None:
    """Start the local host cluster (harmless when it already runs) and switch to its context."""
    from vnest.host.local import LocalHost, Ports

    LocalHost().up(nodes, Ports.starting_at(port), wait=timeout, runtime=runtime)


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
    click.echo(f"runtime:    {st['runtime'] or '-'}")
    click.echo(f"api server: {st['apiServer'] or '-'}")
    click.echo(f"dns:        {st['dns'] or '-'}")
    click.echo(f"state:      {st['stateDir']}")
    click.echo(f"ready:      {'yes' if st['ready'] else 'no'}")
    for name, comp in st["components"].items():
        click.echo(f"  {name:<24} {'running pid ' + str(comp['pid']) if comp['running'] else 'stopped'}")
    for node in st["nodes"]:
        click.echo(f"  node {node['name']:<19} {'Ready' if node['ready'] else 'NotReady'}")


@host.command(hidden=True)
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
def forward(config: str) -> None:
    """Run the forwarder between the machine's loopback and the real nodes' network."""
    import asyncio
    from pathlib import Path

    from vnest.host import forward as forwarder

    asyncio.run(forwarder.serve(forwarder.load(Path(config))))


@host.command(hidden=True)
@click.argument("kubeconfig", type=click.Path(exists=True, dir_okay=False))
@click.argument("nodes_folder", type=click.Path(file_okay=False))
def provision(kubeconfig: str, nodes_folder: str) -> None:
    """Run the provisioner of node-local volumes for the real nodes."""
    import asyncio
    from pathlib import Path

    from vnest.host import storage

    asyncio.run(storage.serve(Path(kubeconfig), Path(nodes_folder)))
