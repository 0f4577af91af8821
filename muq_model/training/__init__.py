"""MuLan contrastive training and fine-tuning on (audio, caption) pairs, in one process or under torchrun.

Read in this order: `data` (pair files -> one item per audio file with its captions), `features` (each
item's frozen work, done once), `batches` (seeded global batches of random crops and captions),
`held_out` (the periodic evaluation), `schedule` (settings, learning rate, clock and optimiser step, shared
with muq_model.pretraining), `loop` (the loss module, checkpoints, resume).

Why it is shaped this way:

* Frozen work is done once. The mel front end has no parameters, so every track's mel is computed once
  and training crops are cut from it; with `train_stem=False` the Conv2d stem is frozen too and its
  output is cached instead (the stem is the costliest part of a small model). When the pretrained text
  encoder is frozen (the default, as upstream), its hidden states are computed once per caption and
  only the MuLan text transformer runs per step. The towers own both halves of that split
  (`features` / `forward_from_features`); training only calls the model. This is what makes training a
  small model on a CPU practical.
* muq_model sits at the bottom of the import graph, so decoding audio files and scoring evaluations are
  *injected* (``load_audio``, ``evaluate``); the ``muqsearch train`` command wires in the indexer's
  decoder and the evaluation package's metrics.
* Under torchrun every rank draws the same global batch from the same seeded generator and takes its
  own slice; negatives are gathered across ranks by muq_model.contrastive. Two ranks with batch B each
  therefore see exactly what one process with batch 2B sees, BatchNorm statistics included
  (muq_model.distributed).
"""

from muq_model.training.data import DataError, TrainItem, read_pairs
from muq_model.training.held_out import summarize
from muq_model.training.loop import TrainConfig, TrainResult, initial_model, train

__all__ = ["DataError", "TrainConfig", "TrainItem", "TrainResult", "initial_model", "read_pairs", "summarize", "train"]
