"""Tests of `p2psched.dht`, a module each."""
