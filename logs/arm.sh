#!/usr/bin/env bash
cd /work/main && . .venv/bin/activate
for s in 0 1 2; do
  python train.py --config configs/fsa_minilm.py --workdir runs/A_RD_s$s --config.seed=$s \
    --config.data.subset=AllAgree --config.train.epochs=8 --config.train.rdrop=4.0 \
    --config.train.progress=False > logs/A_RD_s$s.log 2>&1
  echo "seed $s done $(date)" >> logs/arm.done
done
