"""Tests of `p2psched.scheduler.job`, a module each."""
