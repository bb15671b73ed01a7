#!/usr/bin/env bash
# Fills the two ignored folders that bench/h100.sh reads on the GPU machine, which sees only the
# working tree (64 MiB in all) and lacks ml_collections:
#   .gpu/  copies of ../shared: phrasebank/ (2 MB), albert-tokenizer/ (1 MB), minilm/ (45 MB)
#   .whl/  the ml_collections wheel (configs/*.py import it; its own dependencies are in the image)
# Then: the device tool's run with carry [".gpu", ".whl"] and the command
#   LIMIT=200 bash bench/h100.sh engines pipeline
# (.gpu/ is read by the train and minilm stages, .whl/ by every stage that trains: train, minilm,
# serving and pipeline; the synthetic-model stages need neither). Run from the repository root.
set -euo pipefail
SHARED=${SHARED:-../shared}
[ -d "$SHARED/models/all-MiniLM-L6-v2" ] || { echo "prepare_gpu: no $SHARED/models" >&2; exit 1; }
rm -rf .gpu .whl && mkdir -p .gpu .whl
cp -r "$SHARED/data/financial_phrasebank/FinancialPhraseBank-v1.0" .gpu/phrasebank
cp -r "$SHARED/models/albert-base-v2-tokenizer" .gpu/albert-tokenizer
cp -r "$SHARED/models/all-MiniLM-L6-v2" .gpu/minilm
chmod -R u+w .gpu
python3 -m pip download -q --no-deps --only-binary=:all: -d .whl ml_collections
du -sh .gpu .whl
