"""The preprocessing run: raw release -> shards, resumable, parallel, splittable.

The unit of work is a shard. ``plan_shards`` sorts each partition's samples by key and cuts
them into fixed groups (``preprocess.shard_samples``), so the plan is a pure function of the
sample list: every process, host and re-run agrees on which sample goes into which shard.
A shard is finished when its record (``NAME.record.json``, written last) exists; re-running
checks each finished shard against its record (tar present, size, sha256; ``.idx`` equal to
the tar's members) before trusting it: a missing or corrupt tar is encoded again from the raw
data, a missing or garbage ``.idx`` is rewritten from its tar, and a stale ``shards.json`` /
``index.parquet`` is removed until ``finalize`` rewrites it. An interrupted shard leaves only
``*.tmp`` files that are redone.
``--part i/n`` takes shards i, i+n, i+2n, ...; ``shards.folder.finalize`` merges all records
into ``index.parquet`` and ``shards.json`` once every shard is done.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .adapters import RawSample, list_samples
from .children import Stopped, die_with_parent, stop_on_signals, stop_pool
from .errors import InputError
from .faces import FaceDetector, NotEnoughFaces, align, align_span, crop_box, fit_frame, plan_clip
from .manifest import Manifest, check_name
from .media import Limits, MediaError, open_frames, read_image
from .safe_json import dumps
from .shards.encoding import CLIP_EXT, encode_clip, encode_image, pack_info
from .shards.folder import ShardTask, check_plan, plan_shards, record_path
from .shards.repair import repair_finished
from .shards.writer import ShardWriter, sha256, write_json_atomic


def parse_part(text: str, env: dict[str, str] | None = None) -> tuple[int, int]:
    """``"i/n"`` with 0 <= i < n, or ``"auto"``: this task of a SLURM job array
    (``SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN``, divided by ``SLURM_ARRAY_TASK_STEP`` for a
    stepped range, of ``SLURM_ARRAY_TASK_COUNT``). An array whose index falls outside its task
    count (a list like ``--array=1,5,9``) is refused, naming both: it would skip parts."""
    if text == "auto":
        return _slurm_part(os.environ if env is None else env)
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise InputError(f"--part must look like i/n (e.g. 0/4) or auto, got {text!r}") from None
    if not 0 <= i < n:
        raise InputError(f"--part {text}: need 0 <= i < n")
    return i, n


def _slurm_part(env: dict[str, str]) -> tuple[int, int]:
    try:
        task, count = int(env["SLURM_ARRAY_TASK_ID"]), int(env["SLURM_ARRAY_TASK_COUNT"])
        first = int(env.get("SLURM_ARRAY_TASK_MIN") or 0)
        step = int(env.get("SLURM_ARRAY_TASK_STEP") or 1)
        last = int(env["SLURM_ARRAY_TASK_MAX"]) if env.get("SLURM_ARRAY_TASK_MAX") else None
    except (KeyError, ValueError):
        raise InputError(
            "--part auto: not a SLURM job array task (SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT unset or not numbers); give --part i/n"
        ) from None
    offset = task - first
    regular = step > 1 and offset % step == 0 and (last is None or (last - first) // step + 1 == count)
    index = offset // step if regular else offset  # a stepped range: 0-30:10 is tasks 0, 1, 2, 3
    if count < 1 or not 0 <= index < count:
        raise InputError(
            f"--part auto: this SLURM array task's index {index} (SLURM_ARRAY_TASK_ID {task} - "
            f"SLURM_ARRAY_TASK_MIN {first}) is outside the part count {count} (SLURM_ARRAY_TASK_COUNT): "
            f"parts would be skipped; submit a contiguous array (--array=0-{max(count - 1, 0)}) or give --part i/n"
        )
    return index, count


class SampleProcessor:
    """Decode -> (detect + align | crop) -> encode one sample. Holds the MTCNN detector."""

    def __init__(self, manifest: Manifest, device: str | None = None) -> None:
        self.m = manifest
        self.pre = manifest.preprocess
        self._device = device
        self._detector: FaceDetector | None = None

    @property
    def detector(self) -> FaceDetector:
        if self._detector is None:
            self._detector = FaceDetector(self._device)
        return self._detector

    def __call__(self, s: RawSample) -> tuple[dict[str, bytes], dict[str, Any]]:
        pre = self.pre
        row: dict[str, Any] = {"key": s.key, "partition": s.partition, "label": s.label, "original_id": s.original_id, "source": str(s.source)}
        if s.kind == "image":
            img = read_image(s.source)
            found = 1
            if s.face_box is not None:
                out = crop_box(img, s.face_box, pre.margin, pre.size, pre.geometry)
            elif pre.align:
                face = self.detector.detect(img[None])[0]
                if face is None:
                    raise NotEnoughFaces("no face found in the image")
                out = align(img, face, pre.margin, pre.size, pre.geometry)
            else:
                out, found = fit_frame(img, pre.size, pre.geometry), 0
            row.update(frames=1, fps=0.0, faces_found=found, faces_filled=0)
            return {"jpg": encode_image(out, pre.quality), "info": pack_info(s.label, 1, 0.0, found), "json": _json(row)}, row

        limits = Limits.from_env(frames=True)  # declared sizes are checked before decoding; frames stream one at a time
        fps, frames = open_frames(s.source, s.kind, pre.frames_fps, limits)
        if pre.align:  # pass 1 keeps only the faces, pass 2 decodes again and crops the face's span
            window = self.m.clip.frames * self.m.clip.stride if self.m.clip else 1
            plan = plan_clip(self.detector.detect_stream(frames), pre.min_face_frames or window, pre.min_face_fraction)
            out = align_span(open_frames(s.source, s.kind, pre.frames_fps, limits)[1], plan, pre.margin, pre.size, pre.geometry)
            found, filled = plan.faces_found, plan.faces_filled
            row["face_span"] = list(plan.span)  # source frames kept: where the face is
        else:
            out, found, filled = np.stack([fit_frame(f, pre.size, pre.geometry) for f in frames]), 0, 0
        row.update(frames=len(out), fps=fps, faces_found=found, faces_filled=filled)
        data = encode_clip(out, fps, pre.codec, pre.quality)
        return {CLIP_EXT[pre.codec]: data, "info": pack_info(s.label, len(out), fps, found), "json": _json(row)}, row


def _json(row: dict[str, Any]) -> bytes:
    return dumps(row, sort_keys=True).encode()  # valid JSON: a NaN fps is null


def run_task(task: ShardTask, out_dir: Path, process: Callable[[RawSample], tuple[dict[str, bytes], dict[str, Any]]]) -> dict[str, Any]:
    """Write one shard and then its record; a sample that fails is listed with its reason.
    A shard whose every sample failed gets a record (count 0) and no tar. A write that fails
    (a full disk) names the shard and leaves no partial file behind."""
    try:
        return _run_task(task, out_dir, process)
    except OSError as err:
        if err.filename is not None:
            raise
        raise OSError(
            err.errno, f"{err.strerror or err}; free space, then re-run the same command to resume", str(out_dir / f"{task.name}.tar")
        ) from None


def _run_task(task: ShardTask, out_dir: Path, process: Callable[[RawSample], tuple[dict[str, bytes], dict[str, Any]]]) -> dict[str, Any]:
    rows, problems = [], []
    check_name(task.name, "shard", out_dir)  # its files must land inside out_dir
    tar = out_dir / f"{task.name}.tar"
    with ShardWriter(tar) as writer:
        for s in task.samples:
            try:
                components, row = process(s)
            except (MediaError, NotEnoughFaces) as err:
                reason = str(err) if str(err).startswith(str(s.source)) else f"{s.source}: {err}"
                problems.append({"id": s.original_id, "key": s.key, "partition": s.partition, "reason": reason})
                continue
            except Exception as err:  # any other failure of one sample must not stop the run
                reason = f"{s.source}: failed ({type(err).__name__}: {str(err).strip().splitlines()[0][:200] if str(err).strip() else ''})"
                problems.append({"id": s.original_id, "key": s.key, "partition": s.partition, "reason": reason})
                continue
            writer.write(s.key, components)
            rows.append({**row, "shard": tar.name})
    record = {
        "shard": task.name,
        "partition": task.partition,
        "planned": len(task.samples),
        "count": len(rows),
        "file": tar.name if writer.written else None,
        "bytes": tar.stat().st_size if writer.written else 0,
        "sha256": sha256(tar) if writer.written else None,
        "samples": rows,
        "problems": problems,
    }
    write_json_atomic(record_path(out_dir, task.name), record)
    return record


_WORKER: SampleProcessor | None = None


def _init_worker(manifest: Manifest, device: str | None, parent: int | None = None) -> None:
    import signal

    if parent is not None:
        die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the main process stops us
    import torch

    torch.set_num_threads(1)
    global _WORKER
    _WORKER = SampleProcessor(manifest, device)


def _work(task: ShardTask, out_dir: Path) -> dict[str, Any]:
    assert _WORKER is not None
    return run_task(task, out_dir, _WORKER)


@dataclass
class RunSummary:
    planned: int
    done_before: int
    done_now: int
    pending: list[str]
    problems: int
    repaired: list[str] = field(default_factory=list)  # one line per finished shard found damaged and redone


# GPU memory one `s4d shards` worker needs on CUDA (an estimate; no GPU measured it yet:
# `python benchmarks/bench_mtcnn.py --device cuda` prints the detector's peak): its CUDA context
# with cuDNN/cuBLAS ~0.6-0.8 GiB, MTCNN (preprocess/mtcnn.py) on a batch of 32 frames of max side
# 360 ~0.12 GiB at peak (measured on CPU: live tensor bytes), up to ~0.4 GiB when O-Net gets a full
# chunk of 512 boxes, and the caching allocator's slack.
MTCNN_WORKER_GIB = 1.5
GPU_MEMORY_SHARE = 0.9  # of the free memory: leave some for other processes and fragmentation


def default_workers(device: str | None) -> tuple[int, str]:
    """Worker processes for ``s4d shards`` without ``--workers``: one per core this process may
    use (each runs MTCNN on one thread); on CUDA also no more than fit in the GPU's free memory
    at ``MTCNN_WORKER_GIB`` each (at most 4 when the free memory cannot be read). The query makes
    this process's own CUDA context first, so that context is already counted as used."""
    from .machine import cpus_per_process

    cores, why = cpus_per_process()
    import torch

    cuda = device.startswith("cuda") if device else torch.cuda.is_available()
    if not cuda:
        return cores, why
    try:
        free, _ = torch.cuda.mem_get_info(torch.device(device) if device else None)
    except (RuntimeError, AssertionError, ValueError):  # no driver / not a CUDA build / bad index
        return min(cores, 4), f"{why}; at most 4 on CUDA"
    fit = max(1, int(free * GPU_MEMORY_SHARE / (MTCNN_WORKER_GIB * 2**30)))
    gpu = f"{free / 2**30:.1f} GiB GPU memory free, {MTCNN_WORKER_GIB:g} GiB per worker: {fit} fit"
    return min(cores, fit), f"{why}; {gpu}"


def run_shards(
    manifest: Manifest,
    raw_root: Path,
    out_dir: Path,
    *,
    workers: int = 1,
    part: tuple[int, int] = (0, 1),
    device: str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    on_repair: Callable[[str], None] | None = print,
) -> RunSummary:
    """Write this part's shards that are not done into ``out_dir``; finished shards are checked
    first and repaired (``repair_finished``), each repair said in one line to ``on_repair``."""
    adapter = list_samples(raw_root, manifest)
    tasks = plan_shards(adapter.samples, manifest)
    check_plan(out_dir, manifest, tasks, adapter)
    mine = tasks[part[0] :: part[1]]
    repaired = repair_finished(out_dir, [t.name for t in mine], on_repair)
    todo = [t for t in mine if not record_path(out_dir, t.name).is_file()]
    done_before = len(mine) - len(todo)
    if on_progress:
        on_progress(0, len(todo))
    try:
        with stop_on_signals():
            problems = _write_all(manifest, todo, out_dir, workers, device, on_progress)
    except Stopped as stop:
        done = sum(record_path(out_dir, t.name).is_file() for t in mine)
        raise ShardsInterrupted(
            f"interrupted ({stop.name}): {done} of {len(mine)} shard(s) done in {out_dir}; re-run the same command to resume"
        ) from None
    pending = [t.name for t in tasks if not record_path(out_dir, t.name).is_file()]
    return RunSummary(len(tasks), done_before, len(todo), pending, problems, repaired)


def _write_all(
    manifest: Manifest, todo: list[ShardTask], out_dir: Path, workers: int, device: str | None, on_progress: Callable[[int, int], None] | None
) -> int:
    """Write the shards ``todo`` in this process or a pool of ``workers``; returns the problem count."""
    problems = 0
    workers = min(workers, max(1, len(todo)))  # no more processes than shards to write
    if workers <= 1:
        proc = SampleProcessor(manifest, device)
        for i, t in enumerate(todo, 1):
            problems += len(run_task(t, out_dir, proc)["problems"])
            if on_progress:
                on_progress(i, len(todo))
    else:
        import multiprocessing as mp

        pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init_worker, initargs=(manifest, device, os.getpid()))
        try:
            futures = [pool.submit(_work, t, out_dir) for t in todo]
            for i, fut in enumerate(as_completed(futures), 1):
                problems += len(fut.result()["problems"])
                if on_progress:
                    on_progress(i, len(todo))
        except BaseException:
            stop_pool(pool)  # a worker must not go on writing once we stop (a signal, a failed shard)
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    return problems


class ShardsInterrupted(InputError):
    """SIGTERM or Ctrl-C stopped ``s4d shards``; the message says what is done and how to resume."""
