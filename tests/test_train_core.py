"""The train step: gradient accumulation, what changes and what stays frozen, the text-only path,
KL distillation, and bad calls."""
import jax
import numpy as np
import pytest

from graft_jax.models.vlm import add_relative_noise, splice_images
from graft_jax.train.batch import expand_batch
from graft_jax.train.loss import LossOptions, global_token_mean
from graft_jax.train.partition import select, split
from graft_jax.train.step import supervised_cap
from graft_jax.train.paths import leaves_with_paths
from tests.train_setup import ADAMW, ONE, SCHEDULE, SGD, SPEC, TEXT_SPEC, compiled, make_batch, run_steps, setup


def _assert_close(got, ref, atol=1e-6):
  for (path, a), (_, b) in zip(leaves_with_paths(got), leaves_with_paths(ref)):
    np.testing.assert_allclose(a, b, atol=atol, rtol=1e-5, err_msg=path)


def test_gradient_accumulation_equals_one_step_on_the_whole_batch():
  batch = make_batch(1)
  (one,), one_params = run_steps([batch], k=1)
  (acc,), acc_params = run_steps([batch], k=4)
  for key in one:
    np.testing.assert_allclose(acc[key], one[key], rtol=1e-6, err_msg=key)
  _assert_close(acc_params, one_params)
  assert one["tokens/supervised"] == batch["loss_mask"].sum()


def test_frozen_params_are_bit_identical_and_only_declared_ones_change():
  params = setup()[2]
  _, frozen = split(params, SPEC)
  frozen_before = jax.tree.map(np.array, frozen)
  metrics, after = run_steps([make_batch(s) for s in range(3)], optimizer=ADAMW, schedule=SCHEDULE)
  assert all(np.isfinite(m["loss"]) for m in metrics)
  np.testing.assert_allclose([m["lr"] for m in metrics], [SCHEDULE(i) for i in range(3)], rtol=1e-6)
  assert metrics[1]["lr"] < metrics[0]["lr"]
  selection = select(params, SPEC)
  before = dict(leaves_with_paths(params))
  for path, new in leaves_with_paths(after):
    old, s = before[path], selection[path]
    if s is None:
      np.testing.assert_array_equal(new, old, err_msg=path)
    elif s == "all":
      assert not np.array_equal(new, old), path
    else:  # img/blocks/.*[-1:]: the last of 2 layers trains, the first is untouched
      assert s == (1, 2), path
      np.testing.assert_array_equal(new[0], old[0], err_msg=path)
      assert not np.array_equal(new[1], old[1]), path
  assert any(s not in (None, "all") for s in selection.values())
  for a, b in zip(jax.tree.leaves(frozen), jax.tree.leaves(frozen_before)):
    np.testing.assert_array_equal(np.asarray(a), b)  # the caller's frozen tree is not donated


def test_text_only_step_without_the_vision_tower_equals_the_vlm_step():
  batch = make_batch(2, images=False)
  (vlm,), vlm_params = run_steps([batch], spec=TEXT_SPEC)
  (dec,), dec_params = run_steps([batch], spec=TEXT_SPEC, decoder_only=True)
  for key in ("loss", "ce", "tokens/supervised", "grad_norm"):
    np.testing.assert_allclose(dec[key], vlm[key], rtol=1e-6, err_msg=key)
  assert vlm["tokens/image"] == dec["tokens/image"] == 0
  _assert_close(dec_params, vlm_params)
  with pytest.raises(ValueError, match="images"):
    run_steps([make_batch(2)], spec=TEXT_SPEC, decoder_only=True)


@pytest.mark.parametrize("kl_rows", ["all", "text"])
def test_kl_distillation_toward_the_full_target_with_the_current_encoder(kl_rows):
  batch = make_batch(3)
  options = LossOptions(ce_weight=1.0, kl_weight=0.5, kl_rows=kl_rows)
  (m,), _ = run_steps([batch], options=options, with_teacher=True)
  model, target_model, surrogate, target = setup()
  expanded = expand_batch(batch, model.image_len)
  inputs = (expanded["tokens"], expanded["images"], expanded["image_pos"])
  student = model.apply({"params": surrogate}, *inputs)[0]
  teacher = target_model.apply({"params": {**surrogate, "llm": target["llm"]}}, *inputs)[0]
  _, ref = global_token_mean(student, expanded, options, teacher_logits=teacher)
  assert ref["kl"] > 1e-5  # near-uniform logits at init: small, but not zero
  if kl_rows == "text":  # the same KL as over all rows with the image rows' KL left out
    _, all_rows = global_token_mean(student, expanded, LossOptions(kl_weight=0.5), teacher_logits=teacher)
    assert 0 < ref["kl"] < all_rows["kl"]
  for key in ("loss", "ce", "kl", "tokens/image"):
    np.testing.assert_allclose(m[key], ref[key], rtol=1e-5, atol=1e-7, err_msg=key)


def test_image_noise_is_relative_seeded_per_step_and_absent_by_default():
  batch = make_batch(4)
  (clean,), _ = run_steps([batch])
  (noisy_a, noisy_b), _ = run_steps([batch, batch], image_noise=0.5)
  (noisy_again, _), _ = run_steps([batch, batch], image_noise=0.5)
  np.testing.assert_array_equal(noisy_again["loss"], noisy_a["loss"])  # same seed and step: same noise
  assert abs(float(noisy_a["loss"]) - float(clean["loss"])) > 1e-4
  # the reference: the model's image embeddings plus the documented draw of step 0, micro-batch 0
  model, _, params, _ = setup()
  expanded = expand_batch(batch, model.image_len)
  key = jax.random.fold_in(jax.random.fold_in(jax.random.key(0), 0), 0)
  noisy_emb = model.apply({"params": params}, expanded["images"], method="image_embeddings")
  noisy_emb = add_relative_noise(noisy_emb, 0.5, key)
  forward = lambda m, tokens, pos: m.decoder(embeddings=splice_images(m.decoder.embed_tokens(tokens), noisy_emb, pos))
  logits = model.apply({"params": params}, expanded["tokens"], expanded["image_pos"], method=forward)[0]
  _, ref = global_token_mean(logits, expanded, LossOptions())
  np.testing.assert_allclose(noisy_a["loss"], ref["loss"], rtol=1e-5)
  # the noise is sigma x each embedding's own RMS: its share does not shrink when embeddings grow
  e = jax.random.normal(jax.random.key(1), (2, 3, 64)) * 40.0
  noise = add_relative_noise(e, 0.5, jax.random.key(2)) - e
  ratio = np.sqrt(np.mean(np.asarray(noise) ** 2, -1)) / np.sqrt(np.mean(np.asarray(e) ** 2, -1))
  np.testing.assert_allclose(ratio, 0.5, rtol=0.3)


def test_bad_calls_raise():
  layout, step = compiled(k=4)
  trainable, frozen = split(setup()[2], SPEC)
  with pytest.raises(ValueError, match="multiple of num_microbatches"):
    step(layout.create_state(trainable, SGD), frozen, make_batch(0, b=6))
  with pytest.raises(ValueError, match="teacher"):
    compiled(axes=ONE, options=LossOptions(kl_weight=1.0))
  with pytest.raises(ValueError, match="image_noise"):
    compiled(image_noise=-0.1)
  with pytest.raises(ValueError, match="image_noise"):
    compiled(spec=TEXT_SPEC, decoder_only=True, image_noise=0.5)


def test_a_step_without_image_noise_compiles_no_random_number_ops():
  """image_noise=0 must leave the step as it was: the noise key is dead code XLA removes."""
  counts = {}
  for noise in (0.0, 0.5):
    layout, step = compiled(image_noise=noise)
    trainable, frozen = split(setup()[2], SPEC)
    state, frozen = layout.place(layout.create_state(trainable, SGD), frozen)
    batch = make_batch(0)
    hlo = step.jitted_for(supervised_cap(batch)).lower(state, frozen, batch, None).compile().as_text()
    counts[noise] = hlo.count("threefry") + hlo.count("rng-bit-generator")
  assert counts[0.0] == 0 and counts[0.5] > 0, counts
