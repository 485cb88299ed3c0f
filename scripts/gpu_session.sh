#!/usr/bin/env bash
# One GPU session for issue 16 (V-AURA generation speed, batching, dtypes), sized for ~11 minutes on an H200:
# correctness first (parity, batched determinism, dtype fidelity + step profile), then the end-to-end timings.
# Every stage writes its JSON to $OUT (default ./gpu_out) as soon as it ends, so a timeout keeps what finished.
#
#   VAURA_PARITY_DIR=../shared/parity bash scripts/gpu_session.sh            # OUT=./gpu_out
#   OUT=/somewhere FULL=1 bash scripts/gpu_session.sh                         # + torch.compile and 10 samples
#
# Through this project's device tool (it copies the checkout, not ../shared): first
#   mkdir -p gpu_fixture/parity/vaura && cp -r ../shared/parity/vaura/reduced gpu_fixture/parity/vaura/
# then run `VAURA_PARITY_DIR=gpu_fixture/parity bash scripts/gpu_session.sh` with carry ["gpu_fixture"] (18 MB;
# *.pt files are git-ignored, so they travel only when carried); $OUT is the tool's output folder.
set -u
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
PY=${PY:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
stage() {  # stage NAME SECONDS command...
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit}s)"; local t0=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1; local rc=$?
  echo "   rc=$rc in $((SECONDS - t0)) s"; tail -3 "$OUT/$name.log"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
# 1. correctness: the fixture's codes on every loop, same audio alone / in a batch of 64, bf16 / fp16 vs fp32
stage check_cuda 360 $PY scripts/check_cuda.py --only sampler_parity,sampler_random,batch_determinism,dtype --out "$OUT/check_cuda.json"
# 2. end to end per 8 s clip, paper size, fp32 and bf16, CUDA graphs, batch 1 / 16 / 64
stage bench_generate 300 $PY scripts/bench_generate.py --device cuda --size paper --dtypes fp32,bf16 --modes graph \
  --batches 1,16,64 --clips 4 --videos 8 --out "$OUT/bench_generate-paper.json"
if [ "${FULL:-0}" = 1 ]; then
  # 3. 10 samples per clip (the V-AURA paper's protocol) and torch.compile
  stage bench_generate_s10 240 $PY scripts/bench_generate.py --device cuda --size paper --dtypes bf16 --modes graph \
    --samples 10 --batches 1,8 --clips 4 --videos 8 --out "$OUT/bench_generate-paper-s10.json"
  stage bench_generate_compiled 300 $PY scripts/bench_generate.py --device cuda --size paper --dtypes fp32,bf16 \
    --modes compiled --batches 1,64 --clips 4 --videos 8 --out "$OUT/bench_generate-paper-compiled.json"
fi
# 4. issue 17 on 16 cores: the first build of a 200-clip listening report, windows copied, then re-encoded (CPU
#    only; after the GPU stages so that a timeout here costs none of them)
stage bench_report 150 $PY scripts/bench_report.py --clips 200 --source-crf 32 --reencode-too \
  --json "$OUT/bench_report-16cores.json"
ls -la "$OUT"
