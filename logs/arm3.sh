#!/usr/bin/env bash
cd /work/main && . .venv/bin/activate
while [ "$(grep -c done logs/arm2.done 2>/dev/null)" != 3 ]; do sleep 20; done
for s in 0 1 2; do
  start=$(date +%s)
  python train.py --config configs/fsa_minilm.py --workdir runs/G50_s$s --config.seed=$s \
    --config.data.group_by_length=50 --config.train.progress=False > logs/G50_s$s.log 2>&1
  echo "seed $s done $(date) seconds $(( $(date +%s) - start ))" >> logs/arm3.done
done
