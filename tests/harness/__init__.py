"""What tests share, one module per concept; tests import from here, never from each other.

- `net`: a scheduler's `JobRun` and workers' `TaskManager`s joined in memory on a virtual clock.
- `dht`: DHT protocol cores joined by an in-memory link.
- `network`: real nodes in this process on loopback (gates, workers, a scheduler) and their jobs.
- `processes`: the CLI as child processes, the nodes a test keeps running, job files, receipts.
- `devnet`: a devnet for the length of a test (the `net` fixture of tests/conftest.py).
- `metrics`: a client of a node's control API in this process.
- `netns`: real network namespaces with a NAT router between them.
- `store`, `profiles`, `jobspec`: what the tests of the store, resources and job spec build.
"""
