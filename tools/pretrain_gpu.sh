#!/usr/bin/env bash
# Pre-train several FER models side by side on one CUDA GPU.
#
# Usage: tools/pretrain_gpu.sh PLAN FER_ROOT WORK_DIR [SECONDS] [RESULTS_DIR]
#
# PLAN lists the runs, one per line: NAME EPOCHS and then `signfer pretrain`
# options ('#' starts a comment; $VARIABLES are expanded). The plans used so
# far are in tools/gpu_plans/. FER_ROOT holds train/ and validation/ (one folder
# per class, as ../shared/data/fer2013). Each run writes WORK_DIR/NAME/
# (resumable state, history.json, the checkpoint) and WORK_DIR/NAME.log. A run
# stops before an epoch would end after SECONDS (--time-limit) and writes its
# best epoch so far; re-running this script resumes it. Checkpoints are packed
# into RESULTS_DIR/NAME.tar, the logs and histories into RESULTS_DIR/logs.tgz.
# EPOCHS=N overrides every run's epochs (for a smoke test); DEVICE=cpu runs
# without a GPU.
set -u
plan=$1
root=$2
work=$3
limit=${4:-480}
results=${5:-}
device=${DEVICE:-cuda}
mkdir -p "$work"

# the runs stop themselves in time; the hard limit is a safety net
minutes=$(python3 -c "print(max(($limit - 30) / 60, 0.1))")
while read -r name epochs options; do
    options=$(eval echo "$options")
    # shellcheck disable=SC2086  # the options are meant to split into words
    timeout "$limit" python3 -m signfer --threads 2 pretrain --dataset folder --root "$root" \
        --device "$device" --epochs "${EPOCHS:-$epochs}" --time-limit "$minutes" \
        --out "$work/$name" $options >"$work/$name.log" 2>&1 &
done < <(grep -v -e '^#' -e '^[[:space:]]*$' "$plan")
wait

for log in "$work"/*.log; do
    echo "== $log"
    grep -E "^epoch|wrote|stopped|rror" "$log" | tail -n 4
done
if [ -n "$results" ]; then
    mkdir -p "$results"
    for dir in "$work"/*/; do
        name=$(basename "$dir")
        if ls "$dir"/*.safetensors >/dev/null 2>&1; then
            tar cf "$results/$name.tar" -C "$dir" $(cd "$dir" && ls *.safetensors *-fer.json)
        fi
    done
    tar czf "$results/logs.tgz" -C "$work" $(cd "$work" && ls *.log */history.json */pretrain_config.json 2>/dev/null)
fi
