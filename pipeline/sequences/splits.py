"""Train/val/test sequences from sorted events, as parquet-ready list columns.

Events arrive sorted by user, then time, then file order, so every history is a
contiguous slice `[start, end)` of the event arrays. Each split is described by slice
bounds computed with whole-array numpy operations, and the slices become Arrow list
columns through one gather (`ListArray.from_arrays` with offsets): no per-user loop.

leave_one_out: per user, test = last target event, val = second-to-last target event,
train = events strictly before the val target's session (`train_until: val_session`, the
default) or before the val target itself (`val_target`, the papers' protocol). Users with
fewer than two target events have no val/test example and give their whole sequence to
train. Why the session: a test history ends with events the model never trained on (the
val target, what came after it); with `val_target` a val history is exactly a training
row, so validation rewards memorising the user's own sequence and ranked models the other
way round from test (docs/sequences.md). When the val target's session is the user's first,
there is nothing before it to train on and the cut falls back to the val target (session
datasets, where a session is a user, keep the papers' protocol).
temporal: global cut-offs; train = events before the val cut-off; val/test examples are
target events inside their window with every earlier event of the user as history.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from pipeline.sequences.prep import Events, user_starts

NS_PER_S = 10**9
SECONDS_PER_DAY = 86_400
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SplitResult:
    """The three tables plus what meta.json/stats.json report about them."""

    tables: dict[str, pa.Table]
    cutoffs_s: dict[str, int] = field(default_factory=dict)
    dropped_no_history: dict[str, int] = field(default_factory=dict)
    capped: dict[str, int] = field(default_factory=dict)


def _gather_index(starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Offsets (k+1,) int32 and the flat event positions of k slices."""
    offsets = np.zeros(len(starts) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1], dtype=np.int64)
    return offsets.astype(np.int32), flat


def _lists(offsets: np.ndarray, values: np.ndarray, value_type: pa.DataType) -> pa.ListArray:
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(values, value_type))


def _sequence_columns(
    events: Events, tokens: np.ndarray, starts: np.ndarray, ends: np.ndarray, prefix: str
) -> dict[str, pa.Array]:
    """List columns items/types/ts/sessions for the slices [starts, ends)."""
    offsets, flat = _gather_index(starts, ends - starts)
    return {
        f"{prefix}items": _lists(offsets, tokens[flat], pa.int32()),
        f"{prefix}types": _lists(offsets, events.event_type[flat], pa.int8()),
        f"{prefix}ts": _lists(offsets, events.ts_ns[flat] // NS_PER_S, pa.int64()),
        f"{prefix}sessions": _lists(offsets, events.session[flat], pa.int32()),
    }


def _train_table(events, tokens, starts, ends, max_len) -> pa.Table:
    """One row per user with a non-empty slice; the last `max_len + 1` events kept."""
    keep = ends > starts
    starts, ends = starts[keep], ends[keep]
    starts = np.maximum(starts, ends - (max_len + 1))
    users = events.user[ends - 1]
    columns = {"user_id": events.user_ids.take(pa.array(users))}
    columns.update(_sequence_columns(events, tokens, starts, ends, ""))
    return pa.table(columns)


def _example_table(events, tokens, user_start, positions, max_len) -> pa.Table:
    """One row per target position: history = the last `max_len` earlier events."""
    users = events.user[positions]
    starts = np.maximum(user_start[users], positions - max_len)
    columns = {"user_id": events.user_ids.take(pa.array(users))}
    columns.update(_sequence_columns(events, tokens, starts, positions, "history_"))
    columns["target_item"] = pa.array(tokens[positions], pa.int32())
    columns["target_type"] = pa.array(events.event_type[positions], pa.int8())
    columns["target_ts"] = pa.array(events.ts_ns[positions] // NS_PER_S, pa.int64())
    return pa.table(columns)


def _user_bounds(events: Events) -> tuple[np.ndarray, np.ndarray]:
    """(n_users,) first and one-past-last event position of each compact user code."""
    starts = np.flatnonzero(user_starts(events.user))
    ends = np.append(starts[1:], len(events))
    return starts, ends


def _session_starts(events: Events) -> np.ndarray:
    """(n,) position of the first event of each event's session."""
    new = user_starts(events.user) | np.r_[True, events.session[1:] != events.session[:-1]]
    return np.maximum.accumulate(np.where(new, np.arange(len(new)), 0))


def leave_one_out(
    events: Events, tokens: np.ndarray, is_target: np.ndarray, max_len: int,
    train_until: str = "val_session",
) -> SplitResult:
    """Leave-one-out split (the SASRec protocol when every event is a target).

    Args:
        events: compacted, sorted events (user codes 0..n_users-1).
        tokens: (n,) int32 vocabulary token of each event's item.
        is_target: (n,) bool, events whose type is a fine-tuning target.
        max_len: history length kept for val/test (train keeps `max_len + 1`).
        train_until: `val_session` or `val_target` (see the module docstring).
    """
    user_start, user_end = _user_bounds(events)
    target_pos = np.flatnonzero(is_target)
    n_targets = np.bincount(events.user[target_pos], minlength=len(user_start))
    last = np.cumsum(n_targets) - 1  # index into target_pos of each user's last target
    has_two = n_targets >= 2
    test_pos = target_pos[last[has_two]]
    val_pos = target_pos[last[has_two] - 1]
    train_end = user_end.copy()
    train_end[has_two] = val_pos
    if train_until == "val_session":
        cut = _session_starts(events)[val_pos]
        train_end[has_two] = np.where(cut > user_start[has_two], cut, val_pos)
    with_history = val_pos > user_start[has_two]  # a val target first in the sequence has none
    return SplitResult(
        tables={
            "train": _train_table(events, tokens, user_start, train_end, max_len),
            "val": _example_table(events, tokens, user_start, val_pos[with_history], max_len),
            "test": _example_table(events, tokens, user_start, test_pos, max_len),
        },
        dropped_no_history={"val": int((~with_history).sum()), "test": 0},
    )


def temporal_cutoffs_s(ts_ns: np.ndarray, val_days: float, test_days: float) -> dict[str, int]:
    """Whole-second cut-offs: test = the last `test_days` up to the newest event (inclusive),
    val = the `val_days` before that. An event at a cut-off belongs to the later window."""
    end_s = int(ts_ns.max() // NS_PER_S) + 1
    test_cutoff = end_s - round(test_days * SECONDS_PER_DAY)
    val_cutoff = test_cutoff - round(val_days * SECONDS_PER_DAY)
    return {"val_cutoff": val_cutoff, "test_cutoff": test_cutoff, "end": end_s}


def _first_per_user(positions: np.ndarray, users: np.ndarray, cap: int | None) -> np.ndarray:
    """Bool mask over sorted `positions`: rank within the user's run < cap."""
    if cap is None or len(positions) == 0:
        return np.ones(len(positions), dtype=bool)
    run_start = user_starts(users)
    first = np.maximum.accumulate(np.where(run_start, np.arange(len(users)), 0))
    return (np.arange(len(users)) - first) < cap


def temporal(
    events: Events,
    tokens: np.ndarray,
    is_target: np.ndarray,
    max_len: int,
    val_days: float,
    test_days: float,
    max_examples_per_user: int | None,
) -> SplitResult:
    """Temporal split with global cut-offs; see the module docstring.

    `max_examples_per_user` keeps each user's first target events inside a window.
    """
    cutoffs = temporal_cutoffs_s(events.ts_ns, val_days, test_days)
    ts_s = events.ts_ns // NS_PER_S
    user_start, _ = _user_bounds(events)
    before_val = np.bincount(events.user[ts_s < cutoffs["val_cutoff"]], minlength=len(user_start))
    train = _train_table(events, tokens, user_start, user_start + before_val, max_len)

    tables, dropped, capped = {"train": train}, {}, {}
    has_history = ~user_starts(events.user)
    windows = {
        "val": (cutoffs["val_cutoff"], cutoffs["test_cutoff"]),
        "test": (cutoffs["test_cutoff"], cutoffs["end"]),
    }
    for split, (lower, upper) in windows.items():
        in_window = is_target & (ts_s >= lower) & (ts_s < upper)
        dropped[split] = int((in_window & ~has_history).sum())
        positions = np.flatnonzero(in_window & has_history)
        keep = _first_per_user(positions, events.user[positions], max_examples_per_user)
        capped[split] = int((~keep).sum())
        tables[split] = _example_table(events, tokens, user_start, positions[keep], max_len)
    return SplitResult(tables, cutoffs_s=cutoffs, dropped_no_history=dropped, capped=capped)
