"""Answer one question about one image with a trained encoder, on the surrogate or grafted zero-shot
onto the full target (the evaluation prompt: the first image-prompt phrase, greedy by default)."""
from __future__ import annotations

import ml_collections
import numpy as np

from graft_jax.data.images import load_image, preprocess_image
from graft_jax.data.templates import encode_conversation
from graft_jax.evaluate.vlm_generation import generate_vlm
from graft_jax.graft import graft_package, load_package_for
from graft_jax.models.vlm import VLM
from graft_jax.surrogate import SurrogatePlan, make_surrogate
from graft_jax.tasks.generate import end_token_ids
from graft_jax.tasks.model_loading import load_from_config
from graft_jax.train.model_setup import load_previous_stage, vit_from_config


def vlm_for(config, target, llm_config, tokenizer) -> tuple[VLM, dict, str]:
  """(model, params, description) for `config.decoder`: "target" (the zero-shot graft of the
  package) or "surrogate" (the package on the surrogate whose translator `surrogate_from` trained)."""
  if config.decoder == "target":
    params, meta = graft_package(target, llm_config, tokenizer, config.package)
    plan, described = None, "full target (zero-shot graft)"
  elif config.decoder == "surrogate":
    encoder, meta = load_package_for(config.package, llm_config, tokenizer)
    if meta["plan"] is None:
      raise ValueError(f"{config.package} was trained on the full target; there is no surrogate to use")
    plan = SurrogatePlan.from_dict(meta["plan"])
    params = {**encoder, "llm": make_surrogate(target, plan)}
    if config.surrogate_from:  # stage 1 (translator and all), then stage 2's encoder side on top
      params = {**load_previous_stage(params, plan, config.surrogate_from), **encoder}
    described = f"surrogate ({plan.describe()})"
  else:
    raise ValueError(f"decoder must be 'target' or 'surrogate', got {config.decoder!r}")
  vit = vit_from_config(ml_collections.ConfigDict(meta["encoder_config"]))
  model = VLM(vit, llm_config, plan.segments if plan else None, meta["encoder_config"]["projector_depth"])
  return model, params, described


def run(config) -> str:
  target, llm_config, tokenizer = load_from_config(config.model)
  model, params, described = vlm_for(config, target, llm_config, tokenizer)
  image = preprocess_image(load_image(config.image), model.vit.image_size)
  prompt = encode_conversation([{"role": "user", "content": f"<image>\n{config.question}"}], tokenizer,
                               config.template, "standard", add_generation_prompt=True)
  out = generate_vlm(model, params, [prompt], np.asarray(image)[None], max_new_tokens=config.max_new_tokens,
                     eos_ids=end_token_ids(tokenizer, llm_config), pad_id=llm_config.pad_token_id or 0)[0]
  answer = tokenizer.decode(out, skip_special_tokens=True)
  print(f"[{described}] {answer}")
  return answer
