"""Fetching official dataset files into the local cache: download, resume, verify, unpack.

The cache (``PEERBLEND_DATA_DIR``; default ``~/.cache/peerblend/data``) holds, per split,
``<dataset>/<split>/<official file name>`` and ``fetched.json`` (written last, so a split
is cached only once its file is whole). A download goes to ``<name>.part`` first: a
broken transfer leaves it, and the next fetch asks the server for the rest (HTTP Range)
or starts again where the server does not resume. A file becomes visible under its final
name only after its size and SHA-256 match the pinned ones (``pipeline.evaluation.catalog``);
a mismatch deletes it and names the file and both digests.

Errors: a server that cannot be reached or that fails (5xx, a broken transfer) is
``ServiceUnavailable`` (exit 4); a digest or size mismatch is ``ChecksumMismatch``
(exit 1); an unknown name, or a digest nobody pinned without ``--trust-unverified``, is
an ``InputError`` (exit 3).
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from pipeline.errors import BlendError, InputError, ServiceUnavailable
from pipeline.evaluation.catalog import (
    SAMPLE,
    Dataset,
    Download,
    Split,
    data_file,
    download_file,
    marker_file,
    parse_ref,
    sample_path,
)

Progress = Callable[[int, int | None], None]  # (bytes so far, total bytes or None)


class ChecksumMismatch(BlendError):
    """A downloaded file is not the pinned one (another size or SHA-256)."""


@dataclass(frozen=True)
class FetchOptions:
    trust_unverified: bool = False  # accept a download whose digest nobody pinned
    timeout_s: float = 60.0  # connect / between two reads
    progress: Callable[[str], Progress] | None = None  # a per-file progress callback factory


def cached_path(data_dir: Path, found: Dataset, split_name: str) -> Path | None:
    """The local data file of a split (the shipped sample, or a finished fetch), None if not cached."""
    if split_name == SAMPLE:
        return sample_path(found)
    split = found.split(split_name)
    path = data_file(data_dir, found, split)
    return path if path.is_file() and marker_file(data_dir, found, split).is_file() else None


def fetched_info(data_dir: Path, found: Dataset, split: Split) -> dict[str, object] | None:
    """What ``fetched.json`` says of a cached split (None when it is not cached)."""
    marker = marker_file(data_dir, found, split)
    try:
        info = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and data_file(data_dir, found, split).is_file() else None


def fetch_ref(data_dir: Path, ref: str, options: FetchOptions) -> list[Path]:
    """Fetch ``NAME[:SPLIT]`` (every split when none is named); the data files, in split order."""
    found, names = parse_ref(ref)
    if not found.fetchable:
        raise InputError(f"dataset {found.name} cannot be fetched: {found.note}")
    return [fetch_split(data_dir, found, name, options) for name in names]


def fetch_split(data_dir: Path, found: Dataset, split_name: str, options: FetchOptions) -> Path:
    """The data file of one split, downloaded, verified and unpacked unless already cached."""
    cached = cached_path(data_dir, found, split_name)
    if cached is not None:
        return cached
    split = found.split(split_name)
    if not split.download.verified and not options.trust_unverified:
        raise InputError(
            f"{found.name}:{split.name}: no SHA-256 of {split.download.filename} is pinned (digest unknown), "
            "so peerblend cannot check what it downloads; pass --trust-unverified to fetch it anyway"
        )
    if split.member is None:
        target = data_file(data_dir, found, split)
        digest = download(split.download, target, options)
    else:
        archive, digest = _archive(data_dir, split.download, options)
        target = _unpack(archive, split.member, data_file(data_dir, found, split))
    _write_marker(data_dir, found, split, digest)
    return target


def _archive(data_dir: Path, item: Download, options: FetchOptions) -> tuple[Path, str]:
    """The archive of ``item`` and its SHA-256: the kept copy when it is still the pinned file
    (another split of it was fetched before), else downloaded."""
    archive = download_file(data_dir, item)
    if archive.is_file():
        digest = _digest_of(archive)
        if item.sha256 in (None, digest):
            return archive, digest
        archive.unlink()  # an older or damaged copy: fetch the pinned one again
    return archive, download(item, archive, options)


def download(item: Download, target: Path, options: FetchOptions) -> str:
    """Download ``item`` to ``target`` (resuming ``target.part``), check it; its SHA-256."""
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    _transfer(item, part, options)
    digest = _digest_of(part)
    _check(item, part, digest)
    part.replace(target)
    return digest


def _transfer(item: Download, part: Path, options: FetchOptions) -> None:
    """Bring ``part`` to the whole file: ask for the bytes it lacks, or all of them again."""
    have = part.stat().st_size if part.exists() else 0
    if item.size is not None and have > item.size:
        part.unlink()  # longer than the file can be: not a prefix of it
        have = 0
    if item.size is not None and have == item.size:
        return  # whole already (an earlier run stopped before checking it)
    headers = {"Accept-Encoding": "identity"}  # byte ranges of the file itself, never of a gzip of it
    if have:
        headers["Range"] = f"bytes={have}-"
    timeout = httpx.Timeout(options.timeout_s)
    try:
        with httpx.stream(
            "GET", item.url, headers=headers, timeout=timeout, follow_redirects=True
        ) as response:
            start = _resume_offset(item, response, have)
            if start is None:
                return  # 416: the server has nothing past what we hold
            total = _expected_total(item, response, start)
            _receive(item, part, response, start, total, options)
    except httpx.HTTPError as error:  # refused, timed out, broken off: keep the part for a resume
        kept = part.stat().st_size if part.exists() else 0
        raise ServiceUnavailable(
            f"download of {item.url} failed ({_reason(error)}); {_kept(kept, item.size)}"
        ) from None


def _resume_offset(item: Download, response: httpx.Response, have: int) -> int | None:
    """Where the body starts in the file: ``have`` for a resumed 206, 0 for a full 200."""
    if response.status_code == 416 and have:
        return None
    if response.status_code == 206 and have and _range_start(response) == have:
        return have
    if response.status_code == 200:
        return 0  # the server sent the whole file (it ignores Range, or we asked for all)
    raise ServiceUnavailable(
        f"download of {item.url} failed: the server answered {response.status_code} "
        f"{response.reason_phrase}".rstrip()
    )


def _range_start(response: httpx.Response) -> int | None:
    """The first byte of a 206's ``Content-Range: bytes START-END/TOTAL``."""
    value = response.headers.get("content-range", "")
    unit, _, span = value.partition(" ")
    start = span.partition("-")[0]
    return int(start) if unit == "bytes" and start.isdigit() else None


def _expected_total(item: Download, response: httpx.Response, start: int) -> int | None:
    """The whole file's size as the server states it; refuses one that is not the pinned size."""
    length = response.headers.get("content-length", "")
    total = start + int(length) if length.isdigit() else item.size
    if item.size is not None and total is not None and total != item.size:
        raise ChecksumMismatch(
            f"{item.filename}: the server offers {total:,} bytes, the pinned size is {item.size:,} "
            f"(from {item.url}); refusing it"
        )
    return total


def _receive(
    item: Download, part: Path, response: httpx.Response, start: int, total: int | None, options: FetchOptions
) -> None:
    """Write the body to ``part`` (appended at ``start``), reporting progress."""
    report = options.progress(item.filename) if options.progress else None
    done = start
    with part.open("r+b" if start else "wb") as out:
        out.truncate(start)  # a resume appends right after the bytes the server was asked to skip
        out.seek(start)
        for (
            chunk
        ) in response.iter_raw():  # as received: a fixed size would hold back a partial chunk on a break
            out.write(chunk)
            done += len(chunk)
            if report:
                report(done, total)
    if total is not None and done < total:  # the connection closed early without an error
        raise ServiceUnavailable(
            f"download of {item.url} broke off after {done:,} of {total:,} bytes; {_kept(done, total)}"
        )


def _check(item: Download, part: Path, digest: str) -> None:
    """Refuse a whole download that is not the pinned file; it is deleted, so a retry starts afresh."""
    size = part.stat().st_size
    if item.size is not None and size != item.size:
        part.unlink()
        raise ChecksumMismatch(
            f"{item.filename}: {size:,} bytes downloaded, the pinned size is {item.size:,} "
            f"(from {item.url}); deleted it, run the fetch again"
        )
    if item.sha256 is not None and digest != item.sha256:
        part.unlink()
        raise ChecksumMismatch(
            f"{item.filename}: SHA-256 {digest} does not match the pinned {item.sha256} (from {item.url}; "
            f"pinned by {item.digest_source or 'peerblend'}); deleted the download: the file on the server "
            "changed or the transfer was corrupted"
        )


def _digest_of(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            sha.update(block)
    return sha.hexdigest()


def _unpack(archive: Path, member: str, target: Path) -> Path:
    """Extract one member of a ZIP to ``target`` (via a temporary name: whole or absent)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    try:
        with zipfile.ZipFile(archive) as zipped, zipped.open(member) as source, partial.open("wb") as out:
            while block := source.read(1 << 20):
                out.write(block)
    except KeyError:
        raise ChecksumMismatch(f"{archive.name} has no member {member}") from None
    except zipfile.BadZipFile as error:
        raise ChecksumMismatch(f"{archive.name} is not a readable ZIP archive: {error}") from None
    partial.replace(target)
    return target


def _write_marker(data_dir: Path, found: Dataset, split: Split, digest: str) -> None:
    info = {
        "dataset": found.name,
        "split": split.name,
        "url": split.download.url,
        "sha256": digest,
        "verified": split.download.verified,  # False: fetched with --trust-unverified
        "member": split.member,
    }
    marker = marker_file(data_dir, found, split)
    temporary = marker.with_name(f".{marker.name}.{os.getpid()}")
    temporary.write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    temporary.replace(marker)


def _kept(kept: int, size: int | None) -> str:
    if not kept:
        return "nothing was kept; run the same command again"
    whole = f" of {size:,}" if size else ""
    return f"{kept:,}{whole} bytes are kept: run the same command again to resume"


def _reason(error: httpx.HTTPError) -> str:
    host = urlsplit(str(error.request.url)).netloc if _has_request(error) else ""
    text = str(error) or type(error).__name__
    return f"{host}: {text}" if host else text


def _has_request(error: httpx.HTTPError) -> bool:
    try:
        error.request  # noqa: B018 - raises RuntimeError when the error carries none
    except RuntimeError:
        return False
    return True
