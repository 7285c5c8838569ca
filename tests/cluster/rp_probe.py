"""A user script for deeprc-launch on the cluster: print this rank's wiring (rank 0 live), write it to a file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.cluster.bodies import wiring  # noqa: E402

if __name__ == "__main__":
    got = wiring()
    print(f"rank {got['rank']} of {got['world_size']} on {got['hostname']}: master {got['master_addr']}", flush=True)
    Path(sys.argv[1], f"wiring-{got['rank']}.json").write_text(json.dumps(got))
    sys.exit(int(sys.argv[2]) if len(sys.argv) > 2 and got["rank"] == 3 else 0)
