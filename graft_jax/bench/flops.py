"""Model FLOPs of one training step, from shapes and the trainable split (for MFU).

Convention (design.md "Performance habits"), per token a weight matrix with N parameters sees:

  6N  if it trains (forward 2N, input gradient 2N, weight gradient 2N);
  4N  if it is frozen but gradients flow through it (forward + input gradient), i.e. something
      upstream of it trains (a frozen decoder in stage 2: the loss reaches the encoder through it);
  2N  if it is frozen and nothing upstream trains (forward only: the layers below the translator).

Attention (no parameters) costs 4 * heads * head_dim * context FLOPs per query token forward (QK^T
and AV); context is (T + 1) / 2 for the causal decoder (the mean, as in graft_jax/cost.py) and N
for the bidirectional ViT. It counts 3x (forward + backward) where gradients flow, 1x elsewhere.
Only matmul weights count (kernels, the LM head or the tied embedding used as one); norms,
biases, embedding lookups and the optimizer update are left out, as MFU conventions do. The LM
head counts at `head_tokens` positions per step: the supervised ones (where the loss needs logits).

Order of computation, for "upstream": patch embedding -> ViT layers -> post-LN -> adapter ->
token embedding -> decoder layers in segment order -> final norm -> LM head.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from graft_jax.models.config import LlamaConfig, Segments, full_segments
from graft_jax.models.vit import VitConfig
from graft_jax.train.partition import select
from graft_jax.train.paths import leaves_with_paths

FORMULA = ("step FLOPs = sum over weight matrices of k * N * tokens (k = 6 trainable, 4 frozen with "
           "gradients flowing through, 2 frozen forward-only) + attention 4 * heads * head_dim * "
           "context per query token (context (T+1)/2 causal, N_img bidirectional), x3 where gradients "
           "flow; LM head at the supervised positions only")


@dataclasses.dataclass(frozen=True)
class StepFlops:
  """total: model FLOPs of one step; parts: the same split by {vision, projector, decoder,
  decoder_attention, vision_attention, head}; decoder_tokens: B * T positions through the decoder."""
  total: float
  parts: dict
  decoder_tokens: int


@dataclasses.dataclass
class _Unit:
  name: str
  tokens: float                  # positions this unit's matmuls see per step
  attention_fwd: float = 0.0     # forward attention FLOPs per step
  trainable_params: int = 0      # matmul parameters that train
  frozen_params: int = 0         # matmul parameters that don't
  any_trainable: bool = False    # any parameter of the unit trains (norms, embeddings included)
  active: bool = True            # False: not run in this step (the vision side of text-only rows)


def _is_matmul(path: str) -> bool:
  return path.endswith("/kernel") or path.endswith("/embedding")


def _units(params, selection, llm: LlamaConfig, segments: Segments, vit: VitConfig | None, batch: int,
           seq_len: int, images: int, head_tokens: int) -> list[_Unit]:
  """The ordered units of computation with their parameter counts filled in."""
  units: dict[str, _Unit] = {}
  order: list[str] = []

  def unit(name, tokens=0.0, attention=0.0, active=True):
    if name not in units:
      units[name] = _Unit(name, tokens, attention, active=active)
      order.append(name)
    return units[name]

  if vit is not None:
    active = images > 0  # without images the vision side does not run (nor pass gradients on)
    for name in ("img/embed", *(f"img/blocks/{i}" for i in range(vit.depth)), "img/post_ln", "proj"):
      unit(name, active=active)
    units["img/embed"].tokens = images * vit.num_patches
    for i in range(vit.depth):
      units[f"img/blocks/{i}"].tokens = images * vit.num_tokens
      units[f"img/blocks/{i}"].attention_fwd = images * 4 * vit.width * vit.num_tokens ** 2
    units["proj"].tokens = images * vit.num_tokens
  unit("llm/embed")
  causal = 4 * llm.num_heads * llm.head_dim * batch * seq_len * (seq_len + 1) / 2
  for name, n in segments:
    for i in range(n):
      unit(f"llm/segments/{name}/{i}", batch * seq_len, causal)
  unit("llm/final_norm")
  unit("llm/head", head_tokens)

  def add(name, size, trains, matmul):
    u = units[name]
    u.any_trainable |= trains
    if matmul:
      if trains:
        u.trainable_params += size
      else:
        u.frozen_params += size

  for path, leaf in leaves_with_paths(params):
    size, s = int(np.prod(leaf.shape)), selection[path]
    parts = path.split("/")
    if parts[0] == "img":
      if parts[1] == "blocks":
        per_layer = size // leaf.shape[0]
        for i in range(leaf.shape[0]):
          trains = s == "all" or (isinstance(s, tuple) and s[0] <= i < s[1])
          add(f"img/blocks/{i}", per_layer, trains, _is_matmul(path))
      else:
        add("img/post_ln" if parts[1] == "post_ln" else "img/embed", size, s is not None,
            parts[1] == "patch_embed" and parts[-1] == "kernel")
    elif parts[0] == "proj":
      add("proj", size, s is not None, _is_matmul(path))
    elif parts[0] == "llm" and parts[1] == "segments":
      per_layer = size // leaf.shape[0]
      for i in range(leaf.shape[0]):
        trains = s == "all" or (isinstance(s, tuple) and s[0] <= i < s[1])
        add(f"llm/segments/{parts[2]}/{i}", per_layer, trains, _is_matmul(path))
    elif parts[0] == "llm" and parts[1] == "embed":
      add("llm/embed", size, s is not None, False)
      if llm.tie_word_embeddings:  # the embedding is also the LM head
        add("llm/head", size, s is not None, True)
    elif parts[0] == "llm" and parts[1] == "head":
      add("llm/head", size, s is not None, True)
    elif parts[0] == "llm":
      add("llm/final_norm", size, s is not None, False)
    else:
      raise ValueError(f"train_step_flops: no unit for parameter {path}")
  return [units[n] for n in order]


def train_step_flops(params, spec: Sequence, llm: LlamaConfig, *, segments: Segments | None = None,
                     vit: VitConfig | None = None, batch: int, seq_len: int, images: int = 0,
                     head_tokens: int) -> StepFlops:
  """Model FLOPs of one training step (module docstring).

  params: the stage's whole params tree ({"llm"} or {"img", "proj", "llm"}; arrays or
    ShapeDtypeStructs); spec: its trainable rules (train/partition.py); segments: the decoder's
    layout (None: the full target); vit: None for text-only steps; batch x seq_len: decoder
    positions (image slots included); images: images encoded per step (0: the vision side does
    not run, even if `params` holds it); head_tokens: positions at which the step needs logits
    (the supervised targets).
  """
  if batch < 1 or seq_len < 1 or images < 0 or head_tokens < 0:
    raise ValueError(f"Bad step shape: batch={batch}, seq_len={seq_len}, images={images}, "
                     f"head_tokens={head_tokens}")
  units = _units(params, select(params, spec), llm, segments or full_segments(llm), vit, batch, seq_len,
                 images, head_tokens)
  parts = {k: 0.0 for k in ("vision", "vision_attention", "projector", "decoder", "decoder_attention", "head")}
  upstream = False
  for u in units:
    if not u.active:
      continue
    flowing = upstream or u.any_trainable
    matmul = 2 * u.tokens * (3 * u.trainable_params + (2 if upstream else 1) * u.frozen_params)
    attention = u.attention_fwd * (3 if flowing else 1)
    if u.name.startswith("img/"):
      parts["vision"] += matmul
      parts["vision_attention"] += attention
    elif u.name == "proj":
      parts["projector"] += matmul
    elif u.name == "llm/head":
      parts["head"] += matmul
    else:
      parts["decoder"] += matmul
      parts["decoder_attention"] += attention
    upstream = flowing
  return StepFlops(total=float(sum(parts.values())), parts=parts, decoder_tokens=batch * seq_len)


def mfu(step_flops: float, step_time_s: float, peak_flops: float) -> float:
  """Model FLOPs utilisation: achieved model FLOP/s over the hardware's peak FLOP/s."""
  if step_time_s <= 0 or peak_flops <= 0:
    raise ValueError(f"Need step_time_s > 0 and peak_flops > 0, got {step_time_s}, {peak_flops}")
  return step_flops / step_time_s / peak_flops
