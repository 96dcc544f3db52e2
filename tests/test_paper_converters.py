"""Data converters on small hand-made files in the real formats: LLaVA-665K JSON + GenQA JSONL
(fixed order, chats evenly among image samples, ArrayRecord build read back in that order), POPE,
VQAv2, GQA and multiple choice into evaluation files the evaluator reads and scores."""
from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from graft_jax.data.converters.choice import convert_choice
from graft_jax.data.converters.common import write_json
from graft_jax.data.converters.pope import convert_pope
from graft_jax.data.converters.training import mixed_order, write_training_files
from graft_jax.data.converters.vqa import convert_gqa, convert_vqav2
from graft_jax.data.errors import DataFormatError
from graft_jax.data.readers import read_llava_json
from graft_jax.evaluate import vqa_eval
from graft_jax.tasks import paper_data
from graft_jax.train.data_setup import make_train_iterator
from tests.config_files import load_config


def _png(path, color=(200, 10, 10)):
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.new("RGB", (6, 4), color).save(path)


def _jsonl(path, rows):
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _scores(monkeypatch, eval_file, predictions):
  """The evaluator's scores of `eval_file` for canned predictions (the model is stubbed out)."""
  samples, skips = read_llava_json(str(eval_file), image_check="exists")
  assert skips.total == 0, skips.summary()
  monkeypatch.setattr(vqa_eval, "answer_samples", lambda *a, **k: predictions)
  return vqa_eval.evaluate_samples(None, None, samples, None, "llama3", batch_size=1, max_new_tokens=1,
                                   eos_ids=(), pad_id=0)


def test_pope_files_to_an_evaluation_file(tmp_path, monkeypatch):
  images = tmp_path / "val2014"
  for i in (310196, 42):
    _png(images / f"COCO_val2014_{i:012d}.jpg")
  for setting, label in (("adversarial", "yes"), ("popular", "no"), ("random", "no")):
    _jsonl(tmp_path / f"coco_pope_{setting}.json", [
        {"question_id": 1, "image": "COCO_val2014_000000310196.jpg", "text": "Is there a snowboard in the image?",
         "label": label},
        {"question_id": 2, "image": "COCO_val2014_000000000042.jpg", "text": "Is there a dog in the image?",
         "label": "yes"}])
  files = [str(tmp_path / f"coco_pope_{s}.json") for s in ("adversarial", "popular", "random")]
  entries = convert_pope(files, str(images))
  write_json(str(tmp_path / "pope.json"), entries)
  first = entries[0]
  assert first["question_type"] == "pope_adversarial" and first["kind"] == "yesno" and first["answer"] == "yes"
  assert first["conversations"][0]["value"] == ("<image>\nIs there a snowboard in the image?\n"
                                                "Answer the question using a single word or phrase.")
  scores, records = _scores(monkeypatch, tmp_path / "pope.json", ["Yes", "No, there is not."] * 3)
  assert records[1]["kind"] == "yesno"
  assert scores["by_question_type"]["pope_adversarial"]["yesno"]["accuracy"] == 0.5
  assert scores["by_question_type"]["pope_popular"]["yesno"]["accuracy"] == 0.0
  assert scores["overall"]["n"] == 6


def test_pope_bad_records_are_named(tmp_path):
  _png(tmp_path / "a.jpg")
  _jsonl(tmp_path / "coco_pope_random.json", [{"question_id": 1, "image": "a.jpg", "text": "Is it?", "label": "maybe"}])
  with pytest.raises(DataFormatError, match=r"coco_pope_random.json:1: label must be 'yes' or 'no'"):
    convert_pope([str(tmp_path / "coco_pope_random.json")], str(tmp_path))
  _jsonl(tmp_path / "coco_pope_random.json", [{"question_id": 1, "image": "a.jpg", "label": "no"}])
  with pytest.raises(DataFormatError, match=r"missing field\(s\) \['text'\]"):
    convert_pope([str(tmp_path / "coco_pope_random.json")], str(tmp_path))
  _jsonl(tmp_path / "coco_pope_random.json", [{"question_id": 1, "image": "b.jpg", "text": "Is it?", "label": "no"}])
  with pytest.raises(FileNotFoundError, match="no image file"):
    convert_pope([str(tmp_path / "coco_pope_random.json")], str(tmp_path))


def test_vqav2_consensus_answers_and_scoring(tmp_path, monkeypatch):
  _png(tmp_path / "val2014" / "COCO_val2014_000000262148.jpg")
  questions = {"data_subtype": "val2014", "questions": [
      {"image_id": 262148, "question": "Where is he looking?", "question_id": 262148000},
      {"image_id": 262148, "question": "How many people?", "question_id": 262148001}]}
  answers = lambda words: [{"answer": w, "answer_confidence": "yes", "answer_id": i + 1} for i, w in enumerate(words)]
  annotations = {"annotations": [
      {"question_id": 262148000, "image_id": 262148, "answer_type": "other", "question_type": "where is",
       "multiple_choice_answer": "down", "answers": answers(["down"] * 4 + ["at table"] * 3 + ["skateboard"] * 2 + ["table"])},
      {"question_id": 262148001, "image_id": 262148, "answer_type": "number", "question_type": "how many",
       "multiple_choice_answer": "2", "answers": answers(["2", "2", "two", "3", "3", "1", "4", "5", "6", "7"])}]}
  (tmp_path / "q.json").write_text(json.dumps(questions))
  (tmp_path / "a.json").write_text(json.dumps(annotations))
  entries = convert_vqav2(str(tmp_path / "q.json"), str(tmp_path / "a.json"), str(tmp_path / "val2014"))
  assert entries[0]["answer"] == ["down", "at table"]  # given by >= 3 of 10 annotators
  assert entries[1]["answer"] == ["2"]                  # "2", "2", "two" normalise alike
  assert len(entries[0]["answers"]) == 10 and entries[1]["question_type"] == "number"
  write_json(str(tmp_path / "vqav2.json"), entries)
  scores, _ = _scores(monkeypatch, tmp_path / "vqav2.json", ["At the table.", "Two"])
  assert scores["overall"]["accuracy"] == 1.0
  del annotations["annotations"][1]
  (tmp_path / "a.json").write_text(json.dumps(annotations))
  with pytest.raises(DataFormatError, match="question_id 262148001 has no annotation"):
    convert_vqav2(str(tmp_path / "q.json"), str(tmp_path / "a.json"), str(tmp_path / "val2014"))


def test_gqa_questions_to_entries(tmp_path):
  _png(tmp_path / "images" / "n161313.jpg")
  questions = {"20968379": {"imageId": "n161313", "question": "Is the sky blue or white?", "answer": "blue",
                            "fullAnswer": "The sky is blue.", "types": {"structural": "choose", "semantic": "attr"}},
               "20968380": {"imageId": "n161313", "question": "Is there a cat?", "answer": "no",
                            "types": {"structural": "verify"}}}
  (tmp_path / "testdev_balanced_questions.json").write_text(json.dumps(questions))
  entries = convert_gqa(str(tmp_path / "testdev_balanced_questions.json"), str(tmp_path / "images"))
  assert [(e["id"], e["answer"], e["question_type"], e["kind"]) for e in entries] == [
      ("20968379", "blue", "choose", "exact"), ("20968380", "no", "verify", "exact")]
  del questions["20968380"]["imageId"]
  (tmp_path / "testdev_balanced_questions.json").write_text(json.dumps(questions))
  with pytest.raises(DataFormatError, match=r"question 20968380: missing field\(s\) \['imageId'\]"):
    convert_gqa(str(tmp_path / "testdev_balanced_questions.json"), str(tmp_path / "images"))


def test_multiple_choice_jsonl_and_mmbench_tsv(tmp_path, monkeypatch):
  _png(tmp_path / "img" / "2D" / "count" / "ade20k_10.png")
  _jsonl(tmp_path / "cv_bench.jsonl", [  # CV-Bench style: a choices list and "(C)" answers
      {"idx": 0, "type": "2D", "task": "Count", "image": "img/2D/count/ade20k_10.png",
       "question": "How many organs are in the image?", "choices": ["3", "2", "1", "0"], "answer": "(C)"}])
  buffer = io.BytesIO()
  Image.new("RGB", (5, 5), (0, 0, 255)).save(buffer, format="PNG")
  b64 = base64.b64encode(buffer.getvalue()).decode()
  (tmp_path / "mmbench_dev_en.tsv").write_text(  # MMBench style: A-D columns, hint, base64 image
      "index\tquestion\thint\tA\tB\tC\tD\tanswer\tcategory\timage\n"
      f"241\tWhich colour is the square?\tLook closely.\tred\tblue\tgreen\tnan\tB\tattribute_recognition\t{b64}\n")
  cv = convert_choice(str(tmp_path / "cv_bench.jsonl"), str(tmp_path))
  mm = convert_choice(str(tmp_path / "mmbench_dev_en.tsv"), str(tmp_path), image_dir=str(tmp_path / "mm_images"))
  assert cv[0]["answer"] == "C" and cv[0]["choices"] == ["3", "2", "1", "0"] and cv[0]["question_type"] == "cv_bench/Count"
  assert mm[0]["conversations"][0]["value"] == (
      "<image>\nLook closely.\nWhich colour is the square?\nA. red\nB. blue\nC. green\n"
      "Answer with the option's letter from the given choices directly.")
  assert mm[0]["choices"] == ["red", "blue", "green"] and mm[0]["id"] == "mmbench_dev_en/241"
  assert np.asarray(Image.open(mm[0]["image"])).tolist()[0][0] == [0, 0, 255]
  write_json(str(tmp_path / "choice.json"), cv + mm)
  scores, records = _scores(monkeypatch, tmp_path / "choice.json", ["(C) 1", "blue"])  # "blue": by option text
  assert [r["kind"] for r in records] == ["choice", "choice"]
  assert scores["overall"]["choice"]["accuracy"] == 1.0
  _jsonl(tmp_path / "bad.jsonl", [{"question": "Q?", "choices": ["a", "b"], "answer": "D", "image": "x.png"}])
  with pytest.raises(DataFormatError, match="bad.jsonl:1: answer D but only 2 options"):
    convert_choice(str(tmp_path / "bad.jsonl"), str(tmp_path), check_images=False)


def _llava_fixture(root):
  """LLaVA-665K-shaped JSON (coco/gqa images, one text-only sample) and GenQA-shaped JSONL."""
  records = []
  for i in range(6):
    folder = "coco/train2017" if i < 4 else "gqa/images"
    name = f"{folder}/{i:012d}.jpg"
    _png(root / "images" / name, (i * 40, 0, 0))
    records.append({"id": f"{i:09d}", "image": name, "conversations": [
        {"from": "human", "value": f"<image>\nWhat is in picture {i}?"}, {"from": "gpt", "value": f"Object {i}."},
        {"from": "human", "value": "And its colour?"}, {"from": "gpt", "value": "Red."}]})
  records.append({"id": "sharegpt-1", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]})
  (root / "llava_v1_5_mix665k.json").write_text(json.dumps(records))
  chats = [{"messages": [{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": f"Answer {i}."}],
            "template": "academic", "split": "academic"} for i in range(3)]
  chats.append({"messages": [{"role": "system", "content": "Be nice."}, {"role": "user", "content": "Q?"},
                             {"role": "assistant", "content": "A."}]})
  _jsonl(root / "genqa.jsonl", chats)


def test_training_files_keep_images_and_mix_chats_evenly(tmp_path):
  _llava_fixture(tmp_path)
  out = write_training_files(str(tmp_path / "out"), str(tmp_path / "llava_v1_5_mix665k.json"),
                             str(tmp_path / "genqa.jsonl"), chat_limit=3, seed=0)
  assert out["counts"] == {"image_samples": 6, "text_only_dropped": 1, "chats": 3}
  assert out["chat_skips"] == {"other_role": 1}
  mix = json.loads((tmp_path / "out" / "mix.json").read_text())
  kinds = ["text" if "image" not in r else r["image"].split("/")[0] for r in mix]
  assert len(mix) == 9 and kinds.count("text") == 3
  text_at = [i for i, k in enumerate(kinds) if k == "text"]
  assert max(np.diff(text_at)) - min(np.diff(text_at)) <= 1  # evenly spaced
  image = json.loads((tmp_path / "out" / "image.json").read_text())
  assert sorted(r["id"] for r in image) == [f"{i:09d}" for i in range(6)]
  again = write_training_files(str(tmp_path / "again"), str(tmp_path / "llava_v1_5_mix665k.json"),
                               str(tmp_path / "genqa.jsonl"), chat_limit=3, seed=0)
  assert json.loads(open(again["files"]["mix"]).read()) == mix  # deterministic
  assert [r["id"] for r in mixed_order(image, [], seed=1)] != [r["id"] for r in image]


@pytest.mark.filterwarnings("ignore")
def test_data_task_builds_the_recipe_datasets_read_in_order(tmp_path, monkeypatch):
  _llava_fixture(tmp_path)
  config = load_config("configs/paper/data.py")
  config.update({"out_dir": str(tmp_path / "out"), "data_dir": str(tmp_path / "tfds")})
  config.llava.update({"json": str(tmp_path / "llava_v1_5_mix665k.json"), "images": str(tmp_path / "images")})
  config.chat.update({"jsonl": str(tmp_path / "genqa.jsonl"), "limit": 3})
  result = paper_data.run(config)
  assert result["datasets"] == {"paper_image": 6, "paper_mix": 9, "paper_text": 3}
  # The pretrain recipe reads paper_mix in the stored order (data.sources, data.shuffle=False).
  recipe = load_config("configs/paper/recipe.py", "llama-3.2-3b,pretrain")
  recipe.data.data_dir = str(tmp_path / "tfds")
  recipe.train.update({"batch_size": 3, "max_len": 96})
  recipe.vit.image_size = 28
  from graft_jax.convert.tokenizer import load_tokenizer  # pylint: disable=g-import-not-at-top
  from graft_jax.train.stages import get_stage  # pylint: disable=g-import-not-at-top
  recipe.template = "chatml"  # SmolLM2's tokenizer stands in for Llama-3's
  iterator, _ = make_train_iterator(recipe, get_stage("pretrain"), load_tokenizer(), image_len=6)
  rows = [int(i) for _ in range(3) for i in next(iterator)["record_index"]]
  assert rows == list(range(9))
