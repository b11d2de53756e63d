#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite: the main suite on transformer-lens 4.3,
# then the smaller transformer-lens 3.9 job (HookedTransformer route and the loaders).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --tests
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
.venv/bin/python -m pytest -q -p no:cacheprovider --durations=20 "$@"
bash .ci/tl39.sh
