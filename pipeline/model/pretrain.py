"""`pretrain` stage: next-event prediction over every behaviour of the training histories.

    python -m pipeline pretrain --sequences data/sequences --out models/pretrained

Every event of `train.parquet` (views included) predicts the next one (full softmax over all
items by default, `model.loss`). Validation NDCG@10 is logged each `pretrain.val_every_n_epochs`
and the weights of the best validation are exported (the last ones when validation never
ran). Writes the model folder of docs/interfaces.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sequences", type=Path, required=True, help="sequences folder")
    parser.add_argument("--out", type=Path, required=True, help="model folder to write")


def run(args: argparse.Namespace) -> int:
    from pipeline.model.fitting import StageSpec, print_summary, run_stage
    from pipeline.params import load_params

    params = load_params(args.params)
    summary = run_stage(params, StageSpec(name="pretrain", finetune=False), args.sequences,
                        args.out, args.params)
    print_summary("pretrain", summary, args.out)
    return 0
