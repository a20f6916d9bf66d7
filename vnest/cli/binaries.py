"""`vnest binaries`: the pinned upstream binaries."""

from __future__ import annotations

import click

# vnest.binaries is imported by the commands that use it, not with this module: every `vnest`
# invocation imports the CLI modules, so `vnest --help` would pay for it too.


@click.group()
def binaries() -> None:
    """Build or locate the pinned upstream binaries (Kubernetes, kine, etcd, KWOK, helm)."""


CONFORMANCE = click.option(
    "--conformance",
    is_flag=True,
    help="Kubernetes' e2e.test and ginkgo instead (for conformance runs; built only on demand).",
)


@binaries.command()
@CONFORMANCE
def ensure(conformance: bool) -> None:
    """Build whatever is missing for the current pins, then print their folder."""
    from vnest import binaries as bins

    click.echo(bins.ensure_conformance().dir if conformance else bins.ensure().dir)


@binaries.command()
@CONFORMANCE
def path(conformance: bool) -> None:
    """Print the folder that holds (or will hold) the binaries for the current pins."""
    from vnest import binaries as bins

    click.echo(bins.conformance_dir() if conformance else bins.bin_dir())
