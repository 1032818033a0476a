#!/usr/bin/env bash
# The GPU rows of the training-throughput table (issue: the cross-sectional policy at universe scale), one prepared
# batch for a short GPU lease: flat (window context) against cross (history context, affine head) at the README
# size, 256 and 1,024 assets, eager, each in bf16 autocast (--dtype auto resolves to it on CUDA) beside
# float32; torch.compile on at 256 assets; peak GPU memory with and without --microbatch-windows at 1,024;
# the band projection's two routes (benchmarks/band_projection.py); the GPU tests.
# Every part has its own time limit, so a slow part costs only itself. Writes each part's output under $OUT
# (default: ./gpu_rows). Run from the repository root: bash benchmarks/gpu_throughput.sh
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
    grep -v '^{' "$OUT/$name.txt" | tail -9
}
echo "== band projection"
timeout 40 python3 benchmarks/band_projection.py --device cuda | tee "$OUT/band_projection.txt"
part flat 100 --only readme assets256 assets1024 --architecture flat --context window --compile off
part cross_new 110 --only readme assets256 assets1024 --architecture cross --context history --asset-head affine \
    --compile off
part microbatch 50 --only assets1024 --architecture cross --context history --asset-head affine --compile off \
    --microbatch-windows 32
part compiled 120 --only assets256 --architecture flat cross --context history --asset-head affine --compile on \
    --dtype bfloat16
echo "== gpu tests"
timeout 90 python3 -m pytest tests/differentiable_market/test_trainer.py -m gpu -q -p no:cacheprovider 2>&1 \
    | tee "$OUT/gpu_tests.txt" | tail -5
