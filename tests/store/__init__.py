"""Tests of `p2psched.store`, a module each."""
