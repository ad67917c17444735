"""The operator's schedulers file ([schedulers] file), followed while the worker runs: read
again whenever it changes (its modification time, size or inode; checked every second), and
what it says handed to the task manager, with the config's own lists, as its
`SchedulerPolicy`.

Promises: a line not understood is logged with its number and left out; a file that cannot be
read is logged, and the lists last read stay in force; nothing in the file stops the worker.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import trio

from p2psched.worker.policy import SchedulerPolicy, read_listing

log = logging.getLogger(__name__)

CHECK_EVERY_S = 1.0  # how soon an edit takes effect
RACY_NS = 2_000_000_000


async def follow_schedulers_file(
    path: Path,
    inline: SchedulerPolicy,
    apply: Callable[[SchedulerPolicy], None],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Apply `inline` with what `path` lists, now (before starting reports) and after each
    change to the file, until cancelled."""
    seen: tuple[int, int, int] | None = None
    text: str | None = None
    racy = False
    trouble: str | None = None  # what was last logged of a file that cannot be read
    while True:
        try:
            # A small local file: read in place (a thread each second would cost more).
            stat = path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
            if stamp != seen or racy:
                # (bytes that are not UTF-8 spoil their own line, which is then left out)
                now_text = path.read_text(errors="replace")
                # A file changed again within its clock's granularity keeps its stamp: one
                # modified this recently is read again next time, as git does ("racy git").
                racy = time.time_ns() - stat.st_mtime_ns < RACY_NS
                seen, trouble = stamp, None
                if now_text != text:
                    text = now_text
                    _apply(path, text, inline, apply)
        except OSError as e:
            if str(e) != trouble:
                trouble = str(e)
                log.warning(
                    "schedulers file %s cannot be read (%s): the lists last read stay in force",
                    path,
                    e.strerror or e,
                )
        task_status.started()
        task_status = trio.TASK_STATUS_IGNORED
        await trio.sleep(CHECK_EVERY_S)


def _apply(
    path: Path, text: str, inline: SchedulerPolicy, apply: Callable[[SchedulerPolicy], None]
) -> None:
    listing, problems = read_listing(text)
    for problem in problems:
        log.warning("schedulers file %s, %s: left out", path, problem)
    apply(inline.with_listing(listing))
    log.info(
        "schedulers file %s read: %d allowed, %d denied",
        path,
        len(listing.allow),
        len(listing.deny),
    )
