"""The main job (`make run`): the reproduction of zero-shot grafting on the embedded default
(SmolLM2-135M-Instruct, synthetic shapes VQA): stage 0 (translator), then per seed stage 2 against
the surrogate, on the full target and on the plain truncation, each scored on held-out questions,
the surrogate-trained encoder also grafted zero-shot onto the full target; the table is printed
and written to out_dir. Resumable: a rerun continues where it stopped.

  python -m graft_jax.main --config=configs/surrogate.py          # quick: 1 seed, (a)-(c); 19.5 min on 2 cores with the encoder pretraining
  python -m graft_jax.main --config=configs/surrogate.py:full     # 3 seeds, (a)-(e) + transfer (f); ~1.5 h on 2 cores

Both first pretrain the encoder on labelled scenes (`encoder_pretrain`, ~8 min, once: the
encoder in runs/vision_encoder is reused by every later job with the same settings).

`ranges`: ((start, end) or (start, end, num_translators), ...). `steps.pretrain` > 0 adds stage 1
(adapter + translator on image + text) before stage 2; `translator_kl_weight` > 0 distils the
translator toward the full target's logits; `steps.transfer` > 0 runs (f).
"""
import ml_collections

from graft_jax.config_lib import data_config, default_template, model_config, vit_config

SIZES = {
    # quick leaves out (d) and (e) to stay under 20 minutes with the one-off encoder pretraining
    "quick": dict(seeds=(0,), fit_sequences=256, conditions=("surrogate", "target"),
                  steps={"translator": 200, "pretrain": 0, "encoder": 50, "adapter": 0, "transfer": 0},
                  run_dir="runs/surrogate", out_dir="runs/surrogate/results", eval_limit=100),
    "full": dict(seeds=(0, 1, 2), fit_sequences=512, conditions=("surrogate", "target", "truncation", "untrained"),
                 steps={"translator": 600, "pretrain": 0, "encoder": 100, "adapter": 30, "transfer": 20},
                 run_dir="runs/reproduction", out_dir="experiments/results/reproduction", eval_limit=0),
}


def vqa_data() -> ml_collections.ConfigDict:
  """Synthetic shapes with colour and shape questions ("What color is the square?", "What shape
  is the red object?"): every answer needs the image, and the blind prior is 0.16. The generator
  also asks count, position and existence (POPE style; `question_types`); at this scale the
  direct encoder (c) does not learn those even in 240 steps while it learns colour and shape in
  100 (README, "Does the encoder see?"), so the reproduction asks only these two.
  `train_turns` > 1 asks several per training image (write them to other directories)."""
  data = data_config()
  data.update({"out_dir": "data_cache/vqa_cs", "data_dir": "data_cache/vqa_cs_tfds",
               "question_types": ("color", "shape"),
               "shapes_splits": (("train", 4000), ("val", 200), ("test", 250))})
  return data


def get_config(arg=None):
  parts = (arg or "quick").split(",")
  size, name = parts[0], (parts[1] if len(parts) > 1 else "smollm2-135m")
  if size not in SIZES:
    raise ValueError(f"Unknown size {size!r}; choose from {sorted(SIZES)} (e.g. configs/surrogate.py:full)")
  s = SIZES[size]
  vit = vit_config()
  vit.patch_size = 16  # 4x4 patches + CLS + start/end of image = 19 embeddings per 64 px image
  return ml_collections.ConfigDict({
      "task": "surrogate",
      # remat dots_no_batch: on this CPU it is faster than none (x0.93 stage 2 on the surrogate,
      # x0.86 stage 3) and holds 35-38% less memory (README "Step choices, before and after")
      "model": model_config(name, remat_policy="dots_no_batch"),
      "template": default_template(name),
      # the study's best plan at >= 25% saved (README "Fidelity study"): stage 2 alternates between
      # [12, 28] (46.0% fewer decoder FLOPs) and [26, 28] (5.7%), 25.9% fewer on average
      "ranges": ((12, 28),),
      "vit": vit,
      "data": vqa_data(),
      "run_dir": s["run_dir"],
      "out_dir": s["out_dir"],
      "seeds": s["seeds"],
      "conditions": s["conditions"],
      "steps": s["steps"],
      "lr": {"translator": 1e-3, "pretrain": 1e-3, "encoder": 1e-3, "transfer": 5e-5},
      # the ViT's learning rate relative to the adapter's in every stage that trains it (a
      # pretrained encoder is tuned gently, as the paper tunes CLIP at 5e-5)
      "encoder_lr_mult": 0.1,
      # stage 0: "hidden" fits the translator to the target's hidden states around the range
      # (graft_jax/translator_fit.py; translator_fit.sequences chats, steps.translator steps);
      # "ce" trains it with cross-entropy through the surrogate (+ KL if translator_kl_weight > 0)
      # the encoder starts pretrained on labelled scenes (graft_jax/vision_pretrain; the offline
      # stand-in for CLIP), written once to `dir` and reused by every job with the same settings;
      # steps=0 trains it from scratch in stage 2; --config.vit.source=DIR starts from your own
      "encoder_pretrain": {"steps": 1500, "batch_size": 128, "lr": 1e-3, "scenes": 30000, "seed": 0,
                           "dir": "runs/vision_encoder"},
      "translator_objective": "hidden",
      "translator_fit": {"sequences": s["fit_sequences"]},
      "translator_kl_weight": 0.0,
      # stage 1 (steps.pretrain > 0) anchored to the target: + pretrain_kl_weight x KL(target ||
      # surrogate) at the supervised targets of the samples pretrain_kl_rows names ("text": the
      # text-only chats, so image answers learn from CE alone; "all")
      "pretrain_kl_weight": 0.0,
      "pretrain_kl_rows": "text",
      # > 0: stage 2 against the surrogate adds Gaussian noise to every image embedding, sigma x
      # that embedding's RMS norm (train/step.py), so the encoder cannot rely on fine detail the
      # translator reads and the target may not; the encoder trained on the target (c) gets none
      "image_noise": 0.0,
      # > 0: stage 2 against the surrogate adds embed_penalty x a penalty on the image embeddings'
      # statistics against the token embeddings (norm, mean direction, nearest-token cosine;
      # train/embedding_penalty.py); (c) gets none
      "embed_penalty": 0.0,
      # more plans: stage 0 trains a translator for each, and stage 2 against the surrogate
      # alternates its steps between the surrogate of `ranges` and these (train/mix.py); () for one
      "mix_ranges": (((26, 28),),),
      # rounds > 0: stage 2 against the surrogate in rounds + 1 chunks, the translator refitted
      # between chunks on the target's hidden states for `images` training samples carrying the
      # current encoder's embeddings (+ `text` chats), `steps` fit steps at `lr`
      # (graft_jax/reproduction/refresh.py); the encoder never trains through the target
      "refresh": {"rounds": 0, "images": 256, "text": 128, "steps": 200, "lr": 3e-4},
      "batch_size": 16,
      "transfer_eval_every": 10,
      "num_eval_chats": 64,
      "eval": {"limit": s["eval_limit"], "batch_size": 32, "max_new_tokens": 6},
      "distributed": False,
  })
