"""LoRA adapters on the decoder's projection kernels: the paper's cheaper baseline for stage 3
(`finetune_decoder`), where the full target's decoder otherwise trains whole.

  cfg = LoraConfig(rank=8, alpha=16.0, targets=("q_proj", "v_proj"))
  params = {**params, "lora": init_lora(params, cfg, jax.random.key(0))}
  step = make_train_step(..., params_transform=functools.partial(apply_lora, cfg=cfg))

A target is a projection name ("q_proj", ..., "down_proj": that projection in every decoder
segment) or a regex fully matching kernel paths, e.g. r"llm/segments/[^/]+/attn/(q|v)_proj/kernel".
For each targeted stacked kernel W float[L, in, out] at `llm/segments/<seg>/<attn|mlp>/<name>/kernel`
the adapter is A float[L, in, r] (peft's default init: kaiming-uniform, U(-1/sqrt(in), 1/sqrt(in)))
and B float[L, r, out] (zeros, so training starts from the base model), stored under the kernel's
path without "llm/" and "/kernel": params["lora"]["segments"][<seg>]["attn"]["q_proj"] = {"a", "b"}.
Their paths (`lora/segments/<seg>/...`) are stacked like the kernels', so layer-sliced partition
rules and the sharding rules' unsharded layer axis apply to them as well.

`apply_lora` runs inside the jitted step after `merge`: each targeted kernel becomes
W + (alpha / r) * A @ B and the "lora" subtree is dropped, so the model sees a plain params tree.
Gradients reach A and B when the trainable rules select "lora/.*" while the kernels stay frozen.
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp

from graft_jax.train.partition import select
from graft_jax.train.paths import leaves_with_paths

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_KERNEL = re.compile(r"llm/(?P<where>segments/[^/]+/(attn|mlp)/(?P<name>[^/]+))/kernel")
_NAME = re.compile(r"\w+")
DECODER_RULE = "llm/.*"
LORA_RULE = "lora/.*"


@dataclasses.dataclass(frozen=True)
class LoraConfig:
  """rank 0 = off. targets: projection names or regexes over kernel paths (module docstring)."""
  rank: int = 0
  alpha: float = 16.0
  targets: tuple[str, ...] = ("q_proj", "v_proj")

  def __post_init__(self):
    if not isinstance(self.rank, int) or self.rank < 0:
      raise ValueError(f"lora.rank must be an int >= 0 (0 = off), got {self.rank!r}")
    if self.rank and not self.targets:
      raise ValueError(f"lora.rank={self.rank} with no lora.targets: nothing to adapt")

  @classmethod
  def from_config(cls, cfg: Mapping[str, Any]) -> "LoraConfig":
    """From the config's `lora` block {"rank", "alpha", "targets"}."""
    targets = cfg["targets"]
    return cls(int(cfg["rank"]), float(cfg["alpha"]), (targets,) if isinstance(targets, str) else tuple(targets))

  @property
  def enabled(self) -> bool:
    return self.rank > 0

  @property
  def scale(self) -> float:
    return self.alpha / self.rank


def target_paths(params: Mapping, targets: Sequence[str]) -> list[str]:
  """The kernel paths ("llm/segments/<seg>/<attn|mlp>/<name>/kernel", stacked [L, in, out]) that
  `targets` select, in tree order. A target that selects nothing, a regex that also matches a
  leaf that is not such a kernel, or an invalid regex is an error naming the target."""
  leaves = leaves_with_paths({"llm": params["llm"]})  # never the adapters themselves
  chosen = set()
  for target in targets:
    if _NAME.fullmatch(target):
      hits = [p for p, _ in leaves if (m := _KERNEL.fullmatch(p)) and m["name"] == target]
    else:
      try:
        regex = re.compile(target)
      except re.error as e:
        raise ValueError(f"LoRA target {target!r} is not a valid regex: {e}") from None
      matched = [(p, x) for p, x in leaves if regex.fullmatch(p)]
      hits = [p for p, _ in matched]
      bad = [p for p, x in matched if not (_KERNEL.fullmatch(p) and len(x.shape) == 3)]
      if bad:
        raise ValueError(f"LoRA target {target!r} matches {bad[0]}, which is not a stacked decoder "
                         "projection kernel (llm/segments/<segment>/<attn|mlp>/<name>/kernel)")
    if not hits:
      raise ValueError(f"LoRA target {target!r} matches no decoder projection kernel; give names from "
                       f"{PROJECTIONS} or regexes over paths such as "
                       r"'llm/segments/[^/]+/attn/(q|v)_proj/kernel'")
    chosen.update(hits)
  return [p for p, _ in leaves if p in chosen]


def init_lora(params: Mapping, cfg: LoraConfig, rng: jax.Array) -> dict:
  """The "lora" subtree for `params` (which hold "llm"): {"segments": {<seg>: {<attn|mlp>:
  {<name>: {"a": [L, in, r], "b": [L, r, out]}}}}} in each kernel's dtype, A kaiming-uniform and
  B zero."""
  if not cfg.enabled:
    raise ValueError("init_lora needs lora.rank > 0")
  flat = dict(leaves_with_paths(params))
  tree: dict = {}
  for i, path in enumerate(target_paths(params, cfg.targets)):
    kernel = flat[path]
    layers, d_in, d_out = kernel.shape
    bound = 1.0 / math.sqrt(d_in)
    a = jax.random.uniform(jax.random.fold_in(rng, i), (layers, d_in, cfg.rank), kernel.dtype, -bound, bound)
    node = tree
    for key in _KERNEL.fullmatch(path)["where"].split("/"):
      node = node.setdefault(key, {})
    node.update(a=a, b=jnp.zeros((layers, cfg.rank, d_out), kernel.dtype))
  return tree


def apply_lora(params: Mapping, cfg: LoraConfig) -> dict:
  """`params` without "lora", each adapted kernel W [L, in, out] replaced by
  W + (alpha / r) * A @ B (the product per layer in float32, cast to W's dtype). Traceable."""
  if "lora" not in params:
    raise ValueError("apply_lora: the params have no 'lora' subtree (see init_lora)")

  def fold(base, factors, path):
    if "a" in factors and "b" in factors and not isinstance(factors["a"], Mapping):
      a, b, w = factors["a"], factors["b"], base.get("kernel") if isinstance(base, Mapping) else None
      if w is None or a.shape[-1] != cfg.rank or w.shape != (a.shape[0], a.shape[1], b.shape[-1]):
        raise ValueError(f"LoRA factors at lora/{path} {a.shape} x {b.shape} (rank {cfg.rank}) do not "
                         f"fit llm/{path}/kernel {None if w is None else w.shape}")
      delta = jnp.einsum("lir,lro->lio", a, b, precision=jax.lax.Precision.HIGHEST,
                         preferred_element_type=jnp.float32)
      return {**base, "kernel": w + (cfg.scale * delta).astype(w.dtype)}
    out = dict(base)
    for key, sub in factors.items():
      sub_path = f"{path}/{key}" if path else key
      if key not in base:
        raise ValueError(f"LoRA factors at lora/{sub_path} have no decoder counterpart llm/{sub_path}")
      out[key] = fold(base[key], sub, sub_path)
    return out

  rest = {k: v for k, v in params.items() if k != "lora"}
  return {**rest, "llm": fold(rest["llm"], params["lora"], "")}


def trainable_rules(params: Mapping, spec: Sequence, cfg: LoraConfig) -> list:
  """The partition rules of a run: `spec` itself when LoRA is off; with it on, the rule "llm/.*"
  (train the whole decoder) becomes "lora/.*" (train the adapters), then checks on `params` (with
  their "lora" subtree) that some adapter trains and that no adapted kernel does."""
  spec = list(spec)
  if not cfg.enabled:
    return spec
  spec = [LORA_RULE if rule == DECODER_RULE else rule for rule in spec]
  selection = select(params, spec)
  if all(s is None for p, s in selection.items() if p.startswith("lora/")):
    raise ValueError(f"LoRA is on (lora.rank={cfg.rank}) but the trainable rules {spec} train no "
                     f"adapter; add {LORA_RULE!r}")
  adapted = [p for p in target_paths(params, cfg.targets) if selection[p] is not None]
  if adapted:
    raise ValueError(f"LoRA is on but the trainable rules {spec} also train the adapted kernel "
                     f"{adapted[0]}; train {LORA_RULE!r} and leave the decoder frozen")
  return spec
