"""The VLM forward: splicing, text-only rows, and the surrogate layout."""
import jax
import jax.numpy as jnp
import numpy as np

from graft_jax.models.config import LlamaConfig
from graft_jax.models.llama import Decoder
from graft_jax.models.vit import VitConfig
from graft_jax.models.vlm import VLM, init_vlm_params, splice_images
from graft_jax.surrogate import SurrogatePlan, make_surrogate

LLM = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_layers=4, num_heads=4,
                  num_kv_heads=2, head_dim=8)
VIT = VitConfig(image_size=16, patch_size=8, width=24, depth=2, heads=2, mlp_dim=48)


def _setup(segments=None):
  model = VLM(VIT, LLM, segments)
  return model, init_vlm_params(model, jax.random.key(0))


def test_params_tree_has_the_three_towers():
  model, params = _setup()
  assert set(params) == {"img", "proj", "llm"}
  assert model.image_len == VIT.num_tokens + 2 == 7
  assert params["llm"]["segments"]["blocks_0"]["attn"]["q_proj"]["kernel"].shape[0] == 4


def test_text_only_rows_equal_the_plain_decoder():
  model, params = _setup()
  tokens = jnp.asarray(np.random.default_rng(0).integers(0, 64, size=(2, 12)))
  images = jnp.asarray(np.random.default_rng(1).normal(size=(2, 16, 16, 3)), jnp.float32)
  vlm_logits, _, _ = model.apply({"params": params}, tokens, images, jnp.array([-1, -1]))
  plain, _, _ = Decoder(LLM).apply({"params": params["llm"]}, tokens)
  np.testing.assert_array_equal(vlm_logits, plain)


def test_image_embeddings_land_in_the_slot_and_nowhere_else():
  model, params = _setup()
  tokens = jnp.asarray(np.random.default_rng(0).integers(0, 64, size=(2, 14)))
  images = jnp.asarray(np.random.default_rng(1).normal(size=(2, 16, 16, 3)), jnp.float32)
  pos = jnp.array([3, -1])
  emb = model.apply({"params": params}, tokens, images, pos, method=VLM.embed_inputs)
  text = Decoder(LLM).apply({"params": params["llm"]}, tokens, method=Decoder.embed_tokens)
  image = model.apply({"params": params}, images, method=VLM.image_embeddings)
  np.testing.assert_array_equal(emb[0, 3:10], image[0])
  np.testing.assert_array_equal(emb[0, :3], text[0, :3])
  np.testing.assert_array_equal(emb[0, 10:], text[0, 10:])
  np.testing.assert_array_equal(emb[1], text[1])


def test_mixed_batch_row_does_not_depend_on_its_neighbour():
  model, params = _setup()
  rng = np.random.default_rng(2)
  tokens = jnp.asarray(rng.integers(0, 64, size=(2, 14)))
  images = jnp.asarray(rng.normal(size=(2, 16, 16, 3)), jnp.float32)
  both, _, _ = model.apply({"params": params}, tokens, images, jnp.array([2, -1]))
  alone, _, _ = model.apply({"params": params}, tokens[:1], images[:1], jnp.array([2]))
  np.testing.assert_allclose(both[0], alone[0], atol=1e-6)


def test_vlm_on_a_surrogate_layout():
  plan = SurrogatePlan.create(4, [(1, 2)])
  _, target = _setup()
  surrogate = make_surrogate(target, plan)
  model = VLM(VIT, LLM, plan.segments)
  tokens = jnp.zeros((1, 10), jnp.int32)
  logits, _, _ = model.apply({"params": surrogate}, tokens, jnp.zeros((1, 16, 16, 3)), jnp.array([1]))
  assert logits.shape == (1, 10, 64)


def test_splice_clips_nothing_for_negative_positions():
  text = jnp.zeros((1, 5, 2))
  image = jnp.ones((1, 2, 2))
  assert float(splice_images(text, image, jnp.array([-1])).sum()) == 0
  assert float(splice_images(text, image, jnp.array([3])).sum()) == 4


def test_image_noise_needs_a_key_and_touches_only_the_image_slot():
  model, params = _setup()
  tokens = jnp.asarray(np.random.default_rng(0).integers(0, 64, size=(2, 14)))
  images = jnp.asarray(np.random.default_rng(1).normal(size=(2, 16, 16, 3)), jnp.float32)
  pos = jnp.array([3, -1])
  with np.testing.assert_raises_regex(ValueError, "noise_key"):
    model.apply({"params": params}, tokens, images, pos, image_noise=0.5)
  embed = lambda **kw: model.apply({"params": params}, tokens, images, pos, method="embed_inputs", **kw)
  clean, noisy = embed(), embed(image_noise=0.5, noise_key=jax.random.key(3))
  changed = np.any(np.asarray(clean) != np.asarray(noisy), axis=-1)
  expected = np.zeros((2, 14), bool)
  expected[0, 3:3 + model.image_len] = True  # the image slot of the image row; text rows untouched
  np.testing.assert_array_equal(changed, expected)
