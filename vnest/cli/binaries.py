"""`vnest binaries`: the pinned upstream binaries."""

from __future__ import annotations

import click

from vnest import binaries as bins


@click.group()
def binaries() -> None:
    """Build or locate the pinned upstream binaries (Kubernetes, kine, etcd, KWOK, helm)."""


@binaries.command()
def ensure() -> None:
    """Build whatever is missing for the current pins, then print their folder."""
    click.echo(bins.ensure().dir)


@binaries.command()
def path() -> None:
    """Print the folder that holds (or will hold) the binaries for the current pins."""
    click.echo(bins.bin_dir())
