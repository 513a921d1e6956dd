"""``peerblend data``: the datasets peerblend knows (``list``), and fetching them (``fetch``).

Also how ``peerblend replay`` turns a dataset name (``coqa:dev``) into the file it reads.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from pipeline.errors import DatasetError, InputError
from pipeline.evaluation.catalog import (
    DATASETS,
    SAMPLE,
    Dataset,
    Split,
    looks_like_ref,
    parse_ref,
    sample_path,
)
from pipeline.service.settings import Settings
from workers.cli_args import console, errors
from workers.datasets_fetch import FetchOptions, cached_path, fetch_ref, fetch_split, fetched_info


def add_data_commands(sub: Any) -> None:
    data = sub.add_parser("data", help="datasets: list the known ones, fetch official files into the cache")
    actions = data.add_subparsers(required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="known datasets: splits, licence, size, source, cached or not")
    listing.add_argument("--json", action="store_true", help="one JSON object per dataset")
    listing.set_defaults(command=_list)
    fetch = actions.add_parser(
        "fetch", help="download, verify (SHA-256) and unpack NAME[:SPLIT] into the cache"
    )
    fetch.add_argument(
        "refs", nargs="+", type=dataset_ref, metavar="NAME[:SPLIT]", help="e.g. coqa:dev, quac"
    )
    fetch.add_argument(
        "--trust-unverified",
        action="store_true",
        help="also fetch files whose digest nobody pinned (their SHA-256 is printed, not checked)",
    )
    fetch.set_defaults(command=_fetch)


def dataset_ref(text: str) -> str:
    """An argparse type: a known ``NAME[:SPLIT]`` (a usage error, exit 2, otherwise)."""
    try:
        parse_ref(text)
    except InputError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def _list(args: argparse.Namespace) -> int:
    data_dir = Settings().datasets_dir
    for found in DATASETS.values():
        if args.json:
            print(json.dumps(_as_json(data_dir, found), ensure_ascii=False))
            continue
        for line in _dataset_lines(data_dir, found):
            console.print(line, highlight=False, markup=False, soft_wrap=True)
    if not args.json:
        console.print(
            f"cache: {data_dir} (PEERBLEND_DATA_DIR)", highlight=False, markup=False, soft_wrap=True
        )
    return 0


def _dataset_lines(data_dir: Path, found: Dataset) -> Iterator[str]:
    """A dataset for people: licence, source, notes, then each split with its state and digest."""
    yield f"{found.name} — {found.title}"
    yield f"  licence: {found.licence}"
    hub = f" (also on the Hugging Face Hub as {found.hub}; not needed)" if found.hub else ""
    yield f"  source: {found.homepage}{hub}"
    if found.note:
        yield f"  note: {found.note}"
    width = max(len(f"{found.name}:{name}") for name in found.split_names) if found.split_names else 0
    if found.sample:
        yield f"  {found.name + ':' + SAMPLE:<{width}}  shipped with peerblend ({_sample_size(found)})"
    for split in found.splits:
        yield f"  {found.name + ':' + split.name:<{width}}  {_state(data_dir, found, split)} · {_size(split)}"
        yield f"  {'':<{width}}  {split.download.url}" + (f" → {split.member}" if split.member else "")
        yield f"  {'':<{width}}  {_digest(split)}"


def _sample_size(found: Dataset) -> str:
    from pipeline.evaluation.datasets import load_conversations

    conversations = load_conversations(sample_path(found))
    return f"{len(conversations)} conversations, {sum(len(c.questions) for c in conversations)} questions"


def _state(data_dir: Path, found: Dataset, split: Split) -> str:
    info = fetched_info(data_dir, found, split)
    if info is None:
        return "not cached"
    return (
        "cached (verified)"
        if info.get("verified")
        else "cached (NOT verified: fetched with --trust-unverified)"
    )


def _size(split: Split) -> str:
    size = f"{split.download.size / 1e6:.1f} MB" if split.download.size else "size unknown"
    counts = [
        f"{n:,} {what}"
        for n, what in ((split.conversations, "conversations"), (split.questions, "questions"))
        if n
    ]
    return " · ".join([size, *counts])


def _digest(split: Split) -> str:
    if not split.download.verified:
        return "digest unknown — fetch refuses it unless --trust-unverified"
    return f"sha256 {split.download.sha256} (pinned from {split.download.digest_source})"


def _as_json(data_dir: Path, found: Dataset) -> dict[str, Any]:
    splits = [
        {
            "split": split.name,
            "url": split.download.url,
            "member": split.member,
            "size": split.download.size,
            "sha256": split.download.sha256,
            "digest_source": split.download.digest_source or None,
            "conversations": split.conversations,
            "questions": split.questions,
            "cached": fetched_info(data_dir, found, split),
        }
        for split in found.splits
    ]
    return {
        "name": found.name,
        "title": found.title,
        "format": found.format,
        "licence": found.licence,
        "homepage": found.homepage,
        "hub": found.hub,
        "sample": str(cached_path(data_dir, found, SAMPLE)) if found.sample else None,
        "note": found.note or None,
        "splits": splits,
    }


def _fetch(args: argparse.Namespace) -> int:
    data_dir = Settings().datasets_dir
    with _progress() as progress:
        options = FetchOptions(trust_unverified=args.trust_unverified, progress=progress)
        for ref in args.refs:
            for path in fetch_ref(data_dir, ref, options):
                console.print(f"{ref}: {path}", highlight=False)
    _warn_unverified(data_dir, args.refs)
    return 0


def _warn_unverified(data_dir: Path, refs: Sequence[str]) -> None:
    for ref in refs:
        found, names = parse_ref(ref)
        for name in names:
            split = found.split(name) if name != SAMPLE else None
            info = fetched_info(data_dir, found, split) if split else None
            if info and not info.get("verified"):
                errors.print(
                    f"warning: {found.name}:{name} was not checked against a pinned digest; "
                    f"its SHA-256 is {info.get('sha256')}",
                    highlight=False,
                )


@contextmanager
def _progress() -> Iterator[Any]:
    """A download bar per file on a terminal (stderr); nothing when output goes to a file or pipe."""
    if not errors.is_terminal:
        yield None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, console=errors, transient=False) as bars:

        def start(name: str) -> Any:
            task = bars.add_task(name, total=None)
            return lambda done, total: bars.update(task, completed=done, total=total)

        yield start


def replay_paths(items: Sequence[str], *, fetch: bool, trust_unverified: bool = False) -> list[Path]:
    """The files ``peerblend replay`` reads: a path as is; a dataset ``NAME:SPLIT`` from the cache
    (or the shipped sample), fetched first when ``fetch``; otherwise a message naming the fetch."""
    data_dir = Settings().datasets_dir
    paths = []
    for item in items:
        if Path(item).exists() or not looks_like_ref(item):
            paths.append(Path(item))  # the loader names a missing file
            continue
        found, names = parse_ref(item)
        if names != [SAMPLE] and ":" not in item:
            raise DatasetError(
                f"{item}: name a split, one of {', '.join(f'{item}:{n}' for n in found.split_names)}"
            )
        paths.append(_replay_path(data_dir, found, names[0], fetch=fetch, trust_unverified=trust_unverified))
    return paths


def _replay_path(data_dir: Path, found: Dataset, split: str, *, fetch: bool, trust_unverified: bool) -> Path:
    cached = cached_path(data_dir, found, split)
    if cached is not None:
        return cached
    ref = f"{found.name}:{split}"
    if not found.fetchable:
        raise DatasetError(f"{ref}: {found.name} cannot be fetched: {found.note}")
    if not fetch:
        sample = f" (or replay {found.name}:{SAMPLE}, shipped with peerblend)" if found.sample else ""
        raise DatasetError(
            f"{ref} is not in the cache ({data_dir}); fetch it with `peerblend data fetch {ref}`, "
            f"or add --fetch to this replay{sample}"
        )
    with _progress() as progress:
        options = FetchOptions(trust_unverified=trust_unverified, progress=progress)
        return fetch_split(data_dir, found, split, options)
