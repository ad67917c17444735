"""`p2psched`: the parser, assembled from the groups of commands (each registers its own), and
the run of the chosen command, which turns a mistake the user can fix into one line on stderr
with exit status 2.

Promises: building the parser imports none of the commands' machinery (trio, the node, the
API, the DHT): a command imports what it needs when it runs, so `--help` and the commands that
only ask a running node start at once (tests/cli/test_app.py checks which modules get
imported).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from p2psched import logs
from p2psched.cli import admin, devnet, dht, jobs, operate, roles
from p2psched.cli.args import HelpFormatter, common_options

GROUPS = (roles, jobs, admin, operate, dht, devnet)

# The errors a user causes and can fix, named by the module that defines each. A command imports
# those modules only when it runs, and an error of a class whose module was never imported cannot
# have been raised: so the check looks the classes up in sys.modules rather than importing them.
USER_ERRORS = (
    ("p2psched.cli.args", "UsageError"),
    ("p2psched.identity", "IdentityError"),
    ("p2psched.worker.config", "ConfigError"),
    ("p2psched.node.config", "NodeConfigError"),
    ("p2psched.scheduler.job.problems", "JobSpecError"),
    ("p2psched.cli.submit", "SubmitError"),
    ("p2psched.devnet", "DevnetError"),
    ("p2psched.node.node", "JoinError"),
    ("p2psched.api.client", "ApiCallError"),
    ("p2psched.store.schema", "StoreError"),
    ("p2psched.home", "DataDirInUse"),
)
NODE_WENT_AWAY = (("p2psched.api.client", "NodeUnreachable"),)  # while we talked to it


def version() -> str:
    """This installation's version: the package's metadata, else the source's own."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("p2psched")
    except PackageNotFoundError:  # run from a source tree that was never installed
        import p2psched

        return str(getattr(p2psched, "__version__", "unknown"))


class _Version(argparse.Action):
    """`--version`: the version is looked up only when asked for (see the module's promise)."""

    def __init__(self, option_strings: list[str], dest: str, help: str) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        print(f"p2psched {version()}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="p2psched",
        description="A peer-to-peer compute scheduler. (README: Quick start)",
        epilog="examples (a devnet: a gate and workers on this machine):\n"
        "  p2psched devnet up --dir .devnet\n"
        "  p2psched submit examples/hello.yaml --data-dir .devnet/gate\n"
        "  p2psched devnet down --dir .devnet\n"
        "Each command's help: p2psched COMMAND --help",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--version", action=_Version, help="print the version and exit")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = common_options()
    for group in GROUPS:
        group.register(sub, common)
    return p


def _leaf(e: BaseException) -> BaseException:
    """The one exception inside nested single-member groups (trio wraps what a nursery raises)."""
    while isinstance(e, BaseExceptionGroup) and len(e.exceptions) == 1:
        e = e.exceptions[0]
    return e


def _is_one_of(e: BaseException, classes: Sequence[tuple[str, str]]) -> bool:
    return any(
        isinstance(e, getattr(sys.modules[module], name))
        for module, name in classes
        if module in sys.modules
    )


def _stdout_gone() -> bool:
    """Whether stdout's reader has gone (its pipe says so: POLLERR); if so, stdout is pointed
    at /dev/null, so that Python's flush at exit does not fail the same way again."""
    import os
    import select

    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError):
        return False
    watch = select.poll()
    watch.register(fd, select.POLLOUT)
    if not any(events & (select.POLLERR | select.POLLHUP) for _, events in watch.poll(0)):
        return False
    os.dup2(os.open(os.devnull, os.O_WRONLY), fd)
    return True


def _what_next(e: BaseException, args: argparse.Namespace) -> str:
    """A command that helps after a node's refusal, when one does: a job it does not know
    points to the jobs it knows (as a command that works when copied)."""
    if not str(e).startswith("no job ") or not hasattr(args, "data_dir"):
        return ""
    from p2psched.cli.args import data_dir, hint

    return f"; its jobs: {hint('jobs', data_dir(args))}"


def _exit_status(e: BaseException, args: argparse.Namespace) -> int | None:
    """Say what went wrong on stderr and give the exit status, for what a user can meet; None
    for a fault in the program, which keeps its traceback."""
    if isinstance(e, BrokenPipeError) and _stdout_gone():
        return 141  # as a shell tells a program SIGPIPE ended (`| head` read what it wanted)
    if _is_one_of(e, USER_ERRORS):
        print(f"p2psched: error: {e}{_what_next(e, args)}", file=sys.stderr)
        return 2
    if isinstance(e, KeyboardInterrupt) and getattr(args, "runs_a_job", False):
        print("interrupted", file=sys.stderr)
        return 130  # the job did not finish: a script must not carry on as if it had
    if isinstance(e, KeyboardInterrupt):
        print("stopped", file=sys.stderr)
        return 0  # Ctrl-C is how a node is meant to be stopped
    if _is_one_of(e, NODE_WENT_AWAY):
        print(f"p2psched: error: the node stopped answering ({e})", file=sys.stderr)
        return 1
    if isinstance(e, OSError):  # the port is taken, the address is not ours, ...
        print(f"p2psched: error: {e}", file=sys.stderr)
        return 1
    return None


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logs.configure(getattr(args, "log_level", "warning"), getattr(args, "log_json", False))
    if getattr(args, "id_bits", None) is not None:
        from p2psched.identity import use_network_id_bits

        use_network_id_bits(args.id_bits)  # before anything makes, loads or checks an id
    try:
        args.func(args)
        sys.stdout.flush()  # (a reader gone is met here, where it is told as such, not at exit)
    except BaseException as raised:
        status = _exit_status(_leaf(raised), args)
        if status is None:
            raise
        sys.exit(status)
