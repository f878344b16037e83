#!/usr/bin/env bash
# The whole test suite (unit, MPI at 1-4 ranks, integration), from a fresh clone.
source "$(dirname "$0")/_venv.sh" "test"
# Two workers, each test file on one of them (module fixtures and the files' own
# subprocesses stay together); RADIMG_TEST_WORKERS=0 runs it in this process.
workers="${RADIMG_TEST_WORKERS:-2}"
if [ "$workers" = "0" ]; then
  python -m pytest "$@"
else
  python -m pytest -n "$workers" --dist loadfile "$@"
fi
