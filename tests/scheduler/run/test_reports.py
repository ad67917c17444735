"""What workers report, as the scheduler's core takes it, between the real cores
(`tests.harness.net`): partial results (a streamed answer's chunks) passed on from the worker
that holds the task, and refused from any other or beyond the task's caps."""

from __future__ import annotations

from p2psched.identity import Identity
from p2psched.scheduler.lifecycle import TaskState
from p2psched.scheduler.run import DispatchConfig, JobRun
from p2psched.wire.codec import MAX_CONTAINERS
from p2psched.wire.messages import Partial, encode, parse, raw
from p2psched.worker import manager as wm
from tests.harness.net import Net, ad, make_net, spec

S = TaskState


def running(config: DispatchConfig | None = None, workers: int = 1, driver: str = "echo") -> Net:
    """A job of one task per worker, each held running on its own worker (one slot each)."""
    net = make_net(0, 0)
    ids = [Identity.generate() for _ in range(workers)]
    net.workers = {i.node_id: wm.TaskManager(i, slots=1, queue_depth=0) for i in ids}
    tasks = [spec(k, driver=driver) for k in range(workers)]
    net.run = JobRun(net.run.identity, "job", tasks, mtr=0, now=net.now, config=config)
    net.hold = True
    net.run.add_workers([ad(i) for i in ids], net.now)
    net.pump()
    assert len(net.started) == workers
    return net


def stream(net: Net, worker: bytes, task: str, *parts: object) -> None:
    for part in parts:
        net.workers[worker].partial(net.run.identity.node_id, task, part)
    net.pump()


def test_partials_pass_on_in_order_and_the_result_still_covers_the_whole() -> None:
    net = running()
    [(wid, peer, task)] = net.started
    stream(net, wid, task["id"], "Hel", "lo", "!")
    assert net.streamed == [(task["id"], "Hel"), (task["id"], "lo"), (task["id"], "!")]
    net.workers[wid].finished(peer, task["id"], ["Hel", "lo", "!"], None, net.now)
    net.pump()
    t = net.run.tasks[task["id"]]
    assert t.state == S.COMPLETED and t.output == ["Hel", "lo", "!"]
    assert net.run.stats.partials == {"passed": 3}


def test_a_worker_cannot_stream_into_a_task_another_worker_holds() -> None:
    net = running(workers=2)
    (a, _, a_task), (b, _, _) = net.started
    forged = parse(encode(Partial(a_task["id"], raw("made up"))))
    net.run.receive(b, forged, net.now)
    net.pump()
    assert net.streamed == []  # whoever watches A's task sees nothing of B's
    assert net.run.stats.partials == {"refused": 1}
    assert net.run.tasks[a_task["id"]].worker == a


def test_more_partials_than_the_cap_fail_the_task_on_that_worker() -> None:
    net = running(DispatchConfig(max_partials=3))
    [(wid, _, task)] = net.started
    stream(net, wid, task["id"], "a", "b", "c", "d")
    assert [part for _, part in net.streamed] == ["a", "b", "c"]
    t = net.run.tasks[task["id"]]
    assert t.state == S.QUEUED and wid in t.excluded and t.attempts == 1
    assert t.error == "it sent more than 3 partial results for the task"
    assert net.workers[wid].running == 0  # told to stop it


def test_partials_over_the_byte_cap_fail_the_task_on_that_worker() -> None:
    net = running(DispatchConfig(max_partial_bytes=1000))
    [(wid, _, task)] = net.started
    stream(net, wid, task["id"], "x" * 600, "y" * 600)
    assert [part for _, part in net.streamed] == ["x" * 600]
    t = net.run.tasks[task["id"]]
    assert t.state == S.QUEUED and wid in t.excluded
    assert t.error == "its partial results for the task came to over 1000 bytes"


def test_the_partials_of_a_task_build_no_more_containers_than_one_message_may() -> None:
    """Each partial under the codec's SMALL_BYTES is decoded with no container budget, and
    the byte cap counts MessagePack bytes (an empty map: one byte, 64 in Python): 12 MiB of
    partials of empty maps build ~900 MB, which the gateway's unbounded channel then holds
    for a client that reads slowly. Together they must stay within one message's budget."""
    net = running()
    [(wid, _, task)] = net.started
    part = [{}] * 60_000  # 60 KB of MessagePack, under SMALL_BYTES: decoded unbudgeted
    stream(net, wid, task["id"], *[part] * 6)
    built = sum(len(p) + 1 for _, p in net.streamed)  # the maps, and the list holding them
    assert built <= MAX_CONTAINERS


def test_a_result_that_contradicts_the_partials_passed_on_does_not_complete_the_task() -> None:
    """The README: the worker's signed receipt "covers all of" a streamed answer. A worker
    that streams one text and signs another: its client was shown "YES", the task completed,
    paid, with a verified receipt over "NO" (the gateway ends the stream with [DONE], no
    error). The partials passed on must be what the result holds (the http driver's result
    is the list of them), or the task does not complete on that worker."""
    net = running()
    [(wid, peer, task)] = net.started
    stream(net, wid, task["id"], "The answer is YES")
    net.workers[wid].finished(peer, task["id"], ["The answer is NO"], None, net.now)
    net.pump()
    assert net.run.tasks[task["id"]].state != S.COMPLETED


def test_a_result_that_is_the_partials_passed_on_completes() -> None:
    net = running(driver="http")
    [(wid, peer, task)] = net.started
    chunks = [{"choices": [{"delta": {"content": w}}]} for w in ("The ", "answer ", "is YES")]
    stream(net, wid, task["id"], *chunks)
    net.workers[wid].finished(peer, task["id"], chunks, None, net.now)
    net.pump()
    t = net.run.tasks[task["id"]]
    assert t.state == S.COMPLETED and t.output == chunks and t.receipt is not None


def test_a_result_short_of_the_partials_fails_the_task_on_that_worker() -> None:
    net = running()
    [(wid, peer, task)] = net.started
    stream(net, wid, task["id"], "YES", "!")
    net.workers[wid].finished(peer, task["id"], ["YES"], None, net.now)  # one part short
    net.pump()
    t = net.run.tasks[task["id"]]
    assert t.state == S.QUEUED and wid in t.excluded and t.attempts == 1
    assert t.error == "its result is not the 2 partial results it sent"


def test_a_partial_json_cannot_hold_fails_the_task_on_that_worker() -> None:
    net = running()
    [(wid, _, task)] = net.started
    stream(net, wid, task["id"], "ok", {"b": b"x"})
    assert [part for _, part in net.streamed] == ["ok"]
    t = net.run.tasks[task["id"]]
    assert t.state == S.QUEUED and wid in t.excluded
    assert t.error == "it sent a partial result holding what JSON cannot (bytes)"


def test_a_model_servers_partials_must_be_objects_and_not_errors() -> None:
    for part, said in [
        ("text", "it sent a partial result that is not a map (str)"),
        ({"error": {"message": "from the node"}}, "it sent a partial result that is an error"),
    ]:
        net = running(driver="http")
        [(wid, _, task)] = net.started
        stream(net, wid, task["id"], part)
        t = net.run.tasks[task["id"]]
        assert net.streamed == [] and t.state == S.QUEUED and wid in t.excluded
        assert t.error is not None and t.error.startswith(said)


def test_partials_whose_items_are_over_the_cap_fail_the_task_on_that_worker() -> None:
    net = running(DispatchConfig(max_partial_items=100))
    [(wid, _, task)] = net.started
    stream(net, wid, task["id"], [0] * 60, [0] * 60)
    assert [len(part) for _, part in net.streamed] == [60]
    t = net.run.tasks[task["id"]]
    assert t.state == S.QUEUED and wid in t.excluded
    assert t.error == "its partial results for the task build more than 100 items in maps and lists"
