#!/usr/bin/env bash
# Pre-train several FER models side by side on one CUDA GPU.
#
# Usage: tools/pretrain_gpu.sh FER_ROOT WORK_DIR [SECONDS] [RESULTS_DIR]
#
# FER_ROOT holds train/ and validation/ (one folder per class, as
# ../shared/data/fer2013). Each run writes WORK_DIR/NAME/ (resumable state,
# history.json, the checkpoint once finished) and WORK_DIR/NAME.log; a run
# still going after SECONDS is stopped (re-running this script resumes it).
# Finished checkpoints are packed into RESULTS_DIR/NAME.tar, the logs and
# histories into RESULTS_DIR/logs.tgz. EPOCHS=N overrides every run's epochs
# (for a smoke test); DEVICE=cpu runs without a GPU.
#
# The runs start from the built-in 64 px FER models and train at larger input
# sizes and/or longer, with random rotation and zoom on top of shift and flip.
set -u
root=$1
work=$2
limit=${3:-480}
results=${4:-}
device=${DEVICE:-cuda}
mkdir -p "$work"

run() {
    local name=$1 epochs=$2
    shift 2
    timeout "$limit" python3 -m signfer --threads 2 pretrain --dataset folder --root "$root" \
        --device "$device" --epochs "${EPOCHS:-$epochs}" --out "$work/$name" "$@" \
        >"$work/$name.log" 2>&1 &
}

aug=(--rotate 10 --scale 0.1 --lr 1e-3)
run mnv2-112 40 --arch mobilenetv2 --init mobilenetv2-fer --input-size 112 --shift 7 "${aug[@]}"
run lite0-112 40 --arch efficientnet_lite0 --init efficientnet_lite0-fer --input-size 112 --shift 7 "${aug[@]}"
run mnv2-160 30 --arch mobilenetv2 --init mobilenetv2-fer --input-size 160 --shift 10 "${aug[@]}"
run mnv2-64 50 --arch mobilenetv2 --init mobilenetv2-fer --input-size 64 --shift 4 "${aug[@]}"
run lite0-64 50 --arch efficientnet_lite0 --init efficientnet_lite0-fer --input-size 64 --shift 4 "${aug[@]}"
wait

for log in "$work"/*.log; do
    echo "== $log"
    grep -E "^epoch|wrote|rror" "$log" | tail -n 4
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
