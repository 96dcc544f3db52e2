"""Answer scoring rules on hand-made examples: VQA normalisation, exact/contains, POPE yes/no, letters."""
from __future__ import annotations

import pytest

from graft_jax.evaluate.metrics import (contains_answer, exact_match, extract_choice, normalize_answer,
                                        reference_letter, score_predictions, score_sample, yes_no,
                                        yes_no_metrics)


@pytest.mark.parametrize("text, expected", [
    ("Two.", "2"), ("  The Red Circle! ", "red circle"), ("1,000 apples", "1000 apples"),
    ("2.5 cm.", "2.5 cm"), ("Don't know", "dont know"), ("t-shirt", "t shirt"), ("None", "0"),
    ("an apple, a pear", "apple pear"), ("twenty", "20")])
def test_normalize_answer(text, expected):
  assert normalize_answer(text) == expected


def test_exact_and_contains():
  assert exact_match("Two.", "2") and exact_match("2", "two") and exact_match("The left.", "left")
  assert not exact_match("The circle is red.", "red")
  assert exact_match("blue", ["red", "Blue"]) and not exact_match("green", ["red", "blue"])
  assert contains_answer("The circle is red.", "red") and contains_answer("There are two.", "2")
  assert not contains_answer("It is reddish.", "red")
  assert contains_answer("a red circle and a blue square", "blue square")
  assert not contains_answer("a blue circle", "blue square")


@pytest.mark.parametrize("prediction, expected", [
    ("Not really.", "no"), ("There is no cat, but yes a dog", "no"), ("Yes.", "yes"), ("No", "no"),
    ("NO!", "no"), ("yes, it is not hidden", "no"), ("Nothing suggests otherwise", "yes"),
    ("There isn't one", "yes"), ("", "yes"), ("Yes, there is.", "yes")])
def test_pope_rule(prediction, expected):
  assert yes_no(prediction) == expected


@pytest.mark.parametrize("prediction, expected", [
    ("B", "B"), ("(B)", "B"), ("B.", "B"), ("B) a circle", "B"), ("The answer is B", "B"),
    ("Answer: (D)", "D"), ("I think it's C.", "C"), ("b", "B"), ("(c).", "C"), ("A", "A"),
    ("A. red", "A"), ("A red circle", None), ("A red circle, so B", "B"), ("E", "E"), ("F", None),
    ("Best guess: none", None), ("ABC", None), ("", None)])
def test_extract_choice(prediction, expected):
  assert extract_choice(prediction) == expected


def test_extract_choice_falls_back_to_option_text():
  options = ["red circle", "blue square", "green star"]
  assert extract_choice("The blue square.", options) == "B"
  assert extract_choice("purple", options) is None
  assert extract_choice("C", options) == "C"  # a letter wins over text


def test_reference_letter():
  assert reference_letter("B") == "B" and reference_letter("(c)") == "C" and reference_letter(3) == "D"
  for bad in ("F", "yes", 7, True):
    with pytest.raises(ValueError):
      reference_letter(bad)


def test_yes_no_metrics_on_a_hand_counted_confusion_matrix():
  # tp=3, fp=1, fn=2, tn=4
  pairs = [("yes", "yes")] * 3 + [("yes", "no")] + [("no", "yes")] * 2 + [("no", "no")] * 4
  m = yes_no_metrics(pairs)
  assert (m["tp"], m["fp"], m["fn"], m["tn"], m["n"]) == (3, 1, 2, 4, 10)
  assert m["accuracy"] == pytest.approx(0.7)
  assert m["precision"] == pytest.approx(0.75) and m["recall"] == pytest.approx(0.6)
  assert m["f1"] == pytest.approx(2 * 0.75 * 0.6 / 1.35)
  assert m["yes_ratio"] == pytest.approx(0.4)
  assert yes_no_metrics([("no", "yes"), ("no", "no")])["f1"] == 0.0  # no yes predicted: 0, not an error


def _rec(i, qtype, kind, prediction, answer, **kw):
  return {"id": str(i), "question_type": qtype, "kind": kind, "prediction": prediction, "answer": answer, **kw}


def test_score_predictions_overall_and_per_type():
  records = [
      _rec(0, "color", "exact", "Red.", "red"),
      _rec(1, "color", "exact", "The shape is red.", "red"),  # wrong by exact, right by contains
      _rec(2, "count", "exact", "Two", "2"),
      _rec(3, "exists", "yesno", "Yes, there is.", "yes"),
      _rec(4, "exists", "yesno", "Not that I can see.", "yes"),
      _rec(5, "exists", "yesno", "No.", "no"),
      _rec(6, "exists", "yesno", "There is one.", "no"),
      _rec(7, "mc", "choice", "(B)", "B"),
      _rec(8, "mc", "choice", "I cannot tell", 0),
      _rec(9, "caption", "contains", "I see a red circle and a square.", "red circle"),
  ]
  out = score_predictions(records)
  overall = out["overall"]
  assert overall["n"] == 10 and overall["accuracy"] == pytest.approx(6 / 10)
  assert overall["exact"] == {"n": 3, "accuracy": pytest.approx(2 / 3), "contains": pytest.approx(1.0)}
  assert overall["yesno"]["accuracy"] == 0.5 and overall["yesno"]["tp"] == 1 and overall["yesno"]["fp"] == 1
  assert overall["yesno"]["f1"] == pytest.approx(0.5) and overall["yesno"]["yes_ratio"] == 0.5
  assert overall["choice"] == {"n": 2, "accuracy": 0.5, "unparsed": 1}
  assert overall["contains"] == {"n": 1, "accuracy": 1.0}
  by_type = out["by_question_type"]
  assert sorted(by_type) == ["caption", "color", "count", "exists", "mc"]
  assert by_type["color"]["accuracy"] == 0.5 and "yesno" not in by_type["color"]
  assert by_type["count"]["accuracy"] == 1.0 and by_type["exists"]["n"] == 4


def test_score_predictions_extra_grouping_and_errors():
  records = [_rec(0, "exists", "yesno", "yes", "yes", pope="positive"),
             _rec(1, "exists", "yesno", "yes", "no", pope="adversarial"), _rec(2, "color", "exact", "red", "red")]
  out = score_predictions(records, group_by=("question_type", "pope"))
  assert out["by_pope"]["adversarial"]["accuracy"] == 0.0 and out["by_pope"]["none"]["n"] == 1
  assert score_sample(records[0]) == {"correct": True, "parsed": "yes", "reference": "yes"}
  with pytest.raises(ValueError, match="unknown kind"):
    score_predictions([_rec(0, "x", "bleu", "a", "a")])
  with pytest.raises(ValueError, match="yes or no"):
    score_predictions([_rec(0, "x", "yesno", "yes", "maybe")])
  with pytest.raises(ValueError, match="lacks \\['prediction'\\]"):
    score_predictions([{"id": "0", "kind": "exact", "answer": "a"}])
  with pytest.raises(ValueError, match="No records"):
    score_predictions([])
