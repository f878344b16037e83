#!/usr/bin/env bash
# The whole test suite (unit, MPI at 1-4 ranks, integration), from a fresh clone.
source "$(dirname "$0")/_venv.sh" "test"
python -m pytest "$@"
