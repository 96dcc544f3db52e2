"""The reproduction's blind floor (graft_jax/reproduction/answer_prior.py) on hand-made samples."""
from graft_jax.data.readers import Sample
from graft_jax.reproduction.answer_prior import answer_prior_scores, prior_answers


def _sample(i, question, answer, question_type):
  return Sample(id=str(i), conversation=[{"role": "user", "content": f"<image>\n{question}"},
                                          {"role": "assistant", "content": answer.capitalize() + "."}],
                image=None, extra={"question_type": question_type, "answer": answer})


TRAIN = [_sample(0, "Which color is the star?", "blue", "color"),
         _sample(1, "Which color is the cross?", "red", "color"),
         _sample(2, "Which color is the circle?", "blue", "color"),
         _sample(3, "Is the star at the top or at the bottom?", "top", "position"),
         _sample(4, "Is the star on the left or on the right?", "left", "position"),
         _sample(5, "Is the cross on the left or on the right?", "left", "position"),
         _sample(6, "Is the cross at the bottom or at the top?", "top", "position")]


def test_prior_takes_the_types_most_frequent_answer_among_the_options_the_question_names():
  test = [_sample(10, "Which color is the square?", "red", "color"),
          _sample(11, "Is the square on the right or on the left?", "left", "position"),
          _sample(12, "Is the square at the top or at the bottom?", "bottom", "position"),
          _sample(13, "How many squares are there?", "2", "count")]  # a type never seen in training
  assert prior_answers(TRAIN, test) == ["blue", "left", "top", ""]
  scores, records = answer_prior_scores(TRAIN, test)
  assert scores["overall"]["accuracy"] == 0.25 and scores["overall"]["n"] == 4
  assert scores["by_question_type"]["position"]["accuracy"] == 0.5
  assert [r["prediction"] for r in records] == ["blue", "left", "top", ""]
