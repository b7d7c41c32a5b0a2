"""`python -m pipeline data {list,download}`: fetch public datasets from their official addresses.

    python -m pipeline data list
    python -m pipeline data download amazon-toys --dest data/raw/amazon-toys

Each download prints its size and SHA-256 and, where the registry pins one, checks it.
Some sets cannot be fetched by a script: RetailRocket is on Kaggle (needs the Kaggle CLI
and an account), Taobao UserBehavior on Alibaba Tianchi (needs a login), DIGINETICA's full
set on the CIKM Cup 2016 site; `download` explains where to get them instead. Then point
`data.source` / `data.path` at the files (docs/ingest.md).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import SeqrecError

log = logging.getLogger(__name__)

DOWNLOAD_TIMEOUT_S = 60.0
CHUNK_BYTES = 1 << 20
AMAZON_2014 = "https://snap.stanford.edu/data/amazon/productGraph/categoryFiles"
RAW_GITHUB = "https://raw.githubusercontent.com"
S3REC_DATA = f"{RAW_GITHUB}/salesforce/ICLRec/4afb54a036ebbf4166ed5858122d89c0642251a7/data"
SRGNN_DATA = f"{RAW_GITHUB}/CRIPAC-DIG/SR-GNN/cf724b1a748e5a238dd008aaac8b68e3039fd581/datasets"
SESSION_REC_DATA = (
    f"{RAW_GITHUB}/rn5l/session-rec/02cf50705942f13a7f7ad77b0816403fb88df0f5/data/rsc15/prepared"
)


class DatasetError(SeqrecError):
    """A dataset name is unknown, cannot be fetched by script, or a download failed."""


@dataclass(frozen=True)
class RemoteFile:
    url: str
    sha256: str | None = None  # pinned where the bytes are known (copies in ../shared/data)


@dataclass(frozen=True)
class Dataset:
    """A public dataset: where it comes from and which `data.source` reads it."""

    source: str
    description: str
    files: tuple[RemoteFile, ...] = ()
    manual: str | None = None  # why and how to fetch it by hand, when no script can


def _amazon(category: str) -> Dataset:
    return Dataset(
        "amazon_reviews",
        f"Amazon 2014 {category.replace('_', ' ')} 5-core reviews (McAuley lab, UCSD)",
        (RemoteFile(f"{AMAZON_2014}/reviews_{category}_5.json.gz"),),
    )


DATASETS: dict[str, Dataset] = {
    "amazon-toys": _amazon("Toys_and_Games"),
    "amazon-sports": _amazon("Sports_and_Outdoors"),
    "amazon-beauty": _amazon("Beauty"),
    "sasrec-toys": Dataset(
        "sasrec",
        "Toys and Games as preprocessed by S3-Rec/ICLRec (uid i1 i2 ..., order only)",
        (
            RemoteFile(
                f"{S3REC_DATA}/Toys_and_Games.txt",
                "176c680c688d497598c4a89a03b402c0fe78d795e5db335c2e78dd5f2d778a3f",
            ),
        ),
    ),
    "sasrec-sports": Dataset(
        "sasrec",
        "Sports and Outdoors as preprocessed by S3-Rec/ICLRec (uid i1 i2 ..., order only)",
        (
            RemoteFile(
                f"{S3REC_DATA}/Sports_and_Outdoors.txt",
                "2a095e0648872beb9982408958290f5d655db5be2911c3756b5446de9f0b8de2",
            ),
        ),
    ),
    "diginetica-sample": Dataset(
        "diginetica",
        "DIGINETICA (CIKM Cup 2016) item-view sample shipped with SR-GNN",
        (
            RemoteFile(
                f"{SRGNN_DATA}/sample_train-item-views.csv",
                "98da96e05c87ef12b739e4bfd9bc7b4864106ee77371f1db9eb4413e3f78d37e",
            ),
        ),
    ),
    "yoochoose-100k": Dataset(
        "yoochoose",
        "YOOCHOOSE (RecSys Challenge 2015) 100k-click sample prepared by session-rec",
        (
            RemoteFile(
                f"{SESSION_REC_DATA}/yoochoose-clicks-100k_train_full.txt",
                "9842c90358298ee784fcf0c9dccb2eeb283ab04368e53bdeee896747f4c03e1e",
            ),
            RemoteFile(
                f"{SESSION_REC_DATA}/yoochoose-clicks-100k_test.txt",
                "380410c606403531019e1ec0b4d192ef90492d594b9b5a91633b860618dd7136",
            ),
        ),
    ),
    "retailrocket": Dataset(
        "retailrocket",
        "RetailRocket e-commerce events (view/addtocart/transaction)",
        manual="it is published on Kaggle only: with a Kaggle account and API token run "
        "`kaggle datasets download retailrocket/ecommerce-dataset`, unzip, and point "
        "data.path at events.csv",
    ),
    "taobao": Dataset(
        "taobao",
        "Taobao UserBehavior (Alibaba Tianchi, ~100M events)",
        manual="Alibaba Tianchi requires a login: sign in at "
        "https://tianchi.aliyun.com/dataset/649, download UserBehavior.csv.zip, unzip, and "
        "point data.path at UserBehavior.csv",
    ),
    "diginetica": Dataset(
        "diginetica",
        "DIGINETICA full set (CIKM Cup 2016)",
        manual="the full set is distributed through the CIKM Cup 2016 site "
        "(https://competitions.codalab.org/competitions/11161) after accepting its terms; "
        "`diginetica-sample` is fetchable",
    ),
}


def get_dataset(name: str) -> Dataset:
    """The registry entry of `name`, or a `DatasetError` listing the known names."""
    try:
        return DATASETS[name]
    except KeyError:
        raise DatasetError(
            f"unknown dataset {name!r} (rule unknown_dataset); known: {', '.join(DATASETS)}"
        ) from None


def _fetch(remote: RemoteFile, dest: Path) -> tuple[int, str]:
    """Stream one file to `dest` via a temporary `.part` file; returns (bytes, sha256)."""
    from urllib.error import URLError
    from urllib.request import urlopen

    part = dest.with_name(dest.name + ".part")
    digest = hashlib.sha256()
    size = 0
    try:
        # Registry URLs are fixed https addresses, not user input.
        with urlopen(remote.url, timeout=DOWNLOAD_TIMEOUT_S) as response, part.open("wb") as out:  # noqa: S310
            while chunk := response.read(CHUNK_BYTES):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
    except (URLError, OSError) as exc:
        part.unlink(missing_ok=True)
        raise DatasetError(f"{remote.url}: download failed: {exc} (rule download_failed)") from None
    sha256 = digest.hexdigest()
    if remote.sha256 is not None and sha256 != remote.sha256:
        part.unlink(missing_ok=True)
        raise DatasetError(
            f"{remote.url}: sha256 {sha256} differs from the pinned {remote.sha256} "
            "(rule checksum_mismatch)"
        )
    shutil.move(part, dest)
    return size, sha256


def download(name: str, dest: Path) -> list[Path]:
    """Download dataset `name` into folder `dest`; prints each file's size and SHA-256."""
    dataset = get_dataset(name)
    if dataset.manual is not None:
        raise DatasetError(f"dataset {name!r} cannot be downloaded by script: {dataset.manual}")
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    for remote in dataset.files:
        path = dest / remote.url.rsplit("/", 1)[-1]
        size, sha256 = _fetch(remote, path)
        checked = "checksum ok" if remote.sha256 else "no pinned checksum"
        print(f"{path}  {size} bytes  sha256 {sha256}  ({checked})")
        paths.append(path)
    print(f"ingest it with: data.source: {dataset.source}, data.path: {dest}")
    return paths


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", help="list the known datasets")
    fetch = actions.add_parser("download", help="download a dataset")
    fetch.add_argument("name", help="dataset name (see `data list`)")
    fetch.add_argument("--dest", type=Path, default=None, help="folder (default: data/raw/<name>)")


def run(args: argparse.Namespace) -> int:
    if args.action == "list":
        for name, dataset in DATASETS.items():
            how = "manual" if dataset.manual else f"{len(dataset.files)} file(s)"
            print(f"{name:20} source={dataset.source:15} {how:10} {dataset.description}")
        return 0
    download(args.name, args.dest or Path("data/raw") / args.name)
    return 0
