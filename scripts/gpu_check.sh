#!/usr/bin/env bash
# The prepared GPU check of the benchmarks (speed study item 4): attention speed/memory on CUDA in
# bfloat16 (SDPA uses FlashAttention there) up to L = 64k, and a training-throughput comparison of
# softmax vs favor_sharp on the LRA Text paper protocol. Outputs go to $RESULTS/<card>/{speed,throughput}.
#
#   bash scripts/gpu_check.sh wheels                 # here (dev machine): build .whl/ for the GPU image
#   bash scripts/gpu_check.sh run [all|speed|throughput]   # there (GPU machine), repo root
#   bash scripts/gpu_check.sh run study              # the LRA study (experiment=lra_study), a slice
#
# Environment: RESULTS (default: $OUT if set — the folder a device run sends back — else
# docs/results/gpu), SECONDS_PER_RUN (training time per attention, default 120), LENGTHS
# (default "1024 2048 4096 8192 16384 32768 65536"), METHODS (default: softmax, posrf, saderf,
# performer-pytorch). Budget: the speed part runs each (method, L) in a fresh process (≈ 28
# runs); the throughput part 2 × (SECONDS_PER_RUN + start-up). Neither has been timed on a GPU
# yet: run `speed` and `throughput` as separate calls if the per-call limit is tight.
set -euo pipefail
cd "$(dirname "$0")/.."

# Pure-Python packages the project needs that the GPU image lacks (its list: torch, lightning,
# torchmetrics, einops, matplotlib, … are there); versions as installed here.
WHEEL_PACKAGES=(hydra-core omegaconf antlr4-python3-runtime performer-pytorch local-attention
                hyper-connections torch-einops-utils axial-positional-embedding nystrom-attention)

wheels() {
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    mkdir -p .whl
    local specs=()
    for pkg in "${WHEEL_PACKAGES[@]}"; do
        local version
        version=$(python -m pip show "$pkg" 2>/dev/null | sed -n 's/^Version: //p')
        [[ -n "$version" ]] || { echo "gpu_check: $pkg is not installed here; pip install -e '.[dev]' first" >&2; exit 2; }
        specs+=("$pkg==$version")
    done
    python -m pip wheel -q --no-deps -w .whl "${specs[@]}"
    ls .whl
    echo "carry .whl in the device run, then: bash scripts/gpu_check.sh run"
}

run() {
    local part=${1:-all}
    case "$part" in all|speed|throughput|study) ;; *)
        echo "gpu_check: unknown part '$part' (allowed: all, speed, throughput, study)" >&2; exit 2;;
    esac
    if compgen -G ".whl/*.whl" > /dev/null; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/site .whl/*.whl
        export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
    fi
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
    local card
    card=$(python3 -c "import torch; print(torch.cuda.get_device_name(0).replace(' ', '_'))")
    local dest="${RESULTS:-${OUT:-docs/results/gpu}}/$card"
    mkdir -p "$dest"
    nvidia-smi > "$dest/nvidia-smi.txt" 2>&1 || true
    local lengths=${LENGTHS:-"1024 2048 4096 8192 16384 32768 65536"}
    local methods=${METHODS:-"softmax random_features:posrf random_features:saderf performer-pytorch"}
    if [[ "$part" == study ]]; then
        # The paper protocol of the LRA study for STUDY_SECONDS (default 420); SIGTERM saves
        # last.ckpt, and the same call on a machine holding multirun/lra_study (carry it) resumes
        # every run from there. Text needs data/imdb (python -m lra_data prepare lra_text --source
        # ../shared/data/imdb --out data/, then carry data/imdb); ListOps and Pathfinder are
        # generated on first use.
        timeout -s TERM "${STUDY_SECONDS:-420}" python3 train.py -m experiment=lra_study \
            trainer=gpu trainer.precision=bf16-mixed > "$dest/lra_study.log" 2>&1 || true
        tail -20 "$dest/lra_study.log"
        python3 scripts/lra_study.py multirun/lra_study --out "$dest/lra_study"
        return
    fi
    if [[ "$part" != throughput ]]; then
        # shellcheck disable=SC2086
        /usr/bin/time -f "speed part: %e s wall" python3 scripts/bench_attention.py --device cuda \
            --dtype bfloat16 --lengths $lengths --methods $methods --budget-s 60 \
            --out "$dest/speed" 2>&1 | tee "$dest/speed.log"
    fi
    if [[ "$part" != speed ]]; then
        /usr/bin/time -f "throughput part: %e s wall" python3 scripts/throughput.py \
            --attentions softmax favor_sharp --task lra_text --seconds "${SECONDS_PER_RUN:-120}" \
            --trainer gpu --precision bf16-mixed --synthetic-data 4096 \
            --out "$dest/throughput" 2>&1 | tee "$dest/throughput.log"
        rm -rf "$dest/throughput/data"  # synthetic reviews: regenerated on demand, not results
    fi
}

case "${1:-}" in
    wheels) wheels ;;
    run) shift; run "$@" ;;
    *) echo "usage: bash scripts/gpu_check.sh wheels | run [all|speed|throughput|study]" >&2; exit 2 ;;
esac
