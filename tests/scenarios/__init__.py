"""Scenarios: several roles together, in one process over real sockets or as real processes
(a devnet, network namespaces), each test a story a user would live through."""
