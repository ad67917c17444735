"""Tests of `p2psched.scheduler.run`, a module each."""
