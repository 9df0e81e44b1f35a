#!/usr/bin/env bash
# The GPU check, one prepared script (about 5 minutes on one H100, at most 8): the suite's CUDA tests,
# a few `base` training steps in bf16 under torchrun with NCCL, `evaluate` on the GPU equal to the CPU
# (fp32, in the CUDA tests), and the `base` pre-training throughput (224 px, 1 frame, batch 128) with and
# without real mp4 decoding through the data loader. Runs as it is on a fresh machine with a CUDA PyTorch;
# packages it lacks come from .whl/ (scripts/gpu_wheels.sh fills it where pip can reach PyPI).
#
#   bash scripts/gpu_check.sh [OUT_DIR]      (results: OUT_DIR/summary.txt, *.json, *.log)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-runs/gpu_check}}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
# every import the package and the checks need (a CUDA PyTorch image usually has all but PyAV and OmegaConf)
NEEDS="torch transformers safetensors omegaconf av numpy tqdm PIL matplotlib pytest"
missing() { $PY -c "import importlib.util as u; print(' '.join(m for m in '$NEEDS'.split() if u.find_spec(m) is None))"; }
if [ -n "$(missing)" ] && [ -d .whl ]; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/sv-site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/sv-site
fi
if [ -n "$(missing)" ]; then
    echo "missing Python packages: $(missing) (scripts/gpu_wheels.sh collects wheels into .whl/ where PyPI is reachable)"
    exit 1
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
failed=()
run() {  # run NAME TIMEOUT CMD...: output to OUT/NAME.log, a failure is recorded and the next step runs
    local name=$1 limit=$2
    shift 2
    echo "== $name"
    local start=$SECONDS
    timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    tail -n 4 "$OUT/$name.log"
    echo "   ($name: exit $rc, $((SECONDS - start)) s)"
    [ $rc -eq 0 ] || failed+=("$name")
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc; date -u +%F; } >"$OUT/machine.txt" 2>&1
$PY -c "import torch, av; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'av', av.__version__)" >>"$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"

# 1. the suite's CUDA tests (evaluation on the GPU equals the CPU in fp32, bf16 training steps, QA, search)
run cuda_tests 240 $PY -m pytest -q -p no:cacheprovider -m cuda tests/test_cuda.py

# 2. base training steps in bf16 under torchrun (NCCL), on a generated corpus of real mp4 files
$PY -m singularity_vl.cli synth "$OUT/corpus" --train-per-action 6 --test-per-action 1 --size 64 >"$OUT/synth.log" 2>&1
anno="$OUT/corpus/anno/label_train.json"
[ -f "$anno" ] || anno=$(ls "$OUT"/corpus/anno/*_train.json | head -n 1)
run torchrun_base_bf16 180 $PY -m torch.distributed.run --standalone --nproc_per_node=1 -m singularity_vl.cli train \
    task=pretrain model=base from_scratch=true precision=bf16 device=cuda \
    "train_file=[[$anno,$OUT/corpus/videos,video]]" batch_size.video=32 max_steps=5 log_every=1 \
    output_dir="$OUT/torchrun_run" resume=
# 3. base pre-training throughput, real decoding against the model alone
run throughput 240 $PY benchmarks/train_pipeline.py --device cuda --size base --batch 128 --steps 10 \
    --json "$OUT/train_pipeline.json"

{
    cat "$OUT/machine.txt"
    grep -h -E "passed|failed|skipped" "$OUT/cuda_tests.log" | tail -n 1
    grep -h '"loss"' "$OUT/torchrun_run/log.jsonl" 2>/dev/null | tail -n 1
    grep -h "samples/s" "$OUT/throughput.log"
    echo "failed steps: ${failed[*]:-none}"
} | tee "$OUT/summary.txt"
[ ${#failed[@]} -eq 0 ]
