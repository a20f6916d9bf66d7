"""The control plane's metrics endpoint (served by the syncer) and the host DNS it falls back to."""

from __future__ import annotations

import asyncio

import httpx

from vnest.controlplane.run import resolv_conf_nameserver
from vnest.dns.metrics import DnsMetrics
from vnest.syncer.metrics import MetricsServer, syncer_text


def test_the_endpoint_serves_metrics_and_survives_garbage():
    dns = DnsMetrics()
    dns.query("A", "answered", 0.0003)

    def render() -> str:
        return syncer_text([("Pod", 7, 1, 2)], [("virtual Pod", 9)]) + dns.prometheus_text()

    async def scenario() -> None:
        server = MetricsServer(render)
        port = await server.start()
        try:
            # A client that sends junk and one that hangs up mid-head change nothing.
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"\x00\xff garbage\r\n\r\n")
            await writer.drain()
            writer.close()
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /metr")
            writer.close()
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                resp = await http.get("/metrics")
                assert resp.status_code == 200
                assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
                body = resp.text
                assert 'vnest_syncer_reconciles_total{kind="Pod"} 7' in body
                assert 'vnest_syncer_reconcile_failures_total{kind="Pod"} 1' in body
                assert 'vnest_syncer_queue_depth{kind="Pod"} 2' in body
                assert 'vnest_syncer_cached_objects{informer="virtual Pod"} 9' in body
                assert 'vnest_dns_queries_total{qtype="A"} 1' in body
                assert 'vnest_dns_request_duration_seconds_bucket{le="0.0005"} 1' in body
                assert (await http.get("/healthz")).text == "ok\n"
                assert (await http.get("/secrets")).status_code == 404
                assert (await http.post("/metrics")).status_code == 405
        finally:
            await server.close()

    asyncio.run(scenario())


def test_the_pod_nameserver_is_the_first_one_in_resolv_conf(tmp_path):
    conf = tmp_path / "resolv.conf"
    conf.write_text(
        "search a.svc.cluster.local svc.cluster.local\nnameserver 10.96.0.10\nnameserver 1.1.1.1\n"
    )
    assert resolv_conf_nameserver(conf) == "10.96.0.10"
    conf.write_text("# nothing\noptions ndots:5\n")
    assert resolv_conf_nameserver(conf) is None
    assert resolv_conf_nameserver(tmp_path / "missing") is None
