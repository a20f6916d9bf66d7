"""Entry point of the `vnest` command: global flags, exit codes, error reporting."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from vnest import __version__, log
from vnest.cli.binaries import binaries
from vnest.cli.capi import capi
from vnest.cli.clusters import COMMANDS
from vnest.cli.controlplane import controlplane
from vnest.cli.host import host
from vnest.cli.syncer import syncer
from vnest.errors import VnestError


class _Group(click.Group):
    """Turns vnest's errors into one line on stderr and the documented exit code."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except VnestError as e:
            log.get("cli").error(str(e), exc_info=True)
            if e.hint:
                click.echo(f"hint: {e.hint}", err=True)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Log every detail (quiet by default).")
@click.version_option(__version__, prog_name="vnest")
def cli(debug: bool) -> None:
    """Virtual Kubernetes clusters inside one namespace of a host cluster.

    Shell completion: eval "$(_VNEST_COMPLETE=bash_source vnest)" (zsh_source, fish_source).
    """
    log.setup(debug)


for command in COMMANDS:
    cli.add_command(command)
cli.add_command(host)
cli.add_command(binaries)
cli.add_command(controlplane)
cli.add_command(syncer)
cli.add_command(capi)


@cli.command("port-forward", hidden=True)
@click.option("--kubeconfig", type=click.Path(path_type=Path), required=True)
@click.option("--context", required=True)
@click.option("--namespace", required=True)
@click.option("--pod", required=True)
@click.option("--port", type=int, required=True, help="The pod's port.")
@click.option("--local-port", type=int, required=True, help="The port on 127.0.0.1.")
def port_forward(
    kubeconfig: Path, context: str, namespace: str, pod: str, port: int, local_port: int
) -> None:
    """The kubernetes driver's background proxy: each connection to 127.0.0.1:LOCAL_PORT, a
    port-forward stream of its own to POD:PORT."""
    from vnest.drivers import portforward

    portforward.run(kubeconfig, context, namespace, pod, port, local_port)


def main() -> None:
    cli(prog_name="vnest")
