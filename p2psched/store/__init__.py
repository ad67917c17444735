"""Durable state both roles use: one SQLite file per node, which the node opens and hands to its
scheduler and its worker. `schema` (tables and migrations), `journal` (the entries the cores
emit), `writes` (entries into rows), `queries` (reading back), `ledger` (money and its
verification), and `store` (the `Store` handle that holds them together).
"""

from __future__ import annotations

from p2psched.store.queries import JobListing as JobListing
from p2psched.store.queries import StoredJob as StoredJob
from p2psched.store.queries import StoredTask as StoredTask
from p2psched.store.schema import StoreError as StoreError
from p2psched.store.store import Store as Store

__all__ = ["JobListing", "Store", "StoreError", "StoredJob", "StoredTask"]
