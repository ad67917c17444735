"""The node's Prometheus metrics: `GET /metrics` on its control API (behind the API's bearer
token), in the text exposition format, all named `p2psched_*`.

Owns: a `CollectorRegistry` per installed app (never the process-wide one: a process may run
several nodes), and the mapping from the node's own plain numbers, as its façade's counters
give them (the DHT core's counters and round trips, the jobs' stats, the relay's counters, the
task manager's run times), to metric families.
Promises: every value is read through the façade when scraped, on the trio thread (the route
is async), so a scrape sees one moment and costs nothing in between; label values come from
fixed sets in the code, but for `worker` on the predicted-wait gauge, at most `MAX_WORKERS`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from p2psched.histogram import Histogram
from p2psched.node.snapshots import DhtCounters, RelayCounters, WorkerCounters
from p2psched.node.status import NodeFacade

MAX_WORKERS = 200  # per-worker series; the workers of running jobs come first
_RESERVATIONS = ("made", "refreshed", "refused", "expired")
_CIRCUITS = ("requested", "opened", "refused", "closed", "unanswered")
_DIALBACKS = ("reachable", "unreachable")
_NEGOTIATION = (
    "asked",
    "quote",
    "decline",
    "no_answer",
    "commit",
    "lease",
    "reject",
    "reserve",
    "ready",
    "withdraw",
    "withdrawn",
)
_OUTCOMES = ("completed", "failed", "timed_out", "aborted", "retried")
_PARTIALS = ("passed", "refused")
# Its answer is text, its refusal JSON (as the API's other routes give it): said by hand, as
# FastAPI would describe a refusal in the route's own media type.
_REFUSED: dict[int | str, dict[str, Any]] = {
    401: {
        "description": "a missing or wrong bearer token",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorAnswer"}}},
    }
}


def install(app: FastAPI, node: NodeFacade) -> None:
    """Serve `node`'s metrics at `GET /metrics` on `app`, from a registry of its own."""
    registry = CollectorRegistry()
    registry.register(NodeCollector(node))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)

    @app.get("/metrics", response_class=PlainTextResponse, tags=["metrics"], responses=_REFUSED)
    async def metrics() -> Response:
        """This node's metrics, in Prometheus's text format (scrape with the API's token)."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


class NodeCollector:
    """Reads one node's state into metric families, each time it is scraped."""

    def __init__(self, node: NodeFacade) -> None:
        self.node = node

    def collect(self) -> Iterator[Metric]:
        node = self.node
        me = node.info()
        info = GaugeMetricFamily(
            "p2psched_node_info", "This node: its id and roles (always 1)", labels=["node", "roles"]
        )
        info.add_metric([me.node_id, ",".join(me.roles)], 1)
        yield info
        yield from _scheduler(node)
        yield from _dht(node.dht_counters())
        relay = node.relay_counters()
        if relay is not None:
            yield from _relay(relay)
        worker = node.worker_counters()
        if worker is not None:
            yield from _worker(worker)


def _scheduler(node: NodeFacade) -> Iterator[Metric]:
    c = node.scheduler_counters()
    by_state = GaugeMetricFamily(
        "p2psched_jobs", "Jobs this node keeps, by state", labels=["state"]
    )
    by_state.add_metric(["running"], c.jobs_running)
    by_state.add_metric(["done"], c.jobs_done)
    yield by_state

    tasks = GaugeMetricFamily(
        "p2psched_tasks", "Tasks of this node's running jobs, by state", labels=["state"]
    )
    for state, n in c.tasks.items():
        tasks.add_metric([state], n)
    yield tasks
    yield GaugeMetricFamily(
        "p2psched_queue_depth",
        "Tasks of this node's running jobs queued, waiting for a worker",
        value=c.tasks["queued"],
    )
    yield _histogram(
        "p2psched_queue_wait_seconds",
        "Seconds tasks waited queued before they went to a worker",
        {(): c.queue_wait},
    )
    yield _counter(
        "p2psched_negotiations",
        "Steps of the deal with workers, by outcome: quotes asked and given, declines, "
        "unanswered asks, commitments, leases, rejections, late-binding places and moves",
        "outcome",
        c.negotiation,
        _NEGOTIATION,
    )
    yield _counter(
        "p2psched_task_outcomes",
        "Tasks that reached a final state, by state, and tasks retried after a worker had them",
        "outcome",
        c.outcomes,
        _OUTCOMES,
    )
    yield _counter(
        "p2psched_partial_results",
        "Partial results (a streamed answer's chunks) workers sent, passed on to their task's "
        "watcher or refused (not the worker's task, over the task's caps, or not JSON)",
        "outcome",
        c.partials,
        _PARTIALS,
    )
    yield GaugeMetricFamily(
        "p2psched_workers_connected",
        "Workers this node's scheduler has a channel open to",
        value=c.workers_connected,
    )
    yield CounterMetricFamily(
        "p2psched_frame_budget_waits",
        "Times a channel of this node's scheduler waited for room in its budget of large "
        "messages being received at once, reading nothing meanwhile",
        value=c.frame_budget_waits,
    )
    waits = GaugeMetricFamily(
        "p2psched_worker_predicted_wait_seconds",
        f"Predicted queue wait per worker known to this node (at most {MAX_WORKERS} workers)",
        labels=["worker"],
    )
    for wait in node.queue(limit=MAX_WORKERS):
        if math.isfinite(wait.wait_mean):
            waits.add_metric([wait.worker.hex()[:16]], wait.wait_mean)
    yield waits


def _dht(p: DhtCounters) -> Iterator[Metric]:
    yield _by_labels(
        "p2psched_dht_rpcs_sent",
        "DHT requests this node sent, by type and outcome (answered, error, timed_out, "
        "abandoned: its caller stopped waiting and no answer came)",
        ["type", "outcome"],
        dict(sorted(p.rpcs_sent.items())),
    )
    yield _by_labels(
        "p2psched_dht_rpcs_received",
        "DHT requests this node answered, by type and outcome (answered, stored, refused, "
        "malformed)",
        ["type", "outcome"],
        dict(sorted(p.rpcs_received.items())),
    )
    yield _histogram(
        "p2psched_dht_rpc_round_trip_seconds",
        "Round trip of DHT requests answered, by type",
        {(kind,): h for kind, h in p.round_trips.items()},
        ["type"],
    )
    yield _counter(
        "p2psched_dht_dropped",
        "DHT datagrams dropped, by reason (unauthenticated, replayed, malformed, ...)",
        "reason",
        _prefixed(p.events, "dropped_"),
    )
    yield _counter(
        "p2psched_dht_events",
        "Other things the DHT core counts (datagrams in, stores accepted, records expired, "
        "send errors, late answers, ...)",
        "event",
        Counter({k: n for k, n in p.events.items() if not k.startswith("dropped_")}),
    )
    yield GaugeMetricFamily(
        "p2psched_dht_routing_table_contacts",
        "Contacts in this node's routing table",
        value=p.routing_contacts,
    )
    yield GaugeMetricFamily(
        "p2psched_dht_records_stored", "DHT records this node holds for others", value=p.records
    )
    yield GaugeMetricFamily(
        "p2psched_dht_record_bytes_stored",
        "Bytes of the DHT records this node holds",
        value=p.record_bytes,
    )


def _relay(relay: RelayCounters) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "p2psched_relay_reservations",
        "Relay reservations this gate holds for workers",
        value=relay.reservations,
    )
    circuits = GaugeMetricFamily(
        "p2psched_relay_circuits",
        "Circuits through this gate: up, or waiting for their worker",
        labels=["state"],
    )
    circuits.add_metric(["up"], relay.circuits_up)
    circuits.add_metric(["pending"], relay.circuits_pending)
    yield circuits
    c = relay.events
    yield _counter(
        "p2psched_relay_reservation_events",
        "Relay reservations by what became of a request: made, refreshed, refused, expired",
        "outcome",
        _prefixed(c, "reservations_"),
        _RESERVATIONS,
    )
    yield _counter(
        "p2psched_relay_circuit_events",
        "Relay circuits by event: requested, opened (taken up by the worker), refused, closed, "
        "unanswered (the worker never took it up)",
        "outcome",
        _prefixed(c, "circuits_"),
        _CIRCUITS,
    )
    yield _counter(
        "p2psched_relay_dialbacks",
        "Reachability checks: the gate dialed a node back and reached it, or not",
        "outcome",
        _prefixed(c, "dialbacks_"),
        _DIALBACKS,
    )
    yield CounterMetricFamily(
        "p2psched_relay_bytes", "Bytes relayed, both ways", value=c.get("bytes_relayed", 0)
    )
    yield CounterMetricFamily(
        "p2psched_relay_connections_shed",
        "Connections the gate closed at once: over its per-address or total limits",
        value=c.get("connections_shed", 0),
    )


def _worker(worker: WorkerCounters) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "p2psched_worker_slots", "Tasks this worker runs at once", value=worker.slots
    )
    yield GaugeMetricFamily(
        "p2psched_worker_slots_free",
        "Slots free now (0 while draining)",
        value=worker.free_slots,
    )
    yield GaugeMetricFamily(
        "p2psched_worker_tasks_running", "Tasks running on this worker", value=worker.running
    )
    yield GaugeMetricFamily(
        "p2psched_worker_tasks_held",
        "Tasks leased, queued or running on this worker",
        value=worker.tasks_held,
    )
    yield GaugeMetricFamily(
        "p2psched_worker_results_unacked",
        "Results kept until their scheduler acknowledges them",
        value=worker.unacked,
    )
    yield GaugeMetricFamily(
        "p2psched_worker_results_unacked_bytes",
        "Bytes of those results",
        value=worker.unacked_bytes,
    )
    yield GaugeMetricFamily(
        "p2psched_worker_draining", "1 while the worker drains", value=int(worker.draining)
    )
    yield CounterMetricFamily(
        "p2psched_worker_tasks_completed",
        "Tasks this worker ran to a result it sent back",
        value=worker.completed,
    )
    yield CounterMetricFamily(
        "p2psched_worker_connections_shed",
        "Connections its listener dropped: the oldest in their handshake when too many were "
        "(from one address, or in all), and channels over the number one address may hold",
        value=worker.connections_shed,
    )
    yield CounterMetricFamily(
        "p2psched_worker_frame_budget_waits",
        "Times a channel waited for room in this worker's budget of large messages being "
        "received at once ([worker] receive_budget_bytes), reading nothing meanwhile",
        value=worker.frame_budget_waits,
    )
    yield _histogram(
        "p2psched_worker_driver_run_seconds",
        "Seconds a task's run took, by driver",
        {(driver,): h for driver, h in sorted(worker.run_seconds.items())},
        ["driver"],
    )
    if worker.relay_moves is not None:
        yield CounterMetricFamily(
            "p2psched_worker_relay_moves",
            "Times this worker's relay reservation moved to another gate",
            value=worker.relay_moves,
        )


def _counter(
    name: str, doc: str, label: str, counts: Mapping[str, int], known: Iterable[str] = ()
) -> CounterMetricFamily:
    """A counter by `label`: every known value (0 if not seen yet, so that a dashboard has the
    series from the start), and any other value the core counted."""
    values = dict.fromkeys([*known, *sorted(counts)])
    return _by_labels(name, doc, [label], {(value,): counts.get(value, 0) for value in values})


def _by_labels(
    name: str, doc: str, labels: list[str], counts: Mapping[tuple[str, ...], int]
) -> CounterMetricFamily:
    """A counter with a series per key of `counts` (its label values, in the order of
    `labels`), in the order of `counts`."""
    family = CounterMetricFamily(name, doc, labels=labels)
    for values, n in counts.items():
        family.add_metric(list(values), n)
    return family


def _prefixed(counts: Mapping[str, int], prefix: str) -> Counter[str]:
    return Counter({k.removeprefix(prefix): n for k, n in counts.items() if k.startswith(prefix)})


def _histogram(
    name: str,
    doc: str,
    series: dict[tuple[str, ...], Histogram],
    labels: list[str] | None = None,
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=labels or [])
    for values, h in series.items():
        buckets = [
            ("+Inf" if bound == math.inf else repr(bound), float(n)) for bound, n in h.cumulative()
        ]
        family.add_metric(list(values), buckets, h.sum)
    return family
