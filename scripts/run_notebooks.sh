#!/usr/bin/env bash
# The main job: set up .venv, then execute every notebook top to bottom (pass notebook paths to run
# only those). CIFAR-10 comes from $CIFAR10_DIR when set (an offline copy), else it is downloaded
# into data/.
#   Full mode (the default) writes each executed notebook in place: these are the committed results.
#   QUICK_MODE=1 (the short versions CI runs) writes the executed copies to data/executed/ instead
#   (git-ignored), so the committed notebooks are never touched.
# A notebook that fails stops the job with one line: the notebook, the failing cell, the exception,
# and the path of the full log (data/logs/<notebook>.log).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

notebooks=("$@")
[ ${#notebooks[@]} -gt 0 ] || notebooks=(notebooks/*.ipynb)
executed_dir=data/executed
logs_dir=data/logs
if [ "${QUICK_MODE:-}" = "1" ]; then
    echo "quick mode: the executed notebooks go to $executed_dir/; notebooks/ is left as committed"
fi
for notebook in "${notebooks[@]}"; do
    name=$(basename "$notebook" .ipynb)
    if [ "${QUICK_MODE:-}" = "1" ]; then
        output="$executed_dir/$name.ipynb"
    else
        output="$notebook"
    fi
    echo "== executing $notebook"
    .venv/bin/python scripts/execute_notebook.py "$notebook" "$output" "$logs_dir/$name.log"
done
