"""The cost planner: hours per phase against a hand computation for the three Llama presets, the
CLI, measured MFU, and bad inputs."""
import json
import os
import subprocess
import sys

import pytest

from graft_jax.cost_planner import estimate
from graft_jax.models.presets import preset
from graft_jax.surrogate import SurrogatePlan
from tests.config_files import load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _hand_hours(cfg) -> dict:
  """Per-phase hours written out from the shapes alone (CLIP ViT-L/14-336: 24 layers, the last 8
  train in stages 2-3; 576 patches + CLS; adapter 1024 -> D -> D)."""
  c = preset(cfg.model)
  d_model, heads, hd, kv, ffn, vocab = c.hidden_size, c.num_heads, c.head_dim, c.num_kv_heads, c.intermediate_size, c.vocab_size
  layer = d_model * heads * hd * 2 + 2 * d_model * kv * hd + 3 * d_model * ffn
  head = vocab * d_model
  w, m, n_tok, n_patch = 1024, 4096, 577, 576
  vit_layer, patch, proj = 4 * w * w + 2 * w * m, 14 * 14 * 3 * w, w * d_model + d_model * d_model
  vit_attn = 4 * w * n_tok ** 2
  plan = SurrogatePlan.create(c.num_layers, [tuple(r) for r in cfg.ranges])
  a = plan.ranges[0].start
  n_sur = plan.num_kept_layers
  data = cfg.data

  def attn(t):
    return 4 * heads * hd * t * (t + 1) / 2

  def sample(t_text, decoder_layers, decoder_k, vit_mode, proj_k, head_k, text_only=False, translator_at=None):
    sup = round(data.supervised_fraction * t_text)
    t = t_text + (0 if text_only else n_tok + 2)
    total = head_k * sup * head
    if translator_at is not None:  # text-only stage 1: 2N below the translator, 6N at it, 4N above
      below, above = translator_at, decoder_layers - translator_at - 1
      total += t * layer * (2 * below + 6 + 4 * above) + attn(t) * (below + 3 + 3 * above)
      return total
    total += decoder_k * t * decoder_layers * layer + 3 * attn(t) * decoder_layers
    if vit_mode == "frozen":   # forward only
      total += 2 * n_patch * patch + 2 * n_tok * 24 * vit_layer + 24 * vit_attn
    else:                      # last 8 layers train
      total += 2 * n_patch * patch + n_tok * vit_layer * (2 * 16 + 6 * 8) + vit_attn * (16 + 3 * 8)
    return total + proj_k * n_tok * proj

  img, txt = data.image_text_tokens, data.text_only_tokens
  flops = {
      "stage1": data.image_samples * sample(img, n_sur, 4, "frozen", 6, 4)  # translator 6N: +2N below
                + data.image_samples * 2 * (img + n_tok + 2) * layer
                + data.text_samples * sample(txt, n_sur, 0, None, 0, 4, text_only=True, translator_at=a),
      "stage2": data.image_samples * sample(img, n_sur, 4, "last8", 6, 4),
      "decoder_finetune": cfg.decoder_finetune_fraction * data.image_samples * sample(img, c.num_layers, 6, "last8", 6, 6),
      "adapter_pretrain": data.pretrain_samples * sample(data.caption_text_tokens, c.num_layers, 4, "frozen", 6, 4),
      "full_decoder": data.image_samples * sample(img, c.num_layers, 6, "last8", 6, 6),
  }
  rate = cfg.hardware.mfu * cfg.hardware.peak_tflops * 1e12 * cfg.hardware.devices * 3600
  return {k: v / rate for k, v in flops.items()}


@pytest.mark.parametrize("name", ["llama-3.2-3b", "llama-3.1-8b", "llama-3.1-70b"])
def test_hours_and_saving_match_a_hand_computation(name):
  cfg = load_config("cost", name)
  result = estimate(cfg)
  hand = _hand_hours(cfg)
  for row in result["rows"]:
    assert row["hours"] == pytest.approx(hand[row["key"]], rel=1e-9), row["key"]
  surrogate = hand["stage1"] + hand["stage2"] + hand["decoder_finetune"]
  baseline = hand["adapter_pretrain"] + hand["full_decoder"]
  assert result["saving"] == pytest.approx(1 - surrogate / baseline, rel=1e-9)
  assert 0 < result["saving"] < 1


def test_paper_numbers_and_measured_mfu(tmp_path):
  cfg = load_config("cost", "llama-3.1-70b")
  result = estimate(cfg)
  assert result["paper_surrogate_hours"] == pytest.approx(19.17)
  assert result["paper_baseline_hours"] == pytest.approx(34.79)
  gpu = tmp_path / "gpu.json"
  gpu.write_text(json.dumps({"stages": {"stage2_surrogate": {"mfu": 0.2}, "stage3_full": {"mfu": 0.5},
                                        "stage2_full": {"error": "timed out"}}}))
  cfg.hardware.mfu_json = str(gpu)
  measured = estimate(cfg)
  by_key = {r["key"]: r for r in measured["rows"]}
  assert by_key["stage2"]["mfu"] == 0.2 and by_key["full_decoder"]["mfu"] == 0.5
  assert by_key["adapter_pretrain"]["mfu"] == cfg.hardware.mfu and by_key["adapter_pretrain"]["mfu_source"] == "given"
  assert by_key["stage2"]["hours"] == pytest.approx(2 * {r["key"]: r for r in result["rows"]}["stage2"]["hours"])


@pytest.mark.parametrize("field, value, match", [
    ("hardware.mfu", 0.0, "hardware.mfu must be > 0"), ("hardware.mfu", 1.5, "hardware.mfu"),
    ("hardware.devices", 0, "hardware.devices"),
    ("hardware.peak_tflops", -1.0, "peak_tflops"), ("decoder_finetune_fraction", 0.0, "decoder_finetune_fraction"),
    ("decoder_finetune_fraction", 1.2, "decoder_finetune_fraction"), ("data.image_samples", -5, "data.image_samples"),
    ("data.supervised_fraction", 2.0, "supervised_fraction"), ("model", "llama-9b", "Unknown model preset"),
    ("ranges", ((70, 79),), "last layer"), ("hardware.mfu_json", "/no/such.json", "does not exist"),
])
def test_bad_inputs_are_refused(field, value, match):
  cfg = load_config("cost", "llama-3.1-8b")
  node, key = cfg, field
  if "." in field:
    section, key = field.split(".")
    node = cfg[section]
  node[key] = value
  with pytest.raises((ValueError, FileNotFoundError), match=match):
    estimate(cfg)


def test_unknown_preset_in_the_config_file_and_the_cli(tmp_path):
  with pytest.raises(ValueError, match="unknown preset"):
    load_config("cost", "gpt-2")
  out = tmp_path / "cost.json"
  proc = subprocess.run([sys.executable, "-m", "graft_jax.main", "--config=configs/cost.py:llama-3.1-70b",
                         f"--config.out={out}"], cwd=REPO, capture_output=True, text=True, timeout=120,
                        env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "saving of the surrogate route" in proc.stdout and "(paper: 44.9%)" in proc.stdout
  assert json.loads(out.read_text())["model"] == "llama-3.1-70b"
