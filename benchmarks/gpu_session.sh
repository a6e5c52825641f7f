#!/usr/bin/env bash
# The one prepared script for a lent GPU machine (issues 16, 22): `s4d doctor`, the GPU-marked
# tests, and the model and data benchmarks at base size, each bounded in time, outputs under $OUT.
# On the device, after ../shared/tools/gpu-wheels has installed DALI and friends into /tmp/site:
#   export PYTHONPATH=/tmp/site:$PWD; bash benchmarks/gpu_session.sh
# Budget, one H100: the step limits below add up to 440 s, plus at most 5 s of kill grace per
# step: under 8 minutes in all (run it with the device tool's timeout_s >= 480). Outputs: 7 files
# in $OUT (the device tool brings back at most 8); rc.txt has each step's exit code and seconds
# (124: the step ran out of time; its output so far is kept).
set -uo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export COLUMNS=150 PYTHONUNBUFFERED=1  # wide tables; output survives a step that is cut off

step() {  # step NAME LIMIT_S OUTFILE COMMAND...
  local name=$1 limit=$2 file=$3 t0=$SECONDS
  shift 3
  timeout -k 5 "$limit" "$@" > "$OUT/$file" 2>&1
  echo "$name rc $? ($((SECONDS - t0)) s of $limit)" >> "$OUT/rc.txt"
}

step device 30 device.txt bash -c "nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; \
  python3 -c \"import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())\""
# rows, not --json: each check's row is written as it finishes, so a cut-off run still shows them
step doctor 210 doctor.txt python3 -m s4d doctor --debug
# the doctor ran above: its GPU test (a second doctor run) would not fit
step pytest-gpu 60 pytest-gpu.txt python3 -m pytest -q -m gpu -p no:cacheprovider \
  --deselect tests/test_doctor.py::test_doctor_passes_every_check_on_a_gpu
step bench-model 75 bench-model.txt python3 benchmarks/bench_model.py --size base --batch 16 --iters 10
step bench-data 65 bench-data.txt python3 benchmarks/bench_data.py --device gpu --workers 8
cat "$OUT/rc.txt"
