"""VLM generation: text-only rows equal the decoder's generation; image rows follow the full forward."""
import jax
import jax.numpy as jnp
import numpy as np

from graft_jax.data.templates import EncodedSample, expand_image_slot
from graft_jax.evaluate.generation import generate
from graft_jax.evaluate.vlm_generation import generate_vlm
from graft_jax.models.config import LlamaConfig
from graft_jax.models.vit import VitConfig
from graft_jax.models.vlm import VLM, init_vlm_params

LLM = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_layers=3, num_heads=4,
                  num_kv_heads=2, head_dim=8)
VIT = VitConfig(image_size=16, patch_size=8, width=24, depth=2, heads=2, mlp_dim=48)


def _sample(ids, image_pos=-1):
  ids = np.asarray(ids, np.int32)
  return EncodedSample(ids, np.zeros(len(ids), bool), image_pos)


def test_text_rows_match_decoder_generation_and_image_rows_the_full_forward():
  model = VLM(VIT, LLM)
  params = init_vlm_params(model, jax.random.key(0))
  images = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype(np.float32)
  text, with_image = _sample([3, 4, 5, 6]), _sample([7, 8, 9], image_pos=1)
  outs = generate_vlm(model, params, [text, with_image], images, max_new_tokens=5, eos_ids=(63,))
  assert outs[0] == generate(params["llm"], LLM, [[3, 4, 5, 6]], max_new_tokens=5, eos_ids=(63,))[0]
  ids = list(expand_image_slot(with_image, model.image_len)[0])
  for token in outs[1]:
    logits, _, _ = model.apply({"params": params}, jnp.asarray([ids]), jnp.asarray(images[1:]),
                               jnp.asarray([1]))
    assert int(jnp.argmax(logits[0, -1])) == token
    ids.append(token)
