"""The node: one process's DHT node, its scheduler (the jobs it runs), and, when it offers its
machine, its worker; plus the local control API the CLI talks to.

Owns: composing those roles under one nursery, the store it hands both (each writes its journal
through it), and the worker's ad staying true to its load.
Promises: `open_node` yields once the node has joined through its seeds (or raises
`JoinError`; `DataDirInUse` if another process runs a node in its data dir), its channel
listener is bound and its ad published; leaving the block withdraws the ad (bounded in time)
and stops everything.
"""

from __future__ import annotations

import logging
import shlex
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import trio

from p2psched.dht.config_file import DhtSettings
from p2psched.dht.node import DhtNode, open_dht_node
from p2psched.dht.routing import TrustedNetworks
from p2psched.gate.client import RelayClient, RelayError, check_reachability, open_worker_channel
from p2psched.gate.relay import RelayLimits
from p2psched.gate.service import Gate
from p2psched.home import running_in
from p2psched.identity import Identity
from p2psched.logs import naming_node
from p2psched.node.config import GATEWAY_MAX_PRICE, ModelTable
from p2psched.node.profiling import profiled
from p2psched.resources.challenge import claimed_gflops
from p2psched.resources.detect import Detected, detect, sample_load
from p2psched.resources.need import AD_TTL
from p2psched.scheduler.ads import check_ad_record
from p2psched.scheduler.discovery import Discovery
from p2psched.scheduler.jobs import JobBook
from p2psched.scheduler.run import DispatchConfig
from p2psched.scheduler.service import Dispatcher, dht_finder
from p2psched.scheduler.worker_views import DEFAULT_RULES, ReputationRules
from p2psched.store import Store
from p2psched.wire.address import host_port
from p2psched.wire.deal import MAX_OPENING_MESSAGE
from p2psched.worker.advert import Advert
from p2psched.worker.challenge import ChallengeDesk
from p2psched.worker.config import WorkerConfig
from p2psched.worker.devices import Claims, Devices
from p2psched.worker.drivers import Driver, HttpDriver, disabled_reason, make_drivers
from p2psched.worker.endpoint_health import EndpointHealth
from p2psched.worker.instances import InstanceBook, InstanceError, served
from p2psched.worker.manager import TaskManager
from p2psched.worker.policy import SchedulerPolicy, Terms
from p2psched.worker.schedulers_file import follow_schedulers_file
from p2psched.worker.service import WorkerService
from p2psched.worker.workload import Sample, follow_load, loaded_models

Addr = tuple[str, int]


class JoinError(Exception):
    """None of the seeds answered; the message names them."""


log = logging.getLogger(__name__)
STORE_FILE = "state.db"  # jobs, tasks, transitions, results, the ledger (SQLite, WAL)
REACHABILITY = ("auto", "public", "private")


@dataclass(slots=True)
class WorkerRole:
    service: WorkerService
    advert: Advert
    detected: Detected
    reachability: str  # "public": schedulers dial it; "private": only through a gate
    why: str  # how it came to know that
    instances: InstanceBook
    config: WorkerConfig
    relay: RelayClient | None = None
    health: EndpointHealth | None = None  # of its http driver's endpoints, if it enables it

    @property
    def address(self) -> str:
        """Where schedulers reach it, as its ad says (a relay address once it moved gates)."""
        return self.advert.profile.addresses[0]

    async def advertise_models(self) -> None:
        """Publish its ad with the models it serves now: its config's (those of endpoints that
        pass their health check) and its registered Task Instances' (paced as every change of
        its ad is)."""
        await self.advert.amend(**_models_served(self.config, self.instances, self.health))


@dataclass(slots=True)
class Node:
    identity: Identity
    data_dir: Path
    dht: DhtNode
    discovery: Discovery
    jobs: JobBook
    store: Store  # the node's durable state, which both roles write
    roles: tuple[str, ...]
    worker: WorkerRole | None = None
    gate: Gate | None = None
    # What a task for each model needs (its config's [models.NAME]), wherever it is submitted.
    models: Mapping[str, ModelTable] = field(default_factory=dict)
    # What a task for a model without its own [models.NAME] max_price may pay ([server]'s).
    max_price: float = GATEWAY_MAX_PRICE

    @property
    def node_id(self) -> bytes:
        return self.identity.node_id


@asynccontextmanager
async def open_node(
    identity: Identity,
    data_dir: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    seeds: Sequence[Addr] = (),
    advertise_host: str | None = None,
    worker: WorkerConfig | None = None,
    gate: bool = False,
    dht_client: bool = False,
    trusted: TrustedNetworks | None = None,
    ad_ttl: float = AD_TTL,
    dispatch: DispatchConfig | None = None,
    detected: Detected | None = None,
    nvml: Any | None = None,
    resume: bool = False,
    reachability: str = "auto",
    relay_limits: RelayLimits | None = None,
    dht_settings: DhtSettings | None = None,
    store_path: Path | None = None,
    models: Mapping[str, ModelTable] | None = None,
    max_price: float = GATEWAY_MAX_PRICE,
    reputation: ReputationRules = DEFAULT_RULES,
) -> AsyncIterator[Node]:
    """`resume`: take up the jobs this data dir's store has unfinished (a node restarted).
    `gate`: also relay for workers behind NAT, on TCP at the DHT's port number.
    `trusted`: the peers the DHT's per-/24 limits spare (LANs by default).
    `dht_settings`, `store_path`, `models`, `max_price`, `reputation`: the config file's [dht],
    [database] (else `STORE_FILE` in the data dir), [models.NAME], [server] max_price, [reputation].
    `detected`: the worker's machine (else detected); `nvml`: NVML, else pynvml, also for its load.
    `reachability` (of a worker): "auto" asks a gate among the seeds to dial it back,
    "public" and "private" say so without asking; a private worker listens nowhere, runs the
    DHT as a client, and takes its channels through a relay reservation on a seed gate."""
    if reachability not in REACHABILITY:
        raise ValueError(f"reachability {reachability!r}: choose one of {', '.join(REACHABILITY)}")
    config = (dht_settings or DhtSettings()).dht_config(client=dht_client, trusted=trusted)
    dispatch = dispatch or DispatchConfig()
    with (
        _running(data_dir, "worker" if worker else "gate" if gate else "node"),
        naming_node(identity.node_id),  # (every task the node starts inherits it, for its logs)
        _open_store(identity, store_path or data_dir / STORE_FILE, dispatch) as store,
    ):
        if gate and port == 0:  # its relay takes the same number on TCP: pick one free there
            port = _free_tcp_port(host)
        async with open_dht_node(
            identity, host=host, port=port, config=config, validate=check_ad_record
        ) as dht:
            await _join(dht, seeds)
            async with trio.open_nursery() as nursery:
                discovery, jobs = await _start_scheduler(identity, dht, store, nursery, dispatch)
                if resume:
                    _resume(jobs, data_dir)
                roles = ("gate",) if gate else ()
                node = Node(identity, data_dir, dht, discovery, jobs, store, roles + ("scheduler",))
                node.models, node.max_price = models or {}, max_price
                jobs.dispatcher.views.rules = reputation
                if gate:
                    node.gate = await _start_gate(identity, dht, nursery, relay_limits)
                if worker is not None:
                    node.worker = await _start_worker(
                        node,
                        worker,
                        nursery,
                        advertise_host or dht.address[0],
                        ad_ttl,
                        detected or detect(data_dir, nvml=nvml),
                        list(seeds),
                        reachability,
                        nvml,
                    )
                    node.roles = ("worker", *node.roles)
                _say_up(node, dht_client)
                try:
                    yield node
                finally:
                    nursery.cancel_scope.cancel()
                    if node.worker is not None:
                        with trio.CancelScope(shield=True), trio.move_on_after(10):
                            await node.worker.advert.withdraw()


@contextmanager
def _running(data_dir: Path, role: str) -> Iterator[None]:
    """This process runs a node of `role` in `data_dir` (timing its stages, if asked to:
    `P2PSCHED_PROFILE`)."""
    with running_in(data_dir, f"a {role}"), profiled(role):
        yield


def _say_up(node: Node, dht_client: bool) -> None:
    log.info(
        "node up: %s; DHT on %s",
        ", ".join(node.roles),
        host_port(*node.dht.address),
        extra={"dht_client": dht_client},
    )


def _open_store(identity: Identity, path: Path, dispatch: DispatchConfig) -> Store:
    return Store.open(
        path, own_public_key=identity.public_key, spool_over=dispatch.spool_result_bytes
    )


async def _join(dht: DhtNode, seeds: Sequence[Addr]) -> None:
    """Join the network through `seeds` (none: this node starts one); `JoinError` names them
    when none answered."""
    if seeds and await dht.bootstrap(seeds) == 0:
        listed = ", ".join(f"{h}:{p}" for h, p in seeds)
        raise JoinError(f"no seed answered ({listed}); check the address and that it runs")


async def _start_scheduler(
    identity: Identity, dht: DhtNode, store: Store, nursery: trio.Nursery, config: DispatchConfig
) -> tuple[Discovery, JobBook]:
    """The scheduler role, serving in `nursery`: how it finds workers, and its jobs; the
    workers' records it kept before a restart taken back (it remembers who lied)."""
    discovery = Discovery(dht)
    dispatcher = Dispatcher(
        identity,
        dht_finder(discovery),
        open_worker_channel,
        clock=dht.now,
        store=store,
        max_result_bytes=config.max_result_bytes,
        receive_budget_bytes=config.receive_budget_bytes,
        explain=discovery.explain,
    )
    views = dispatcher.views
    views.load(store.reputations(views.max_workers))
    nursery.start_soon(_record_when_stopped, dispatcher)
    await nursery.start(dispatcher.serve)
    return discovery, JobBook(dispatcher, nursery, config=config)


async def _record_when_stopped(dispatcher: Dispatcher) -> None:
    """Write what changed of the workers' records since the scheduler last wrote, as the node
    stops (a step outside any job's, such as a capacity challenge, may have changed them)."""
    try:
        await trio.sleep_forever()
    finally:
        dispatcher.record([])


async def _start_gate(
    identity: Identity, dht: DhtNode, nursery: trio.Nursery, limits: RelayLimits | None
) -> Gate:
    gate = Gate(identity, limits)
    host, port = dht.address
    try:
        await nursery.start(
            lambda task_status: gate.serve(host=host, port=port, task_status=task_status)
        )
    except OSError as e:
        raise JoinError(
            f"cannot open the relay on TCP {host_port(host, port)} ({e.strerror or e}); the gate "
            "needs that port free (the same number as its DHT's UDP port)"
        ) from None
    return gate


async def _start_worker(
    node: Node,
    config: WorkerConfig,
    nursery: trio.Nursery,
    advertise_host: str,
    ad_ttl: float,
    detected: Detected,
    gates: list[Addr],
    reachability: str,
    nvml: Any | None,
) -> WorkerRole:
    manager = _task_manager(node.identity, config, detected)
    instances = _instance_book(node)
    if config.schedulers_file is not None:

        def apply(policy: SchedulerPolicy) -> None:
            manager.terms.policy = policy

        await nursery.start(
            follow_schedulers_file, config.schedulers_file, config.schedulers, apply
        )
    drivers, health = _drivers(config, instances, manager)
    service = WorkerService(
        node.identity,
        manager,
        drivers,
        clock=node.dht.now,
        record=node.store.record,
        max_message_bytes=config.max_message_bytes,
        receive_budget_bytes=config.receive_budget_bytes,
        challenges=ChallengeDesk(
            node.identity, config.min_price, config.challenge_interval_s, durable=True
        ),
        gpu=bool(config.gpus(detected)),
    )
    service.challenges.gflops = claimed_gflops(config.profile(detected))  # (none it cannot do)
    host, udp_port = node.dht.address
    listen = reachability != "private"
    try:  # the same port number as the DHT's, for operators who open one port in a firewall
        bound = await nursery.start(
            lambda task_status: service.serve(
                host=host, port=udp_port, listen=listen, task_status=task_status
            )
        )
    except OSError:
        bound = await nursery.start(
            lambda task_status: service.serve(host=host, port=0, task_status=task_status)
        )
    address = host_port(advertise_host, bound[1]) if bound is not None else ""
    why = "as configured"
    if reachability == "auto":
        assert bound is not None
        reachability, why, address = await _dialed_back(node, gates, bound[1], address)
    relay = None
    if reachability == "private":
        relay, address = await _relayed(node, service, gates, nursery)
    if health is not None:  # (its driver is open now: the service opened it)
        await health.check(config.http_driver.endpoints, config.models)
    profile = config.profile(detected, addresses=(address,))
    served = _models_served(config, instances, health)
    advert = Advert(node.dht, replace(profile, **served), ttl=ad_ttl)
    await advert.publish()
    if relay is not None:

        async def moved(address: str) -> None:
            await advert.amend(addresses=(address,))

        relay.on_address = moved
        if relay.address is not None and relay.address != address:  # it moved meanwhile
            nursery.start_soon(moved, relay.address)
    nursery.start_soon(_keep_ad_current, advert, manager)
    sampler = _load_sampler(config, instances, nvml, health)
    await nursery.start(follow_load, advert, sampler, config.workload)
    role = WorkerRole(
        service, advert, detected, reachability, why, instances, config, relay, health
    )
    if health is not None:
        nursery.start_soon(health.watch, lambda: config.models, role.advertise_models)
    return role


async def _relayed(
    node: Node, service: WorkerService, gates: list[Addr], nursery: trio.Nursery
) -> tuple[RelayClient, str]:
    """A worker that cannot be reached takes its channels through a gate's relay: the client
    of that relay, serving in `nursery`, and the address it got there."""
    if not gates:
        raise JoinError("a worker that cannot be reached needs a gate to relay for it")
    node.dht.protocol.set_client(True)  # out of others' routing tables: they cannot reach it
    # A scheduler that opens a circuit is a stranger until it says what it is.
    relay = RelayClient(node.identity, gates, service.handle, max_frame=MAX_OPENING_MESSAGE)
    try:
        address = await nursery.start(relay.serve)
    except RelayError as e:  # (raised before it started: as itself, not in a group)
        raise JoinError(str(e)) from None
    return relay, address


async def _dialed_back(
    node: Node, gates: list[Addr], port: int, address: str
) -> tuple[str, str, str]:
    """Whether a worker listening on `port` can be reached, as a gate finds by dialing it
    back: "public" or "private", why, and the address to advertise (`address` unless the gate
    saw another)."""
    check = await check_reachability(gates, node.identity, port) if gates else None
    if check is not None and check.reachable:
        return "public", f"the gate at {check.gate} dialed it back at {check.seen}", check.seen
    if check is not None:
        why = f"the gate at {check.gate} could not dial it back at {check.seen}: {check.reason}"
        if not check.seen:  # none would try: the relay works whether it could or not
            why = f"{check.reason}; it takes tasks through a relay, which works either way"
        return "private", why, address
    if gates:
        return "public", "no gate answered the reachability check: taken as reachable", address
    return "public", "no gate to ask: taken as reachable", address


def _instance_book(node: Node) -> InstanceBook:
    """The Task Instances registered with the worker on this data dir before."""
    try:
        return InstanceBook(node.data_dir, node.identity.node_id)
    except InstanceError as e:
        raise JoinError(str(e)) from None


def _models_served(
    config: WorkerConfig, book: InstanceBook, health: EndpointHealth | None
) -> dict[str, Any]:
    """A worker's ad's models: its config's, but those whose endpoint fails its health check,
    then those of the Task Instances registered with it (loaded too: they serve)."""
    withheld = health.withheld(config.models) if health is not None else set()
    installed = tuple(m for m in config.models if m not in withheld)
    loaded = tuple(m for m in config.loaded_models if m not in withheld)
    return {
        "installed_models": served(installed, book),
        "loaded_models": served(loaded, book),
    }


def _load_sampler(
    config: WorkerConfig, book: InstanceBook, nvml: Any | None, health: EndpointHealth | None
) -> Callable[[], Awaitable[Sample]]:
    """How busy the worker is now, and (when it serves http) which of its models are loaded:
    of those it advertises, never one its endpoint's failing health check withholds (its
    server may list it all the same)."""

    async def sample() -> Sample:
        load = await trio.to_thread.run_sync(partial(sample_load, nvml=nvml))
        if "http" not in config.drivers:
            return Sample(load)
        installed = _models_served(config, book, health)["installed_models"]
        return Sample(load, await loaded_models(config, installed, book.routes))

    return sample


def _drivers(
    config: WorkerConfig, book: InstanceBook, manager: TaskManager
) -> tuple[dict[str, Driver], EndpointHealth | None]:
    """The worker's drivers, and the health of its http driver's endpoints (if it enables
    it), by which its manager refuses tasks too."""
    drivers = make_drivers(config, book.routes)
    http = drivers.get("http")
    health = EndpointHealth(http) if isinstance(http, HttpDriver) else None
    manager.refusal = _refusal(config, book, health)
    return drivers, health


def _refusal(
    config: WorkerConfig, book: InstanceBook, health: EndpointHealth | None
) -> Callable[[str, str | None], str | None]:
    """Why this worker refuses a task for (driver, model): a driver it does not enable; for
    the http driver, a model whose Task Instance was removed (schedulers may hold its old ad
    for a while) or whose endpoint fails its health check."""

    def refusal(driver: str, model: str | None) -> str | None:
        reason = disabled_reason(driver, config)
        if reason is not None or driver != "http" or (model is not None and model in book.routes):
            return reason
        if model is not None and model in book.removed and model not in config.models:
            return (
                f"Task Instance {book.removed[model]} serving model {model[:64]!r} was removed "
                "from this worker: it takes no new tasks for it"
            )
        return health.refusal(model) if health is not None else None

    return refusal


def _task_manager(identity: Identity, config: WorkerConfig, detected: Detected) -> TaskManager:
    """The worker's core, on the terms its config sets, with the GPUs detection found."""
    slots = config.slot_count(detected)
    http = config.http_driver
    bound = http.devices
    for model, indexes in bound.items():
        if missing := [i for i in indexes if i >= len(detected.devices)]:
            raise JoinError(
                f"[drivers.http] devices.{model}: GPU {missing[0]} is not on this machine "
                f"(NVML found {len(detected.devices)})"
            )
    return TaskManager(
        identity,
        slots=slots,
        devices=Devices(detected.devices),
        claim=Claims(len(detected.devices) // slots, bound, frozenset(http.endpoints)),
        queue_depth=config.queue_depth,
        price=config.min_price,
        refusal=lambda driver, model: disabled_reason(driver, config),
        terms=Terms(config.driver_caps(), config.priority_prices, config.schedulers),
        scheduler_grace_s=config.scheduler_grace_s,
        durable=True,
    )


async def _keep_ad_current(advert: Advert, manager: TaskManager) -> None:
    """Free slots change with every task; the ad follows (the Advert paces its updates)."""
    while True:
        await trio.sleep(advert.min_interval)
        free = manager.free_slots
        if free != advert.profile.free_slots:
            await advert.amend(free_slots=free)


def bind_host_toward(peer_host: str) -> str:
    """The interface to bind so as to reach a peer at `peer_host` (an IP address): loopback
    for a local one, else any (of its family)."""
    if peer_host.startswith("127."):
        return "127.0.0.1"
    return "::" if ":" in peer_host else "0.0.0.0"


def _free_tcp_port(host: str) -> int:
    """A port number free on TCP at `host` now. A gate asked for any port takes this one for
    its DHT (UDP) and then its relay (TCP): a UDP port the system picks may be in use on TCP
    (any outgoing connection holds one), and the relay then cannot open."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
    return port


def _resume(jobs: JobBook, data_dir: Path) -> None:
    """Take up the jobs the store has unfinished, and say so (a warning: it is work done
    that no one asked for just now, and its owner may have meant it to stop)."""
    for job in jobs.resume():
        log.warning(
            "resumed job %s (%d tasks), unfinished when the last node on this data dir "
            "stopped; `p2psched cancel %s --data-dir %s` stops it",
            job.job_id,
            len(job.run.tasks),
            job.job_id,
            shlex.quote(str(data_dir)),
            extra={"job": job.job_id},
        )
