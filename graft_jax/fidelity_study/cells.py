"""The study's cells: each is one run of the reproduction main job (graft_jax/tasks/surrogate.py)
with a few settings changed from a shared base recipe.

A cell changes at most: where the translator range starts (it always ends at the base job's end,
L-2 for SmolLM2), how stage 0 trains the translator (`translator_objective`: fitted to the target's
hidden states, or cross-entropy through the surrogate with optional KL distillation,
`translator_kl_weight`), its budget and learning rate, stage 1 before stage 2 (`steps.pretrain`),
stage 1's anchor to the target (`pretrain_kl_weight`, `pretrain_kl_rows`), the number of
translator layers in the range, the adapter's output norm (`vit.output_norm`), the encoder's
training length (`steps.encoder`), refits of the translator on the encoder's image sequences
during stage 2 (`refresh.rounds`), noise on the image embeddings in stage 2 (`image_noise`), a
penalty on their statistics in stage 2 (`embed_penalty`), more surrogates that stage 2 alternates
with (`mix_ranges`) and
the encoder's depth (`vit.depth`; pretrained on labelled scenes at that size into its own
directory, and (c) trained with it too). Every cell runs the
conditions "surrogate" (a, b) and "target" (c, c2) for every seed of the base job.
"""
from __future__ import annotations

import dataclasses
import os

import ml_collections

STUDY_SIZE = {  # the study's base recipe on SmolLM2 (configs/surrogate.py:full with these changes)
    "seeds": (0, 1, 2),
    "steps": {"translator": 600, "pretrain": 0, "encoder": 100, "adapter": 0, "transfer": 0},
    "translator_objective": "hidden",  # stage 0 fitted to the target's hidden states
    "translator_kl_weight": 0.0,
    "eval_limit": 125,            # the first 125 test questions: 62-63 per question type (colour, shape)
}
# from the trajectory's transition point (layer 18: the suggested range starts at 19; README
# "Prediction trajectory") to L-2, where nothing is dropped
RANGE_STARTS = (19, 22, 24, 26, 28)
# The training levers are compared at a=19: the only start of the sweep whose surrogate saves the
# issue's 25% of decoder FLOPs per token (25.9% at T=4096; a=20 saves 23%, a=22 17%).
LEVER_START = 19


@dataclasses.dataclass(frozen=True)
class Cell:
  """One study cell: a range start and the settings it changes (None: the base job's)."""
  name: str
  start: int
  axis: str = "range start"
  translator_steps: int | None = None
  translator_lr: float | None = None
  objective: str | None = None
  kl_weight: float | None = None
  pretrain_steps: int | None = None
  output_norm: str | None = None
  encoder_steps: int | None = None
  refresh_rounds: int | None = None
  translators: int | None = None          # translator layers in the range (default 1)
  pretrain_kl_weight: float | None = None  # stage 1 anchored by KL to the target
  pretrain_kl_rows: str | None = None
  image_noise: float | None = None         # relative noise on the image embeddings in stage 2
  vit_depth: int | None = None             # encoder capacity: ViT blocks (pretrained anew at this size)
  embed_penalty: float | None = None       # penalty on the image embeddings' statistics in stage 2
  mix_starts: tuple[int, ...] | None = None  # more surrogates [s, end] stage 2 alternates with

  def changes(self) -> dict:
    """The settings this cell changes, as {field: value}."""
    skip = ("name", "start", "axis")
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
            if f.name not in skip and getattr(self, f.name) is not None}


def default_cells(starts=RANGE_STARTS, lever_start: int = LEVER_START) -> list[Cell]:
  """The range sweep with the base recipe, then each lever alone at `lever_start`."""
  a = lever_start
  return [Cell(f"a{s}", s) for s in starts] + [
      # stage 0 as first built: cross-entropy through the surrogate, 150 steps at 3e-4, without / with KL
      Cell(f"a{a}_ce", a, "stage-0 objective", objective="ce", translator_steps=150, translator_lr=3e-4),
      Cell(f"a{a}_cekl", a, "stage-0 objective", objective="ce", translator_steps=150, translator_lr=3e-4,
           kl_weight=1.0),
      Cell(f"a{a}_fit150", a, "translator budget", translator_steps=150),
      Cell(f"a{a}_stage1", a, "stage 1", pretrain_steps=60),
      # stage 1 with the translator anchored to the target by KL on the text-only chats
      Cell(f"a{a}_stage1kl", a, "stage 1", pretrain_steps=60, pretrain_kl_weight=1.0, pretrain_kl_rows="text"),
      # ... and by KL at every supervised target, image answers included (teacher: the target fed the
      # current encoder's embeddings), so the translator cannot read images in a way the target does not
      Cell(f"a{a}_stage1klall", a, "stage 1", pretrain_steps=60, pretrain_kl_weight=1.0, pretrain_kl_rows="all"),
      # two translator layers in place of layers a-1..27: the same 8 layers cut as [a, 28] with one
      Cell(f"a{a - 1}x2", a - 1, "translator layers", translators=2),
      Cell(f"a{a}_norm", a, "output norm", output_norm="rms_token_scale"),
      # noise at half of each image embedding's RMS norm in stage 2 against the surrogate
      Cell(f"a{a}_noise", a, "image-embedding noise", image_noise=0.5),
      # the image embeddings' norm, mean direction and nearest-token cosine pulled toward the tokens'
      Cell(f"a{a}_statpen", a, "image-embedding penalty", embed_penalty=1.0),
      # two surrogates at once, half the steps each: [12, 28] (46% saved) and [26, 28] (6%), the one
      # that grafts best; together they save what [19, 28] does (25.9%)
      Cell("a12_mix26", 12, "several surrogates", mix_starts=(26,)),
      # [26, 28] alone with the 50 steps a12_mix26 gives it: do the mix's steps through [12, 28] help?
      Cell("a26_enc50", 26, "encoder steps", encoder_steps=50),
      Cell(f"a{a}_enc150", a, "encoder steps", encoder_steps=150),
      Cell(f"a{a}_vit8", a, "encoder capacity", vit_depth=8),  # 8 ViT blocks instead of 4
      Cell(f"a{a}_refresh2", a, "translator refits on image sequences", refresh_rounds=2),
  ]


def study_job(base: ml_collections.ConfigDict, size: dict = STUDY_SIZE) -> ml_collections.ConfigDict:
  """The base recipe: the main job's config `base` with the study's seeds, steps and evaluation."""
  job = base.copy_and_resolve_references()
  job.seeds = tuple(size["seeds"])
  job.steps.update(size["steps"])
  job.translator_objective = size["translator_objective"]
  job.translator_kl_weight = float(size["translator_kl_weight"])
  job.eval.limit = int(size["eval_limit"])
  return job


def cell_job(base: ml_collections.ConfigDict, cell: Cell, root: str) -> ml_collections.ConfigDict:
  """The main job's config for `cell`: base's settings with the cell's changes, the range
  [cell.start, base's range end], run_dir root/<cell> and out_dir root/<cell>/results."""
  job = base.copy_and_resolve_references()
  end = int(base.ranges[0][1])
  if not 0 <= cell.start <= end:
    raise ValueError(f"Cell {cell.name!r}: range start {cell.start} is outside [0, {end}]")
  job.ranges = ((cell.start, end),) if cell.translators is None else ((cell.start, end, int(cell.translators)),)
  if cell.translator_steps is not None:
    job.steps.translator = int(cell.translator_steps)
  if cell.translator_lr is not None:
    job.lr.translator = float(cell.translator_lr)
  if cell.objective is not None:
    job.translator_objective = cell.objective
  if cell.kl_weight is not None:
    job.translator_kl_weight = float(cell.kl_weight)
  if cell.pretrain_steps is not None:
    job.steps.pretrain = int(cell.pretrain_steps)
  if cell.output_norm is not None:
    job.vit.output_norm = cell.output_norm
  if cell.encoder_steps is not None:
    job.steps.encoder = int(cell.encoder_steps)
  if cell.refresh_rounds is not None:
    job.refresh.rounds = int(cell.refresh_rounds)
  if cell.pretrain_kl_weight is not None:
    job.pretrain_kl_weight = float(cell.pretrain_kl_weight)
  if cell.pretrain_kl_rows is not None:
    job.pretrain_kl_rows = cell.pretrain_kl_rows
  if cell.image_noise is not None:
    job.image_noise = float(cell.image_noise)
  if cell.embed_penalty is not None:
    job.embed_penalty = float(cell.embed_penalty)
  job.mix_ranges = () if cell.mix_starts is None else tuple(((int(s), end),) for s in cell.mix_starts)
  if cell.vit_depth is not None:
    job.vit.depth = int(cell.vit_depth)
    job.encoder_pretrain.dir = f"{job.encoder_pretrain.dir}_depth{int(cell.vit_depth)}"
  job.conditions = ("surrogate", "target")
  job.steps.adapter = job.steps.transfer = 0
  job.run_dir = os.path.join(root, cell.name)
  job.out_dir = os.path.join(root, cell.name, "results")
  return job


def find_cell(cells: list[Cell], name: str) -> Cell:
  for cell in cells:
    if cell.name == name:
      return cell
  raise ValueError(f"Unknown cell {name!r}; cells: {[c.name for c in cells]}")
