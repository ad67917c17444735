"""A worker process that runs the command driver's `square` program right (it computes n² of
the task's stdin itself) but signs receipts claiming a run time of its choosing: a liar about
durations, found in the DHT like any worker (`hostile.advertised`).

    python -m tests.harness.false_durations GATE PRICE CLAIMED_S

prints its node id once its ad is out, then serves until killed.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Awaitable, Callable

import msgspec
import trio

from p2psched.identity import Identity
from p2psched.wire.channel import SecureChannel
from p2psched.wire.codec import decode, encode
from p2psched.wire.deal import Commitment, Quote, Receipt, packed_hash
from p2psched.wire.messages import Commit, Lease, QuoteReply, QuoteRequest, Result, Run, Task, parse
from p2psched.wire.messages import encode as encode_message
from tests.harness import hostile


def squared(task: Task) -> bytes:
    """What an honest worker's `square` program gives for this task: n² of its stdin."""
    n = int(decode(bytes(task.input), 1 << 20)["stdin"])
    return encode({"exit_code": 0, "stdout": f"{n * n}\n", "stderr": ""})


def serving(price: float, claimed_s: float) -> Callable[[SecureChannel, Identity], Awaitable[None]]:
    """A worker's side of its channels: quotes at `price`, leases what it is committed to, and
    sends each task's right result with a receipt claiming it ran `claimed_s` seconds."""

    async def handle(channel: SecureChannel, me: Identity) -> None:
        commitments: dict[str, Commitment] = {}
        while True:
            m = parse(await channel.receive_frame())
            if isinstance(m, QuoteRequest):
                q = Quote(
                    me.node_id, channel.peer.node_id, m.job, price, 0.0, 0.0, 0.0, m.tasks, 1e10
                )
                await channel.send_encoded([encode_message(QuoteReply(m.rid, q.signed(me)))])
                continue
            if isinstance(m, Commit):
                c: Commitment = m.commitment
                commitments.update(dict.fromkeys(c.tasks, c))
                lease = Lease(m.rid, c.tasks, time.time() + 3600)
                await channel.send_encoded([encode_message(lease)])
                tasks: list[Task] = m.run
            elif isinstance(m, Run):
                tasks = m.tasks
            else:
                continue
            for task in tasks:
                c = commitments[task.id]
                output = squared(task)
                receipt = Receipt(
                    me.node_id,
                    c.scheduler,
                    c.job,
                    task.id,
                    True,
                    packed_hash(output),
                    claimed_s,
                    c.price,
                    time.time(),
                ).signed(me)
                result = Result(task.id, msgspec.Raw(output), None, receipt)
                await channel.send_encoded([encode_message(result)])

    return handle


async def main(gate: str, price: float, claimed_s: float) -> None:
    handle = serving(price, claimed_s)
    async with hostile.advertised(gate, handle, price=price, drivers=("command",)) as me:
        print(me.node_id.hex(), flush=True)
        await trio.sleep_forever()


if __name__ == "__main__":
    trio.run(main, sys.argv[1], float(sys.argv[2]), float(sys.argv[3]))
