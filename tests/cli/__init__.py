"""Tests of `p2psched.cli`, a module each."""
