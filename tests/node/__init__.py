"""Tests of `p2psched.node`, a module each."""
