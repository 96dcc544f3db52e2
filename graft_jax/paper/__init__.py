"""The paper's reference recipe at full scale: configs, launch checks and the dry run.

  recipe.py    the reference hyperparameters (method.md section 4) as locked train configs
  checks.py    what is checked before anything heavy runs: checkpoint shapes, mesh, batch split
  launch.py    the train task's entry for recipe configs: checks, then the dry run or training
  abstract.py  the stage's model and params as shapes only (jax.eval_shape, no weights)
  footprint.py per-device bytes of a sharded tree, the fit check and its suggestion
  hardware.py  accelerator presets: memory and peak bf16 FLOP/s
  dry_run.py   shardings, AOT lowering and compilation of the train step, the report
"""
