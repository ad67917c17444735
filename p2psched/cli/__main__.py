"""`python -m p2psched.cli`: what the devnet and the tests run, the same as `p2psched`."""

from __future__ import annotations

from p2psched.cli.app import main

main()
