"""`/metrics` scraped over real HTTP from running nodes after a real job through a gate's
relay, and refused without the token."""

from __future__ import annotations

from pathlib import Path

import trio
from prometheus_client.parser import text_string_to_metric_families

from p2psched.node.node import Node
from p2psched.scheduler.job import parse_job
from tests.harness.metrics import scraper
from tests.harness.network import echo_job, relayed_network


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, by (name, sorted labels)."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(got: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> float:
    return sum(v for (n, _), v in got.items() if n == name)


async def scrape(node: Node) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with scraper(node) as http:
        r = await http.get("/metrics")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        return samples(r.text)


async def test_metrics_of_a_scheduler_a_worker_and_a_gate_after_a_job(tmp_path: Path) -> None:
    async with relayed_network(tmp_path, workers=2) as (scheduler, workers, (gate,)):
        job = scheduler.jobs.submit(parse_job(echo_job(30)))
        with trio.fail_after(60):
            await job.done.wait()

        s = await scrape(scheduler)
        assert s[("p2psched_task_outcomes_total", (("outcome", "completed"),))] == 30
        assert s[("p2psched_jobs", (("state", "done"),))] == 1
        assert s[("p2psched_queue_depth", ())] == 0
        assert s[("p2psched_queue_wait_seconds_count", ())] == 30
        assert s[("p2psched_negotiations_total", (("outcome", "commit"),))] >= 1
        assert total(s, "p2psched_dht_rpcs_sent_total") > 0
        assert total(s, "p2psched_dht_rpc_round_trip_seconds_count") > 0
        assert s[("p2psched_dht_routing_table_contacts", ())] >= 1
        assert s[("p2psched_frame_budget_waits_total", ())] == 0  # no message over 64 KiB
        me = (("node", scheduler.node_id.hex()), ("roles", "scheduler"))
        assert s[("p2psched_node_info", me)] == 1
        assert total(s, "process_cpu_seconds_total") > 0
        assert not any(n.startswith("p2psched_relay_") for n, _ in s)  # not a gate

        g = await scrape(gate)
        assert g[("p2psched_relay_reservations", ())] == 2
        made = g[("p2psched_relay_reservation_events_total", (("outcome", "made"),))]
        opened = g[("p2psched_relay_circuit_events_total", (("outcome", "opened"),))]
        assert made == 2 and opened == 2  # a circuit per worker, carrying all its tasks
        assert g[("p2psched_relay_bytes_total", ())] > 0
        assert total(g, "p2psched_dht_rpcs_received_total") > 0

        ran = 0.0
        for w in workers:
            got = await scrape(w)
            ran += got[("p2psched_worker_driver_run_seconds_count", (("driver", "echo"),))]
            assert got[("p2psched_worker_tasks_running", ())] == 0
            assert got[("p2psched_worker_slots_free", ())] == 2
            assert got[("p2psched_worker_frame_budget_waits_total", ())] == 0
        assert ran == 30  # every task ran once, on one of them


async def test_metrics_without_the_token_are_refused(tmp_path: Path) -> None:
    async with relayed_network(tmp_path, workers=0) as (_, _, (gate,)), scraper(gate) as http:
        r = await http.get("/metrics", headers={"authorization": "Bearer wrong"})
        assert r.status_code == 401 and "api.token" in r.json()["message"]
        r = await http.get("/openapi.json")
        assert "/metrics" in r.json()["paths"]  # documented, like every route
