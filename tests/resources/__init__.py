"""Tests of `p2psched.resources`, a module each."""
