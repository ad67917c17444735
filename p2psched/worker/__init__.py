"""The worker role: its configuration (`config`, with its driver tables in `driver_config`),
its ad in the DHT (`advert`), the sans-I/O core that quotes, leases, queues and runs tasks and
signs their receipts (`manager`, keeping `holdings`) on the terms its operator sets (`policy`:
drivers' caps, who may use it and how much, prices by priority; the operator's schedulers file
followed by `schedulers_file`), the drivers that run them (`drivers`; a command in the
bubblewrap sandbox of `sandbox`, under the limits `launch` sets), and the trio shell that
serves schedulers' channels (`service`)."""

from __future__ import annotations
