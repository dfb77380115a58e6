# Sourced by bench/gpu_lifting.sh and bench/gpu_dtu_size.sh: the bench/run.py overrides of issue 3's
# lifting rows (shorter training than confs/synthetic.conf's defaults), one definition for both.
LIFT_SETTINGS=(--override "model.renderer.n_samples = 32" --override "model.renderer.n_importance = 32"
               --override "model.renderer.up_sample_steps = 2" --override "train.batch_rays = 4096"
               --override "train.cos_anneal_iters = 1000" --override "nto3d.warmup_iters = 1500"
               --override "nto3d.round_iters = 300" --override "nto3d.target.iters = 3000")
