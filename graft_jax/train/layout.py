"""Where everything of a training run lives on the mesh, derived once from shapes (jax.eval_shape):
the TrainState (trainable params and their optimizer state), the frozen params, the batch and,
for distillation, the teacher's params."""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import optax
from jax.sharding import Mesh, NamedSharding

from graft_jax.train import sharding
from graft_jax.train.partition import split
from graft_jax.train.state import TrainState


@dataclasses.dataclass(frozen=True)
class TrainLayout:
  """Shardings (trees of NamedSharding shaped like the values) and the activation rules."""
  mesh: Mesh
  state: Any
  frozen: Any
  batch: NamedSharding
  teacher: Any | None
  logical_rules: tuple

  @property
  def replicated(self) -> NamedSharding:
    return sharding.replicated(self.mesh)

  def place(self, state: TrainState, frozen: dict) -> tuple[TrainState, dict]:
    """Moves (or reshards) a state and a frozen tree onto their shardings."""
    return jax.device_put(state, self.state), jax.device_put(frozen, self.frozen)

  def create_state(self, trainable: dict, optimizer: optax.GradientTransformation) -> TrainState:
    """TrainState.create computed straight into its shardings."""
    return jax.jit(lambda t: TrainState.create(t, optimizer), out_shardings=self.state)(trainable)


def make_layout(mesh: Mesh, abstract_params, spec: Sequence, optimizer: optax.GradientTransformation,
                param_rules: sharding.ParamRules = sharding.DEFAULT_PARAM_RULES,
                logical_rules=sharding.LOGICAL_RULES, abstract_teacher=None) -> TrainLayout:
  """Shardings for `abstract_params` (the full params tree, arrays or ShapeDtypeStructs) split by
  the partition `spec`; `abstract_teacher` is the teacher's params tree (e.g. {"llm": target})."""
  trainable, frozen = jax.eval_shape(lambda p: split(p, spec), abstract_params)
  opt_state = jax.eval_shape(optimizer.init, trainable)
  trainable_sh = sharding.param_shardings(trainable, param_rules, mesh)
  opt_sh = optax.tree_map_params(optimizer, lambda _, s: s, opt_state, trainable_sh,
                                 transform_non_params=lambda _: sharding.replicated(mesh))
  state = TrainState(step=sharding.replicated(mesh), trainable=trainable_sh, opt_state=opt_sh)
  teacher = (None if abstract_teacher is None
             else sharding.param_shardings(abstract_teacher, param_rules, mesh))
  return TrainLayout(mesh, state, sharding.param_shardings(frozen, param_rules, mesh),
                     sharding.batch_sharding(mesh), teacher, sharding.logical_rules_for(mesh, logical_rules))
