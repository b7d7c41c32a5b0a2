"""`build-sequences` stage: validated events -> vocabulary, train/val/test sequences, stats.

    python -m pipeline build-sequences --events data/validated --out data/sequences \\
        --metrics metrics/sequences.json [--previous-vocab models/champion/vocab.parquet]

Steps (all vectorised, see docs/sequences.md): stable sort by user, time, file order ->
sessions by inactivity gap (when no session_id) -> optional dedup of consecutive views ->
k-core filter -> stable vocabulary -> leave-one-out or temporal split -> Great Expectations
suite on the result -> `train/val/test.parquet`, `vocab.parquet`, `meta.json`, `stats.json`,
`data_profile.parquet` (the drift reference a model carries, `pipeline.drift.profile`).
Layout: docs/interfaces.md, "Sequences".
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # heavy imports stay out of `--help`
    import pyarrow as pa

    from pipeline.params import SequencesParams
    from pipeline.sequences.features import ItemFeatures

log = logging.getLogger(__name__)
HEADLINE_KEYS = ("users", "items")
EVENTS_FILE = "events.parquet"
LENGTH_PERCENTILES = (50, 90, 99)


@dataclass(frozen=True)
class SequenceBuild:
    """Everything the stage writes: the split tables, the vocabulary, meta and stats."""

    tables: dict[str, pa.Table]
    vocab: pa.Table
    meta: dict
    stats: dict
    features: ItemFeatures | None = None  # item side features, when there is a catalogue
    profile: pa.Table | None = None  # counts per item, type, shopper: the drift reference


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", required=True, help="folder holding events.parquet")
    parser.add_argument("--out", required=True, help="output folder (data/sequences)")
    parser.add_argument("--metrics", help="headline counts of stats.json (DVC metrics)")
    parser.add_argument(
        "--previous-vocab",
        help="vocab.parquet (or a folder holding one) to extend; overrides "
        "sequences.previous_vocab",
    )


def _target_type_ids(
    targets: list[str], event_types: list[str], present: set[int]
) -> tuple[list[str], list[int]]:
    """Target types to use: the configured ones, or every type the data has when it has none
    of them (click logs: next-anything). Types absent from the data are never targets: the
    model would score with queries no event trained."""
    from pipeline.params import ParamsError

    unknown = [t for t in targets if t not in event_types]
    if unknown:
        raise ParamsError(
            f"params.yaml: sequences.target_event_types: {unknown} not in data.event_types"
        )
    ids = [event_types.index(t) + 1 for t in targets]
    if present.isdisjoint(ids):  # e.g. click logs: fall back to next-anything
        ids = sorted(present)
        return [event_types[i - 1] for i in ids], ids
    return list(targets), ids


def _length_stats(lengths) -> dict[str, int]:
    import numpy as np

    if len(lengths) == 0:
        return {f"length_p{p}": 0 for p in LENGTH_PERCENTILES} | {"length_max": 0}
    stats = {f"length_p{p}": float(np.percentile(lengths, p)) for p in LENGTH_PERCENTILES}
    return stats | {"length_max": int(lengths.max())}


def _data_stats(events) -> dict:
    """Users, items, events, sessions and per-user length percentiles after filtering."""
    import numpy as np

    from pipeline.sequences.prep import user_starts

    new_session = user_starts(events.user)
    new_session[1:] |= events.session[1:] != events.session[:-1]
    return {
        "users": len(events.user_ids),
        "items": len(events.item_ids),
        "events": len(events),
        "sessions": int(new_session.sum()),
        **_length_stats(np.bincount(events.user)),
    }


def _split_stats(result, event_types: list[str], target_ids: list[int]) -> dict:
    """Rows/examples per split, fine-tuning positions in train, type counts."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    train, val, test = (result.tables[name] for name in ("train", "val", "test"))
    train_types = pc.list_flatten(train["types"]).to_numpy()
    first_types = pc.list_element(train["types"], 0).to_numpy() if train.num_rows else []
    return {
        "train_rows": train.num_rows,
        "train_events": len(train_types),
        # positions whose next event is a target: target events that are not a row's first
        "train_finetune_targets": int(
            np.isin(train_types, target_ids).sum() - np.isin(first_types, target_ids).sum()
        ),
        "val_examples": val.num_rows,
        "test_examples": test.num_rows,
        "dropped_no_history": result.dropped_no_history,
        "capped_examples": result.capped,
        "type_counts": {
            "train_events": _type_counts(pa.chunked_array([train_types], pa.int8()), event_types),
            "val_targets": _type_counts(val["target_type"], event_types),
            "test_targets": _type_counts(test["target_type"], event_types),
        },
    }


def _type_counts(type_ids: pa.ChunkedArray, event_types: list[str]) -> dict[str, int]:
    import numpy as np

    counts = np.bincount(type_ids.to_numpy(), minlength=len(event_types) + 1)
    return {name: int(counts[i + 1]) for i, name in enumerate(event_types)}


def build_sequences(
    table: pa.Table,
    params: SequencesParams,
    event_types: list[str],
    previous_vocab: pa.Table | None = None,
    source: str = EVENTS_FILE,
    profile_window_days: float | None = None,
) -> SequenceBuild:
    """Pure function of the events and params: the stage's outputs, in memory.

    Args:
        table: canonical events (docs/interfaces.md), an Arrow table or pandas frame.
        params: the `sequences` params section.
        event_types: `data.event_types`, in funnel order.
        previous_vocab: a checked previous vocabulary (`vocab.read_vocab`), or None.
        source: name used in error messages.
        profile_window_days: the data profile's window (`drift.window_days`).
    """
    import numpy as np
    import pyarrow as pa

    from pipeline.drift.profile import events_profile
    from pipeline.errors import BatchValidationError
    from pipeline.sequences import prep, splits
    from pipeline.sequences.vocab import MASK_TOKEN, PAD_TOKEN, UNK_TOKEN, build_vocab, first_seen

    if not isinstance(table, pa.Table):  # a pandas frame, e.g. IngestResult.events
        table = pa.Table.from_pandas(table, preserve_index=False)
    rows_in = table.num_rows
    events, session_codes = prep.encode_events(table, event_types, source)
    del table  # the strings live on only as the distinct ids
    events = prep.assign_sessions(events, session_codes, params.session_gap_minutes)
    dropped_dedup = 0
    if params.dedup_consecutive_views:
        events, dropped_dedup = prep.dedup_consecutive_views(events, event_types)
    before_kcore = len(events)
    events, kcore_rounds = prep.k_core(events, params.min_user_events, params.min_item_events)
    if len(events) == 0:
        raise BatchValidationError(
            f"{source}: no events left after k-core (min_user_events={params.min_user_events}, "
            f"min_item_events={params.min_item_events}; {rows_in} rows in)"
        )
    events = prep.compact(events)
    profile = events_profile(events, event_types, profile_window_days)
    vocab = build_vocab(
        events.item_ids,
        first_seen(events.item, events.ts_ns, len(events.item_ids)),
        previous_vocab,
    )
    tokens = vocab.token_of_code[events.item]
    target_names, target_ids = _target_type_ids(
        params.target_event_types, event_types, set(np.unique(events.event_type).tolist())
    )
    is_target = np.isin(events.event_type, target_ids)
    if params.split == "leave_one_out":
        result = splits.leave_one_out(events, tokens, is_target, params.max_len,
                                      params.train_until)
    else:
        result = splits.temporal(
            events,
            tokens,
            is_target,
            params.max_len,
            params.val_days,
            params.test_days,
            params.max_examples_per_user,
        )

    meta = {
        "event_types": list(event_types),
        "event_type_ids": {name: i + 1 for i, name in enumerate(event_types)},
        "special_tokens": {"pad": PAD_TOKEN, "mask": MASK_TOKEN, "unk": UNK_TOKEN},
        "target_event_types": target_names,
        "max_len": params.max_len,
        "split": params.split,
        "vocab_size": vocab.vocab_size,
        "n_items": vocab.table.num_rows,
        "cutoffs": result.cutoffs_s,
        "cutoffs_utc": {
            name: datetime.fromtimestamp(value, UTC).isoformat()
            for name, value in result.cutoffs_s.items()
        },
        "previous_vocab_items": None if previous_vocab is None else previous_vocab.num_rows,
        "oov_share": vocab.oov_share,
        "max_oov_share": params.max_oov_share,
    }
    stats = {
        "rows_in": rows_in,
        "dropped_dedup": dropped_dedup,
        "dropped_kcore": before_kcore - len(events),
        "kcore_rounds": kcore_rounds,
        **_data_stats(events),
        "vocab_size": vocab.vocab_size,
        "new_items": vocab.n_new,
        "oov_share": vocab.oov_share,
        **_split_stats(result, event_types, target_ids),
    }
    return SequenceBuild(result.tables, vocab.table, meta, stats, profile=profile)


def write_outputs(build: SequenceBuild, out: Path, metrics: Path | None) -> None:
    """Write the parquet files, `meta.json` and `stats.json` (and the DVC metrics headline)."""
    import pyarrow.parquet as pq

    from pipeline.drift.profile import PROFILE_FILE
    from pipeline.sequences.features import FEATURE_VOCAB_FILE, ITEM_FEATURES_FILE
    from pipeline.sequences.vocab import VOCAB_FILE

    out.mkdir(parents=True, exist_ok=True)
    for split, table in build.tables.items():
        pq.write_table(table, out / f"{split}.parquet")
    pq.write_table(build.vocab, out / VOCAB_FILE)
    for name in (ITEM_FEATURES_FILE, FEATURE_VOCAB_FILE, PROFILE_FILE):
        (out / name).unlink(missing_ok=True)  # an earlier catalogue's features must not linger
    if build.profile is not None:
        pq.write_table(build.profile, out / PROFILE_FILE)
    if build.features is not None:
        pq.write_table(build.features.table, out / ITEM_FEATURES_FILE)
        pq.write_table(build.features.vocab, out / FEATURE_VOCAB_FILE)
    (out / "meta.json").write_text(json.dumps(build.meta, indent=2) + "\n", encoding="utf-8")
    stats_text = json.dumps(build.stats, indent=2) + "\n"
    (out / "stats.json").write_text(stats_text, encoding="utf-8")
    if metrics is not None:
        # A few counts, so `dvc metrics show` stays narrow; stats.json keeps everything.
        headline = {key: build.stats[key] for key in HEADLINE_KEYS}
        metrics.parent.mkdir(parents=True, exist_ok=True)
        metrics.write_text(json.dumps(headline, indent=2) + "\n", encoding="utf-8")


def run(args: argparse.Namespace) -> int:
    from pipeline.drift.profile import with_categories
    from pipeline.params import load_params
    from pipeline.sequences.checks import check_sequences
    from pipeline.sequences.features import build_item_features, read_catalog
    from pipeline.sequences.prep import read_events
    from pipeline.sequences.vocab import read_vocab, resolve_vocab_path

    params = load_params(args.params)
    seq = params.sequences
    events_path = Path(args.events) / EVENTS_FILE
    vocab_path = resolve_vocab_path(args.previous_vocab or seq.previous_vocab)
    previous = read_vocab(vocab_path) if vocab_path is not None else None
    build = build_sequences(
        read_events(events_path), seq, params.data.event_types, previous, source=str(events_path),
        profile_window_days=params.drift.window_days,
    )
    catalog = read_catalog(Path(args.events))
    build = replace(build, profile=with_categories(build.profile, catalog))
    if catalog is not None and seq.item_features:
        build = replace(build, features=build_item_features(
            catalog, build.vocab, list(seq.item_features), list(seq.numeric_features),
            seq.numeric_buckets, source=str(Path(args.events) / "catalog.parquet")))
        build.stats["item_features"] = build.features.stats
    build.stats["checks"] = check_sequences(build.tables, build.meta)
    if vocab_path is not None:
        build.meta["previous_vocab"] = str(vocab_path)
    write_outputs(build, Path(args.out), Path(args.metrics) if args.metrics else None)
    stats = build.stats
    print(f"build_sequences: {stats['users']} users, {stats['items']} items, {stats['events']} "
          f"events; train {stats['train_rows']}, val {stats['val_examples']}, test "
          f"{stats['test_examples']} -> {args.out}")
    return 0
