"""Entry point of the `vnest` command: global flags, exit codes, error reporting."""

from __future__ import annotations

import sys

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


@cli.command("port-forward", hidden=True, context_settings={"ignore_unknown_options": True})
@click.argument("argv", nargs=-1, type=click.UNPROCESSED)
def port_forward(argv: tuple[str, ...]) -> None:
    """The kubernetes driver's background proxy: `kubectl port-forward ARGV`, kept running."""
    from vnest.drivers.kubernetes import port_forward_forever

    port_forward_forever(list(argv))


def main() -> None:
    cli(prog_name="vnest")
