#!/usr/bin/env bash
# The GPU validation run, on one NVIDIA H100 or H200 (bf16, TP 1): capsim's reference engine
# profiled on the GPU, compared with vLLM's kernel-database profile of the same model and GPU, then
# served and confirmed for sarathi and vllm_v0. Each stage fits in ten minutes, and all of them
# write into one folder (GPU_VALIDATION_DIR, default gpu-validation/) that the next stage reads,
# so the run can be split across short sessions on a GPU machine:
#
#   scripts/gpu_validation.sh install          capsim into this Python, nothing downloaded
#                                              (wheels in .whl/ first, e.g. simpy, where missing)
#   scripts/gpu_validation.sh profile          capsim profile --device cuda (an interrupted run resumes)
#   scripts/gpu_validation.sh compare          held-out MAPE, and the batch-by-batch comparison with
#                                              vLLM's kernel-database profile
#   scripts/gpu_validation.sh confirm sarathi  serve + confirm: chunk 512, batch 128, chat,
#   scripts/gpu_validation.sh confirm vllm_v0  P99 TBT 0.1 s and P50 TTFT 2 s, with the measured profile
#   scripts/gpu_validation.sh test             the tests marked gpu
#   scripts/gpu_validation.sh table            the validation page's rows (docs/validation.md), in Markdown
#
# The same stages run on a CPU with a tiny model, in minutes:
#   DEVICE=cpu MODEL=tiny DTYPE=float32 GRID=quick REQUESTS=48 \
#     CONFIRM_ARGS="--max-total-tokens 256" scripts/gpu_validation.sh profile
set -euo pipefail

DIR=${GPU_VALIDATION_DIR:-gpu-validation}
MODEL=${MODEL:-Llama-3.1-8B}
DEVICE=${DEVICE:-cuda}
DTYPE=${DTYPE:-bfloat16}
GRID=${GRID:-default}
REQUESTS=${REQUESTS:-256}
PYTHON=${PYTHON:-python3}
CONFIRM_ARGS=${CONFIRM_ARGS:-}

usage() {
    echo "usage: scripts/gpu_validation.sh install | profile | compare | confirm sarathi|vllm_v0 | test | table" >&2
    exit 2
}

[ $# -ge 1 ] || usage
cd "$(dirname "$0")/.."
mkdir -p "$DIR"
exec > >(tee -a "$DIR/log.txt") 2>&1
echo "== $(date -u +%FT%TZ) $*"

capsim() { "$PYTHON" -m capsim.capsearch.cli "$@"; }
# The device's catalog name (H100-SXM, H200, ...) and the profile's path, the shipped-profile name
locate() {
    HW=$("$PYTHON" -c "from capsim.profiles.profiler import device_name; print(device_name('$DEVICE'))")
    PROFILE="$DIR/${MODEL}_${HW}_tp1_reference_measured.parquet"
}

case "$1" in
install)
    shopt -s nullglob
    wheels=(.whl/*.whl)
    if [ ${#wheels[@]} -gt 0 ]; then
        "$PYTHON" -m pip install -q --no-index --no-deps "${wheels[@]}"
    fi
    "$PYTHON" -m pip install -q --no-index --no-deps --no-build-isolation .
    "$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '')"
    "$PYTHON" -m pip list 2>/dev/null | grep -E -i '^(capsim|torch|numpy|scikit-learn|pyarrow|simpy) ' || true
    ;;
profile)
    locate
    capsim profile --model "$MODEL" --device "$DEVICE" --dtype "$DTYPE" --grid "$GRID" -o "$PROFILE"
    ;;
compare)
    locate
    capsim profiles report "$PROFILE" -o "$DIR/report" --overwrite
    capsim profiles compare "$PROFILE" --engine vllm -o "$DIR/compare" --overwrite
    ;;
confirm)
    [ $# -eq 2 ] || usage
    case "$2" in
    sarathi) policy=(--scheduler sarathi --chunk-size 512) ;;
    vllm_v0) policy=(--scheduler vllm_v0) ;;
    *) usage ;;
    esac
    locate
    # shellcheck disable=SC2086  # CONFIRM_ARGS holds several flags
    capsim confirm --model "$MODEL" --hardware "$HW" --engine reference --profile "$PROFILE" \
        --device "$DEVICE" --dtype "$DTYPE" "${policy[@]}" --max-batch-size 128 --trace chat -n "$REQUESTS" \
        --slo-type tbt_ttft --tbt-slo 0.1 --tbt-percentile 99 --ttft-metric ttft --ttft-slo 2 --ttft-percentile 50 \
        $CONFIRM_ARGS -o "$DIR/confirm-$2" --overwrite
    ;;
test)
    "$PYTHON" -m pytest -q -m gpu tests
    ;;
table)
    "$PYTHON" scripts/gpu_validation_table.py "$DIR" > "$DIR/validation.md"
    cat "$DIR/validation.md"
    ;;
*)
    usage
    ;;
esac
