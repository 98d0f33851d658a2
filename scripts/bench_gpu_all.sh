#!/usr/bin/env bash
# The GPU measurements of docs/perf.md, in groups that each fit one device call (< 10 min).
# Results (JSON) go to $OUT (the device tool's output folder) or ./out/gpu.
#
#   bash scripts/bench_gpu_all.sh kernels     # the Triton kernels against the plain paths, then a profiled compiled step
#   bash scripts/bench_gpu_all.sh profile     # one compiled step: every kernel by kind, each extern call timed in the step
#                                             # and alone, inductor's kernels timed alone (sources in one .tgz)
#   bash scripts/bench_gpu_all.sh convs       # the time convolutions: alone, in the time ResBlock, in the whole VideoResBlock
#   bash scripts/bench_gpu_all.sh split       # the CFG split over cuda:0 and cuda:1 (needs two GPUs): fixtures,
#                                             # one GPU eager, split eager, split compiled
#   bash scripts/bench_gpu_all.sh split-compiled  # two GPUs: a compiled 50-step generation, the fixtures through the
#                                             # compiled split, one GPU compiled on the same machine
#   bash scripts/bench_gpu_all.sh split-one   # one GPU compiled on the same machine (the split's baseline)
#   bash scripts/bench_gpu_all.sh ratio       # the official code beside ours (needs --official: .ref/official)
#   bash scripts/bench_gpu_all.sh check       # fixtures on CUDA with the compiled layers
#   bash scripts/bench_gpu_all.sh compiled    # a 50-step generation with the compiled layers, then check
#   bash scripts/bench_gpu_all.sh eager       # 50-step eager (the default), low-VRAM peak, bf16/fp16 vs float32
#   bash scripts/bench_gpu_all.sh decode      # the VAE decoder: eager and compiled, NCHW and channels-last, with a
#                                             # float32 reference, then the compiled decode's kernels
#   bash scripts/bench_gpu_all.sh condition   # the conditioning's pieces; the eager decode with the mid-block
#                                             # attention as products and through SDPA
#   bash scripts/bench_gpu_all.sh nhwc        # 10 compiled steps NCHW and channels-last
#   bash scripts/bench_gpu_all.sh cache       # two processes with one fresh inductor cache: the second's compile
#                                             # (graphs loaded), then the fixtures through loaded graphs
#   bash scripts/bench_gpu_all.sh ceiling     # the best dense bf16 rates of this GPU against the floor's spec peak
#   bash scripts/bench_gpu_all.sh clip-sdpa   # a process's first conditioning, the CLIP tower's attention ours / PyTorch's
#   bash scripts/bench_gpu_all.sh frame-norm  # 10 eager steps and bf16 vs float32, frame_norm's kernels off and on
#   bash scripts/bench_gpu_all.sh nhwc-eager  # 10 eager steps NCHW and channels-last
#   bash scripts/bench_gpu_all.sh skipcats    # 10 compiled steps with the skip concatenations in the fusion
#                                             # layers and eagerly (row 37's A/B)
#   BASE=DIR bash scripts/bench_gpu_all.sh ab # this checkout against another one (DIR: e.g. the code before a
#                                             # refactor), one machine: eager then compiled steps, interleaved,
#                                             # then the fixtures on CUDA through this checkout
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-out/gpu}"
mkdir -p "$out"
py=${PYTHON:-python3}
official=${OFFICIAL:-.ref/official}
quiet() { grep -v -i "warn" || true; }
nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
case "${1:-}" in
  kernels)
    "$py" scripts/bench_kernels.py --only geglu,camera,motion,qkv,spatial --out "$out/bench_kernels.json" 2>&1 | quiet
    "$py" scripts/bench_gpu.py --compile-blocks layers --steps 10 --profile \
      --out "$out/bench_gpu_layers_kernels.json" 2>&1 | quiet | tail -10 ;;
  profile)
    "$py" scripts/bench_gpu.py --compile-blocks layers --steps 3 --profile --trace-externs \
      --inductor-kernels /tmp/inductor_kernels --out "$out/bench_gpu_layers_profile.json" > "$out/profile.log" 2>&1 \
      || { tail -20 "$out/profile.log"; exit 1; }
    tar czf "$out/inductor_kernels.tgz" -C /tmp inductor_kernels
    grep -v -i warn "$out/profile.log" | grep -B2 -A60 "^all kernels" | cut -c1-220 ;;
  convs)
    "$py" scripts/bench_kernels.py --only conv3d,timeres,videores --out "$out/bench_kernels_convs.json" 2>&1 | quiet ;;
  split)
    n=$("$py" -c "import torch; print(torch.cuda.device_count())")
    if [ "$n" -lt 2 ]; then echo "the split needs two GPUs, this machine has $n"; exit 2; fi
    "$py" scripts/gpu_check_sp4d.py --fixtures tests/fixtures/sp4d_tiny --fixtures-only --devices cuda:0,cuda:1 \
      --out "$out/gpu_check_split.json" 2>&1 | quiet | tail -12
    "$py" scripts/bench_gpu.py --steps 10 --out "$out/bench_gpu_one_eager.json" 2>&1 | quiet | tail -8
    "$py" scripts/bench_gpu.py --devices cuda:0,cuda:1 --steps 10 --out "$out/bench_gpu_split_eager.json" 2>&1 \
      | quiet | tail -10
    "$py" scripts/bench_gpu.py --devices cuda:0,cuda:1 --compile-blocks layers --steps 20 \
      --out "$out/bench_gpu_split_layers.json" 2>&1 | quiet | tail -10 ;;
  split-compiled)  # rows 36-39 on two GPUs: a whole compiled 50-step generation with the split, the fixtures
                  # through the compiled split, then one GPU compiled on the same machine (10 steps)
    "$py" scripts/bench_gpu.py --devices cuda:0,cuda:1 --compile-blocks layers \
      --out "$out/bench_gpu_split_layers_50.json" 2>&1 | quiet | tail -10
    "$py" scripts/gpu_check_sp4d.py --fixtures tests/fixtures/sp4d_tiny --fixtures-only --devices cuda:0,cuda:1 \
      --compile-blocks layers --out "$out/gpu_check_split_compiled.json" 2>&1 | quiet | tail -6
    "$py" scripts/bench_gpu.py --compile-blocks layers --steps 10 --out "$out/bench_gpu_one_layers_10.json" 2>&1 \
      | quiet | tail -9 ;;
  split-one)  # the compiled one-GPU baseline for the split, on the same two-GPU machine
    "$py" scripts/bench_gpu.py --compile-blocks layers --steps 20 --out "$out/bench_gpu_one_layers.json" 2>&1 \
      | quiet | tail -9 ;;
  ratio)
    "$py" scripts/bench_official_ratio.py --official "$official" --compile-blocks layers \
      --out "$out/official_ratio.json" 2>&1 | quiet | tail -20 ;;
  check)
    "$py" scripts/gpu_check_sp4d.py --fixtures tests/fixtures/sp4d_tiny --compile-blocks layers --fixtures-only \
      --out "$out/gpu_check_compiled_layers.json" 2>&1 | quiet | tail -12 ;;
  compiled)
    "$py" scripts/bench_gpu.py --compile-blocks layers --out "$out/bench_gpu_layers_50.json" 2>&1 | quiet | tail -9
    "$py" scripts/gpu_check_sp4d.py --fixtures tests/fixtures/sp4d_tiny --compile-blocks layers --fixtures-only \
      --out "$out/gpu_check_compiled_layers.json" 2>&1 | quiet | tail -12 ;;
  eager)
    "$py" scripts/bench_gpu.py --out "$out/bench_gpu_eager_50.json" 2>&1 | quiet | tail -8
    "$py" scripts/bench_gpu.py --low-vram --steps 10 --out "$out/bench_gpu_lowvram.json" 2>&1 | quiet | tail -8
    "$py" scripts/gpu_check_sp4d.py --fixtures tests/fixtures/sp4d_tiny --out "$out/gpu_check.json" 2>&1 | quiet | tail -8 ;;
  decode)
    "$py" scripts/bench_decode.py --chunks 4 --out "$out/bench_decode.json" 2>&1 | quiet | grep -v USDT
    "$py" scripts/bench_decode.py --variants compiled-cl --chunks 4 --profile 2>&1 | quiet | grep -v USDT | tail -40 ;;
  condition)
    "$py" scripts/bench_condition.py --out "$out/bench_condition.json" 2>&1 | quiet | cut -c1-200
    "$py" scripts/bench_decode.py --variants eager --chunks 4 --out "$out/bench_decode_eager_products.json" 2>&1 \
      | quiet | grep -v USDT | tail -3
    "$py" scripts/bench_decode.py --variants eager --chunks 4 --sdpa --out "$out/bench_decode_eager_sdpa.json" 2>&1 \
      | quiet | grep -v USDT | tail -3 ;;
  nhwc)  # the compiled step NCHW and channels-last (rows 15 and 22 measured it before multi-kernel)
    for v in nchw nhwc; do
      "$py" scripts/bench_gpu.py --compile-blocks layers --steps 10 --layout "$v" \
        --out "$out/bench_gpu_layers_$v.json" 2>&1 | quiet | tail -7
    done ;;
  clip-sdpa)  # a process's first conditioning with the CLIP tower on our attention kernels and on PyTorch's (row 46)
    for v in ${ORDER:-ours pytorch}; do  # the second process on a machine finds some first-call work cached
      "$py" scripts/bench_condition.py --clip-sdpa "$v" --out "$out/bench_condition_clip_$v.json" 2>&1 | quiet \
        | grep -E "first call|CLIP|encoded once|_cudnn_attention|cudnn_convolution " | cut -c1-160
    done ;;
  frame-norm)  # the eager time ResBlocks with frame_norm's kernels (1) and through F.group_norm (0) (row 47)
    for v in 0 1; do
      flag=(); [ "$v" = 0 ] && flag=(--no-frame-norm)
      "$py" scripts/bench_gpu.py --steps 10 "${flag[@]}" --out "$out/bench_gpu_eager_framenorm_$v.json" 2>&1 \
        | quiet | tail -3
    done
    for v in 0 1; do
      flag=(); [ "$v" = 0 ] && flag=(--no-frame-norm)
      "$py" scripts/gpu_check_sp4d.py --fixtures tests/fixtures/sp4d_tiny --dtypes float32,bfloat16 "${flag[@]}" \
        --out "$out/gpu_check_framenorm_$v.json" 2>&1 | quiet | tail -4
    done ;;
  nhwc-eager)  # the eager step (the default mode) NCHW and channels-last (last measured in row 15)
    for v in nchw nhwc; do
      "$py" scripts/bench_gpu.py --steps 10 --layout "$v" --out "$out/bench_gpu_eager_$v.json" 2>&1 | quiet | tail -7
    done ;;
  skipcats)
    for v in fused eager; do
      flag=(); [ "$v" = eager ] && flag=(--eager-skip-cats)
      "$py" scripts/bench_gpu.py --compile-blocks layers --steps 10 "${flag[@]}" \
        --out "$out/bench_gpu_layers_skipcats_$v.json" 2>&1 | quiet | tail -7
    done ;;
  cache)  # two processes compile with one fresh inductor cache folder: the second loads the graphs (row 41)
    cache=$(mktemp -d)
    for run in cold warm; do
      TORCHINDUCTOR_CACHE_DIR="$cache" "$py" scripts/bench_gpu.py --compile-blocks layers --steps 5 \
        --out "$out/bench_gpu_layers_cache_$run.json" > "$out/cache_$run.log" 2>&1 \
        || { tail -30 "$out/cache_$run.log"; exit 1; }
      quiet < "$out/cache_$run.log" | grep -A12 "graph cache"
    done
    for run in cold warm; do
      TORCHINDUCTOR_CACHE_DIR="$cache" "$py" scripts/gpu_check_sp4d.py --fixtures tests/fixtures/sp4d_tiny \
        --compile-blocks layers --fixtures-only --out "$out/gpu_check_cache_$run.json" 2>&1 | quiet | tail -4
    done ;;
  ceiling)
    "$py" scripts/bench_ceiling.py --out "$out/bench_ceiling.json" 2>&1 | quiet ;;
  ab)  # logs in /tmp: $OUT returns few files
    base=${BASE:?"BASE=folder of the other checkout"}
    export TORCHINDUCTOR_CACHE_DIR; TORCHINDUCTOR_CACHE_DIR=$(mktemp -d)  # both compile into it: shared kernels
    for mode in eager compiled; do
      flag=(); [ "$mode" = compiled ] && flag=(--compile-blocks layers)
      for side in base this; do
        dir=.; [ "$side" = base ] && dir=$base
        "$py" "$dir/scripts/bench_gpu.py" --steps 10 "${flag[@]}" --out "$out/ab_${mode}_$side.json" \
          > "/tmp/ab_${mode}_$side.log" 2>&1 || { tail -30 "/tmp/ab_${mode}_$side.log"; exit 1; }
        echo "$mode $side: $(grep -E "denoising step|did not compile" "/tmp/ab_${mode}_$side.log")"
      done
    done
    "$py" - "$out" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
rows = {f"{m} {s}": json.loads((out / f"ab_{m}_{s}.json").read_text()) for m in ("eager", "compiled")
        for s in ("base", "this")}
table = {k: {"device": r["device"], "step_median_seconds": r["step_median_seconds"],
             "decoding_seconds": r["stages"]["decoding"]["seconds"]} for k, r in rows.items()}
for m in ("eager", "compiled"):
    table[f"{m} this/base"] = rows[f"{m} this"]["step_median_seconds"] / rows[f"{m} base"]["step_median_seconds"]
print(json.dumps(table, indent=1))
(out / "ab_summary.json").write_text(json.dumps(table, indent=1))
EOF
    "$py" scripts/gpu_check_sp4d.py --fixtures tests/fixtures/sp4d_tiny --fixtures-only --compile-blocks layers \
      --out "$out/ab_gpu_check_this.json" 2>&1 | quiet | tail -10 ;;
  *)
    echo "usage: bash scripts/bench_gpu_all.sh kernels|profile|convs|split|split-compiled|split-one|ratio|check|compiled|eager|decode|condition|skipcats|nhwc|nhwc-eager|clip-sdpa|frame-norm|cache|ceiling|ab" >&2
    exit 2 ;;
esac
