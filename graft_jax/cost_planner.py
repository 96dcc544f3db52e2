"""Cost planner: hours of the surrogate route against the usual recipe, from FLOPs (the paper's
Figure 2 for Llama-3.1-70B: 9.36 + 4.25 + 5.56 = 19.17 h against 7.01 + 27.78 = 34.79 h).

  python -m graft_jax.main --config=configs/cost.py:llama-3.1-70b [--config.hardware.mfu=0.4]

Phases (method.md section 4; trainable rules from graft_jax/train/stages.py):
  surrogate route  stage 1 on the surrogate (adapter, soi/eoi, encoder post-LN, translator; image
                   + text-only samples), stage 2 on the surrogate (adapter, soi/eoi, encoder's last
                   8 layers + post-LN), decoder fine-tuning of the graft on a fraction of the data
                   (stage 3: whole decoder + the stage-2 set, full target)
  baseline         adapter pretraining (adapter only, full target frozen; caption samples), then
                   full-decoder training (the stage-3 set on the full target, all the data)
Per sample FLOPs: graft_jax/bench/flops.py on the phase's params tree (jax.eval_shape, no
weights): 6N trained, 4N frozen with gradients flowing through, 2N forward-only, plus attention;
the LM head at the supervised text tokens. Hours = FLOPs / (MFU x peak FLOP/s x devices) / 3600.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Sequence

import jax

from graft_jax.bench.flops import train_step_flops
from graft_jax.models.config import LlamaConfig
from graft_jax.models.presets import preset
from graft_jax.models.vit import VitConfig
from graft_jax.models.vlm import VLM, init_vlm_params
from graft_jax.surrogate import SurrogatePlan
from graft_jax.train.stages import STAGES

RELEASED_RANGES = {"smollm2-135m": ((19, 28),), "llama-3.2-3b": ((16, 26),), "llama-3.1-8b": ((17, 30),),
                   "llama-3.1-70b": ((40, 78),)}
PAPER_HOURS = {"llama-3.1-70b": {"stage1": 9.36, "stage2": 4.25, "decoder_finetune": 5.56,
                                 "adapter_pretrain": 7.01, "full_decoder": 27.78}}
ADAPTER_ONLY = ("proj/.*",)


@dataclasses.dataclass(frozen=True)
class Phase:
  """One training phase: `image_samples` samples with an image and `image_text` text tokens,
  `text_samples` text-only samples of `text_only_tokens`; `mfu_stage`: which gpu_check stage's
  measured MFU stands for it."""
  key: str
  route: str
  label: str
  on_surrogate: bool
  trainable: tuple[str, ...]
  image_samples: float
  image_text: int
  text_samples: float = 0.0
  text_only_tokens: int = 0
  mfu_stage: str = ""


def _positive(name: str, value, upper: float | None = None, allow_zero: bool = False) -> None:
  ok = value >= 0 if allow_zero else value > 0
  if not ok or (upper is not None and value > upper):
    bound = f" and <= {upper}" if upper is not None else ""
    raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}{bound}, got {value!r}")


def validate(cfg) -> None:
  """Bad inputs fail here, naming the field."""
  preset(cfg.model)  # unknown preset -> ValueError naming the choices
  h, d = cfg.hardware, cfg.data
  _positive("hardware.devices", h.devices)
  if int(h.devices) != h.devices:
    raise ValueError(f"hardware.devices must be a whole number, got {h.devices!r}")
  _positive("hardware.peak_tflops", h.peak_tflops)
  _positive("hardware.mfu", h.mfu, upper=1.0)
  _positive("decoder_finetune_fraction", cfg.decoder_finetune_fraction, upper=1.0)
  _positive("data.supervised_fraction", d.supervised_fraction, upper=1.0)
  for name in ("pretrain_samples", "image_samples", "text_samples", "caption_text_tokens",
               "image_text_tokens", "text_only_tokens"):
    _positive(f"data.{name}", d[name], allow_zero=True)
  if h.mfu_json and not os.path.isfile(h.mfu_json):
    raise FileNotFoundError(f"hardware.mfu_json={h.mfu_json!r} does not exist (a gpu_check JSON)")


def phases(cfg) -> list[Phase]:
  d = cfg.data
  return [
      Phase("stage1", "surrogate", "stage 1 (pretrain) on the surrogate", True, STAGES["pretrain"].trainable,
            d.image_samples, d.image_text_tokens, d.text_samples, d.text_only_tokens, "stage2_surrogate"),
      Phase("stage2", "surrogate", "stage 2 (encoder) on the surrogate", True,
            STAGES["finetune_encoder"].trainable, d.image_samples, d.image_text_tokens, mfu_stage="stage2_surrogate"),
      Phase("decoder_finetune", "surrogate",
            f"decoder fine-tuning of the graft ({100 * cfg.decoder_finetune_fraction:g}% of the data)", False,
            STAGES["finetune_decoder"].trainable, d.image_samples * cfg.decoder_finetune_fraction,
            d.image_text_tokens, mfu_stage="stage3_full"),
      Phase("adapter_pretrain", "baseline", "adapter pretraining on the full target", False, ADAPTER_ONLY,
            d.pretrain_samples, d.caption_text_tokens, mfu_stage="stage2_full"),
      Phase("full_decoder", "baseline", "full-decoder training", False, STAGES["finetune_decoder"].trainable,
            d.image_samples, d.image_text_tokens, mfu_stage="stage3_full"),
  ]


def sample_flops(llm: LlamaConfig, vit: VitConfig, plan: SurrogatePlan, phase: Phase, text_tokens: int,
                 with_image: bool, supervised_fraction: float) -> float:
  """Model FLOPs of training on one sample (batch 1) in `phase`."""
  segments = plan.segments if phase.on_surrogate else None
  model = VLM(vit, llm, segments)
  params = _abstract_params(model)
  seq_len = text_tokens + (model.image_len if with_image else 0)
  return train_step_flops(params, phase.trainable, llm, segments=segments, vit=vit, batch=1, seq_len=max(seq_len, 1),
                          images=1 if with_image else 0,
                          head_tokens=int(round(supervised_fraction * text_tokens))).total


_ABSTRACT: dict = {}


def _abstract_params(model: VLM):
  key = (model.vit, model.llm, model.segments)
  if key not in _ABSTRACT:
    _ABSTRACT[key] = jax.eval_shape(lambda r: init_vlm_params(model, r), jax.random.key(0))
  return _ABSTRACT[key]


def measured_mfu(path: str) -> dict[str, float]:
  """{gpu_check stage: MFU} from a gpu_check JSON (stages that ran without error)."""
  with open(path) as f:
    stages = json.load(f).get("stages", {})
  return {name: float(r["mfu"]) for name, r in stages.items() if "mfu" in r and "error" not in r}


def estimate(cfg) -> dict:
  """Hours per phase and route, the saving, and the assumptions, as a JSON-able dict."""
  validate(cfg)
  llm = preset(cfg.model)
  e = cfg.encoder
  vit = VitConfig(image_size=e.image_size, patch_size=e.patch_size, width=e.width, depth=e.depth, heads=e.heads,
                  mlp_dim=e.mlp_dim, variant="clip")
  plan = SurrogatePlan.create(llm.num_layers, [tuple(r) for r in cfg.ranges])
  h = cfg.hardware
  measured = measured_mfu(h.mfu_json) if h.mfu_json else {}
  paper = PAPER_HOURS.get(cfg.model, {})
  rows = []
  for phase in phases(cfg):
    per_image = sample_flops(llm, vit, plan, phase, phase.image_text, True, cfg.data.supervised_fraction)
    per_text = (sample_flops(llm, vit, plan, phase, phase.text_only_tokens, False, cfg.data.supervised_fraction)
                if phase.text_samples else 0.0)
    flops = phase.image_samples * per_image + phase.text_samples * per_text
    mfu = measured.get(phase.mfu_stage, h.mfu)
    hours = flops / (mfu * h.peak_tflops * 1e12 * h.devices) / 3600
    rows.append({"key": phase.key, "route": phase.route, "phase": phase.label,
                 "decoder": f"surrogate ({plan.num_kept_layers} layers)" if phase.on_surrogate
                            else f"full ({llm.num_layers} layers)",
                 "image_samples": phase.image_samples, "text_samples": phase.text_samples,
                 "flops_per_image_sample": per_image, "flops_per_text_sample": per_text, "flops": flops,
                 "mfu": mfu, "mfu_source": f"measured ({phase.mfu_stage})" if phase.mfu_stage in measured else "given",
                 "hours": hours, "paper_hours": paper.get(phase.key)})
  total = lambda route, key: sum(r[key] for r in rows if r["route"] == route)
  surrogate_h, baseline_h = total("surrogate", "hours"), total("baseline", "hours")
  result = {"model": cfg.model, "plan": plan.describe(), "rows": rows,
            "surrogate_hours": surrogate_h, "baseline_hours": baseline_h,
            "saving": 1 - surrogate_h / baseline_h,
            "assumptions": assumptions(cfg, llm, vit, plan)}
  if paper:
    p_s = sum(v for k, v in paper.items() if k in ("stage1", "stage2", "decoder_finetune"))
    p_b = paper["adapter_pretrain"] + paper["full_decoder"]
    result.update(paper_surrogate_hours=p_s, paper_baseline_hours=p_b, paper_saving=1 - p_s / p_b)
  return result


def assumptions(cfg, llm: LlamaConfig, vit: VitConfig, plan: SurrogatePlan) -> list[str]:
  d, h = cfg.data, cfg.hardware
  image_len = vit.num_tokens + 2
  return [
      f"target {cfg.model}: {llm.num_layers} layers, hidden {llm.hidden_size}; surrogate: {plan.describe()}",
      f"encoder: CLIP-style ViT {vit.image_size}px/patch {vit.patch_size}, width {vit.width}, depth {vit.depth}: "
      f"{vit.num_tokens} tokens, {image_len} image embeddings per sample with soi/eoi",
      f"data: adapter pretraining {d.pretrain_samples:,} caption samples (LCS-558K) of {d.caption_text_tokens} text "
      f"tokens; stages 1-3 and full-decoder training {d.image_samples:,} image samples (LLaVA-665K) of "
      f"{d.image_text_tokens} text tokens; stage 1 also {d.text_samples:,} text-only samples (GenQA) of "
      f"{d.text_only_tokens} tokens; one epoch each",
      f"decoder fine-tuning of the graft on {100 * cfg.decoder_finetune_fraction:g}% of the image samples",
      f"LM head at {100 * d.supervised_fraction:g}% of the text tokens (the supervised ones)",
      f"hardware: {h.devices} devices x {h.peak_tflops:g} TFLOP/s peak at MFU {h.mfu:g}"
      + (f" (measured MFU per phase from {h.mfu_json} where present)" if h.mfu_json else ""),
      "FLOPs: 6N trained, 4N frozen with gradients flowing through, 2N forward-only, plus attention "
      "(graft_jax/bench/flops.py); data loading, communication and evaluation not counted",
  ]


def format_table(result: dict) -> str:
  """Markdown: one row per phase, route totals, and the saving (paper's numbers where known)."""
  fmt = lambda v: "-" if v is None else f"{v:.2f}"
  lines = ["| route | phase | decoder | samples | PFLOP | MFU | hours (est.) | hours (paper) |",
           "|---|---|---|---|---|---|---|---|"]
  for r in result["rows"]:
    samples = f"{r['image_samples'] / 1e3:,.0f}K img" + (f" + {r['text_samples'] / 1e3:,.0f}K text"
                                                          if r["text_samples"] else "")
    lines.append(f"| {r['route']} | {r['phase']} | {r['decoder']} | {samples} | {r['flops'] / 1e15:,.0f} | "
                 f"{r['mfu']:.2f} | {r['hours']:.2f} | {fmt(r['paper_hours'])} |")
  lines.append(f"| surrogate | **total** | | | | | **{result['surrogate_hours']:.2f}** | "
               f"{fmt(result.get('paper_surrogate_hours'))} |")
  lines.append(f"| baseline | **total** | | | | | **{result['baseline_hours']:.2f}** | "
               f"{fmt(result.get('paper_baseline_hours'))} |")
  saving = f"saving of the surrogate route: {100 * result['saving']:.1f}%"
  if "paper_saving" in result:
    saving += f" (paper: {100 * result['paper_saving']:.1f}%)"
  return "\n".join(lines + ["", saving])


def format_report(result: dict) -> str:
  return "\n".join([f"cost plan for {result['model']} (surrogate: {result['plan']})", "", "assumptions:",
                    *(f"  - {a}" for a in result["assumptions"]), "", format_table(result)])


def write_json(result: dict, path: str) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as f:
    json.dump(result, f, indent=2)


def presets_with_ranges() -> Sequence[str]:
  return tuple(RELEASED_RANGES)
