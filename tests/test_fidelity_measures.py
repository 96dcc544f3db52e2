"""Fidelity measures (issue 9): zero for the identity plan, larger for a deeper cut, embedding
statistics against a hand computation, held-out batches from real samples."""
from __future__ import annotations

import functools

import jax
import numpy as np

from graft_jax.fidelity_measures import (PositionMean, answer_positions, image_embedding_stats,
                                         image_sequence_fidelity, nearest_tokens, text_hidden_distance)
from graft_jax.models.config import LlamaConfig
from graft_jax.models.vit import VitConfig
from graft_jax.models.vlm import VLM, init_vlm_params
from graft_jax.surrogate import SurrogatePlan, encoder_side, identity_plan, make_surrogate

LLM = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=48, num_layers=6, num_heads=4,
                  num_kv_heads=2, head_dim=8)
VIT = VitConfig(image_size=16, patch_size=8, width=24, depth=2, heads=2, mlp_dim=48)
SAME, SHALLOW, DEEP = identity_plan(6), SurrogatePlan.create(6, [(3, 4)]), SurrogatePlan.create(6, [(1, 4)])


@functools.lru_cache(maxsize=None)
def _target():
  model = VLM(VIT, LLM)
  return model, jax.tree.map(np.asarray, init_vlm_params(model, jax.random.key(0)))


def _text():
  tokens = np.random.default_rng(0).integers(0, 50, size=(3, 16)).astype(np.int32)
  mask = np.ones_like(tokens, bool)
  mask[2, 10:] = False
  return tokens, mask


def _image_batch():
  """Rows with an image slot (image_len 7) at different places, answers supervised at the end."""
  rng = np.random.default_rng(1)
  b, t = 3, 24
  lengths = np.array([24, 20, 15])
  valid = np.arange(t)[None] < lengths[:, None]
  image_pos = np.array([2, 4, 1], np.int32)
  image_mask = (np.arange(t)[None] >= image_pos[:, None]) & (np.arange(t)[None] < image_pos[:, None] + 7)
  loss_mask = valid & (np.arange(t)[None] >= lengths[:, None] - 4)
  return {"tokens": np.where(valid & ~image_mask, rng.integers(0, 50, (b, t)), 0).astype(np.int32),
          "valid": valid, "loss_mask": loss_mask, "image_mask": image_mask, "image_pos": image_pos,
          "images": rng.normal(size=(b, 16, 16, 3)).astype(np.float32)}


def _text_distance(plan):
  _, params = _target()
  tokens, mask = _text()
  rel, cos = text_hidden_distance(params["llm"], make_surrogate(params["llm"], plan), LLM, plan.segments, tokens, mask)
  mean_rel, mean_cos = PositionMean(), PositionMean()
  mean_rel.add(rel, mask)
  mean_cos.add(cos, mask)
  return mean_rel.mean, mean_cos.mean


def _image(plan):
  model, params = _target()
  batch = _image_batch()
  out = image_sequence_fidelity(model, encoder_side(params), params["llm"], make_surrogate(params["llm"], plan),
                                plan.segments, batch)
  kl, rel, cos = PositionMean(), PositionMean(), PositionMean()
  kl.add(out["kl"], out["kl_keep"])
  rel.add(out["rel_l2"], batch["valid"])
  cos.add(out["cos"], batch["valid"])
  return out, kl.mean, rel.mean, cos.mean


def test_text_distance_is_exactly_zero_for_identity_and_grows_with_the_cut():
  rel_same, cos_same = _text_distance(SAME)
  assert rel_same == 0.0 and abs(cos_same - 1.0) < 1e-6
  (rel_shallow, cos_shallow), (rel_deep, cos_deep) = _text_distance(SHALLOW), _text_distance(DEEP)
  assert 0 < rel_shallow < rel_deep and cos_deep < cos_shallow < 1.0


def test_image_kl_and_distance_are_exactly_zero_for_identity_and_grow_with_the_cut():
  out, kl_same, rel_same, cos_same = _image(SAME)
  assert np.all(out["kl"] == 0.0) and kl_same == 0.0 and rel_same == 0.0 and abs(cos_same - 1.0) < 1e-6
  assert out["kl_keep"].sum() == _image_batch()["loss_mask"][:, 1:].sum() == 12
  _, kl_shallow, rel_shallow, cos_shallow = _image(SHALLOW)
  _, kl_deep, rel_deep, cos_deep = _image(DEEP)
  assert 0 < kl_shallow < kl_deep and 0 < rel_shallow < rel_deep and cos_deep < cos_shallow


def test_image_kl_matches_full_logits_computed_in_numpy():
  model, params = _target()
  batch = _image_batch()
  surrogate = make_surrogate(params["llm"], DEEP)
  out = image_sequence_fidelity(model, encoder_side(params), params["llm"], surrogate, DEEP.segments, batch)
  args = (batch["tokens"], batch["images"], batch["image_pos"])
  full = lambda m, llm: np.asarray(m.apply({"params": {**encoder_side(params), "llm": llm}}, *args,
                                           attention_mask=batch["valid"])[0], np.float64)
  def log_softmax(x):
    top = x.max(-1, keepdims=True)
    return x - top - np.log(np.exp(x - top).sum(-1, keepdims=True))
  lt, ls = log_softmax(full(model, params["llm"])), log_softmax(full(VLM(VIT, LLM, DEEP.segments), surrogate))
  kl = (np.exp(lt) * (lt - ls)).sum(-1)  # [B, T]
  positions, keep = answer_positions(batch["loss_mask"], batch["valid"])
  for row in range(3):
    np.testing.assert_allclose(out["kl"][row][keep[row]], kl[row, positions[row][keep[row]]], rtol=1e-4, atol=1e-6)


def test_answer_positions_point_one_before_each_supervised_target():
  loss_mask = np.array([[0, 0, 1, 1, 0], [0, 1, 0, 0, 1]], bool)
  valid = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]], bool)
  positions, keep = answer_positions(loss_mask, valid, multiple=4)
  assert positions.shape == (2, 4)
  assert positions[0][keep[0]].tolist() == [1, 2] and positions[1][keep[1]].tolist() == [0]


def test_embedding_stats_match_a_hand_computation():
  rng = np.random.default_rng(3)
  tokens = rng.normal(size=(40, 16)) * 0.5
  image = rng.normal(size=(30, 16)) * 3.0 + 0.2
  image[:8] = tokens[[7] * 6 + [9, 11]] * 2.0  # these point exactly at tokens 7 (six times), 9, 11
  stats = image_embedding_stats(image, tokens, top=3)
  norm = lambda a: np.linalg.norm(a, axis=-1)
  unit = lambda a: a / norm(a)[..., None]
  sims = unit(image) @ unit(tokens).T
  assert np.isclose(stats["image_norm"], norm(image).mean()) and np.isclose(stats["token_norm"], norm(tokens).mean())
  assert np.isclose(stats["token_rms"], np.sqrt((tokens ** 2).mean(1)).mean())
  assert np.isclose(stats["image_rms"], np.sqrt((image ** 2).mean(1)).mean())
  assert np.isclose(stats["mean_direction_cos"], unit(image.mean(0)) @ unit(tokens.mean(0)))
  assert np.isclose(stats["nearest_cos"], sims.max(1).mean(), atol=1e-6)
  counts = np.bincount(sims.argmax(1), minlength=40)
  assert stats["nearest_ids"][0] == [7, int(counts[7])] and counts[7] >= 6
  assert [c for _, c in stats["nearest_ids"]] == sorted(counts, reverse=True)[:3]
  _, ids = nearest_tokens(image, tokens, chunk=8)  # several chunks, the last one padded
  assert ids.tolist() == sims.argmax(1).tolist()


def test_held_out_batches_from_real_samples(tmp_path):
  from graft_jax.convert.tokenizer import load_tokenizer  # pylint: disable=g-import-not-at-top
  from graft_jax.data.readers import Sample  # pylint: disable=g-import-not-at-top
  from graft_jax.data.templates import encode_conversation  # pylint: disable=g-import-not-at-top
  from graft_jax.fidelity_data import held_out_chats, image_batches  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  tokenizer = load_tokenizer()
  path = tmp_path / "a.png"
  Image.new("RGB", (20, 20), (200, 10, 10)).save(path)
  conv = [{"role": "user", "content": "<image>\nWhat colour is the shape?"}, {"role": "assistant", "content": "red"}]
  longer = conv[:1] + [{"role": "assistant", "content": "dark red"}]
  samples = [Sample("0", conv, str(path)), Sample("1", longer, str(path))]
  batch = next(image_batches(samples, tokenizer, "chatml", 16, 7, 4, 2))
  enc = encode_conversation(conv, tokenizer, "chatml", "standard")
  assert batch["tokens"].shape == (2, 16 * -(-(len(enc.ids) + 8) // 16)) and batch["images"].shape == (2, 16, 16, 3)
  assert batch["image_pos"].tolist() == [enc.image_pos] * 2
  assert batch["image_mask"][0].sum() == 7 and not (batch["image_mask"] & batch["loss_mask"]).any()
  answer = tokenizer.decode(batch["tokens"][0][batch["loss_mask"][0]])
  assert answer.startswith("\nred") and batch["loss_mask"][1].sum() > batch["loss_mask"][0].sum()
  from graft_jax.fidelity_data import chat_token_ids  # pylint: disable=g-import-not-at-top
  chats = held_out_chats(tokenizer, "chatml", 0, 3)
  assert len(chats) == 3 and all(c.dtype == np.int32 and len(c) > 5 for c in chats)
  training = chat_token_ids(tokenizer, "chatml", 0, 0, 3)  # stage 0's fit chats: another split
  assert all(not np.array_equal(a, b) for a, b in zip(chats, training))
