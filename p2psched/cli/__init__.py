"""The `p2psched` command line: `app` assembles the parser and runs a command; `args` and `show`
hold what the groups of commands share; each group registers its own commands: `roles` (gate,
node, worker), `jobs` (submit, status, ledger, ...), `operate` (top, ui, peers, scheduler,
workers), `dht` (dht, demo) and `devnet`. `submit` and `top` are the two larger commands' flows.
"""

from __future__ import annotations

from p2psched.cli.app import main as main

__all__ = ["main"]
