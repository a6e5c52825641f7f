"""Worker processes die with their parent: `s4d shards` killed by SIGKILL leaves no worker
behind; SIGTERM stops it with one line saying what is done and how to resume."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .test_preprocess import make_raw

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

# Run as a file: spawned workers re-run its top level, so the patch holds there too. Each
# worker records its pid and then blocks in its first sample: the run is always mid-way.
SCRIPT = """
import os, sys, time
import preprocess.run as r

def blocked(self, sample):
    open(os.path.join(os.environ["S4D_TEST_PIDS"], str(os.getpid())), "w").close()
    time.sleep(600)

r.SampleProcessor.__call__ = blocked
if __name__ == "__main__":
    from s4d.cli.main import run
    sys.argv = ["s4d", *sys.argv[1:]]
    run()
"""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")  # a zombie has exited already


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])


def wait_until(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    return make_raw(tmp_path_factory.mktemp("children") / "raw")


def start_shards(tmp_path, raw):
    """`s4d shards --workers 2` with both workers blocked; returns (process, worker pids)."""
    (tmp_path / "run.py").write_text(SCRIPT)
    pids = tmp_path / "pids"
    pids.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "S4D_TEST_PIDS": str(pids)}
    proc = subprocess.Popen(
        [
            sys.executable,
            str(tmp_path / "run.py"),
            "shards",
            "--csv",
            str(raw / "list.csv"),
            "--no-align",
            "--size",
            "32",
            "--frames",
            "4",
            "--stride",
            "1",
            "--out",
            str(tmp_path / "out"),
            "--workers",
            "2",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ok = wait_until(lambda: len(list(pids.iterdir())) >= 2 or proc.poll() is not None, 90)
        assert ok and proc.poll() is None, f"the workers never started: {proc.communicate(timeout=30)}"
        workers = [int(p.name) for p in pids.iterdir()]
        assert all(parent_of(w) == proc.pid for w in workers)  # ours, not a reused pid
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    return proc, workers


def test_sigkill_of_shards_leaves_no_worker(tmp_path, raw):
    proc, workers = start_shards(tmp_path, raw)
    proc.kill()  # SIGKILL: no handler of ours runs
    proc.communicate(timeout=30)
    assert wait_until(lambda: not any(alive(w) for w in workers), 10), [w for w in workers if alive(w)]


def test_sigterm_of_shards_is_one_line_and_leaves_no_worker(tmp_path, raw):
    proc, workers = start_shards(tmp_path, raw)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    lines = [x for x in err.splitlines() if x.strip()]
    assert proc.returncode != 0
    assert len(lines) == 1, err
    assert "interrupted (SIGTERM): 0 of 2 shard(s) done" in lines[0] and "re-run the same command to resume" in lines[0]
    assert wait_until(lambda: not any(alive(w) for w in workers), 10)
    assert not list((tmp_path / "out").glob("*.record.json"))  # nothing claimed done


def test_a_worker_whose_parent_is_already_gone_exits():
    """The race: the parent died before the death signal was armed."""
    code = "import os; from preprocess.children import die_with_parent; die_with_parent(os.getppid() + 1); print('lived')"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "lived" not in done.stdout


def test_the_polling_fallback_follows_the_parent(tmp_path):
    """Where prctl is missing a thread watches os.getppid(): the child exits once its parent is killed."""
    child = (
        "import os, sys, time; sys.platform = 'other'; from preprocess.children import die_with_parent; "
        "assert die_with_parent(os.getppid()) == 'poll'; print(os.getpid(), flush=True); time.sleep(600)"
    )
    middle = "import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', sys.argv[1]]); time.sleep(600)"
    proc = subprocess.Popen([sys.executable, "-c", middle, child], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        pid = int(proc.stdout.readline())
        assert alive(pid) and parent_of(pid) == proc.pid
    finally:
        proc.kill()
        proc.communicate(timeout=30)
    assert wait_until(lambda: not alive(pid), 10)
