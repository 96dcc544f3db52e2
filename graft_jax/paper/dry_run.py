"""The dry run of a training stage: no weights, no data, only shapes and the compiler.

  python -m graft_jax.main --config=configs/paper/recipe.py:llama-3.1-70b,finetune_decoder \\
      --config.dry_run=True --config.mesh='(("data", 1), ("fsdp", -1), ("tensor", 1))'

Steps: the stage's model and params as shapes (paper/abstract.py, jax.eval_shape), the trainable
split and AdamW state as shapes, shardings on the mesh (train/layout.py), the per-device bytes of
parameters, optimizer state and gradient accumulators (a fit check before compiling), then the
real train step (train/step.py make_train_step) lowered and compiled ahead of time for a batch of
full-length rows, and the compiled executable's memory analysis (arguments + outputs - donated +
temporaries = the step's peak per device; a second fit check). FLOPs per step are model FLOPs
(graft_jax/bench/flops.py); the step time is FLOPs / (devices x peak FLOP/s x MFU).

Simulated CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=N) stand in for a slice:
the numbers are then XLA:CPU's buffer assignment for the same sharded program, which tracks the
TPU/GPU one but is not identical (the CPU backend compiles with LLVM optimisation and the fusion
emitters off, which leaves buffer assignment as it is and compiles ~3x faster). Run the same
command on the real slice for its own numbers.
"""
from __future__ import annotations

import dataclasses
import functools
import time

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from graft_jax.bench.flops import train_step_flops
from graft_jax.cost import decoder_cost
from graft_jax.models.vlm import VLM
from graft_jax.models.llama import abstract_params
from graft_jax.paper import hardware
from graft_jax.paper.abstract import abstract_stage
from graft_jax.paper.checks import resolve_batch
from graft_jax.paper.footprint import Footprint, PlanDoesNotFit, check_fits, fsdp_bytes, tree_bytes
from graft_jax.paper.hardware import GIB
from graft_jax.train.layout import make_layout
from graft_jax.train.lora import apply_lora, trainable_rules
from graft_jax.train.loss import LossOptions
from graft_jax.train.optimizer import make_optimizer, make_schedule
from graft_jax.train.partition import describe, split
from graft_jax.train.state import TrainState
from graft_jax.train.step import make_train_step

CPU_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}
LLAMA3_EOT = (128009,)  # <|eot_id|>: segment ends for dynamic loss weights


def _attach(tree, shardings):
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def abstract_batch(sharding, rows: int, seq_len: int, image_size: int, images: bool) -> dict:
  """The pipeline's batch (graft_jax/data/pipeline.py) as shapes: `rows` rows of `seq_len` tokens."""
  leaf = lambda shape, dtype: jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)
  batch = {"tokens": leaf((rows, seq_len), jnp.int32), "loss_mask": leaf((rows, seq_len), jnp.bool_),
           "valid": leaf((rows, seq_len), jnp.bool_), "image_pos": leaf((rows,), jnp.int32),
           "has_image": leaf((rows,), jnp.bool_), "record_index": leaf((rows,), jnp.int32)}
  if images:
    batch["images"] = leaf((rows, image_size, image_size, 3), jnp.float32)
  return batch


def _jitted(step, cap: int):
  """The jitted function behind a make_train_step step: `jitted_for(cap)` (logits at up to `cap`
  positions per row) where the step has it, else its single `jitted`."""
  return step.jitted_for(cap) if hasattr(step, "jitted_for") else step.jitted


def model_flops(a, spec, rows: int, decoder_len: int) -> float:
  """Model FLOPs of one step of full-length rows (graft_jax/bench/flops.py: 6N trainable, 4N
  frozen pass-through, 2N forward only, plus attention), with the LM head at all positions, the
  most the step computes. LoRA factors are left out (their FLOPs are negligible; with them on,
  the frozen decoder still passes gradients through, as the adapter side trains too)."""
  params = {k: v for k, v in a.params.items() if k != "lora"}
  spec = [r for r in spec if not str(r).startswith("lora/")]
  images = 0 if a.stage.decoder_only else rows
  return train_step_flops(params, spec, a.llm_config, segments=a.segments,
                          vit=None if a.stage.decoder_only else a.model.vit, batch=rows, seq_len=decoder_len,
                          images=images, head_tokens=rows * (decoder_len - 1)).total


def dry_run(config, mesh: Mesh) -> dict:
  """Plans, compiles and reports one stage of `config` on `mesh` (see the module docstring).

  Returns the report dict (sizes in bytes, flops, seconds). Raises PlanDoesNotFit when the
  per-device memory exceeds the device's, before compiling when the state alone does; the
  exception's `report` holds what was measured until then.
  """
  start = time.perf_counter()
  device, how = hardware.resolve(config.hardware, list(mesh.devices.flat))
  rows, k = resolve_batch(config, mesh)
  a = abstract_stage(config)
  spec = trainable_rules(a.params, config.trainable, a.lora)
  schedule = make_schedule(config.train.lr, config.train.steps, config.train.warmup_ratio)
  optimizer = make_optimizer(schedule, weight_decay=config.train.weight_decay, clip_norm=config.train.clip_norm,
                             encoder_lr_mult=config.train.encoder_lr_mult)
  teacher = teacher_params = None
  if config.train.kl_weight > 0:
    teacher = VLM(a.model.vit, a.llm_config, None, a.model.projector_depth)
    teacher_params = {"llm": abstract_params(a.llm_config)}
  layout = make_layout(mesh, a.params, spec, optimizer, abstract_teacher=teacher_params)
  trainable, frozen = jax.eval_shape(lambda p: split(p, spec), a.params)
  state = _attach(jax.eval_shape(lambda t: TrainState.create(t, optimizer), trainable), layout.state)
  frozen = _attach(frozen, layout.frozen)
  if teacher_params is not None:
    teacher_params = _attach(teacher_params, layout.teacher)
  images = not a.stage.decoder_only
  batch = abstract_batch(layout.batch, config.train.batch_size, config.train.max_len, a.model.vit.image_size, images)
  decoder_len = config.train.max_len + (a.model.image_len if images else 0)
  what = f"{config.recipe} ({a.plan.describe() if a.plan else 'full target'})"
  print(f"dry run: {what}\n{describe(a.params, spec)}")

  flops = model_flops(a, spec, config.train.batch_size, decoder_len)
  decoder = decoder_cost(a.llm_config, a.plan.segments if a.plan else None, decoder_len)
  report = {
      "recipe": config.recipe, "plan": a.plan.describe() if a.plan else "full target",
      "mesh": dict(mesh.shape), "devices": mesh.size, "device": device.name, "device_source": how,
      "memory_limit_gib": device.memory_gib, "width_divisor": config.width_divisor,
      "decoder_layers": decoder.layers, "decoder_params": decoder.params,
      "params": sum(x.size for x in jax.tree.leaves(a.params)),
      "trainable_params": sum(x.size for x in jax.tree.leaves(trainable)),
      "global_batch": config.train.batch_size, "per_device_batch": rows, "microbatches": k,
      "tokens_per_row": decoder_len, "flops_per_step": flops, "mfu": config.hardware.mfu,
      "step_time_s": flops / (mesh.size * device.peak_tflops * 1e12 * config.hardware.mfu),
  }
  fit = functools.partial(check_fits, what=what, devices=mesh.size, mesh_shape=dict(mesh.shape),
                          device_name=device.name, limit_gib=device.memory_gib, per_device_batch=rows)
  fp = state_footprint(state, frozen, tree_bytes(batch) + tree_bytes(teacher_params or {}))
  _checked(fit, fp, report)  # fails before compiling when the state alone cannot fit

  options = LossOptions(kl_weight=config.train.kl_weight, dynamic_weights=config.train.dynamic_loss_weights,
                        end_of_turn_ids=LLAMA3_EOT if config.train.dynamic_loss_weights else ())
  step = make_train_step(a.model, layout, optimizer, options, k, decoder_only=a.stage.decoder_only,
                         pad_id=a.llm_config.pad_token_id or 0, schedule=schedule, teacher=teacher,
                         params_transform=functools.partial(apply_lora, cfg=a.lora) if a.lora.enabled else None)
  lowered = _jitted(step, decoder_len - 1).lower(state, frozen, batch, teacher_params)
  on_cpu = mesh.devices.flat[0].platform == "cpu"
  mem = (lowered.compile(CPU_COMPILER_OPTIONS) if on_cpu else lowered.compile()).memory_analysis()
  peak = mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes + mem.temp_size_in_bytes
  fp = dataclasses.replace(fp, activations=peak - fp.params - fp.optimizer - fp.batch)
  report["xla_memory"] = {"argument": mem.argument_size_in_bytes, "output": mem.output_size_in_bytes,
                          "alias": mem.alias_size_in_bytes, "temp": mem.temp_size_in_bytes}
  report["dry_run_s"] = time.perf_counter() - start
  _checked(fit, fp, report, show=True)
  return report


def state_footprint(state, frozen, batch_bytes: int) -> Footprint:
  """Per-device bytes of the train state, the frozen params and the step's float32 gradient
  accumulators (sharded like the trainable params), before compilation."""
  as_f32 = lambda t: jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, jnp.float32, sharding=x.sharding), t)
  return Footprint(params=tree_bytes(state.trainable) + tree_bytes(frozen), optimizer=tree_bytes(state.opt_state),
                   gradients=tree_bytes(as_f32(state.trainable)), batch=batch_bytes,
                   scalable=fsdp_bytes(state) + fsdp_bytes(frozen) + fsdp_bytes(as_f32(state.trainable)))


def _checked(fit, fp: Footprint, report: dict, show: bool = False) -> None:
  """fit(fp), with the sizes in `report` (also when it raises: PlanDoesNotFit.report), printed
  first when `show`."""
  report["bytes_per_device"] = {"params": fp.params, "optimizer": fp.optimizer, "gradients": fp.gradients,
                                "batch": fp.batch, "activations": fp.activations, "total": fp.total}
  if show:
    print(format_report(report))
  try:
    fit(fp)
  except PlanDoesNotFit as e:
    e.report = report
    raise


def format_report(r: dict) -> str:
  """A few lines for the terminal."""
  b = r["bytes_per_device"]
  gib = lambda n: f"{n / GIB:.2f} GiB"
  return "\n".join([
      f"{r['recipe']}: {r['plan']}; decoder {r['decoder_layers']} layers, {r['decoder_params'] / 1e9:.2f}B params; "
      f"{r['trainable_params'] / 1e9:.3f}B of {r['params'] / 1e9:.2f}B params train",
      f"mesh {r['mesh']} ({r['devices']} devices, {r['device']}: {r['device_source']}); global batch "
      f"{r['global_batch']} = {r['microbatches']} micro-batches x {r['per_device_batch']} rows/device; "
      f"{r['tokens_per_row']} tokens/row",
      f"per device: params {gib(b['params'])}, optimizer {gib(b['optimizer'])}, batch {gib(b['batch'])}, "
      f"activations+temporaries {gib(b['activations'])}; peak {gib(b['total'])} of {r['memory_limit_gib']:.1f} GiB",
      f"model FLOPs/step {r['flops_per_step']:.3e}; step time at {r['mfu']:.0%} MFU: {r['step_time_s']:.2f} s "
      f"(full-length rows); dry run took {r.get('dry_run_s', 0.0):.1f} s",
  ])
