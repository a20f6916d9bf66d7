import pytest
from click.testing import CliRunner

from vnest.cli.main import cli


@pytest.mark.parametrize(
    ("value", "message"),
    [("0", "0 is not in the range 1<=x<=100"), ("abc", "'abc' is not a valid integer")],
)
def test_host_up_rejects_bad_node_counts(value, message, tmp_path, monkeypatch):
    monkeypatch.setenv("VNEST_HOME", str(tmp_path))
    result = CliRunner().invoke(cli, ["host", "up", "--nodes", value])
    assert result.exit_code == 2
    assert "Invalid value for '--nodes'" in result.output
    assert message in result.output
    assert list(tmp_path.iterdir()) == []  # nothing was started or written


def test_help_lists_the_verbs():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    assert "binaries" in result.output and "host" in result.output


def test_constants_the_cli_copies_for_a_fast_help_equal_their_sources():
    from vnest import drivers
    from vnest.cli import clusters, host, syncer
    from vnest.host import local
    from vnest.syncer import run

    assert clusters.DRIVERS == drivers.DRIVERS
    assert host.DEFAULT_PORT == local.DEFAULT_PORT
    assert (syncer.HOST_QPS, syncer.HOST_BURST) == (run.HOST_QPS, run.HOST_BURST)
