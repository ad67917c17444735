"""Where a process's CPU goes, stage by stage (decrypting, decoding, the cores, Ed25519 signing
and checking, the store, encoding and encrypting), for the per-task table that
`bench/dispatch.py` prints. Opt-in: `P2PSCHED_PROFILE=DIR` makes each node a process opens
time its stages while it is open (`process_time`, so another process's load does not count),
and write them to `DIR/<role>-<pid>-<n>.json` when it closes and whenever it gets SIGUSR1.

Promises: unset (the default), opening a node costs one environment lookup and nothing is
timed; set, a stage's seconds are its own, not those of the stages it calls, and the stages
are only a part of `cpu`, the process's CPU time (what is left is trio's loop, the sockets,
the drivers' tasks, discovery and the rest).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import itertools
import json
import os
import signal
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

PROFILE_ENV = "P2PSCHED_PROFILE"
_written = itertools.count()  # (numbers the files a process writes, across its nodes)

# Stage: the functions it is made of, as "module:attribute" where they are looked up (a
# function imported by name is timed in the module that calls it). Only plain functions: a
# coroutine's time would count its waits.
STAGES: dict[str, list[str]] = {
    "decrypt": ["p2psched.wire.noise:SecureSession.receive_data"],
    "decode": ["p2psched.scheduler.service:parse", "p2psched.worker.service:parse"],
    "scheduler core": ["p2psched.scheduler.service:Dispatcher._guarded"],
    "worker core": [
        f"p2psched.worker.manager:TaskManager.{step}"
        for step in ("receive", "finished", "tick", "connected", "disconnected")
    ],
    # Ed25519 itself, whatever it covers: a deal's signature (a commitment's, a receipt's, a
    # batch's root; a quote's) or a handshake's.
    "sign": ["p2psched.identity:Identity.sign"],
    "verify": ["p2psched.wire.deal:verify"],  # (a deal's: a handshake's is the channel's)
    "store write": ["p2psched.store.store:Store.write"],
    "encode": ["p2psched.scheduler.service:encode", "p2psched.worker.service:encode"],
    "encrypt": ["p2psched.wire.noise:SecureSession.seal"],
}


class StageClock:
    """CPU seconds and calls per stage, each stage's net of the stages it calls."""

    def __init__(self) -> None:
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self.calls: Counter[str] = Counter()
        self._inner = [0.0]  # per timed call under way: its nested stages' seconds
        self._undo: list[Callable[[], None]] = []

    def timed(self, stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        clock, inner, seconds, calls = time.process_time, self._inner, self.seconds, self.calls

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            inner.append(0.0)
            start = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                spent = clock() - start
                seconds[stage] += spent - inner.pop()
                calls[stage] += 1
                inner[-1] += spent

        return timed

    def install(self, stages: dict[str, list[str]]) -> None:
        """Time `stages`' functions from now on (until `uninstall`)."""
        for stage, targets in stages.items():
            for target in targets:
                module_name, _, path = target.partition(":")
                *owners, name = path.split(".")
                owner: Any = importlib.import_module(module_name)
                for part in owners:
                    owner = getattr(owner, part)
                fn = getattr(owner, name)
                if inspect.iscoroutinefunction(fn) or not inspect.isfunction(fn):
                    raise TypeError(f"{target}: only plain functions can be timed")
                own = name in vars(owner)  # (not inherited: put back, rather than removed)
                setattr(owner, name, self.timed(stage, fn))
                undo = functools.partial(setattr, owner, name, fn) if own else None
                self._undo.append(undo or functools.partial(delattr, owner, name))

    def uninstall(self) -> None:
        while self._undo:
            self._undo.pop()()

    def snapshot(self) -> dict[str, Any]:
        return {
            "cpu": time.process_time(),
            "seconds": dict(self.seconds),
            "calls": dict(self.calls),
        }


@contextmanager
def profiled(role: str) -> Iterator[StageClock | None]:
    """Time this process's stages while the block runs, if `PROFILE_ENV` names a folder."""
    folder = os.environ.get(PROFILE_ENV)
    if not folder:
        yield None
        return
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    clock = StageClock()

    def write(*_: object) -> None:
        name = f"{role}-{os.getpid()}-{next(_written)}.json"
        (out / f"{name}.part").write_text(json.dumps(clock.snapshot()))
        (out / f"{name}.part").rename(out / name)  # (whole, for whoever waits for it)

    clock.install(STAGES)
    before = signal.signal(signal.SIGUSR1, write)
    try:
        yield clock
    finally:
        signal.signal(signal.SIGUSR1, before)
        clock.uninstall()
        write()
