"""Tests of `p2psched.gate`, a module each."""
