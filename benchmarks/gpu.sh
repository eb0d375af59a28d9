#!/usr/bin/env bash
# The GPU path measured in one go, printed as one Markdown table (rows: device, seconds, ratios):
#   1. engine vs naive loop vs floor (a plain LoRA training step), float32   (engine.py)
#   2. the engine in bfloat16 against float32: time, and Gram error vs a float64 reference
#   3. a whole `swiftstudy train` base run, then a whole `swiftstudy study` over its checkpoints,
#      on the bundled model (model: smollm2), gradient cache off, each timed as a command
#   4. Bergson and Kronfluence on the engine's work (peers.py), where they import
#   5. the same study under `torchrun --nproc-per-node 2` (nccl), where `nvidia-smi -L` lists 2 GPUs
#
#   bash benchmarks/gpu.sh                      # CUDA when torch sees a GPU, else a tiny CPU run
#   bash benchmarks/gpu.sh --device cpu --out /tmp/gpu-bench   # its logs/, steps/, study/ are replaced
#   bash benchmarks/gpu.sh --examples 96 --steps 40
#
# Without CUDA it falls back to device cpu at tiny sizes (4 examples, a 2-step base run): 6-7
# minutes on 2 cores at 1 thread, to check the script, not to measure. Progress goes to stderr, each step's
# output to WORK/logs/<step>.log; stdout gets only the table and the machine line. The exit status
# is 1 when a step failed (its row says so), 2 for bad options.
set -u

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-python}"
device="" out="" examples="" steps=""

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }
while [ $# -gt 0 ]; do
    case "$1" in
        --device) device="${2:-}"; shift 2 ;;
        --out) out="${2:-}"; shift 2 ;;
        --examples) examples="${2:-}"; shift 2 ;;
        --steps) steps="${2:-}"; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "gpu.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
done

cuda="$("$python" -c 'import torch; print(torch.cuda.is_available())')" || {
    echo "gpu.sh: '$python' cannot import torch" >&2
    exit 2
}
if [ -z "$device" ]; then
    if [ "$cuda" = True ]; then device=cuda; else device=cpu; fi
fi
case "$device" in
    cuda) [ "$cuda" = True ] || { echo "gpu.sh: --device cuda: torch sees no GPU" >&2; exit 2; } ;;
    cpu) ;;
    *) echo "gpu.sh: --device must be cpu or cuda, not '$device'" >&2; exit 2 ;;
esac
# Sizes: a real measurement on a GPU; on a CPU only enough to run every step.
if [ "$device" = cuda ]; then
    examples="${examples:-48}" steps="${steps:-20}" batch=16
else
    examples="${examples:-4}" steps="${steps:-2}" batch=2
fi
gpus="$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ')" || gpus=0
out="${out:-$(mktemp -d "${TMPDIR:-/tmp}/gpu-bench.XXXXXX")}"
mkdir -p "$out/logs" "$out/steps" || exit 2
rm -f "$out"/steps/*.json "$out"/engine.json "$out"/peers.json "$out"/peers-missing
rm -rf "$out/study"
echo "gpu.sh: device $device, $gpus GPU(s), $examples examples, $steps steps; work in $out" >&2

failed=0
step() { # step NAME COMMAND...: run it, output to logs/NAME.log, status and seconds to steps/NAME.json
    local name="$1" start end code status
    shift
    echo "gpu.sh: $name ..." >&2
    start="$(date +%s.%N)"
    "$@" >"$out/logs/$name.log" 2>&1
    code=$?
    end="$(date +%s.%N)"
    if [ "$code" -eq 0 ]; then status=ok; else status=failed; failed=1; fi
    printf '{"status": "%s", "exit": %d, "seconds": %s}\n' "$status" "$code" \
        "$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f", b - a }')" >"$out/steps/$name.json"
    echo "gpu.sh: $name $status ($(tail -c 300 "$out/steps/$name.json" | tr -d '\n'))" >&2
}
skip() { # skip NAME REASON
    printf '{"status": "skipped", "reason": "%s"}\n' "$2" >"$out/steps/$1.json"
    echo "gpu.sh: $1 skipped: $2" >&2
}

# 1-2. Engine, naive loop, floor, bf16, and the float64 reference (each in its own process).
step engine "$python" "$here/engine.py" --device "$device" --examples "$examples" \
    --methods naive engine floor engine-bf16 --json "$out/engine.json"

# 3. A base run and a study, each one whole command.
"$python" "$here/gpu_study.py" "$out/study" --device "$device" --examples "$examples" \
    --steps "$steps" --batch-size "$batch" || exit 1
step train "$python" -m swiftstudy train "$out/study/train.yaml" --out "$out/study/runs/base" \
    --no-progress
step study "$python" -m swiftstudy study "$out/study/study.yaml" --out "$out/study/results" \
    --no-cache --no-progress

# 4. The peers, where they import.
methods=() missing=()
for peer in bergson kronfluence; do
    if "$python" -c "import $peer" >/dev/null 2>&1; then
        if [ "$peer" = bergson ]; then methods+=(bergson bergson-tokens); else methods+=("$peer"); fi
    else
        missing+=("$peer")
    fi
done
printf '%s\n' "${missing[@]}" >"$out/peers-missing"
if [ "${#methods[@]}" -gt 0 ]; then
    step peers "$python" "$here/peers.py" --device "$device" --examples "$examples" \
        --methods naive engine "${methods[@]}" --json "$out/peers.json"
else
    skip peers "not installed"
fi

# 5. Two processes, one GPU each, over nccl.
if [ "$device" = cuda ] && [ "$gpus" -ge 2 ]; then
    step torchrun "$python" -m torch.distributed.run --standalone --nproc-per-node 2 \
        -m swiftstudy study "$out/study/study.yaml" --out "$out/study/results-2proc" \
        --no-cache --no-progress
elif [ "$device" = cuda ]; then
    skip torchrun "skipped: $gpus GPU"
else
    skip torchrun "skipped: device cpu ($gpus GPUs)"
fi

"$python" "$here/gpu_table.py" "$out" --device "$device" --examples "$examples" --steps "$steps" ||
    exit 1
exit "$failed"
