#!/usr/bin/env bash
# The GPU rows of the training-throughput table (issue: the cross-sectional policy at universe scale), one prepared
# batch for a short GPU lease. Parts (all by default; PARTS="tests microbatch" picks some):
#   band       the band projection's two routes (benchmarks/band_projection.py)
#   flat       flat policy at the README size, 256 and 1,024 assets, eager, bf16 autocast (auto) beside float32
#   cross      cross policy (history context, affine head), the same rows
#   microbatch cross at 1,024 assets with and without --microbatch-windows 32 (peak GPU memory), eager
#   tests      the GPU tests of test_env and test_trainer (CUDA against CPU accounting; training steps with compile,
#              bf16 and microbatches)
#   compiled   cross at 256 assets, bf16, eager against torch.compile (one child process each, compile time apart)
# Every part has its own time limit, so a slow part costs only itself. Writes each part's output under $OUT
# (default: ./gpu_rows). Run from the repository root: bash benchmarks/gpu_throughput.sh
set -u
OUT=${OUT:-gpu_rows}
PARTS=${PARTS:-band flat cross microbatch tests compiled}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=.
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$OUT/gpu.txt"
T=benchmarks/train_throughput.py
CROSS="--architecture cross --context history --asset-head affine"
wants() { [[ " $PARTS " == *" $1 "* ]]; }
part() {  # name, seconds, command...
    local name=$1 limit=$2
    shift 2
    echo "== $name: $*"
    local t0=$SECONDS
    timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
    echo "exit $? after $((SECONDS - t0)) s"
    grep -v '^{' "$OUT/$name.txt" | tail -9
}
wants band && part band_projection 40 python3 benchmarks/band_projection.py --device cuda
wants flat && part flat 100 python3 $T --device cuda --only readme assets256 assets1024 --architecture flat \
    --compile off
wants cross && part cross 110 python3 $T --device cuda --only readme assets256 assets1024 $CROSS --compile off
if wants microbatch; then
    part microbatch 60 python3 $T --device cuda --only assets1024 $CROSS --compile off --dtype float32 \
        --microbatch-windows 32
    part no_microbatch 50 python3 $T --device cuda --only assets1024 $CROSS --compile off --dtype float32
fi
wants tests && part gpu_tests 200 python3 -m pytest tests/differentiable_market/test_env.py \
    tests/differentiable_market/test_trainer.py -m gpu -q -p no:cacheprovider
if wants compiled; then
    # --child runs one configuration and prints its JSON row; the compile happens in the untimed warm-up step
    part eager256 40 python3 $T --child assets256 --device cuda --steps 5 --warmup 2 --compile off \
        --dtype bfloat16 $CROSS
    part compiled256 260 python3 $T --child assets256 --device cuda --steps 5 --warmup 2 --compile on \
        --dtype bfloat16 $CROSS
fi
