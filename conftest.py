"""Test-session settings shared by `tests/` and the plugin's tests.

Every test runs single-threaded (torch and the subprocesses the tests start): float
reductions then happen in one order on every machine, so a seeded learning test reaches
the same numbers on a 2-core CI box as on a 64-core workstation, and a threshold measured
once stays valid. (On 2 cores the suite is no slower this way.)
"""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

import torch  # noqa: E402 - after the thread settings, which its import reads

torch.set_num_threads(1)
