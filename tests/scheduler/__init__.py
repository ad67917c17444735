"""Tests of `p2psched.scheduler`, a module each."""
