"""The cost report: surrogate sizes match the paper, and counts match real params trees."""
import jax
import numpy as np
import pytest

from graft_jax.cost import decoder_cost
from graft_jax.models.config import LlamaConfig
from graft_jax.models.llama import init_params
from graft_jax.surrogate import SurrogatePlan
from graft_jax.tasks.surrogate_report import report_rows


@pytest.mark.parametrize("name, ranges, paper_billions", [
    ("llama-3.2-3b", [(16, 26)], 2.2), ("llama-3.1-8b", [(17, 30)], 5.2), ("llama-3.1-70b", [(40, 78)], 37.5)])
def test_surrogate_sizes_match_the_paper(name, ranges, paper_billions):
  row = report_rows([(name, ranges)], seq_len=4096)[0]
  assert abs(row["surrogate_params"] / 1e9 - paper_billions) / paper_billions < 0.05
  assert row["flops_ratio"] < 1


def test_counts_match_an_initialised_tree():
  config = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=24, num_layers=5, num_heads=4,
                       num_kv_heads=2, head_dim=4, tie_word_embeddings=False)
  plan = SurrogatePlan.create(5, [(1, 3)])
  params = init_params(config, jax.random.key(0), plan.segments)
  cost = decoder_cost(config, plan.segments, seq_len=9)
  assert cost.params == sum(x.size for x in jax.tree.leaves(params))
  assert cost.layers == 3
  layer_matmul = 16 * 16 + 2 * 16 * 8 + 16 * 16 + 3 * 16 * 24
  assert cost.matmul_params == 3 * layer_matmul + 50 * 16
  assert cost.fwd_flops_per_token == 2 * cost.matmul_params + 4 * 3 * 16 * 5
