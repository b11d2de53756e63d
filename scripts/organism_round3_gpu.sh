#!/usr/bin/env bash
# Issue 21, round 3 (data/organism/hear/PLAN_round3.md): train and evaluate `hear-large-long` and `hear-xl`,
# seeds 0-4 each, all ten runs at once on one GPU; each evaluation starts when its training ends.
#
# Run from the repository root on a machine with a GPU and python3 with torch / transformers / pandas.
#   DATA_TGZ   a tarball holding hll_data/ and xl_data/ (`organism build --recipe hear-large-long` /
#              `--recipe hear-xl`), default .r3/data.tgz
#   WHEELS     a folder of wheels to install first (transformer-lens and what it needs), default .whl
#   LIMIT_S    stop after this many seconds (default 420); runs not done by then are reported as not run
#   RESULTS    where results.tgz (evaluations + logs, refreshed every 20 s) goes: $OUT, else ./round3_out
#   SEEDS      default "0 1 2 3 4";  RECIPES  default "hll xl";  DEVICE  default cuda
set -u
start=$(date +%s)
limit=${LIMIT_S:-420}
results=${RESULTS:-${OUT:-$PWD/round3_out}}
work=${WORK:-/tmp/round3}
device=${DEVICE:-cuda}
# never overwrite what this script did not write: an old results.tgz, or anything already in WORK
if [ -e "$results/results.tgz" ] || [ -n "$(ls -A "$work" 2>/dev/null)" ]; then
    echo "$results/results.tgz exists or $work is not empty: set RESULTS / WORK to fresh folders" >&2
    exit 2
fi
mkdir -p "$results" "$work"
python=${PYTHON:-python3}

if [ -d "${WHEELS:-.whl}" ] && ls "${WHEELS:-.whl}"/*.whl >/dev/null 2>&1; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/round3_site "${WHEELS:-.whl}"/*.whl || exit 1
    export PYTHONPATH=/tmp/round3_site
fi
# transformer-lens imports `datasets` at import time for features this run does not use; where the
# carried `datasets` cannot import (its pyarrow pin), a stub stands in so that nothing else changes.
if ! "$python" -c "import datasets" 2>/dev/null; then
    echo "datasets does not import here; using a stub (transformer-lens's dataset helpers are not used)"
    mkdir -p /tmp/round3_stub/datasets
    printf 'class Dataset: pass\nclass IterableDataset: pass\ndef load_dataset(*a, **k): raise RuntimeError("stub")\n' \
        > /tmp/round3_stub/datasets/__init__.py
    for m in arrow_dataset iterable_dataset load; do
        echo "from datasets import *" > /tmp/round3_stub/datasets/$m.py
    done
    export PYTHONPATH=/tmp/round3_stub:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
"$python" - <<'EOF' 2>&1 | tee "$work/versions.txt"
import numpy, pandas, torch, transformers, transformer_lens, slm_transformerlens
print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
print("transformers", transformers.__version__, "numpy", numpy.__version__, "pandas", pandas.__version__)
EOF
[ "${PIPESTATUS[0]}" = 0 ] || { cp "$work/versions.txt" "$results/"; exit 1; }

tar xzf "${DATA_TGZ:-.r3/data.tgz}" -C "$work" || exit 1
# Ten small models share one GPU: with CUDA MPS their kernels run side by side instead of taking turns.
# Where MPS does not start or does not answer, the runs go on without it.
if [ "$device" = cuda ] && command -v nvidia-cuda-mps-control >/dev/null; then
    export CUDA_MPS_PIPE_DIRECTORY=/tmp/round3_mps CUDA_MPS_LOG_DIRECTORY=/tmp/round3_mps_log
    mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
    if nvidia-cuda-mps-control -d &&
        timeout 60 "$python" -c "import torch; print(torch.ones(2, device='cuda').sum().item())"; then
        echo "CUDA MPS on"
    else
        echo quit | timeout 10 nvidia-cuda-mps-control
        unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
        echo "CUDA MPS off"
    fi
fi
cli() { "$python" -m slm_transformerlens.cli organism "$@"; }
for recipe in ${RECIPES:-hll xl}; do
    for seed in ${SEEDS:-0 1 2 3 4}; do
        run=${recipe}_s$seed
        (
            cli train --data "$work/${recipe}_data" --models "$work/models_$run" --device "$device" \
                --seed "$seed" --threads 1 >"$work/train_$run.log" 2>&1 &&
                cli evaluate --data "$work/${recipe}_data" --models "$work/models_$run" \
                    --out "$work/eval_$run" --device "$device" >"$work/eval_$run.log" 2>&1
            echo "$run exit $? at $(($(date +%s) - start)) s" >>"$work/done.txt"
        ) &
    done
done

pack() {
    (cd "$work" && tar czf "$results/results.tgz.part" versions.txt ./*.log \
        $(ls -d eval_*/ models_*/*/config.json done.txt 2>/dev/null)) &&
        mv "$results/results.tgz.part" "$results/results.tgz"
}
while [ -n "$(jobs -r)" ] && [ $(($(date +%s) - start)) -lt "$limit" ]; do
    sleep 20
    pack
    echo "$(($(date +%s) - start)) s: $(cat "$work/done.txt" 2>/dev/null | wc -l) runs done;" \
        "$(tail -qn1 "$work"/train_*.log 2>/dev/null | cut -c1-60 | tr '\n' '|')"
done
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv 2>/dev/null
pack
cat "$work/done.txt" 2>/dev/null
echo "stopped at $(($(date +%s) - start)) s"
