"""`finetune` stage: next target event (cart/purchase) + purchase head, from pretrained weights.

    python -m pipeline finetune --sequences data/sequences --pretrained models/pretrained \\
        --out models/finetuned --checkpoints checkpoints/finetune --log metrics/finetune_log.csv
    python -m pipeline finetune --init scratch --sequences data/sequences \\
        --out models/scratch --checkpoints checkpoints/scratch --log metrics/scratch_log.csv

Trains on the positions whose next event is a target type (all positions when the data has
a single event type) plus the purchase head (is the next target event a purchase rather than
a cart). Freeze policy `finetune.freeze`, AdamW with warmup + cosine decay, early stopping on
validation NDCG@10 (full ranking), best checkpoint chosen on validation only. A killed run
resumes from `--checkpoints/last.ckpt` when params, data and initial weights are unchanged.
`--init scratch` is the ablation: the same architecture and budget from random weights.
`--pretrained` may be a `models:/` URI (outside DVC): its weights are carried over to this
data's vocabulary as a warm start (`pipeline.model.warm`). The finetuned folder's
`training.json` repeats the pretrained folder's `init_from`, so the model records where its
weights came from.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.errors import ModelError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sequences", type=Path, required=True, help="sequences folder")
    parser.add_argument("--init", choices=("pretrained", "scratch"), default="pretrained",
                        help="start from --pretrained weights or random ones")
    parser.add_argument("--pretrained", help="pretrained model folder, or a models:/ URI "
                        "(a warm start)")
    parser.add_argument("--out", type=Path, required=True, help="model folder to write")
    parser.add_argument("--checkpoints", type=Path, required=True,
                        help="Lightning checkpoints (persisted; a re-run resumes from last.ckpt)")
    parser.add_argument("--log", type=Path, help="per-epoch CSV log for DVC plots")


def run(args: argparse.Namespace) -> int:
    from pipeline.model.fitting import StageSpec, run_stage
    from pipeline.model.summary import print_summary
    from pipeline.params import load_params

    if args.init == "pretrained" and args.pretrained is None:
        raise ModelError("finetune: --pretrained FOLDER is required unless --init scratch")
    if args.init == "scratch" and args.pretrained is not None:
        raise ModelError("finetune: --init scratch takes no --pretrained folder")
    from pipeline.model.origin import inherited_origin, is_uri
    from pipeline.model.warm import resolved_source

    params = load_params(args.params)
    remote = args.pretrained is not None and is_uri(args.pretrained)
    with resolved_source(args.pretrained, remote) as source:
        spec = StageSpec(
            name="finetune" if args.init == "pretrained" else "finetune_scratch", finetune=True,
            init_dir=None if remote or args.pretrained is None else Path(args.pretrained),
            warm_from=source, init_name=args.pretrained, checkpoints=args.checkpoints,
            log_path=args.log, extra=inherited_origin(args.pretrained, remote),
            # A warm retrain re-fine-tunes on the recent window; a rebuild on everything.
            window_days=params.retrain.window_days if params.retrain.init == "champion"
            and args.init == "pretrained" else None,
        )
        summary = run_stage(params, spec, args.sequences, args.out, args.params)
    print_summary(spec.name, summary, args.out)
    return 0
