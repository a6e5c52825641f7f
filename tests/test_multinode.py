"""A multi-node run needs one run folder for all nodes: two torchrun agents on this host, each a
"node" of one process (LOCAL_RANK 0 on both), over gloo on the CPU."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from s4d.runtime.dist import Dist
from s4d.runtime.shared_fs import MARKER, check_shared_folder


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_pass_on_a_shared_folder_and_all_stop_on_a_split_one(tmp_path):
    job = Path(__file__).with_name("multinode_job.py")
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(job.parent.parent)}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes",
                "2",
                "--node-rank",
                str(node),
                "--nproc-per-node",
                "1",
                "--master-addr",
                "127.0.0.1",
                "--master-port",
                str(port),
                str(job),
                str(tmp_path),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for node in (0, 1)
    ]
    outs = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=180)  # a hang fails here, not in CI's global timeout
            assert p.returncode == 0, stderr[-3000:]
            outs.append(json.loads(stdout.strip().splitlines()[-1]))
    finally:
        for p in procs:
            p.kill()
    by_rank = {o["rank"]: o for o in outs}
    assert set(by_rank) == {0, 1} and all(o["local_rank"] == 0 and o["world"] == 2 for o in outs)  # two "nodes"
    assert all(o["shared"] == "ok" for o in outs)
    for rank, o in by_rank.items():  # every rank stops, with the same one line naming the folder
        assert "\n" not in o["split"] and "not on a shared file system" in o["split"], o
        assert o["split"].startswith(str(tmp_path / f"node{rank}")) and "1 node(s)" in o["split"]
        assert not o["config_written"]  # stopped before pinning the folder
    assert "this one:" in by_rank[1]["split"] and "this one:" not in by_rank[0]["split"]
    assert (tmp_path / "shared" / "config.json").is_file() and not (tmp_path / "shared" / MARKER).exists()


def test_single_process_and_one_node_need_no_marker(tmp_path):
    check_shared_folder(tmp_path / "run", Dist())  # no group: nothing to do, nothing written
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("wait", [0.0, 0.5])
def test_a_late_marker_is_waited_for(tmp_path, wait):
    """NFS may answer a lookup from its cache for a while: a node keeps looking for WAIT_S."""
    import threading

    from s4d.runtime.shared_fs import _sees

    marker = tmp_path / MARKER
    timer = threading.Timer(0.3, lambda: marker.write_text(f"{0xABC:x}\n"))
    timer.start()
    assert _sees(marker, 0xABC, wait) is (wait > 0.3)
    timer.join()
    assert not _sees(marker, 0xABD, 0.0)  # a stale marker of another run is not this one
