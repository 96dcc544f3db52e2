"""LoRA adapters on the decoder (train/lora.py): init and fold-in, the step trains only the
adapters, the sharding rules cover them, and bad targets / rules / stages raise."""
import functools

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from graft_jax.config_lib import train_config
from graft_jax.train import sharding
from graft_jax.train.batch import expand_batch
from graft_jax.train.layout import make_layout
from graft_jax.train.lora import PROJECTIONS, LoraConfig, apply_lora, init_lora, target_paths, trainable_rules
from graft_jax.train.model_setup import build_stage_model
from graft_jax.train.optimizer import make_optimizer
from graft_jax.train.partition import merge, split
from graft_jax.train.paths import leaves_with_paths
from graft_jax.train.stages import get_stage
from graft_jax.train.step import logits_fn, make_train_step
from tests.train_setup import make_batch, setup

CFG = LoraConfig(rank=4, alpha=8.0, targets=("q_proj", "v_proj"))
LORA_SPEC = ("lora/.*",)
ADAM = make_optimizer(1e-2)
MESH_AXES = (("data", 1), ("fsdp", 2), ("tensor", 2))


@functools.lru_cache(maxsize=None)
def lora_params() -> tuple:
  """(full-target VLM, its params with a fresh "lora" subtree: A random, B zero), numpy."""
  _, target_model, _, target = setup()
  return target_model, {**target, "lora": jax.tree.map(np.asarray, init_lora(target, CFG, jax.random.key(1)))}


@functools.lru_cache(maxsize=None)
def trained(steps: int = 5) -> tuple[list[float], dict]:
  """Losses of `steps` LoRA-only AdamW steps on one fixed batch (fsdp 2 x tensor 2), final params."""
  model, params = lora_params()
  mesh = sharding.make_mesh(MESH_AXES, jax.devices()[:4])
  layout = make_layout(mesh, params, LORA_SPEC, ADAM)
  step = make_train_step(model, layout, ADAM, params_transform=functools.partial(apply_lora, cfg=CFG))
  trainable, frozen = split(params, LORA_SPEC)
  state, frozen = layout.place(layout.create_state(trainable, ADAM), frozen)
  batch, losses = make_batch(0), []
  for _ in range(steps):
    state, metrics = step(state, frozen, batch)
    losses.append(float(metrics["loss"]))
  return losses, jax.tree.map(np.asarray, merge(state.trainable, frozen))


def test_init_shapes_and_zero_b_reproduce_the_base_logits_exactly():
  model, params = lora_params()
  lora = params["lora"]
  assert set(lora["segments"]["blocks_0"]["attn"]) == {"q_proj", "v_proj"}
  for name in ("q_proj", "v_proj"):
    kernel = params["llm"]["segments"]["blocks_0"]["attn"][name]["kernel"]  # [4, 32, out]
    a, b = lora["segments"]["blocks_0"]["attn"][name]["a"], lora["segments"]["blocks_0"]["attn"][name]["b"]
    assert a.shape == kernel.shape[:2] + (4,) and b.shape == (4, 4, kernel.shape[2])
    assert a.dtype == b.dtype == kernel.dtype
    assert np.all(b == 0) and 0 < np.abs(a).max() <= 1 / np.sqrt(kernel.shape[1]) and a.std() > 0
  regex = r"llm/segments/[^/]+/attn/(q|v)_proj/kernel"
  assert target_paths(params, [regex]) == target_paths(params, ["q_proj", "v_proj"])

  batch = expand_batch(make_batch(0), model.image_len)
  logits = logits_fn(model, decoder_only=False)
  base = jax.jit(logits)(setup()[3], batch)
  with_lora = jax.jit(lambda p, b: logits(apply_lora(p, CFG), b))(params, batch)
  np.testing.assert_array_equal(np.asarray(with_lora), np.asarray(base))


def test_merged_kernel_is_w_plus_scaled_a_times_b():
  _, params = lora_params()
  rng = np.random.default_rng(0)
  lora = jax.tree.map(lambda x: rng.normal(size=x.shape).astype(np.float32) * 0.1, params["lora"])
  merged = apply_lora({**params, "lora": lora}, CFG)
  assert "lora" not in merged
  base = dict(leaves_with_paths(params["llm"]))
  for path, new in leaves_with_paths(merged["llm"]):
    name = path.split("/")[-2]
    if name in ("q_proj", "v_proj"):
      f = lora["segments"]["blocks_0"]["attn"][name]
      ref = base[path].astype(np.float64) + (8.0 / 4) * np.einsum(
          "lir,lro->lio", f["a"].astype(np.float64), f["b"].astype(np.float64))
      np.testing.assert_allclose(np.asarray(new), ref, rtol=1e-5, atol=1e-6, err_msg=path)
      assert not np.allclose(np.asarray(new), base[path]), path
    else:
      np.testing.assert_array_equal(np.asarray(new), base[path], err_msg=path)


def test_lora_step_trains_only_the_adapters_and_reduces_the_loss():
  losses, after = trained()
  assert all(np.isfinite(losses))
  assert all(b < a for a, b in zip(losses, losses[1:])), losses
  _, before = lora_params()
  before = dict(leaves_with_paths(before))
  changed = []
  for path, new in leaves_with_paths(after):
    if path.startswith("lora/"):
      changed.append(path)
      assert not np.array_equal(new, before[path]), path  # A too: B != 0 after the first step
    else:
      np.testing.assert_array_equal(new, before[path], err_msg=path)
  assert len(changed) == 4


def test_sharding_rules_cover_every_projection_like_its_kernel():
  _, _, _, target = setup()
  params = {**target, "lora": init_lora(target, LoraConfig(2, targets=PROJECTIONS), jax.random.key(0))}
  mesh = sharding.make_mesh(MESH_AXES, jax.devices()[:4])
  specs = dict(leaves_with_paths(sharding.param_specs(params, sharding.DEFAULT_PARAM_RULES, mesh)))
  seg = "lora/segments/blocks_0"
  assert specs[f"{seg}/attn/q_proj/a"] == P(None, "fsdp", None)
  assert specs[f"{seg}/attn/q_proj/b"] == P(None, None, "tensor")
  assert specs[f"{seg}/mlp/down_proj/a"] == P(None, "tensor", None)
  assert specs[f"{seg}/mlp/down_proj/b"] == P(None, None, "fsdp")
  assert len([p for p in specs if p.startswith("lora/")]) == 2 * len(PROJECTIONS)


def test_trainable_rules_swap_the_decoder_for_the_adapters():
  _, params = lora_params()
  stage3 = get_stage("finetune_decoder").trainable
  assert trainable_rules(params, stage3, LoraConfig()) == list(stage3)  # off: unchanged
  assert trainable_rules(params, stage3, CFG) == ["lora/.*", *stage3[1:]]
  with pytest.raises(ValueError, match="train no adapter"):
    trainable_rules(params, ("proj/.*",), CFG)
  with pytest.raises(ValueError, match="adapted kernel llm/segments/blocks_0/attn/q_proj/kernel"):
    trainable_rules(params, ("lora/.*", "llm/segments/.*"), CFG)


def test_bad_targets_configs_and_stages_raise():
  _, _, _, target = setup()
  key = jax.random.key(0)
  with pytest.raises(ValueError, match="'qkv_proj' matches no decoder projection kernel"):
    init_lora(target, LoraConfig(4, targets=("q_proj", "qkv_proj")), key)
  with pytest.raises(ValueError, match="matches llm/embed/embedding, which is not a stacked"):
    init_lora(target, LoraConfig(4, targets=("llm/embed/.*",)), key)
  with pytest.raises(ValueError, match="not a valid regex"):
    init_lora(target, LoraConfig(4, targets=("llm/(",)), key)
  with pytest.raises(ValueError, match="rank must be an int >= 0"):
    LoraConfig(-1)
  with pytest.raises(ValueError, match="no 'lora' subtree"):
    apply_lora(target, CFG)
  config = train_config("pretrain")
  config.lora.rank = 8
  with pytest.raises(ValueError, match="only stage finetune_decoder trains, not 'pretrain'"):
    build_stage_model(config, get_stage("pretrain"))
