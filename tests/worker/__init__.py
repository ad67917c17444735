"""Tests of `p2psched.worker`, a module each."""
