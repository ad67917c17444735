"""The command driver's launcher: sets a task's resource limits, leaves root for an unprivileged
user, and starts the sandbox (or, with `sandbox = "none"`, becomes the program).

Run by path as `python -I -S launch.py CPU_S AS_BYTES PROCESSES FSIZE_BYTES FILES UID GID MODE --
ARGV` (UID -1: stay who we are). It imports the standard library only, takes no input but its
argv, and never runs a shell: the limits hold from the first instruction of what it execs.
MODE "exec" becomes ARGV; MODE "reap" starts ARGV (bwrap) as its child, reaps whatever is
orphaned below it, and exits with its status once every process below it is gone.
"""

from __future__ import annotations

import ctypes
import os
import resource
import sys

_LIMITS = (
    resource.RLIMIT_CPU,
    resource.RLIMIT_AS,
    resource.RLIMIT_NPROC,
    resource.RLIMIT_FSIZE,
    resource.RLIMIT_NOFILE,
)
_PR_SET_CHILD_SUBREAPER = 36


def _become(numbers: list[int], argv: list[str]) -> None:
    uid, gid = numbers[5], numbers[6]
    if uid >= 0 and os.geteuid() == 0:
        # RLIMIT_NPROC counts the processes of the real user: as root it would count the whole
        # machine's root processes, and root ignores it anyway. So the task runs as its own user.
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
    for limit, value in zip(_LIMITS, numbers[:5], strict=True):
        # CPU: SIGXCPU at the limit (which the driver reports as such), SIGKILL a second later.
        resource.setrlimit(limit, (value, value + 1 if limit == resource.RLIMIT_CPU else value))
    try:
        os.execv(argv[0], argv)
    except OSError as e:
        sys.exit(f"cannot start {argv[0]}: {e.strerror}")


def _reap(numbers: list[int], argv: list[str]) -> None:
    """bwrap leaves its sandbox's init behind when it exits, a zombie until someone reaps it,
    counted meanwhile against the task user's process limit: as a subreaper we are that someone,
    and we end only when it is gone."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    child = os.fork()
    if child == 0:
        _become(numbers, argv)
    os.closerange(3, 65536)  # the info pipe is bwrap's to hold, not ours
    code = 1
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        if pid == child:
            code = os.waitstatus_to_exitcode(status)
    sys.exit(code if code >= 0 else 128 - code)


def main(argv: list[str]) -> None:
    if len(argv) < 10 or argv[8] != "--" or argv[7] not in ("exec", "reap"):
        sys.exit("usage: launch.py CPU_S AS PROCESSES FSIZE FILES UID GID exec|reap -- ARGV...")
    numbers = [int(a) for a in argv[:7]]
    if argv[7] == "reap":
        _reap(numbers, argv[9:])
    else:
        _become(numbers, argv[9:])


if __name__ == "__main__":
    main(sys.argv[1:])
