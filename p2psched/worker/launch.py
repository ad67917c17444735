"""The command driver's launcher: sets a task's resource limits, leaves root for an unprivileged
user, and replaces itself with the sandbox (or, with `sandbox = "none"`, the program).

Run by path as `python -I -S launch.py CPU_S AS_BYTES PROCESSES FSIZE_BYTES FILES UID GID -- ARGV`
(UID -1: stay who we are). It imports the standard library only, takes no input but its argv,
and never runs a shell: the limits hold from the first instruction of what it execs.
"""

from __future__ import annotations

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


def main(argv: list[str]) -> None:
    if len(argv) < 9 or argv[7] != "--":
        sys.exit("usage: launch.py CPU_S AS PROCESSES FSIZE FILES UID GID -- ARGV...")
    numbers = [int(a) for a in argv[:7]]
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
        os.execv(argv[8], argv[8:])
    except OSError as e:
        sys.exit(f"cannot start {argv[8]}: {e.strerror}")


if __name__ == "__main__":
    main(sys.argv[1:])
