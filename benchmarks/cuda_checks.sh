#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one go: CPU/GPU seed equality (tests/test_cuda.py) and the AR speed
# benchmarks against the official code on the GPU (fp32 and bf16, batch 1 and 16) and on the machine's CPU.
#
#   bash benchmarks/cuda_checks.sh OFFICIAL_DIR [LOG_DIR=runs/cuda_checks]
#
# OFFICIAL_DIR holds checkouts of FoundationVision/LlamaGen and FoundationVision/VAR as OFFICIAL_DIR/LlamaGen and
# OFFICIAL_DIR/VAR (the benchmarks import the official loops from there; nothing of theirs is in this repo).
set -u
cd "$(dirname "$0")/.."
official=${1:?usage: benchmarks/cuda_checks.sh OFFICIAL_DIR [LOG_DIR]}
logs=${2:-runs/cuda_checks}
py=${PYTHON:-python3}
mkdir -p "$logs"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
"$py" -c "import torch, platform; print('torch', torch.__version__, 'cuda', torch.version.cuda, platform.processor() or platform.machine(), __import__('os').cpu_count(), 'cpus')"
if [ -z "${TN_SKIP_TESTS:-}" ]; then  # TN_SKIP_TESTS=1: the speed benchmarks only
    "$py" -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$logs/test_cuda.log" | tail -15
fi
bench() {  # bench NAME ARGS...
    echo "== $*"
    "$py" -m "$@" 2>&1 | grep -E "^(ours|official|greedy|GPT|VAR )|Error|error" | tee -a "$logs/speed.log"
}
for dtype in float32 bfloat16; do
    for b in 1 16; do
        bench benchmarks.ar_speed_llamagen --preset GPT-B --grid 16 --batch $b --cfg 4 --dtype $dtype --device cuda \
            --repeats 5 --official-dir "$official/LlamaGen"
        bench benchmarks.ar_speed_var --preset d16 --batch $b --cfg 1.5 --dtype $dtype --device cuda \
            --repeats 5 --official-dir "$official/VAR"
    done
done
[ -n "${TN_SKIP_CPU:-}" ] && exit 0  # TN_SKIP_CPU=1: no CPU runs (they take minutes)
for b in 1 16; do  # the GPU machine's CPU, fp32, for a second CPU data point next to CI's 2 cores
    bench benchmarks.ar_speed_var --preset d16 --batch $b --cfg 1.5 --device cpu --repeats 1 --official-dir "$official/VAR"
    bench benchmarks.ar_speed_llamagen --preset GPT-B --grid 16 --batch $b --cfg 4 --device cpu --repeats 1 \
        --official-dir "$official/LlamaGen"
done
