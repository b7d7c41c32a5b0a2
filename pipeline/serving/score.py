"""`python -m pipeline score`: batch top-k for many users with a packaged or registered model.

    python -m pipeline score --model models:/seqrec@champion --input users.parquet \
        --out topk.parquet --k 10

`--model` is a pyfunc folder (`models/mlflow_model`) or any MLflow model URI
(`models:/seqrec@champion`, `models:/seqrec/3`), resolved against `MLFLOW_TRACKING_URI`.
Input: Parquet with `user_id` and `history` (list of item ids, oldest first), or CSV with
`history` as space-separated item ids; optional `event_types` and `timestamps` (unix
seconds; models with time gaps need them) columns in the same form.
Output (Parquet, one row per input row, same order): `user_id`, `items`, `scores`,
`purchase_probability`, `unknown_items`, `unknown_event_types`, `fallback`, and with
`--explain` `explanations` (per item: `item_id`, `reason`, `events`: the top history events
with `item_id`, `event_type`, `timestamp`, `weight`, `position`; pipeline.serving.explain).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from pipeline.errors import InputError

logger = logging.getLogger(__name__)

USER_COLUMN = "user_id"
LIST_COLUMNS = ("history", "event_types", "timestamps")
# Rows per pyfunc call: bounds the request table MLflow validates at once; the pyfunc itself
# runs the network in `registry.serve_batch_size` chunks.
CHUNK_ROWS = 100_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="pyfunc folder or models:/ URI")
    parser.add_argument("--input", required=True, help="users: .parquet or .csv")
    parser.add_argument("--out", required=True, help="top-k Parquet file to write")
    parser.add_argument("--k", type=int, default=None, help="items per user (default: params)")
    parser.add_argument(
        "--explain", action="store_true", help="add why each item (the history events behind it)"
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads (default 0: all cores)"
    )


def read_users(path: Path):
    """Users table with list columns; CSV lists are space-separated ids."""
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    if not path.is_file():
        raise InputError(f"{path}: input file not found")
    if path.suffix.lower() == ".csv":
        # Ids are text: never let the CSV reader turn "00123" into 123.
        users = pa_csv.read_csv(
            path, convert_options=pa_csv.ConvertOptions(column_types={USER_COLUMN: "string"})
        ).to_pandas()
        for name in LIST_COLUMNS:
            if name in users.columns:
                # str.split() with no separator: "" -> [], runs of spaces count once.
                users[name] = users[name].fillna("").astype(str).str.split()
        if "timestamps" in users.columns:
            users["timestamps"] = [_unix_seconds(v, path, row)
                                   for row, v in enumerate(users["timestamps"])]
    elif path.suffix.lower() == ".parquet":
        users = pq.read_table(path).to_pandas()
    else:
        raise InputError(f"{path}: expected a .parquet or .csv file")
    missing = [c for c in (USER_COLUMN, "history") if c not in users.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {missing}; need user_id and history")
    return users


def _unix_seconds(values: list[str], path: Path, row: int) -> list[int]:
    try:
        return [int(v) for v in values]
    except ValueError:
        raise InputError(
            f"{path}: row {row}: 'timestamps' must be space-separated unix seconds"
        ) from None


def _one_line(message: str) -> str:
    """MLflow's schema errors embed the request table; keep only the rule that failed."""
    tail = message.rsplit("Error: ", 1)[-1]
    return " ".join(tail.split())


def score_users(model, users, k: int | None, explain: bool = False):
    """Predict in chunks; returns the output table (pandas) in input order."""
    import pandas as pd
    from mlflow.exceptions import MlflowException

    columns = [c for c in LIST_COLUMNS if c in users.columns]
    params = {"k": k} if k is not None else {}
    if explain:
        params["explain"] = True
    parts = []
    for start in range(0, len(users), CHUNK_ROWS):
        chunk = users.iloc[start : start + CHUNK_ROWS]
        try:
            predicted = model.predict(chunk[columns].reset_index(drop=True), params=params or None)
        except MlflowException as exc:
            raise InputError(
                f"rows {start}..{start + len(chunk) - 1}: {_one_line(exc.message)}"
            ) from None
        predicted.insert(0, USER_COLUMN, chunk[USER_COLUMN].to_numpy())
        parts.append(predicted)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def run(args: argparse.Namespace) -> int:
    import mlflow.pyfunc

    from pipeline import tracking

    tracking.configure()
    users = read_users(Path(args.input))
    model_path = Path(args.model)
    uri = str(model_path) if model_path.exists() else args.model
    # Batches use every core, unlike the one-request-at-a-time serving default.
    model = mlflow.pyfunc.load_model(uri, model_config={"threads": args.threads})
    started = time.perf_counter()
    topk = score_users(model, users, args.k, args.explain)
    elapsed_s = time.perf_counter() - started
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    topk.to_parquet(out, index=False)
    logger.info("scored %d users in %.2fs -> %s", len(topk), elapsed_s, out)
    return 0
