"""Convert what you downloaded into the recipe's datasets and the evaluator's files.

  python -m graft_jax.main --config=configs/paper/data.py \
      --config.llava.json=/data/llava/llava_v1_5_mix665k.json --config.llava.images=/data/llava \
      --config.chat.jsonl=/data/genqa.jsonl --config.out_dir=/data/paper

Training: LLaVA JSON + image folder and GenQA-style chat JSONL -> {out_dir}/{image,mix}.json and
text.jsonl (fixed pre-shuffled order, chats evenly among image samples), then ArrayRecord datasets
{prefix}_image, {prefix}_mix, {prefix}_text under data_dir (what configs/paper/recipe.py reads).
Evaluation: each filled block -> {out_dir}/eval/<name>.json for configs/evaluate.py.
Empty paths are skipped.
"""
import ml_collections


def get_config(arg=None):
  del arg
  return ml_collections.ConfigDict({
      "task": "paper_data",
      "out_dir": "data/paper",
      "data_dir": "data/paper/tfds",   # ArrayRecord datasets (the recipe's data.data_dir)
      "prefix": "paper",               # dataset names: {prefix}_image, {prefix}_mix, {prefix}_text
      "seed": 0,
      "image_check": "exists",         # "decode": also decode every image once (slow for 665K)
      "llava": {"json": "", "images": ""},           # LLaVA-1.5-665K or LLaVA-Pretrain-558K
      "chat": {"jsonl": "", "limit": 500000},        # GenQA-style chats; limit 0: all
      "build_tfds": True,
      "eval": {
          "pope": {"files": (), "images": ""},       # coco_pope_{adversarial,popular,random}.json
          "vqav2": {"questions": "", "annotations": "", "images": ""},
          "gqa": {"questions": "", "images": ""},    # e.g. testdev_balanced_questions.json
          "choice": {"files": (), "images": ""},     # lettered options; one eval file per input
      },
  })
