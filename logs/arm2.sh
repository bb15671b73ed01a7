#!/usr/bin/env bash
cd /work/main && . .venv/bin/activate
while [ "$(grep -c done logs/arm.done 2>/dev/null)" != 3 ]; do sleep 20; done
for s in 0 1 2; do
  python train.py --config configs/fsa_minilm_exits.py --workdir runs/XT2LS_s$s --config.seed=$s \
    --config.train.label_smoothing=0.1 --config.train.progress=False > logs/XT2LS_s$s.log 2>&1
  python train.py --config configs/fsa_minilm_exits.py --workdir runs/XT2LS_s$s --config.seed=$s \
    --config.train.label_smoothing=0.1 --config.train.progress=False --mode report > logs/XT2LS_r$s.log 2>&1
  echo "seed $s done $(date)" >> logs/arm2.done
done
