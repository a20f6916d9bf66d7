"""The virtual cluster verbs: create, list, connect, disconnect, delete, pause, resume, describe."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

# lifecycle, asyncio and yaml are imported by the commands that use them, not with this module:
# every `vnest` invocation imports the CLI modules, and `vnest --help`, `vnest CMD --help` and
# click's usage errors need none of them (lifecycle brings the Kubernetes client).

DRIVERS = ("kubernetes", "process")  # vnest.drivers.DRIVERS, copied so that the help needs no import

namespace_option = click.option(
    "-n",
    "--namespace",
    help="Host namespace of the virtual cluster (default: vcluster-NAME).",
)


def _ns(name: str, namespace: str | None) -> str:
    # vCluster's default, so `vnest connect my-vcluster` finds what `vnest create my-vcluster` made.
    return namespace or f"vcluster-{name}"


@click.command()
@click.argument("name")
@namespace_option
@click.option(
    "-f",
    "--values",
    "files",
    multiple=True,
    type=click.Path(path_type=Path),
    help="A vcluster.yaml values file; repeat to merge several, later ones win.",
)
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="Set one value, e.g. sync.toHost.ingresses.enabled=true.",
)
@click.option(
    "--driver",
    type=click.Choice(DRIVERS),
    help="Where the control plane runs (default: kubernetes; process on a vnest-host with KWOK nodes).",
)
@click.option(
    "--connect/--no-connect",
    default=True,
    show_default=True,
    help="Switch the kube context to it when it is up.",
)
@click.option(
    "--upgrade", is_flag=True, help="Apply the config to an existing virtual cluster instead of failing."
)
@click.option(
    "--wait/--no-wait",
    default=True,
    show_default=True,
    help="Wait until its API answers and the control plane is ready.",
)
@click.option(
    "--timeout", type=click.FloatRange(min=1), default=180, show_default=True, help="Seconds to wait."
)
def create(
    name: str,
    namespace: str | None,
    files: tuple[Path, ...],
    sets: tuple[str, ...],
    driver: str | None,
    connect: bool,
    upgrade: bool,
    wait: bool,
    timeout: float,
) -> None:
    """Create a virtual cluster NAME in a host namespace (created if missing)."""
    import asyncio

    from vnest import lifecycle

    asyncio.run(
        lifecycle.create(
            name, _ns(name, namespace), list(files), list(sets), driver, connect, upgrade, wait, timeout
        )
    )


@click.command("list")
@click.option("-n", "--namespace", help="Only this host namespace (default: all).")
@click.option(
    "-o", "--output", type=click.Choice(["table", "json", "yaml"]), default="table", show_default=True
)
def list_(namespace: str | None, output: str) -> None:
    """List the virtual clusters on the host."""
    import asyncio

    import yaml

    from vnest import lifecycle

    rows = asyncio.run(lifecycle.list_clusters(namespace))
    if output == "json":
        click.echo(json.dumps(rows, indent=2))
    elif output == "yaml":
        click.echo(yaml.safe_dump(rows, sort_keys=False), nl=False)
    else:
        click.echo(lifecycle.table(rows))


@click.command()
@click.argument("name")
@namespace_option
@click.option("--print", "print_only", is_flag=True, help="Print the kubeconfig instead of switching to it.")
@click.option(
    "--kube-config",
    "out_file",
    type=click.Path(path_type=Path),
    help="Write the kubeconfig to this file instead.",
)
@click.option("--server", help="API server URL to put in the kubeconfig (e.g. a port-forward's).")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def connect(
    name: str,
    namespace: str | None,
    print_only: bool,
    out_file: Path | None,
    server: str | None,
    command: tuple[str, ...],
) -> None:
    """Switch the kube context to virtual cluster NAME, or run one command in it: `-- CMD ARGS...`."""
    import asyncio

    from vnest import lifecycle

    code = asyncio.run(
        lifecycle.connect(name, _ns(name, namespace), print_only, out_file, list(command) or None, server)
    )
    sys.exit(code)


@click.command()
def disconnect() -> None:
    """Switch back to the context that was current before `vnest connect`."""
    from vnest import lifecycle

    lifecycle.disconnect()


@click.command()
@click.argument("name")
@namespace_option
@click.option("--delete-namespace", is_flag=True, help="Delete the host namespace too.")
@click.option(
    "--keep-data", is_flag=True, help="Keep the datastore (PVC, or local data for the process driver)."
)
def delete(name: str, namespace: str | None, delete_namespace: bool, keep_data: bool) -> None:
    """Delete virtual cluster NAME and every host object it owns."""
    import asyncio

    from vnest import lifecycle

    asyncio.run(lifecycle.delete(name, _ns(name, namespace), delete_namespace, keep_data))


@click.command()
@click.argument("name")
@namespace_option
def pause(name: str, namespace: str | None) -> None:
    """Stop the control plane and its workloads on the host, keeping all state."""
    import asyncio

    from vnest import lifecycle

    asyncio.run(lifecycle.pause(name, _ns(name, namespace)))


@click.command()
@click.argument("name")
@namespace_option
@click.option(
    "--timeout", type=click.FloatRange(min=1), default=180, show_default=True, help="Seconds to wait."
)
def resume(name: str, namespace: str | None, timeout: float) -> None:
    """Bring a paused virtual cluster back as it was."""
    import asyncio

    from vnest import lifecycle

    asyncio.run(lifecycle.resume(name, _ns(name, namespace), timeout))


@click.command()
@click.argument("name")
@namespace_option
@click.option("-o", "--output", type=click.Choice(["yaml", "json"]), default="yaml", show_default=True)
def describe(name: str, namespace: str | None, output: str) -> None:
    """Show the config in effect, versions, endpoints, synced-object counts and health."""
    import asyncio

    import yaml

    from vnest import lifecycle

    info = asyncio.run(lifecycle.describe(name, _ns(name, namespace)))
    if output == "json":
        click.echo(json.dumps(info, indent=2))
    else:
        click.echo(yaml.safe_dump(info, sort_keys=False), nl=False)


COMMANDS = [create, list_, connect, disconnect, delete, pause, resume, describe]
