"""The MFU FLOPs count of a training step, against hand computation on a tiny VLM."""
import jax
import pytest

from graft_jax.bench.flops import mfu, train_step_flops
from graft_jax.models.config import LlamaConfig
from graft_jax.models.vit import VitConfig
from graft_jax.models.vlm import VLM, init_vlm_params
from graft_jax.surrogate import SurrogatePlan
from graft_jax.train.stages import STAGES

LLM = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=24, num_layers=5, num_heads=4,
                  num_kv_heads=2, head_dim=4, tie_word_embeddings=True)
VIT = VitConfig(image_size=16, patch_size=8, width=8, depth=2, heads=2, mlp_dim=12)
PLAN = SurrogatePlan.create(5, [(1, 3)])  # blocks_0 [0], translator_0 [1], blocks_1 [4]: 3 layers
D, F, KV = 16, 24, 2 * 4
LAYER = D * 16 + 2 * D * KV + 16 * D + 3 * D * F  # q, k, v, o, gate/up/down kernels
HEAD = 50 * D                                      # tied: the embedding
VIT_LAYER = 4 * 8 * 8 + 2 * 8 * 12
PATCH = 8 * 8 * 3 * 8
PROJ = 8 * D + D * D
B, T, IMAGES, SUP = 2, 12, 2, 5
N_TOK, N_PATCH = 5, 4  # 4 patches + CLS


def _params(segments):
  return jax.eval_shape(lambda r: init_vlm_params(VLM(VIT, LLM, segments), r), jax.random.key(0))


def _attn_dec(layers):
  return layers * 4 * 4 * 4 * B * T * (T + 1) / 2


def _attn_vit(layers):
  return layers * IMAGES * 4 * 8 * N_TOK ** 2


def test_stage2_on_the_surrogate_counts_4n_for_the_frozen_decoder_and_6n_for_the_encoder():
  f = train_step_flops(_params(PLAN.segments), STAGES["finetune_encoder"].trainable, LLM, segments=PLAN.segments,
                       vit=VIT, batch=B, seq_len=T, images=IMAGES, head_tokens=SUP)
  expected = {
      "vision": 2 * IMAGES * N_PATCH * PATCH + 6 * IMAGES * N_TOK * 2 * VIT_LAYER,  # patch frozen, both layers train
      "vision_attention": 3 * _attn_vit(2),
      "projector": 6 * IMAGES * N_TOK * PROJ,
      "decoder": 4 * B * T * 3 * LAYER,
      "decoder_attention": 3 * _attn_dec(3),
      "head": 4 * SUP * HEAD,
  }
  for key, value in expected.items():
    assert f.parts[key] == pytest.approx(value), key
  assert f.total == pytest.approx(sum(expected.values()))
  assert f.decoder_tokens == B * T


def test_translator_stage_counts_2n_below_the_translator():
  params = {"llm": _params(PLAN.segments)["llm"]}
  f = train_step_flops(params, STAGES["translator"].trainable, LLM, segments=PLAN.segments, batch=B, seq_len=T,
                       head_tokens=SUP)
  assert f.parts["decoder"] == pytest.approx(B * T * LAYER * (2 + 6 + 4))
  assert f.parts["decoder_attention"] == pytest.approx(_attn_dec(1) * (1 + 3 + 3))
  assert f.parts["vision"] == f.parts["projector"] == 0
  assert f.parts["head"] == pytest.approx(4 * SUP * HEAD)


def test_stage3_trains_everything_in_the_decoder_and_text_rows_skip_the_vision_side():
  params = _params(None)
  f = train_step_flops(params, STAGES["finetune_decoder"].trainable, LLM, vit=VIT, batch=B, seq_len=T,
                       images=IMAGES, head_tokens=SUP)
  assert f.parts["decoder"] == pytest.approx(6 * B * T * 5 * LAYER)
  assert f.parts["head"] == pytest.approx(6 * SUP * HEAD)  # the tied embedding trains
  text = train_step_flops(params, STAGES["pretrain"].trainable[:2] + ("llm/segments/blocks_0/.*[1:2]",), LLM,
                          vit=VIT, batch=B, seq_len=T, images=0, head_tokens=SUP)
  assert text.parts["vision"] == text.parts["projector"] == 0
  assert text.parts["decoder"] == pytest.approx(B * T * LAYER * (2 + 6 + 4 * 3))  # layer 1 trains


def test_mfu_and_bad_shapes():
  assert mfu(2e12, 2.0, 1e12) == pytest.approx(1.0)
  with pytest.raises(ValueError, match="step_time_s"):
    mfu(1.0, 0.0, 1.0)
  with pytest.raises(ValueError, match="Bad step shape"):
    train_step_flops(_params(None), ("proj/.*",), LLM, vit=VIT, batch=0, seq_len=T, images=1, head_tokens=1)


def test_round_robin_turns_time_each_run_in_blocks_after_untimed_calls():
  from graft_jax.bench.measure import round_robin  # pylint: disable=g-import-not-at-top
  calls = []
  runs = {name: (lambda name=name: calls.append(name)) for name in ("a", "b")}
  times = round_robin(runs, warmup=1, steps=2, turn_steps=3, turn_warmup=1)
  assert {k: len(v) for k, v in times.items()} == {"a": 6, "b": 6}
  # a warm-up round, then per round: a's turn (1 untimed + 3 timed), then b's
  assert "".join(calls) == "ab" + ("a" * 4 + "b" * 4) * 2
  assert len(round_robin(runs, 0, 3)["a"]) == 3  # the default turn: one timed call
  with pytest.raises(ValueError, match="turn_steps"):
    round_robin(runs, 1, 1, turn_steps=0)


def test_matmul_bench_rates_a_small_product():
  import importlib.util  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments", "bench_matmul.py")
  spec = importlib.util.spec_from_file_location("bench_matmul", path)
  bench = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(bench)
  a, b = np.ones((8, 4), np.float32), np.ones((4, 2), np.float32)
  assert bench.best_rate(lambda: a @ b, 8, 4, 2, repeats=2) > 0
  assert all(len(shape) == 3 for shape in bench.SHAPES)
