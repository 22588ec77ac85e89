#!/usr/bin/env bash
# Set up .venv (with the plugins in plugins/), then run the whole test suite: trackkit's tests and
# each plugin's own. Extra arguments go to pytest, e.g. scripts/test.sh -k jsonl -x
set -euo pipefail
cd "$(dirname "$0")/.."
WITH_PLUGINS=1 scripts/setup.sh
exec .venv/bin/python -m pytest tests plugins/*/tests "$@"
