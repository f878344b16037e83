#!/usr/bin/env bash
# The demo job: a simulated wide-field MWA-like observation imaged on 2 MPI ranks.
source "$(dirname "$0")/_venv.sh" ""
mpiexec -n 2 radimg run configs/demo.yaml "$@"
