#!/usr/bin/env bash
# The one prepared script for a lent GPU machine (issue 16): `s4d doctor`, the GPU-marked tests,
# and the model and data benchmarks at base size, each bounded in time, outputs under $OUT.
# On the device, after ../shared/tools/gpu-wheels has installed DALI and friends into /tmp/site:
#   export PYTHONPATH=/tmp/site:$PWD; bash benchmarks/gpu_session.sh
set -uo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export COLUMNS=150
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"; } > "$OUT/device.txt" 2>&1
timeout 180 python3 -m s4d doctor --json --debug > "$OUT/doctor.json" 2> "$OUT/doctor.err"; echo "doctor rc $?" >> "$OUT/rc.txt"
timeout 150 python3 -m pytest -q -m gpu -p no:cacheprovider > "$OUT/pytest-gpu.txt" 2>&1; echo "pytest-gpu rc $?" >> "$OUT/rc.txt"
timeout 150 python3 benchmarks/bench_model.py --size base --batch 16 --iters 10 > "$OUT/bench-model.txt" 2>&1; echo "bench-model rc $?" >> "$OUT/rc.txt"
timeout 100 python3 benchmarks/bench_data.py --device gpu --workers 8 > "$OUT/bench-data.txt" 2>&1; echo "bench-data rc $?" >> "$OUT/rc.txt"
cat "$OUT/rc.txt"
