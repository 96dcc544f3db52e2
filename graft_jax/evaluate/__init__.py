"""Generation, VQA/POPE/multiple-choice metrics, LM scoring."""
