"""The stage-2 training step written the way the authors' PyTorch code does it, as a reference.

transformers' LlamaForCausalLM (frozen, requires_grad False; for a surrogate its `model.layers`
list is cut to the kept layers, as the reference does), fed `inputs_embeds`; a transformers
CLIPVisionModel with the encoder's shapes (last layer, post-layernorm on every token) and a
Linear -> GELU -> Linear adapter with start/end-of-image embeddings; the image embeddings are
concatenated into each row's token embeddings; logits over the whole sequence; loss = mean
cross-entropy over the supervised targets of the batch; AdamW after clipping at 1.0.

  ref = TorchVLM.build(vit_config, llm, plan=plan, seed=0)
  jax_encoder = ref.jax_encoder_params()     # the same encoder/adapter weights as graft_jax params
  step = ref.make_step(lr=1e-4)
  loss = step(expanded_layout(batch, image_len), batch["images"])
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaForCausalLM

from graft_jax.convert.vision import convert_state_dict
from graft_jax.models.vit import VitConfig
from graft_jax.surrogate import SurrogatePlan


class TorchProjector(nn.Module):
  """[B, N, E] -> [B, N + 2, D]: soi, Linear(E, D) -> GELU -> Linear(D, D), eoi."""

  def __init__(self, enc_dim: int, dim: int):
    super().__init__()
    self.fc1, self.act, self.fc2 = nn.Linear(enc_dim, dim), nn.GELU(), nn.Linear(dim, dim)
    self.soi = nn.Parameter(torch.randn(dim) * dim ** -0.5)
    self.eoi = nn.Parameter(torch.randn(dim) * dim ** -0.5)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = self.fc2(self.act(self.fc1(x)))
    b, _, d = x.shape
    return torch.cat([self.soi.expand(b, 1, d), x, self.eoi.expand(b, 1, d)], dim=1)


def clip_vision_config(vit: VitConfig) -> CLIPVisionConfig:
  if vit.variant != "clip":
    raise ValueError(f"The reference encoder is CLIP-style; got variant {vit.variant!r}")
  return CLIPVisionConfig(hidden_size=vit.width, intermediate_size=vit.mlp_dim, num_hidden_layers=vit.depth,
                          num_attention_heads=vit.heads, image_size=vit.image_size, patch_size=vit.patch_size,
                          hidden_act={"quick_gelu": "quick_gelu", "gelu": "gelu",
                                      "gelu_tanh": "gelu_pytorch_tanh"}[vit.activation],
                          layer_norm_eps=vit.layer_norm_eps, num_channels=3)


def cut_to_surrogate(llm: LlamaForCausalLM, plan: SurrogatePlan) -> LlamaForCausalLM:
  """Deletes the plan's dropped layers from `llm.model.layers` in place (the translator is the
  kept layer a, as initialised); returns `llm`."""
  keep = [i for _, _, layers in plan.layout() for i in layers]
  llm.model.layers = nn.ModuleList([llm.model.layers[i] for i in keep])
  llm.config.num_hidden_layers = len(keep)
  return llm


class TorchVLM(nn.Module):
  """CLIP vision tower -> adapter -> LlamaForCausalLM; stage 2 trains the adapter, soi/eoi, the
  encoder's last `train_last` layers and its post-layernorm."""

  def __init__(self, vision: CLIPVisionModel, projector: TorchProjector, llm: LlamaForCausalLM,
               vit: VitConfig, train_last: int = 8):
    super().__init__()
    self.vision, self.projector, self.llm, self.vit = vision, projector, llm, vit
    for p in self.parameters():
      p.requires_grad_(False)
    tower = getattr(vision, "vision_model", vision)
    for module in [*tower.encoder.layers[-train_last:], tower.post_layernorm, projector]:
      for p in module.parameters():
        p.requires_grad_(True)

  @classmethod
  def build(cls, vit: VitConfig, llm: LlamaForCausalLM, plan: SurrogatePlan | None = None, seed: int = 0,
            train_last: int = 8) -> "TorchVLM":
    """Random encoder and adapter (seeded); `llm` is cut to `plan`'s surrogate if one is given."""
    torch.manual_seed(seed)
    vision = CLIPVisionModel(clip_vision_config(vit)).float()
    projector = TorchProjector(vit.width, llm.config.hidden_size)
    if plan is not None:
      llm = cut_to_surrogate(llm, plan)
    if any(p.dtype != torch.float32 for p in llm.parameters()):
      raise ValueError("The reference decoder must be float32 (load it with dtype=torch.float32)")
    return cls(vision, projector, llm.train(), vit, train_last)

  def image_embeddings(self, images: torch.Tensor) -> torch.Tensor:
    """float[B, H, W, 3] -> float[B, N + 2, D]."""
    tower = getattr(self.vision, "vision_model", self.vision)
    hidden = self.vision(pixel_values=images.permute(0, 3, 1, 2)).last_hidden_state
    return self.projector(tower.post_layernorm(hidden))

  def forward(self, tokens: torch.Tensor, images: torch.Tensor, image_pos: list[int]) -> torch.Tensor:
    """tokens int64[B, T] (image slot expanded) -> logits float[B, T, V] over the whole sequence."""
    embeds = self.llm.get_input_embeddings()(tokens)
    image = self.image_embeddings(images)
    m = image.shape[1]
    rows = [torch.cat([embeds[b, :p], image[b], embeds[b, p + m:]]) for b, p in enumerate(image_pos)]
    inputs = torch.stack(rows)
    mask = torch.ones(inputs.shape[:2], dtype=torch.long)
    return self.llm(inputs_embeds=inputs, attention_mask=mask, use_cache=False).logits

  def trainable_parameters(self) -> list[nn.Parameter]:
    return [p for p in self.parameters() if p.requires_grad]

  def jax_encoder_params(self) -> dict:
    """{"img", "proj"}: this encoder and adapter as graft_jax params (numpy, float32)."""
    state = {k: v.detach().numpy() for k, v in self.vision.state_dict().items()}
    t = lambda x: x.detach().numpy().astype(np.float32)
    proj = {"fc1": {"kernel": t(self.projector.fc1.weight).T, "bias": t(self.projector.fc1.bias)},
            "fc2": {"kernel": t(self.projector.fc2.weight).T, "bias": t(self.projector.fc2.bias)},
            "soi": t(self.projector.soi), "eoi": t(self.projector.eoi)}
    return {"img": convert_state_dict(state, self.vit), "proj": proj}

  def make_step(self, lr: float = 1e-4, clip_norm: float = 1.0) -> Callable[[dict, np.ndarray], float]:
    """(expanded_layout(batch), images float32[B, S, S, 3]) -> the step's loss (before the update)."""
    params = self.trainable_parameters()
    optimizer = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)

    def step(layout: dict, images: np.ndarray) -> float:
      tokens = torch.from_numpy(layout["tokens"])
      targets = torch.from_numpy(layout["targets"])
      supervised = torch.from_numpy(layout["supervised"])
      logits = self(tokens, torch.from_numpy(images), [int(p) for p in layout["image_pos"]])
      loss = nn.functional.cross_entropy(logits[:, :-1][supervised], targets[supervised])
      optimizer.zero_grad(set_to_none=True)
      loss.backward()
      torch.nn.utils.clip_grad_norm_(params, clip_norm)
      optimizer.step()
      return float(loss.detach())

    return step
