"""The worker role: its configuration (`config`), its ad in the DHT (`advert`), the sans-I/O
core that quotes, leases, queues and runs tasks and signs their receipts (`manager`), the
drivers that run them (`drivers`), and the trio shell that serves schedulers' channels
(`service`)."""

from __future__ import annotations
