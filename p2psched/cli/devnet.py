"""`p2psched devnet up|down|demo`: the command line of the local multi-node harness
(p2psched/devnet.py), which starts a gate and N workers as processes on loopback.

Promises: `demo` stops the devnet it started whatever happens to the job, and exits with the
job's status.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from p2psched.cli.args import add_command, hint, parse_hostport
from p2psched.cli.show import print_table
from p2psched.devnet import DRIVERS

if TYPE_CHECKING:
    from p2psched.cli.args import Subcommands

RESULTS_SHOWN = 10


def _workers(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 200:
        raise argparse.ArgumentTypeError(f"{text!r}: a devnet has 1..200 workers")
    return int(text)


def cmd_devnet_up(args: argparse.Namespace) -> None:
    from p2psched import devnet

    net = devnet.up(Path(args.dir), args.workers, drivers=args.driver or None)
    gate = net.folder / "gate"
    print(f"devnet up from {net.folder}: gate on {net.gate}, {args.workers} worker(s)")
    print(f"  submit with: {hint('submit examples/hello.yaml', gate)}   (any of examples/)")
    print(f"  watch with:  {hint('top', gate)}   (or: ui, for a browser)")
    print(f"  stop with:   p2psched devnet down --dir {shlex.quote(args.dir)}")


def cmd_devnet_serve_model(args: argparse.Namespace) -> None:
    from p2psched.devnet_model import serve

    serve(Path(args.port_file), args.port)


def cmd_devnet_down(args: argparse.Namespace) -> None:
    from p2psched import devnet

    killed = devnet.down(Path(args.dir))
    print("devnet down" + (f" ({', '.join(killed)} had to be killed)" if killed else ""))


def _show_results(folder: Path) -> None:
    """The first results of a job, as `submit` wrote them: the output, or why there is none."""
    shown = []
    for path in sorted(folder.glob("[0-9]*[0-9].json"))[:RESULTS_SHOWN]:
        r = json.loads(path.read_text())
        said = json.dumps(r["output"]) if r["state"] == "completed" else r["error"]
        shown.append((r["name"], r["state"], said[:80]))
    print_table(("TASK", "STATE", "OUTPUT"), shown)


def cmd_devnet_demo(args: argparse.Namespace) -> None:
    import tempfile

    from p2psched import devnet
    from p2psched.cli.submit import run_submit
    from p2psched.scheduler.job import load_job

    job = Path(args.job) if args.job else devnet.example_job()
    with tempfile.TemporaryDirectory(prefix="p2psched-devnet-") as tmp:
        folder = Path(tmp)
        print(f"starting a gate and {args.workers} workers on loopback…", flush=True)
        net = devnet.up(folder, args.workers)
        try:
            print(f"submitting {job} through the gate at {net.gate}", flush=True)
            code = run_submit(
                job,
                folder / "client",
                gate=parse_hostport(net.gate, "gate"),
                results=Path(args.results),
                as_json=False,
                detach=False,
            )
            _show_results(Path(args.results) / load_job(job).name)
        finally:
            devnet.down(folder)
            print("devnet stopped", flush=True)
    sys.exit(code)


def register(sub: Subcommands, common: argparse.ArgumentParser) -> None:
    net = add_command(
        sub,
        "devnet",
        "a gate and workers as processes on this machine, to try p2psched: up, down, demo",
        ["p2psched devnet up --dir .devnet"],
        more="(README: A devnet)",
    ).add_subparsers(dest="devnet_command", required=True)
    sp = add_command(
        net,
        "up",
        "start a gate and N workers on loopback, and return",
        ["p2psched devnet up --dir .devnet --workers 5"],
        more="Their data dirs are DIR/gate, DIR/worker-0, ...; submit to DIR/gate. "
        "(README: A devnet)",
    )
    sp.add_argument("--workers", type=_workers, default=3, help="how many workers, 1..200")
    sp.add_argument("--dir", default=".devnet", help="where their data and logs go")
    sp.add_argument(
        "--driver",
        action="append",
        help="drivers the workers enable (repeat; default: "
        + ", ".join(DRIVERS)
        + ", what examples/ needs)",
    )
    sp.set_defaults(func=cmd_devnet_up)
    sp = add_command(
        net,
        "serve-model",
        "the devnet's OpenAI-compatible test endpoint (`up` starts it)",
        ["p2psched devnet serve-model --port-file .devnet/my-model.json"],
    )
    sp.add_argument("--port-file", required=True, help="where to write the port it listens on")
    sp.add_argument("--port", type=int, default=0, help="on 127.0.0.1 (default: 0, any free one)")
    sp.set_defaults(func=cmd_devnet_serve_model)
    sp = add_command(
        net,
        "down",
        "stop the devnet's processes",
        ["p2psched devnet down --dir .devnet"],
    )
    sp.add_argument("--dir", default=".devnet", help="the devnet's folder, as up was given")
    sp.set_defaults(func=cmd_devnet_down)
    sp = add_command(
        net,
        "demo",
        "up in a temporary folder, run a job (examples/hello.yaml), show the results, down",
        ["p2psched devnet demo --workers 2"],
    )
    sp.add_argument("--workers", type=_workers, default=3, help="how many workers, 1..200")
    sp.add_argument("--job", help="another job to run (default: examples/hello.yaml)")
    sp.add_argument("--results", default="results", help="folder for results")
    sp.set_defaults(func=cmd_devnet_demo, runs_a_job=True)
