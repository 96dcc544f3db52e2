"""Rough CPU time of a cell from its sizes (printed by `experiments/fidelity_study.py --list`).

Decoder FLOPs per step, from the model's shapes and the offline data's padded sizes, over a
throughput measured on this project's 2-core CPU (SmolLM2-135M, batch 16, the study's recipe with
remat dots_no_batch, quiet cores): stage 2's median step took 3.05 s on the [19, 28] surrogate and
4.21 s on the full target (runs/fidelity_study/*/seed0/*/metrics.jsonl, session 8), both ~105
GFLOP/s by this count; answering 600 held-out questions took 5.4 min, ~30 GFLOP/s. Per step:
  translator ("ce"): forward through the kept layers, backward only from the top down to the
    translator, the LM head (tied, frozen: input gradient only) at the supervised positions; with
    KL distillation also a forward of the full target; ("hidden"): one forward of the target over
    the fit's chats (about half of the padded positions are real), then forward + backward of the
    translator block alone per step;
  stage 2 of a mix: the mean over its surrogates, plus a stage 0 for each;
  stage 1/2: forward and an input-gradient backward through every kept layer (the gradient
    reaches the image embeddings), the LM head at the supervised positions; the ViT is ~1%;
    stage 1 anchored by KL (pretrain_kl_weight > 0) adds a forward of the full target.
Estimates to plan with; cells.json records the measured wall-clock of every cell that ran.
"""
from __future__ import annotations

from graft_jax.models.config import LlamaConfig
from graft_jax.surrogate import SurrogatePlan
from graft_jax.train.mix import plans_of

TRAIN_FLOPS_PER_S = 105e9
GENERATE_FLOPS_PER_S = 30e9
# Padded positions and supervised targets per sample (data_cache/vqa/stats.json, buckets of 64, 128, ...).
TEXT_POSITIONS, TEXT_SUPERVISED = 128, 27      # synthetic chats: mean 56 tokens, max 171
IMAGE_POSITIONS, IMAGE_SUPERVISED = 64, 9.2    # VQA shapes: mean 46 tokens (19 image), max 52
PROMPT_TOKENS, ANSWER_TOKENS = 45, 6           # an evaluation prompt, the greedy answer
OVERHEAD_PER_RUN = 40.0   # loading SmolLM2, building and compiling the step, per train() call
MEASURE_IMAGES = 64       # measure.MeasureSettings.images


def layer_flops(c: LlamaConfig) -> float:
  """Forward FLOPs of one decoder layer per token (matmuls; attention is small at these lengths)."""
  q, kv = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
  return 2.0 * (c.hidden_size * (2 * q + 2 * kv) + 3 * c.hidden_size * c.intermediate_size)


def cell_seconds(job, llm: LlamaConfig, translator_shared: bool = False, target_shared: bool = False) -> dict:
  """Seconds per part of the cell's main job `job` ({"translator", "pretrain", "encoder_surrogate",
  "encoder_target", "scoring", "measures", "total"}) on the decoder `llm`; a shared run that an
  earlier cell trained costs only its overhead here."""
  n = llm.num_layers
  plan = SurrogatePlan.create(n, [tuple(r) for r in job.ranges])
  mix = plans_of(n, job.get("mix_ranges", ()))
  kept = plan.num_kept_layers
  f, head = layer_flops(llm), 2.0 * llm.hidden_size * llm.vocab_size
  b, seeds, steps = job.batch_size, len(job.seeds), job.steps
  text_pos, text_sup = b * TEXT_POSITIONS, b * TEXT_SUPERVISED
  img_pos, img_sup = b * IMAGE_POSITIONS, b * IMAGE_SUPERVISED

  def translator_total(p: SurrogatePlan) -> float:
    if job.translator_objective == "hidden":  # one target forward over the fit's chats, then 1-layer steps
      return (job.translator_fit.sequences * TEXT_POSITIONS / 2 * f * n
              + steps.translator * text_pos / 2 * 3 * f * len(p.ranges))
    above = sum(len(layers) for _, kind, layers in p.layout() if kind == "keep" and layers[0] > p.ranges[0].start)
    step = text_pos * f * (p.num_kept_layers + 2 + above) + 2 * head * text_sup
    if job.translator_kl_weight > 0:
      step += text_pos * f * n + head * text_sup
    return steps.translator * step

  # stage 2 of a mix (mix_ranges) alternates its steps over the surrogates: their mean depth
  stage2_kept = sum(p.num_kept_layers for p in [plan, *mix]) / (1 + len(mix))
  image_step = lambda layers: 2 * img_pos * f * layers + 2 * head * img_sup
  pretrain = 2 * (text_pos + img_pos) / 2 * f * kept + head * (text_sup + img_sup)
  if job.get("pretrain_kl_weight", 0.0) > 0:  # the target's forward over every sample of the batch
    pretrain += (text_pos + img_pos) / 2 * f * n + head * (text_sup + img_sup) / 2
  answer = lambda layers: PROMPT_TOKENS * f * layers + ANSWER_TOKENS * (f * layers + head)
  questions = (job.eval.limit or 250) * seeds
  # measures: the hidden pass on the chats for the untrained and the trained surrogate (their KL
  # comes from the main job); per seed and encoder, target + surrogate on the held-out images
  text_surrogates = 2 + (seeds if steps.pretrain else 0)
  measures = (text_surrogates * job.num_eval_chats * TEXT_POSITIONS * f * (n + kept)
              + seeds * 2 * MEASURE_IMAGES * IMAGE_POSITIONS * f * (n + kept))
  out = {
      "translator": ((0.0 if translator_shared else translator_total(plan))
                     + sum(translator_total(p) for p in mix)) / TRAIN_FLOPS_PER_S,
      "pretrain": seeds * steps.pretrain * pretrain / TRAIN_FLOPS_PER_S,
      "encoder_surrogate": seeds * steps.encoder * image_step(stage2_kept) / TRAIN_FLOPS_PER_S,
      "encoder_target": 0.0 if target_shared else seeds * steps.encoder * image_step(n) / TRAIN_FLOPS_PER_S,
      # (a) and (c2) on the surrogate, (b) and (c) on the target; (c) read from the shared cache
      "scoring": questions * (2 * answer(kept) + answer(n) * (1 if target_shared else 2)) / GENERATE_FLOPS_PER_S,
      "measures": measures / TRAIN_FLOPS_PER_S,
  }
  runs = 1 + len(mix) + seeds * (2 + len(mix) + (1 if steps.pretrain else 0))  # a mix compiles a step per surrogate
  out["total"] = sum(out.values()) + runs * OVERHEAD_PER_RUN
  return out
