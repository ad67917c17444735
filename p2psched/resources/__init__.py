"""What a worker has to offer: its resource profile, how it is detected, and how needs match it.

The profile is the public meta_info of the design documents this project came from (`_v`,
installed and loaded models, specifications, network, workload, minimum cost), plus the
drivers a worker runs, its free slots, labels and addresses.
"""

from __future__ import annotations

from p2psched.resources.need import Need as Need
from p2psched.resources.need import NeedError as NeedError
from p2psched.resources.profile import Gpu as Gpu
from p2psched.resources.profile import Profile as Profile

__all__ = ["Gpu", "Need", "NeedError", "Profile"]
