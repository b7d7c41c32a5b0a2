"""`pretrain` stage: next-event prediction over every behaviour of the training histories.

    python -m pipeline pretrain --sequences data/sequences --out models/pretrained

Every event of `train.parquet` (views included) predicts the next one (full softmax over all
items by default, `model.loss`). Validation NDCG@10 is logged each `pretrain.val_every_n_epochs`
and the weights of the best validation are exported (the last ones when validation never
ran). Writes the model folder of docs/interfaces.md.

Where the weights start is `retrain.init`: `pretrained` (random weights, `pretrain.epochs`:
the full rebuild), `champion` (warm start from the model folder `retrain.init_from`, then
`retrain.warm_pretrain_epochs`; `pipeline.model.warm`), `scratch` (random weights exported
untrained: fine-tuning from scratch). `--init-from` overrides the folder and also takes a
`models:/` URI, resolved through MLflow: for runs outside DVC (a stage must not read the
registry; the retrain DAG downloads `@champion` into `retrain.init_from` before `dvc repro`).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sequences", type=Path, required=True, help="sequences folder")
    parser.add_argument("--out", type=Path, required=True, help="model folder to write")
    parser.add_argument("--init-from", help="warm start from this model folder or models:/ URI "
                        "(implies retrain.init champion; overrides retrain.init_from)")


def run(args: argparse.Namespace) -> int:
    from pipeline.model.fitting import StageSpec, run_stage
    from pipeline.model.summary import print_summary
    from pipeline.model.warm import resolved_source
    from pipeline.params import load_params

    params = load_params(args.params)
    retrain = params.retrain
    init = "champion" if args.init_from else retrain.init
    with resolved_source(args.init_from or retrain.init_from, init == "champion") as source:
        spec = StageSpec(name="pretrain", finetune=False, warm_from=source, init_name=init,
                         epochs={"champion": retrain.warm_pretrain_epochs, "scratch": 0}.get(init),
                         window_days=retrain.window_days if init == "champion" else None)
        summary = run_stage(params, spec, args.sequences, args.out, args.params)
    print_summary("pretrain", summary, args.out)
    return 0
