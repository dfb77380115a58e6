#!/usr/bin/env bash
# One device call of the lifting suite (bench/gpu_suite.sh, its arguments) with every run's connectivity cut
# recorded (bench/probe/sitecustomize.py), packed into $OUT/probe.tgz (one file: the device brings back
# only so many). LIFT_DETACH_HEADS=1 in the environment: the heads rendered with detached weights (an A/B;
# sitecustomize.py). Two suites in one call: start the second after the first has made the scenes.
export LIFT_PROBE=/tmp/probe PYTHONPATH=$PWD/bench/probe:$PWD
bash bench/gpu_suite.sh "$@"
RC=$?
tar czf "$OUT/probe.tgz" -C /tmp probe
exit $RC
