"""The training program: one stage, on any mesh, resumable by rerunning the same command.

  python -m graft_jax.main --config=configs/<stage>.py [--config.init_from=runs/<previous stage>]

Start: the model and params of the stage (model_setup), the trainable split printed with counts,
AdamW + warmup/cosine, the shardings, and a restore of the run directory's latest checkpoint if
there is one (trainable params, optimizer state, data position). Loop: one jitted sharded step per
batch; metrics one step late (no host sync on the current step); periodic checkpoints; on SIGTERM
a checkpoint and exit code 75; a non-finite loss stops the run naming the step and its batch,
before any further checkpoint, so the last good one is intact. End: a final checkpoint and, for
stages that train the encoder side, the encoder package that grafting consumes. With `config.mix`
(train/mix.py) step s runs against surrogate s mod K, each with its own compiled step and frozen
decoder, all updating the one encoder state.
"""
from __future__ import annotations

import functools
import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from graft_jax.train import sharding
from graft_jax.train.checkpoint import (RunCheckpointer, export_encoder_package, run_metadata,
                                        target_identity)
from graft_jax.train.data_setup import make_train_iterator
from graft_jax.train.layout import make_layout
from graft_jax.train.lora import LoraConfig, apply_lora, trainable_rules
from graft_jax.train.loss import LossOptions
from graft_jax.train.metrics import MetricsWriter, ProgressBar
from graft_jax.train.mix import check_mix, mix_members
from graft_jax.train.model_setup import build_stage_model, tokenizer_fingerprint
from graft_jax.train.optimizer import make_optimizer, make_schedule
from graft_jax.train.partition import describe, merge, spec_strings, split
from graft_jax.train.paths import leaves_with_paths
from graft_jax.train.signals import preemption_guard
from graft_jax.train.stages import get_stage
from graft_jax.train.step import make_train_step
from graft_jax.models.vlm import VLM


class NonFiniteLossError(FloatingPointError):
  """The loss became NaN or infinite; the message names the step and the batch."""


def _loss_options(config, tokenizer) -> LossOptions:
  eot = tuple(i for i in (tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|eot_id|>"))
              if isinstance(i, int) and i != tokenizer.unk_token_id)
  return LossOptions(kl_weight=config.train.kl_weight, kl_rows=config.train.get("kl_rows", "all"),
                     dynamic_weights=config.train.dynamic_loss_weights,
                     end_of_turn_ids=eot if config.train.dynamic_loss_weights else ())


def _global_batch(batch: dict, batch_sharding) -> dict:
  """Per-host numpy batch -> global jax arrays on the batch sharding (works on 1 or many hosts)."""
  return {k: jax.make_array_from_process_local_data(batch_sharding, np.asarray(v)) for k, v in batch.items()}


def _check_finite(record: dict | None, batches: dict) -> None:
  if record is None or math.isfinite(record["loss"]):
    return
  step = record["step"]
  rows = batches.get(step)
  raise NonFiniteLossError(f"Loss is {record['loss']} at step {step} (records {rows} of the batch); "
                           "stopping without a further checkpoint: the last saved one is intact")


@jax.jit
def _all_finite(tree) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def _check_params_finite(trainable, step: int) -> None:
  if not bool(_all_finite(trainable)):
    raise NonFiniteLossError(f"Trainable parameters became non-finite at step {step}; stopping "
                             "without a further checkpoint: the last saved one is intact")


def train(config) -> dict:
  """Runs (or resumes) one stage; returns {"run_dir", "final_step", "last_metrics"}."""
  stage = get_stage(config.stage)
  setup = build_stage_model(config, stage)
  lora = LoraConfig.from_config(config.lora)
  spec = trainable_rules(setup.params, config.trainable, lora)  # "llm/.*" -> "lora/.*" with LoRA on
  print(f"stage {stage.name}: {setup.plan.describe() if setup.plan else 'full target'}")
  print(describe(setup.params, spec))

  schedule = make_schedule(config.train.lr, config.train.steps, config.train.warmup_ratio)
  optimizer = make_optimizer(schedule, weight_decay=config.train.weight_decay,
                             clip_norm=config.train.clip_norm, encoder_lr_mult=config.train.encoder_lr_mult)
  mesh = sharding.make_mesh(tuple((n, int(s)) for n, s in config.mesh))
  options = _loss_options(config, setup.tokenizer)
  teacher = teacher_params = None
  if options.kl_weight > 0:
    teacher = VLM(setup.model.vit, setup.llm_config, None, setup.model.projector_depth)
    teacher_params = {"llm": setup.target_llm}
  abstract_teacher = teacher_params and jax.eval_shape(lambda t: t, teacher_params)
  layout = make_layout(mesh, setup.params, spec, optimizer, abstract_teacher=abstract_teacher)
  trainable, frozen = split(setup.params, spec)
  check_mix(config, stage.decoder_only, [p for p, _ in leaves_with_paths(trainable)])
  state = layout.create_state(jax.device_put(trainable, layout.state.trainable), optimizer)
  frozen = jax.device_put(frozen, layout.frozen)
  if teacher_params is not None:
    teacher_params = jax.device_put(teacher_params, layout.teacher)
  make_step = functools.partial(
      make_train_step, optimizer=optimizer, options=options, num_microbatches=config.train.microbatches,
      decoder_only=stage.decoder_only, pad_id=setup.llm_config.pad_token_id or 0, schedule=schedule,
      teacher=teacher, params_transform=functools.partial(apply_lora, cfg=lora) if lora.enabled else None,
      image_noise=float(config.train.get("image_noise", 0.0)), noise_seed=config.train.seed,
      embed_penalty=float(config.train.get("embed_penalty", 0.0)))
  routes = [(make_step(setup.model, layout), frozen)]  # (step, frozen tree) of each surrogate
  for member in mix_members(config, setup):
    member_layout = make_layout(mesh, member.params, spec, optimizer, abstract_teacher=abstract_teacher)
    routes.append((make_step(member.model, member_layout),
                   jax.device_put(split(member.params, spec)[1], member_layout.frozen)))
    print(f"mix: surrogate {len(routes) - 1} is {member.plan.describe()}")

  iterator, skips = make_train_iterator(config, stage, setup.tokenizer, setup.model.image_len)
  metadata = run_metadata(config, setup.plan, stage.name, spec_strings(spec))
  os.makedirs(config.run_dir, exist_ok=True)
  checkpointer = RunCheckpointer(os.path.join(config.run_dir, "checkpoints"),
                                 config.checkpoint.keep_last, config.checkpoint.save_every)
  start = checkpointer.latest_step() or 0
  if start:
    abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, layout.state)
    state, iterator_state, _ = checkpointer.restore(abstract, metadata)
    iterator.set_state(iterator_state)
    print(f"resumed {config.run_dir} at step {start}")

  total = config.train.steps
  writer = MetricsWriter(config.run_dir)
  progress = ProgressBar(total, initial=start, desc=stage.name)
  batch_rows: dict[int, list[int]] = {}
  last = None
  with checkpointer:  # closing waits for pending saves, also when the run stops on an error
    with preemption_guard() as preempted:
      tick = time.perf_counter()
      for step in range(start, total):
        batch = next(iterator)
        batch_rows[step + 1] = batch["record_index"].tolist()
        tokens = int(batch["valid"].sum())
        step_fn, route_frozen = routes[step % len(routes)]
        state, metrics = step_fn(state, route_frozen, _global_batch(batch, layout.batch), teacher_params)
        now = time.perf_counter()
        extra = {"surrogate": step % len(routes)} if len(routes) > 1 else {}
        record = writer.write(step + 1, {**metrics, **extra, "step_time_s": now - tick,
                                         "tokens_per_s": tokens / max(now - tick, 1e-9)})
        tick = now
        _check_finite(record, batch_rows)
        progress.update(record)
        last = record or last
        batch_rows.pop(step, None)
        if checkpointer.should_save(step + 1) or preempted.requested:
          # Only a state whose own loss and parameters are finite is saved: wait for this step.
          record = writer.flush()
          _check_finite(record, batch_rows)
          _check_params_finite(state.trainable, step + 1)
          last = record or last
          checkpointer.save(step + 1, state, iterator.get_state(), metadata, force=preempted.requested)
        if preempted.requested:
          writer.close()
          print(preempted.message(step + 1))
          sys.exit(preempted.exit_code)
      final = writer.close()
      _check_finite(final, batch_rows)
      last = final or last
    progress.close()
    _check_params_finite(state.trainable, total)
    checkpointer.save(total, state, iterator.get_state(), metadata, force=True)
  if skips.total:
    logging.warning("Training data skips: %s", skips.summary())
  if not stage.decoder_only:
    _export_package(config, setup, state, frozen)
  return {"run_dir": config.run_dir, "final_step": total, "last_metrics": last}


def _export_package(config, setup, state, frozen) -> None:
  """The encoder side (encoder, adapter, start/end of image) as grafting's input."""
  path = os.path.join(config.run_dir, "encoder_package")
  if os.path.exists(path):
    logging.info("%s exists; not overwritten", path)
    return
  params = jax.device_get(merge(state.trainable, frozen))
  identity = target_identity(setup.llm_config, tokenizer_fingerprint(setup.tokenizer), config.model.preset)
  export_encoder_package(path, {"img": params["img"], "proj": params["proj"]}, {
      "target": identity, "plan": setup.plan.to_dict() if setup.plan else None,
      **({"mix": [list(map(list, entry[0])) for entry in config.mix]} if config.get("mix") else {}),
      "encoder_config": config.vit.to_dict(), "stage": config.stage})
  print(f"encoder package written to {path}")
