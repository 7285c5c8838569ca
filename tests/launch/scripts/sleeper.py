"""Prints 'started' on every rank, then sleeps (to be interrupted)."""

import time

from deeprc_core import detect_wiring

print(f"started {detect_wiring().rank}", flush=True)
time.sleep(300)
