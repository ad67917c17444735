"""Tests of `p2psched.wire`, a module each."""
