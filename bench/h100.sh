#!/usr/bin/env bash
# The GPU measurements of docs/benchmarks.md and docs/results.md, one stage per device call:
#   bash bench/h100.sh engines   # early-exit engines vs full depth vs transformers (bf16, auto attention)
#   bash bench/h100.sh probe     # full depth and engines under a few XLA flag settings
#   bash bench/h100.sh train     # one PhraseBank epoch of albert-base shape: ours vs transformers
#   bash bench/h100.sh profile   # per-op device time of full depth (batch 1024): ours vs torch.compile,
#                                # then of the refill engine's loop
#   bash bench/h100.sh variants  # full depth per kernel choice (attention x fused QKV) under two XLA
#                                # flag settings, and transformers + torch.compile per batch size
#   bash bench/h100.sh ab        # full depth, batch 1024: the code in .ab/old (an earlier commit's
#                                # tree) against this one, and this one without Triton gemms; then
#                                # the fastest of them profiled and run through the engine table
#   bash bench/h100.sh ab_engines # refill and compact, batch 64 and 1024: the code in .ab/old
#                                # against this one, each in its own process
#   bash bench/h100.sh attention # attention kernels at [1024, 64, 12, 64]: the model's cuDNN call
#                                # (boolean mask) against cuDNN with key lengths, XLA, Pallas, torch;
#                                # then full depth (batch 64, 1024) through each of the model's kernels
#   bash bench/h100.sh bert      # the engines on bert-base's shape (12 unshared layers: refill by
#                                # depth groups against compact)
#   bash bench/h100.sh minilm    # MiniLM on PhraseBank 50Agree (mean pooling, CWB N=4 tau 0.75),
#                                # seeds ${SEEDS:-0 1 2}, then the engines on seed 0's checkpoint
#   bash bench/h100.sh serving   # single requests at Poisson rates: Batcher vs one predict each
#   bash bench/h100.sh pipeline  # end to end, texts in, rows out: tokeniser, engine, and the stream
#                                # with and without the tokeniser overlapped (demo model, MiniLM)
# or several stages in one call: LIMIT=300 bash bench/h100.sh engines train
# Run from the repository root on the GPU machine. Inputs come from .gpu/ (copies of ../shared:
# phrasebank/, albert-tokenizer/, minilm/) and .whl/ (ml_collections, absent from the image),
# both made here by bash bench/prepare_gpu.sh and carried to the GPU machine;
# logs and JSON go to ${OUT:-bench/results}.
set -u
OUT=${OUT:-bench/results}
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.6
PY=python3
if ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl && export PYTHONPATH=/tmp/site:.
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv
$PY -c "import jax, flax, optax, transformers, torch; print('jax', jax.__version__, 'flax', flax.__version__,
'optax', optax.__version__, 'transformers', transformers.__version__, 'torch', torch.__version__,
jax.devices())"; } 2>&1 | tee "$OUT/h100_env.txt"

LIMIT=${LIMIT:-540}  # seconds per stage
for stage in "${@:-engines}"; do
case "$stage" in
engines)
  timeout $LIMIT $PY bench/engines.py --device gpu --dtype bfloat16 --batch_sizes 1,64,1024 \
    --texts 16384 --small_batch_texts 256 --reps 5 --attention auto --torch_peer \
    --output "$OUT/h100_engines.json" 2>&1 | grep -v "^I1\|^W1" | tee "$OUT/h100_engines.log" ;;
ab_engines)
  for tree in .ab/old .; do
    echo "== $tree"
    timeout ${AB_LIMIT:-120} $PY $tree/bench/engines.py --device gpu --dtype bfloat16 \
      --batch_sizes 64,1024 --engines compact,refill --texts 16384 --reps 5 --attention cudnn \
      --output "$OUT/ab_engines_$([ $tree = . ] && echo new || echo old).json" 2>&1 \
      | grep -v "^I1\|^W1\|^{"
  done ;;
attention)  # the kernel alone, then full depth through each kernel (same weights, one process)
  timeout 120 $PY bench/attention.py --device gpu --output "$OUT/h100_attention.json" 2>&1 \
    | grep -v "^I1\|^W1" | tee "$OUT/h100_attention.log"
  timeout $LIMIT $PY bench/engines.py --device gpu --dtype bfloat16 --batch_sizes 64,1024 \
    --engines "" --attention cudnn,cudnn_lengths,pallas,xla --texts 16384 --reps 5 \
    --output "$OUT/h100_attention_full_depth.json" 2>&1 | grep -v "^I1\|^W1\|^{" ;;
bert)
  timeout $LIMIT $PY bench/engines.py --device gpu --dtype bfloat16 --model_type bert \
    --batch_sizes 64,1024 --texts 16384 --reps 3 --attention auto \
    --output "$OUT/h100_engines_bert.json" 2>&1 | grep -v "^I1\|^W1" | tee "$OUT/h100_engines_bert.log" ;;
probe)  # XLA flags that may cut launch overhead (CUDA graphs around loops) or fuse epilogues
  # (engines.py adds parallel.configure_xla's command buffers to any setting that names none;
  # "--xla_gpu_enable_command_buffer=" turns them off; the dot merger joins Q/K/V projections,
  # which share their input, only below its size threshold: 100 MB each at batch 1024)
  for flags in "--xla_gpu_enable_command_buffer=" "" \
      "--xla_gpu_dot_merger_threshold_mb=1024" \
      "--xla_gpu_enable_cublaslt=true"; do
    echo "== XLA_FLAGS=$flags"
    XLA_FLAGS="$flags" timeout 150 $PY bench/engines.py --device gpu --dtype bfloat16 \
      --batch_sizes 1,1024 --engines masked,refill --texts 16384 --small_batch_texts 256 --reps 5 \
      2>&1 | grep -v "^I1\|^W1\|^{" | tail -9
  done ;;
train)
  timeout $LIMIT $PY bench/train_epoch.py --phrasebank .gpu/phrasebank --tokenizer .gpu/albert-tokenizer \
    --dtype bfloat16 --attention auto,pallas --group_by_length 0,50 --torch_compile --profile_steps 20 \
    --output "$OUT/h100_train_epoch.json" 2>&1 \
    | tee "$OUT/h100_train_epoch.log" ;;
profile)  # full depth next to torch.compile, then the refill engine's loop (what a step costs
  # besides its layer: efficiency 0.78 at batch 1024 on 2026-11-27); auto attention (Pallas), the fastest
  timeout $LIMIT $PY bench/profile_layer.py --device gpu --dtype bfloat16 --batch 1024 --torch \
    --attention auto --top 30 --output "$OUT/h100_profile.json" 2>&1 | grep -v "^I1\|^W1" \
    | tee "$OUT/h100_profile.log"
  timeout $LIMIT $PY bench/profile_layer.py --device gpu --dtype bfloat16 --batch 1024 \
    --engine refill --attention auto --top 40 --output "$OUT/h100_profile_refill.json" 2>&1 \
    | grep -v "^I1\|^W1" | tee "$OUT/h100_profile_refill.log" ;;
variants)  # full depth only; the peer once, in the first process
  for flags in "" "--xla_gpu_triton_gemm_any=true"; do
    echo "== XLA_FLAGS=$flags"
    peer=$([ -z "$flags" ] && echo --torch_peer || echo --notorch_peer)
    XLA_FLAGS="$flags" timeout $LIMIT $PY bench/engines.py --device gpu --dtype bfloat16 \
      --batch_sizes 64,1024 --engines "" --attention xla,cudnn --fuse_qkv false,true --texts 16384 \
      --reps 5 $peer --output "$OUT/h100_variants${flags:+_triton_gemm_any}.json" 2>&1 \
      | grep -v "^I1\|^W1\|^{"
  done ;;
ab)
  mkdir -p "$OUT/ab"
  for run in "old|" "new|" "new|--xla_gpu_enable_triton_gemm=false"; do
    tree=${run%%|*} flags=${run#*|}
    root=$([ "$tree" = old ] && echo .ab/old || echo .)
    echo "== $tree XLA_FLAGS=$flags"
    XLA_FLAGS="$flags" timeout ${AB_LIMIT:-70} $PY $root/bench/engines.py --device gpu \
      --dtype bfloat16 --batch_sizes 1024 --engines "" --attention xla,cudnn --fuse_qkv false,true \
      --texts 16384 --reps 5 --output "$OUT/ab/${tree}${flags:+_notriton}.json" 2>&1 \
      | grep -v "^I1\|^W1\|^{"
  done
  best=$($PY bench/fastest.py --batch 1024 "$OUT"/ab/*.json) || exit 1
  echo "== fastest: $best"
  eval "$best"
  export XLA_FLAGS
  XLA_FLAGS="$XLA_FLAGS --xla_gpu_enable_command_buffer=" timeout ${PROFILE_LIMIT:-50} $PY $TREE/bench/profile_layer.py --device gpu --dtype bfloat16 \
    --batch 1024 --attention $ATTENTION --fuse_qkv=$FUSE_QKV --top 30 \
    --output "$OUT/h100_profile_fastest.json" 2>&1 | grep -v "^I1\|^W1" | grep " ms \|=="
  timeout ${ENGINES_LIMIT:-190} $PY $TREE/bench/engines.py --device gpu --dtype bfloat16 \
    --batch_sizes 1,64,1024 --texts 16384 --small_batch_texts 128 --reps 3 --attention $ATTENTION \
    --fuse_qkv $FUSE_QKV --torch_peer --output "$OUT/h100_engines.json" 2>&1 \
    | grep -v "^I1\|^W1\|^{" | tee "$OUT/h100_engines.log" ;;
minilm)
  for seed in ${SEEDS:-0 1 2}; do
    timeout 200 $PY train.py --config configs/fsa_minilm.py --workdir "/tmp/runs/minilm_s$seed" \
      --config.seed=$seed --config.model.name_or_path=.gpu/minilm --config.train.batch_size=32 \
      --config.data.path=.gpu/phrasebank --config.train.progress=False \
      --config.model.pooling=mean --config.exit.window=4 --config.exit.threshold=0.75 \
      --config.train.rdrop=0 2>&1 | tail -3
    grep '"split": "test"' "/tmp/runs/minilm_s$seed/metrics.jsonl" | sed "s/^/seed $seed /" \
      >> "$OUT/h100_minilm.jsonl"
  done
  timeout 200 $PY bench/engines.py --device gpu --mode checkpoint --checkpoint /tmp/runs/minilm_s0 \
    --phrasebank .gpu/phrasebank --texts 4846 --batch_sizes 1,64,1024 --small_batch_texts 512 \
    --reps 5 --output "$OUT/h100_minilm_engines.json" 2>&1 | grep -v "^I1\|^W1" ;;
serving)  # single requests at Poisson rates: Batcher against one predict per request, on the demo
  # model trained here and, when the minilm stage ran first in the same call, on MiniLM seed 0
  timeout 200 $PY train.py --config configs/demo.py --workdir /tmp/runs/demo \
    --config.train.progress=False 2>&1 | tail -2
  for ckpt in /tmp/runs/demo /tmp/runs/minilm_s0; do
    [ -d "$ckpt/best" ] || continue
    timeout 240 $PY bench/serving.py --device gpu --checkpoint "$ckpt" --rates 1000,5000,20000 \
      --requests 10000 --output "$OUT/h100_serving_$(basename $ckpt).json" 2>&1 \
      | grep -v "^I1\|^W1\|^{" | tee -a "$OUT/h100_serving.log"
  done ;;
pipeline)  # stream(overlap=False/True) against its stages, on the demo model and (after the
  # minilm stage in the same call) MiniLM seed 0 in bf16, batch 1024: the host's tokeniser vs the GPU
  [ -d /tmp/runs/demo/best ] || timeout 200 $PY train.py --config configs/demo.py \
    --workdir /tmp/runs/demo --config.train.progress=False 2>&1 | tail -2
  for ckpt in /tmp/runs/demo /tmp/runs/minilm_s0; do
    [ -d "$ckpt/best" ] || continue
    timeout 240 $PY bench/pipeline.py --device gpu --checkpoint "$ckpt" --dtype bfloat16 \
      --texts 262144 --chunk 16384 --batch_size 1024 \
      --output "$OUT/h100_pipeline_$(basename $ckpt).json" 2>&1 | grep -v "^I1\|^W1"
  done ;;
esac
done
