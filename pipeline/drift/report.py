"""`drift` stage: compare the new snapshot's profile with the champion's training data.

    python -m pipeline drift --sequences data/sequences --reference data/champion_model \\
        --out reports/drift.json --metrics metrics/drift.json

Both sides are `data_profile.parquet` tables (`pipeline.drift.profile`): the new one from
`build_sequences`, the reference from the champion's model folder (the one a warm start
copies, `retrain.init_from`). Measures, each with its bound in the `drift` params:

- `unseen_item_share`: share of the new events on items the champion's vocabulary lacks (it
  has only a fallback row for them);
- `item_js`, `category_js`, `event_type_js`: Jensen-Shannon divergence (base 2: 0 = same
  distribution, 1 = disjoint) of event counts per item, per catalogue category and per
  event type; JS rather than PSI because it is bounded and defined when one side has a
  zero (new and retired items are the normal case here);
- `volume_ratio`: new events / reference events (checked both ways);
- `returning_user_share`: share of the new snapshot's shoppers present in the reference.

`drifted` is true when any bound is crossed; `reasons` names each crossing with its numbers.
No reference (the first training, or a champion folder without a profile): nothing to
compare, `drifted` false and `reference` null. A pure function of the two folders and the
params, so the DVC metric is reproducible.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from pipeline.drift.profile import counts_of, read_profile

# (measure, bound param, direction): "max" = drifted above the bound, "min" = below it.
CHECKS = (
    ("unseen_item_share", "max_unseen_item_share", "max"),
    ("item_js", "max_item_js", "max"),
    ("category_js", "max_category_js", "max"),
    ("event_type_js", "max_event_type_js", "max"),
    ("volume_ratio", "max_volume_ratio", "ratio"),
    ("returning_user_share", "min_returning_user_share", "min"),
)


def js_divergence(p: dict[str, int], q: dict[str, int]) -> float | None:
    """Jensen-Shannon divergence (base 2) of two count tables; None when either is empty."""
    keys = sorted(set(p) | set(q))
    a = np.array([p.get(k, 0) for k in keys], dtype=np.float64)
    b = np.array([q.get(k, 0) for k in keys], dtype=np.float64)
    if not keys or a.sum() == 0 or b.sum() == 0:
        return None
    a, b = a / a.sum(), b / b.sum()
    m = (a + b) / 2

    def kl(x: np.ndarray) -> float:
        nz = x > 0
        return float((x[nz] * np.log2(x[nz] / m[nz])).sum())

    return round(min(1.0, max(0.0, (kl(a) + kl(b)) / 2)), 6)


def measure(current, reference, reference_items: set[str] | None) -> dict[str, float | None]:
    """Every drift measure of `current` against `reference` (profile tables)."""
    items, ref_items = counts_of(current, "item"), counts_of(reference, "item")
    known = reference_items if reference_items is not None else set(ref_items)
    events = sum(items.values())
    users, ref_users = counts_of(current, "user"), counts_of(reference, "user")
    ref_events = sum(ref_items.values())
    return {
        "unseen_item_share": round(sum(c for i, c in items.items() if i not in known)
                                   / max(events, 1), 6),
        "item_js": js_divergence(items, ref_items),
        "category_js": js_divergence(counts_of(current, "category"),
                                     counts_of(reference, "category")),
        "event_type_js": js_divergence(counts_of(current, "event_type"),
                                       counts_of(reference, "event_type")),
        "volume_ratio": round(events / ref_events, 6) if ref_events else None,
        "returning_user_share": round(len(set(users) & set(ref_users)) / max(len(users), 1), 6),
        "events": events, "reference_events": ref_events,
    }


def judge(measures: dict, bounds) -> list[str]:
    """The reasons the snapshot counts as drifted (empty: it does not)."""
    reasons = []
    for name, bound_name, direction in CHECKS:
        value, bound = measures.get(name), getattr(bounds, bound_name)
        if value is None:
            continue
        crossed = {"max": value > bound, "min": value < bound,
                   "ratio": value > bound or value < 1 / bound}[direction]
        if crossed:
            rule = {"max": f"> {bound}", "min": f"< {bound}",
                    "ratio": f"outside [{1 / bound:.3g}, {bound}]"}[direction]
            reasons.append(f"{name} {value:.4g} {rule} (drift.{bound_name})")
    return reasons


def drift_report(current_dir: Path, reference_dir: Path, bounds) -> dict:
    """The report written to `metrics/drift.json`."""
    import pandas as pd

    from pipeline.errors import InputError

    current = read_profile(current_dir)
    if current is None:
        raise InputError(f"{current_dir}: no data_profile.parquet; re-run build_sequences")
    reference = read_profile(reference_dir)
    if reference is None:
        return {"reference": None, "drifted": False, "reasons": [],
                "note": f"{reference_dir}: no champion profile to compare with (first training)"}
    vocab_path = reference_dir / "vocab.parquet"
    known = set(pd.read_parquet(vocab_path)["item_id"]) if vocab_path.is_file() else None
    measures = measure(current, reference, known)
    reasons = judge(measures, bounds)
    return {"reference": _origin(reference_dir), **measures, "drifted": bool(reasons),
            "reasons": reasons, "bounds": bounds.model_dump()}


def _origin(folder: Path) -> str:
    from pipeline.model.origin import origin_of

    return origin_of(folder)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sequences", type=Path, required=True,
                        help="sequences folder of the new snapshot (its data_profile.parquet)")
    parser.add_argument("--reference", type=Path, required=True,
                        help="champion model folder (its data_profile.parquet and vocabulary)")
    parser.add_argument("--out", type=Path, required=True, help="the drift report (JSON)")
    parser.add_argument("--metrics", type=Path,
                        help="its headline for `dvc metrics show` (drifted, true or false)")


def run(args: argparse.Namespace) -> int:
    from pipeline.params import load_params

    report = drift_report(args.sequences, args.reference, load_params(args.params).drift)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    if args.metrics is not None:  # one column: `dvc metrics show` stays narrow
        args.metrics.parent.mkdir(parents=True, exist_ok=True)
        args.metrics.write_text(json.dumps({"drifted": report["drifted"]}) + "\n")
    verdict = "drifted: " + "; ".join(report["reasons"]) if report["drifted"] else "no drift"
    print(f"drift: {verdict} -> {args.out}")
    return 0
