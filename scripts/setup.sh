#!/usr/bin/env bash
# Create .venv from requirements.txt if it is absent or stale, and install this repository's
# `helpers` package into it (editable), so notebooks, tests and the command line all import it.
set -euo pipefail
cd "$(dirname "$0")/.."

stamp=.venv/.requirements.sha256
wanted=$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
    echo "$wanted" > "$stamp"
fi
