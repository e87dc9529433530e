#!/usr/bin/env bash
# The main job: set up .venv, then execute every notebook top to bottom, in place, in full mode.
# CIFAR-10 comes from $CIFAR10_DIR when set (an offline copy), else it is downloaded into data/.
# Pass notebook paths to run only those; QUICK_MODE=1 runs the short versions used by CI.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

notebooks=("$@")
[ ${#notebooks[@]} -gt 0 ] || notebooks=(notebooks/*.ipynb)
for notebook in "${notebooks[@]}"; do
    echo "== executing $notebook"
    .venv/bin/jupyter nbconvert --to notebook --execute --inplace \
        --ExecutePreprocessor.timeout=-1 --ExecutePreprocessor.kernel_name=python3 "$notebook"
done
