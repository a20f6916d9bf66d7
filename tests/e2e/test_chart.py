"""The rendered chart is valid for a real API server: a server-side dry-run apply accepts every object."""

from __future__ import annotations

import subprocess
import time

import yaml

from vnest import binaries, chart
from vnest.host.local import CONTEXT


def _apply_dry_run(env, namespace: str, manifests: list[dict]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(binaries.ensure().kubectl),
            "--context",
            CONTEXT,
            "apply",
            "--server-side",
            "--dry-run=server",
            "-n",
            namespace,
            "-f",
            "-",
        ],
        input=yaml.safe_dump_all(manifests),
        env=env.vars,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_rendered_chart_passes_server_side_dry_run(host_env):
    ns = f"e2e-chart-{int(time.time() * 1000)}"
    name = "chart-vc"
    host_env.kubectl("--context", CONTEXT, "create", "namespace", ns)
    try:
        for values in (
            {},
            {
                "controlPlane": {
                    "distro": {"k8s": {"scheduler": {"enabled": True}}},
                    "statefulSet": {
                        "persistence": {"volumeClaim": {"enabled": False}},
                        "resources": {"requests": {"cpu": "100m"}},
                        "scheduling": {"tolerations": [{"operator": "Exists"}]},
                    },
                    "service": {"spec": {"type": "NodePort"}},
                }
            },
        ):
            manifests = chart.render(name, ns, values)
            proc = _apply_dry_run(host_env, ns, manifests)
            assert proc.returncode == 0, proc.stderr
            out = proc.stdout.lower()
            for m in manifests:
                # kubectl prints e.g. "statefulset.apps/chart-vc serverside-applied (server dry run)"
                assert f"{m['kind'].lower()}" in out
                assert f"/{m['metadata']['name']} serverside-applied (server dry run)" in out, proc.stdout
        # A dry run leaves nothing behind.
        left = host_env.kubectl(
            "--context", CONTEXT, "get", "statefulsets,services,secrets,roles", "-n", ns, "-o", "name"
        ).stdout
        assert name not in left
    finally:
        host_env.kubectl("--context", CONTEXT, "delete", "namespace", ns, "--wait=false", check=False)
