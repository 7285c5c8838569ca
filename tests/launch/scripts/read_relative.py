"""Reads ``data.txt`` by a relative path and imports a module beside it; prints what it saw (one JSON line)."""

import json
import os
import sys

import helper_beside  # found through sys.path[0], the script's folder, as under `python script.py`

with open("data.txt") as fh:  # relative to the folder the rank started in
    data = fh.read().strip()
rank = os.environ.get("RANK", "0")
print(json.dumps({"rank": rank, "cwd": os.getcwd(), "data": data, "path0": sys.path[0], "helper": helper_beside.NAME}))
