#!/usr/bin/env bash
# Train the four bundled generators on one CUDA GPU at once, each twice: from scratch, and continued from the
# bundled weights (--init). Then score every candidate with the quality benchmarks (CPU, 200 samples, the
# models' default settings) and print a table. The bundled autoencoder, judge and tokenizers are used as they are.
# The denoiser runs take train_denoiser's current loss defaults (Min-SNR-5 for the DiT, logit-normal t for SiT);
# the H100 session that made the bundled GPT and VAR ran before those existed (add --snr-gamma 0 --t-sampling
# uniform to repeat its denoiser runs).
#
#   bash training/train_all_cuda.sh [OUT_DIR=runs/cuda] [MINUTES=6]
#
# Candidates land in OUT_DIR/{scratch,init}/tn_glyph_*.safetensors next to copies of the frozen files, so
# `python -m benchmarks.quality --weights-dir OUT_DIR/scratch` works on them; logs in OUT_DIR/*.log.
set -u
cd "$(dirname "$0")/.."
out=${1:-runs/cuda}
minutes=${2:-6}
py=${PYTHON:-python3}
device=${TN_DEVICE:-cuda}    # TN_DEVICE=cpu TN_POOL=2000 TN_SAMPLES=20: a quick dry run of this script
pool=${TN_POOL:-200000}
samples=${TN_SAMPLES:-200}
mkdir -p "$out/scratch" "$out/init"
for d in scratch init; do cp weights/tn_glyph_{ae,judge,vq,msvq}.safetensors "$out/$d/"; done
common=(--device "$device" --workers 2 --threads 1 --max-minutes "$minutes")
run() {  # run NAME ARGS...: one training in the background, its output in $out/NAME.log
    local name=$1; shift
    "$py" -m "$@" > "$out/$name.log" 2>&1 &
}
for kind in dit sit; do
    run "scratch_$kind" training.train_denoiser --kind $kind "${common[@]}" --steps 60000 --batch 512 --lr 1e-3 \
        --pool "$pool" --cache "" --eval-every 0 --out "$out/scratch/tn_glyph_$kind.safetensors"
    run "init_$kind" training.train_denoiser --kind $kind "${common[@]}" --steps 60000 --batch 512 --lr 5e-4 \
        --pool "$pool" --cache "" --eval-every 0 --init "weights/tn_glyph_$kind.safetensors" \
        --out "$out/init/tn_glyph_$kind.safetensors"
done
run scratch_gpt training.train_llamagen_gpt "${common[@]}" --steps 40000 --batch 256 --lr 2e-3 --pool "$pool" \
    --out "$out/scratch/tn_glyph_gpt.safetensors"
run init_gpt training.train_llamagen_gpt "${common[@]}" --steps 40000 --batch 256 --lr 1e-3 --pool "$pool" \
    --heldout 1000 --init weights/tn_glyph_gpt.safetensors --out "$out/init/tn_glyph_gpt.safetensors"
run scratch_var training.train_var "${common[@]}" --steps 30000 --batch 256 --lr 1e-3 --pool "$pool" --cache "" \
    --ema 0.999 --out "$out/scratch/tn_glyph_var.safetensors"
run init_var training.train_var "${common[@]}" --steps 30000 --batch 256 --lr 5e-4 --pool "$pool" --cache "" \
    --ema 0.999 --init weights/tn_glyph_var.safetensors --out "$out/init/tn_glyph_var.safetensors"
wait
nvidia-smi --query-gpu=name,memory.used --format=csv,noheader 2>/dev/null || true
# score every candidate, 8 jobs at 2 CPU threads each
for d in scratch init; do
    for m in dit sit; do
        OMP_NUM_THREADS=2 "$py" -m benchmarks.quality --model $m --samples "$samples" --weights-dir "$out/$d" \
            > "$out/quality_${d}_$m.log" 2>&1 &
    done
    for m in llamagen var; do
        OMP_NUM_THREADS=2 "$py" -m benchmarks.quality_ar --model $m --samples "$samples" --weights-dir "$out/$d" \
            > "$out/quality_${d}_$m.log" 2>&1 &
    done
done
wait
for f in "$out"/*.log; do echo "== $f"; grep -E "saved|time cap|judge accuracy|Error|error" "$f" | tail -4; done
