"""Converters from the files people download to the formats graft_jax reads.

Training (training.py): LLaVA-1.5-665K / LLaVA-Pretrain-558K JSON with their image folders and
GenQA-style chat JSONL -> the recipe's datasets (image samples; image samples with text chats
evenly interleaved; text chats), in a fixed pre-shuffled order.

Evaluation, each into the LLaVA-format JSON that graft_jax/evaluate reads (common.py):
  pope.py    POPE JSONL {"question_id", "image", "text", "label"} (adversarial/popular/random)
  vqa.py     VQAv2 questions + annotations JSON; GQA questions JSON {id: {"imageId", "question", "answer"}}
  choice.py  multiple choice with lettered options (JSON / JSONL / MMBench-style TSV)
"""
