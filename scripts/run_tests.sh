#!/usr/bin/env bash
# The test command: set up .venv, then run the unit tests (tests/) and nbval over the notebooks
# (run in quick mode, their deterministic outputs compared with the committed ones).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

export QUICK_MODE=1
.venv/bin/python -m pytest tests notebooks \
    --nbval --nbval-current-env --nbval-cell-timeout=1200 \
    --nbval-sanitize-with tests/nbval_sanitize.cfg "$@"
