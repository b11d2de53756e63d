#!/usr/bin/env bash
# Set up (idempotent) and run the main job on the embedded default model (no model hub).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
.venv/bin/slm-lens demo --out "${1:-out/demo}"
