"""Run by tests/test_multinode.py as one of two torchrun "nodes" on this host (each with
LOCAL_RANK 0): ``commit_config`` on a run folder both see, then on one that differs per node;
prints this rank's outcome as one JSON line."""

import json
import sys
import time
from pathlib import Path

from s4d.runtime import shared_fs
from s4d.runtime.dist import setup, teardown
from s4d.runtime.rundir import commit_config

shared_fs.WAIT_S = 1.0  # the test's folders are local: no cache to wait out


class Cfg:
    def to_dict(self):
        return {"seed": 0}


base = Path(sys.argv[1])
d, _ = setup("cpu")
result = {"rank": d.rank, "local_rank": d.local_rank, "world": d.world}
commit_config(Cfg(), base / "shared", d)  # one folder for both nodes: passes
result["shared"] = "ok"
t0 = time.perf_counter()
try:
    commit_config(Cfg(), base / f"node{d.rank}", d)  # each node its own folder at "the same path"
    result["split"] = "ok"
except shared_fs.RunFolderNotShared as err:
    result["split"] = str(err)
result["split_seconds"] = round(time.perf_counter() - t0, 2)
result["config_written"] = (base / f"node{d.rank}" / "config.json").is_file()
teardown(d)
print(json.dumps(result))
