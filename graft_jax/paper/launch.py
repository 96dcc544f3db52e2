"""The train task's entry for recipe configs (configs/paper/recipe.py): the checks of
paper/checks.py, the batch split over the mesh, then the dry run or training itself."""
from __future__ import annotations

from jax.experimental import topologies

from graft_jax.paper.checks import check_recipe, resolve_batch
from graft_jax.paper.dry_run import dry_run
from graft_jax.train import sharding
from graft_jax.train.loop import train


def launch(config) -> dict:
  """Checks `config` (a recipe config), sets train.microbatches when it is 0 (auto), then runs
  the dry run (config.dry_run) or the stage. Returns the dry run's report or train()'s result."""
  check_recipe(config)
  devices = None
  if config.topology:  # compile for a TPU slice this machine does not have (deviceless AOT)
    devices = topologies.get_topology_desc(topology_name=config.topology, platform="tpu").devices
  mesh = sharding.make_mesh(tuple((name, int(size)) for name, size in config.mesh), devices)
  rows, k = resolve_batch(config, mesh)
  if config.dry_run:
    return dry_run(config, mesh)
  print(f"{config.recipe}: global batch {config.train.batch_size} = {k} micro-batches x {rows} rows "
        f"on each of {mesh.size} devices")
  return train(config)
