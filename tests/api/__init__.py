"""Tests of `p2psched.api`, a module each."""
