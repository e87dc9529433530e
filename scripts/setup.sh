#!/usr/bin/env bash
# Create .venv from requirements.txt if it is absent or stale, and install this repository's
# `helpers` package into it (editable), so notebooks, tests and the command line all import it.
# The venv is made with $PYTHON (default: python3), which must be Python 3.11 or newer.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
stamp=.venv/.requirements.sha256
wanted=$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/python ]; then
    if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        if command -v "$python" >/dev/null; then found="is $("$python" --version 2>&1)"; else found="is not installed"; fi
        echo "setup.sh: needs Python 3.11 or newer, but $python $found; install one and run again with PYTHON=python3.11 (or newer)" >&2
        exit 1
    fi
    "$python" -m venv .venv
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
    echo "$wanted" > "$stamp"
fi
