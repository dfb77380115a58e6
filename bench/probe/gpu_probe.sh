#!/usr/bin/env bash
# One device call: the rest of the suite (seed 0) beside one probed thin run (bench/probe/sitecustomize.py).
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site2 .whl/*.whl
O="--target_iters 0 --data_root gpu_data --override validate.mesh_resolution=256 --override validate.eval_spacing=2.0 --deadline 430 --threads 3"
(TAG=s9c bash bench/gpu_suite.sh --scenes easy occluded lookalike twotone --seeds 1 --parallel 4 $O > /tmp/c.log 2>&1) &
LIFT_PROBE=$OUT/probe PYTHONPATH=bench/probe:.:/tmp/site2 python3 bench/lifting_suite.py --exp_root exp/s9p --copy_to $OUT/s9p --scenes thin --seeds 1 --parallel 1 $O > $OUT/s9p.log 2>&1
wait; tail -12 /tmp/c.log; tail -5 $OUT/s9p.log; du -sh $OUT/*
