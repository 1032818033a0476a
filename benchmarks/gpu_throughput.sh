#!/usr/bin/env bash
# The GPU rows of the training-throughput table (issue: the cross-sectional policy at universe scale), one prepared
# batch for a short GPU lease: flat against cross in both encoder contexts at 4, 256 and 1,024 assets, eager, each in
# bf16 autocast (--dtype auto resolves to it on CUDA) beside float32; cross with torch.compile; and peak GPU memory
# with and without --microbatch-windows. Every part has its own time limit, so a slow part costs only itself.
# Writes each part's table and JSON line under $OUT (default: ./gpu_rows). Run from the repository root:
#   bash benchmarks/gpu_throughput.sh
set -u
OUT=${OUT:-gpu_rows}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=.
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$OUT/gpu.txt"
B="python3 benchmarks/train_throughput.py --device cuda --steps 5 --warmup 2"
part() {  # name, seconds, arguments...
    local name=$1 limit=$2
    shift 2
    echo "== $name: $*"
    timeout "$limit" $B "$@" > "$OUT/$name.txt" 2>&1
    echo "exit $?"
    grep -v '^{' "$OUT/$name.txt" | tail -12
}
part flat 100 --only readme assets256 assets1024 --architecture flat --context window --compile off
part cross_history 100 --only readme assets256 assets1024 --architecture cross --context history --compile off
part cross_window 90 --only assets256 --architecture cross --context window --compile off
part compiled 150 --only assets256 --architecture flat cross --context history --compile on --dtype bfloat16
part microbatch 60 --only assets1024 --architecture cross --context history --compile off --microbatch-windows 32
