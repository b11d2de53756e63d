#!/usr/bin/env bash
# Train every organism variant (phase 1 text LM + phase 2, both unit kinds) from a prebuilt data dir
# (`slm-lens organism build`) and pack the checkpoints as tar files into $OUT (each <= 16 MiB, 5 files).
#
#   OUT=/somewhere bash scripts/organism_gpu.sh          # from the repository root, data in .gpu/data
#
# Needs only python with torch, transformers, safetensors, numpy (no TransformerLens, no espeak).
# Env: ORGANISM_DATA (default .gpu/data), ORGANISM_DEVICE (default cuda; cpu works, slowly),
#      ORGANISM_THREADS (CPU threads), ORGANISM_MAX_STEPS (smoke test), ORGANISM_WORK (scratch dir), PYTHON.
# CUDA trains under bf16 autocast; CPU in fp32. Same recipe budget on both (recipe.json of the data dir).
set -euo pipefail
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
DATA="${ORGANISM_DATA:-.gpu/data}"
DEVICE="${ORGANISM_DEVICE:-cuda}"
OUT="${OUT:-out/organism_gpu}"
WORK="${ORGANISM_WORK:-$(mktemp -d)}"
PYTHON="${PYTHON:-$(command -v python3 || command -v python)}"
THREADS=()
if [[ -n "${ORGANISM_THREADS:-}" ]]; then THREADS=(--threads "$ORGANISM_THREADS"); fi
if [[ -n "${ORGANISM_MAX_STEPS:-}" ]]; then THREADS+=(--max-steps "$ORGANISM_MAX_STEPS"); fi  # smoke test only
mkdir -p "$OUT" "$WORK"
start=$(date +%s)
{
  date -u
  "$PYTHON" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')"
  "$PYTHON" -m slm_transformerlens.cli organism train --data "$DATA" --models "$WORK/models" --device "$DEVICE" "${THREADS[@]}"
  echo "total seconds: $(( $(date +%s) - start ))"
} 2>&1 | tee "$WORK/train.log"
for kind in kmeans phoneme; do
  [[ -d "$WORK/models/main_$kind" ]] || continue
  tar -cf "$OUT/organism_${kind}_a.tar" -C "$WORK/models" "main_$kind" "random_init_$kind" "speech_only_$kind"
  tar -cf "$OUT/organism_${kind}_b.tar" -C "$WORK/models" "no_interleave_$kind" "untrained_units_$kind"
done
tar -cf "$OUT/organism_logs.tar" -C "$WORK" train.log
ls -la "$OUT"
