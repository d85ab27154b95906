#!/usr/bin/env bash
# GPU check: the quick benchmarks on a CUDA machine, each under a timeout, in ~7 minutes.
#
# Needs the CUDA install first (the machine may have no network afterwards):
#     make install TORCH_SPEC=torch EXTRAS=gpu,dev,bench,ray
# Run from the repository root (../shared/corpora must be there):
#     bash benchmarks/gpu_check.sh            # results in $OUT, else benchmarks/results/gpu/
#     DEVICE=cpu bash benchmarks/gpu_check.sh # the same commands on CPU (checks the flags)
#
# Steps (seconds are the timeouts; the sum stays under 8 minutes):
#   env        nvidia-smi, torch / CUDA / faiss GPU count                          30
#   embed      benchmarks/embed.py --quick --device $DEVICE                        75
#   lm         benchmarks/lm_score.py --quick --device $DEVICE                     75
#   influence  benchmarks/influence.py --quick  (it has no --device flag: its model
#              stays on the CPU, so this step checks that it runs, not GPU speed)  60
#   scale      benchmarks/scale.py --quick --device $DEVICE --scorers embed,lm
#              --no-greedi: local vs Ray scoring on the GPU (Ray's 1 GPU: the 2-worker
#              arms of GPU scorers are skipped, the scorers ask one GPU per worker)  200
# A step that fails or times out does not stop the others. At the end a summary table
# (step, exit status, seconds, goal lines of its output) is printed and written to
# $OUT/summary.md; each step's output is in $OUT/<step>.log and its JSON in $OUT/.
set -u -o pipefail

cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DEVICE=${DEVICE:-cuda}
DEST=${OUT:-benchmarks/results/gpu}
mkdir -p "$DEST"
export PYTHONUNBUFFERED=1
: > "$DEST/steps.tsv"

step() {  # step NAME TIMEOUT_S COMMAND...
    local name=$1 limit=$2
    shift 2
    echo
    echo "=== $name (timeout ${limit}s): $*"
    local t0=$SECONDS rc
    timeout --kill-after=10 "$limit" "$@" > >(tee "$DEST/$name.log") 2>&1
    rc=$?
    [ "$rc" = 124 ] && echo "=== $name: timed out after ${limit}s"
    printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" >> "$DEST/steps.tsv"
}

echo "=== nvidia-smi"
if command -v nvidia-smi > /dev/null; then
    nvidia-smi 2>&1 | tee "$DEST/nvidia-smi.txt"
else
    echo "no nvidia-smi on this machine" | tee "$DEST/nvidia-smi.txt"
fi

step env 30 "$PY" -c '
import torch, faiss
print("torch", torch.__version__, "cuda", torch.version.cuda, "available",
      torch.cuda.is_available(), "devices", torch.cuda.device_count())
if torch.cuda.is_available():
    print("device 0:", torch.cuda.get_device_name(0))
print("faiss", faiss.__version__, "GPUs", faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else "n/a (CPU build)")
try:
    import ray; print("ray", ray.__version__)
except ImportError:
    print("ray not installed: the scale step will fail (install EXTRAS with ray)")
'

step embed 75 "$PY" benchmarks/embed.py --quick --device "$DEVICE" \
    --out "$DEST/embed-quick.json"
step lm 75 "$PY" benchmarks/lm_score.py --quick --device "$DEVICE" \
    --out "$DEST/lm_score-quick.json"
# influence.py has no --device flag (its model is built on the CPU)
step influence 60 "$PY" benchmarks/influence.py --quick --out "$DEST/influence-quick.json"
step scale 200 "$PY" benchmarks/scale.py --quick --device "$DEVICE" --scorers embed,lm \
    --no-greedi --out "$DEST/scale-quick.json"

{
    echo "| step | exit | seconds | result |"
    echo "|---|---|---|---|"
    while IFS=$'\t' read -r name rc secs; do
        case $rc in 0) status=ok ;; 124|137) status="timed out" ;; *) status="failed ($rc)" ;; esac
        goals=$(grep -iE '^goal|goal .*(met|NOT)|-> (met|NOT met)' "$DEST/$name.log" 2>/dev/null \
                | tr '\n' ';' | sed 's/|/\//g; s/;$//')
        [ "$name" = env ] && goals=$(grep -E '^torch|^faiss' "$DEST/$name.log" | tr '\n' ';')
        echo "| $name | $status | $secs | ${goals:-} |"
    done < "$DEST/steps.tsv"
} > "$DEST/summary.md"
echo
echo "=== summary (device $DEVICE; files in $DEST)"
cat "$DEST/summary.md"
