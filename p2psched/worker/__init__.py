"""The worker role: its configuration (`config`), its ad in the DHT (`advert`), the sans-I/O
core that quotes, leases, queues and runs tasks and signs their receipts (`manager`), the
drivers that run them (`drivers`; a command in the bubblewrap sandbox of `sandbox`, under the
limits `launch` sets), and the trio shell that serves schedulers' channels
(`service`)."""

from __future__ import annotations
