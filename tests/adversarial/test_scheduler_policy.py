"""What a worker's operator lets strangers do, against a real worker process (`p2psched worker
join`) driven by scripted schedulers over real channels: a task over a driver's caps is
refused in its quote, its commitment and when it is sent, whatever its scheduler said before;
schedulers the operator denies, or does not allow, are declined, as its config and its
schedulers file (edited while the worker runs) say; the worker goes on serving the others."""

from __future__ import annotations

import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from p2psched.gate.client import open_worker_channel
from p2psched.identity import Identity
from p2psched.wire.channel import SecureChannel
from p2psched.wire.codec import encode as encode_value
from p2psched.wire.deal import Commitment
from p2psched.wire.messages import (
    Beat,
    Decline,
    Lease,
    Message,
    QuoteReply,
    Reject,
    Result,
    parse,
)
from tests.harness.processes import gate_and_worker

QUOTE = {"t": "quote?", "job": "job", "tasks": 1, "driver": "echo", "model": None}


class Scripted:
    """A scheduler that says what its script says, on its own channel to the worker."""

    def __init__(self, identity: Identity, channel: SecureChannel, worker: bytes) -> None:
        self.identity, self.channel, self.worker = identity, channel, worker
        self.rid = 0

    async def say(self, message: dict[str, Any]) -> None:
        await self.channel.send_encoded([encode_value(message)])

    async def answer(self) -> Message:
        """The worker's next message that is not a heartbeat."""
        with trio.fail_after(20):
            while isinstance(m := parse(await self.channel.receive_frame()), Beat):
                pass
        return m

    async def ask(self, **fields: Any) -> Message:
        """A quote for one echo task, please (`fields` added to the request)."""
        self.rid += 1
        await self.say({**QUOTE, "rid": self.rid, "max_price": 1.0, **fields})
        return await self.answer()

    async def commit(self, ids: list[str], run: list[dict[str, Any]]) -> Message:
        self.rid += 1
        c = Commitment(self.identity.node_id, self.worker, "job", ids, 0.0, time.time())
        commitment = c.signed(self.identity).to_wire()
        await self.say({"t": "commit", "rid": self.rid, "commitment": commitment, "run": run})
        return await self.answer()


@asynccontextmanager
async def scripted(address: str, worker: bytes, identity: Identity) -> AsyncIterator[Scripted]:
    async with open_worker_channel(address, identity, expected_peer=worker) as channel:
        yield Scripted(identity, channel, worker)


def echo(task_id: str, *, timeout: float = 5.0, text: str = "hi") -> dict[str, Any]:
    return {"id": task_id, "driver": "echo", "model": None, "input": text, "timeout": timeout}


def said(message: Message) -> str:
    """What a decline, a rejection or a failed result says (its kind, if none of these)."""
    return str(getattr(message, "reason", None) or getattr(message, "error", None) or message)


async def test_a_driver_caps_are_held_at_the_quote_the_commitment_and_the_task(
    tmp_path: Path,
) -> None:
    config = (
        '[worker]\ndrivers = ["echo"]\n[drivers.echo]\nmax_timeout_s = 60\nmax_input_bytes = 1000\n'
    )
    with gate_and_worker(tmp_path, config) as (_, address, worker, proc):
        async with scripted(address, worker, Identity.generate()) as liar:
            declined = await liar.ask(timeout=604800.0)
            assert "timeout 604800 s is over this worker's max_timeout_s 60 for driver echo" in (
                said(declined)
            )
            declined = await liar.ask(input_bytes=5000)
            assert "input of 5000 bytes is over this worker's max_input_bytes 1000" in said(
                declined
            )
            # It says its tasks are small and short, then sends others.
            quoted = await liar.ask(timeout=30.0, input_bytes=10)
            assert isinstance(quoted, QuoteReply)
            rejected = await liar.commit(["job/0"], [echo("job/0", timeout=120.0)])
            assert isinstance(rejected, Reject)
            assert "task job/0: timeout 120 s is over this worker's max_timeout_s 60" in said(
                rejected
            )
            leased = await liar.commit(["job/1", "job/2", "job/3"], [])
            assert isinstance(leased, Lease)
            await liar.say({"t": "run", "tasks": [echo("job/1", timeout=120.0)]})
            assert "max_timeout_s 60 for driver echo" in said(await liar.answer())
            await liar.say({"t": "run", "tasks": [echo("job/2", text="x" * 2000)]})
            assert "over this worker's max_input_bytes 1000 for driver echo" in said(
                await liar.answer()
            )
            await liar.say({"t": "run", "tasks": [echo("job/3")]})  # within the caps: it runs
            done = await liar.answer()
            assert isinstance(done, Result) and done.task == "job/3" and done.error is None
        assert proc.poll() is None


async def test_schedulers_are_served_as_the_config_and_its_file_say_while_it_is_edited(
    tmp_path: Path,
) -> None:
    honest, denied, listed, unlisted = (Identity.generate() for _ in range(4))
    hexes = {p: p.node_id.hex() for p in (honest, denied, listed, unlisted)}
    schedulers = tmp_path / "schedulers.txt"
    schedulers.write_text(f"# who may use this worker\nallow {hexes[listed]}\n")
    config = (
        '[worker]\ndrivers = ["echo"]\n'
        f'[schedulers]\nallow = ["{hexes[honest]}", "{hexes[denied]}"]\n'
        f'deny = ["{hexes[denied]}"]\nfile = "schedulers.txt"\n'
    )
    with gate_and_worker(tmp_path, config) as (_, address, worker, proc):
        async with (
            scripted(address, worker, honest) as h,
            scripted(address, worker, denied) as d,
            scripted(address, worker, listed) as listed_one,
            scripted(address, worker, unlisted) as u,
        ):
            assert isinstance(await h.ask(), QuoteReply)
            answer = await d.ask()
            assert isinstance(answer, Decline) and not answer.busy
            assert (
                f"this worker does not serve scheduler {hexes[denied][:16]}…: denied by its "
                "operator" in said(answer)
            )
            assert isinstance(await listed_one.ask(), QuoteReply)  # allowed by the file
            assert "not among those its operator allows" in said(await u.ask())

            # The operator edits the file while the worker runs (a line it cannot read too).
            schedulers.write_text(
                f"allow {hexes[unlisted]}\ndeny {hexes[listed]}\nallow everyone please\n"
            )
            with trio.fail_after(20):
                while not isinstance(await u.ask(), QuoteReply):
                    await trio.sleep(0.2)
            assert "denied by its operator" in said(await listed_one.ask())
            assert isinstance(await h.ask(), QuoteReply)
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert "line 3: not 'allow <node id>' or 'deny <node id>': left out" in err
    assert proc.returncode == 0
