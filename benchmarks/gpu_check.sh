#!/usr/bin/env bash
# The GPU check: one script for a GPU machine lent for a few minutes. Run from the repository root:
#
#     bash benchmarks/gpu_check.sh
#     SCENE_DEBIAS_WHEELS=/path/to/wheels bash benchmarks/gpu_check.sh   # packages the image lacks, as wheels
#
# It needs a Python with a CUDA PyTorch (the machine's own image is fine; torch is never
# reinstalled). Packages the project needs beyond torch/torchvision (nvidia-dali-cuda120, av,
# msgpack, tqdm, psutil, pytest) are installed from $SCENE_DEBIAS_WHEELS when that folder is
# given, offline (pip --no-index), else assumed present; then the project itself is installed
# with --no-deps (prep-shards records its version). No network is used.
#
# In well under 8 minutes (each step has a time limit; the whole has GPU_CHECK_BUDGET seconds,
# default 420) it:
#   1. runs the GPU tests: pytest -m gpu tests/test_loader.py (DALI mixed decoding vs CPU)
#   2. benchmarks/loader.py --device cuda: DALI NVDEC decoding + GPU masking parity against the
#      CPU path, then every loader (ours on CPU and GPU, VP9/MJPEG/H.264, and the peers)
#   3. benchmarks/train_step.py --device cuda: r3d18, 16x112x112, bf16, both schedules, the
#      largest batch that fits, from memory and from the real loader
#   4. benchmarks/loader.py on 300-frame videos: the cost of a clip by window position (streams
#      cut from mid-video segments, decoded by NVDEC) and against 32-frame videos
# and prints a short table last. Results: JSON files in $OUT (or ./gpu-check-out).
# GPU_CHECK_CPU_DRY_RUN=1 runs the same steps on the CPU at the smoke-test sizes (to check the
# script itself on a machine without a GPU; nothing is installed then).
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
RESULTS=${OUT:-gpu-check-out}
BUDGET=${GPU_CHECK_BUDGET:-420}
WORKERS=${GPU_CHECK_WORKERS:-8}
mkdir -p "$RESULTS"
export YOLO_OFFLINE=1 YOLO_CONFIG_DIR="$RESULTS/yolo-config" PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
declare -A STATUS

step() {  # step NAME LIMIT_S COMMAND...: run with the smaller of LIMIT_S and what is left of BUDGET
    local name=$1 limit=$2; shift 2
    local left=$((BUDGET - SECONDS))
    ((left < limit)) && limit=$left
    if ((limit < 20)); then
        STATUS[$name]="skipped (time budget spent)"; echo "== $name: skipped, time budget spent"; return
    fi
    echo "== $name (limit ${limit}s): $*"
    local start=$SECONDS
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$RESULTS/$name.log"
    local rc=${PIPESTATUS[0]}
    case $rc in
        0) STATUS[$name]="ok ($((SECONDS - start))s)" ;;
        124|137) STATUS[$name]="TIMED OUT after ${limit}s" ;;
        *) STATUS[$name]="FAILED rc=$rc ($((SECONDS - start))s), see $RESULTS/$name.log" ;;
    esac
}

# ---- 0. environment
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -1
$PY - <<'EOF'
import importlib.util, sys, torch
print(f"{sys.executable}: torch {torch.__version__}, CUDA {torch.version.cuda}, device: "
      f"{torch.cuda.get_device_name() if torch.cuda.is_available() else 'NONE'}")
missing = [m for m in ("nvidia.dali", "av", "msgpack", "tqdm", "psutil", "pytest")
           if importlib.util.find_spec(m.split(".")[0]) is None or (m == "nvidia.dali" and importlib.util.find_spec(m) is None)]
print("missing before install:", ", ".join(missing) or "none")
EOF
DRY=${GPU_CHECK_CPU_DRY_RUN:-0}
if [[ $DRY == 1 ]]; then
    echo "CPU dry run: smoke-test sizes, nothing installed"
    LOADER_ARGS=(--device cpu --quick)
    TRAIN_ARGS=(--device cpu --quick)
else
    LOADER_ARGS=(--device cuda --videos 768 --batch 32 --batches 16 --workers "$WORKERS")
    TRAIN_ARGS=(--device cuda --arch r3d18 --frames 16 --size 112 --precision bf16 --batch 0 --max-batch 256
                --steps 6 --warmup 2 --workers "$WORKERS" --videos 768 --video-size 128 --video-frames 32)
    if [[ -n "${SCENE_DEBIAS_WHEELS:-}" ]]; then
        step install 150 $PY -m pip install --no-index --find-links "$SCENE_DEBIAS_WHEELS" \
            nvidia-dali-cuda120 av msgpack tqdm psutil pytest
    fi
    # the project itself, without touching torch (prep-shards reads its own version from the
    # metadata); the image's Python may be newer than the 3.11 pyproject.toml asks for
    $PY -m pip install --no-index --no-deps --no-build-isolation --ignore-requires-python -q -e . \
        >"$RESULTS/install-project.log" 2>&1 \
        || echo "warning: pip install -e . failed (see $RESULTS/install-project.log); prep-shards will fail"
fi
if $PY -c "import nvidia.dali" 2>/dev/null; then LOADER=dali; else
    LOADER=torch; echo "warning: DALI missing: no DALI GPU checks; the trainer is fed by the torch loader"; fi

# ---- 1. GPU tests
if [[ $LOADER == dali ]]; then
    step gpu-tests 150 $PY -m pytest -q -m gpu tests/test_loader.py -p no:cacheprovider
fi

# ---- 2. loader: parity on the GPU, then throughput (the synthetic set is made here, 16 cores)
if [[ $LOADER == dali ]]; then
    step loader 230 $PY benchmarks/loader.py "${LOADER_ARGS[@]}" --work "$RESULTS/data" --json "$RESULTS/loader.json"
fi

# ---- 3. train step: r3d18, 16x112x112, bf16, both schedules, largest batch that fits
SHARDS=()
[[ -f "$RESULTS/data/shards-vp9/manifest.json" ]] && SHARDS=(--shards "$RESULTS/data/shards-vp9")
step train 200 $PY benchmarks/train_step.py "${TRAIN_ARGS[@]}" --loader "$LOADER" "${SHARDS[@]}" \
    --json "$RESULTS/train_step.json"

# ---- 4. loader on Kinetics-length videos (300 frames): cost by window position, long vs short
if [[ $LOADER == dali && $DRY != 1 ]]; then
    step loader-300 150 $PY benchmarks/loader.py --device cuda --videos 128 --video-frames 300 --batch 16 \
        --batches 8 --workers "$WORKERS" --work "$RESULTS/data-300" --json "$RESULTS/loader-300.json"
fi

# ---- summary, last
echo
echo "================ GPU check summary ($SECONDS s) ================"
for name in install gpu-tests loader train loader-300; do
    [[ -n "${STATUS[$name]:-}" ]] && printf '%-10s %s\n' "$name" "${STATUS[$name]}"
done
$PY - "$RESULTS" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
if (out / "loader.json").is_file():
    r = json.loads((out / "loader.json").read_text())
    print(f"GPU parity (DALI mixed + GPU masking vs CPU, in 8-bit levels): {r['gpu_check']}")
    print(f"{'loader':44s} {'clips/s':>8s} {'vs official':>11s} {'bound/loader':>12s}")
    for x in r["loaders"]:
        if "error" in x:
            print(f"{x['name']:44s} failed: {x['error'][:60]}")
        else:
            print(f"{x['name']:44s} {x['clips_per_s']:8.1f} {x['vs_official']:10.2f}x {x['bound_over_loader']:11.2f}x")
if (out / "loader-300.json").is_file():
    r = json.loads((out / "loader-300.json").read_text())
    print("300-frame videos, ms per clip by window position (first / middle / last, last/first):")
    for x in r["positions"]:
        print(f"  {x['name']:42s} " + " / ".join(f"{x[p]['ms_per_clip']:.2f}" for p in ("first", "middle", "last"))
              + f"  {x['last_over_first']:.2f}x")
    if r["length"]:
        print(f"  dali-cpu vp9 batch 4: 300 vs 32 frames per clip: {r['length']['long_over_short']:.2f}x")
if (out / "train_step.json").is_file():
    r = json.loads((out / "train_step.json").read_text())
    ref = r["flops"]
    c = r["config"]
    print(f"train step {c['arch']} {c['frames']}x{c['size']}x{c['size']} {c['precision']} "
          f"({ref['dual_pass_gflop_per_sample']} GFLOP per dual-pass sample):")
    print(f"{'schedule':10s} {'batch':>5s} {'mem clips/s':>11s} {'TFLOP/s':>8s} {'loader clips/s':>14s} {'stall':>6s}")
    for x in r["runs"]:
        print(f"{x['schedule']:10s} {x['batch']:5d} {x['memory']['clips_per_s']:11.1f} "
              f"{x['achieved_tflops']['memory']:8.1f} {x['loader']['clips_per_s']:14.1f} {x['data_stall_fraction']:6.1%}")
EOF
