#!/usr/bin/env bash
# One device call of the lifting suite (bench/gpu_suite.sh, its arguments) with every run's connectivity cut
# recorded under $OUT/probe/<pid>/ (bench/probe/sitecustomize.py).
export LIFT_PROBE=$OUT/probe PYTHONPATH=$PWD/bench/probe:$PWD
bash bench/gpu_suite.sh "$@"
