"""`peerblend data fetch`: real downloads from a local HTTP server this test starts.

The server serves fixture files (the shipped samples, and a ZIP made of one) with HTTP
Range support and fault modes: a 500, a body cut short, a server that ignores Range.
Nothing here reaches the internet.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pipeline.errors import InputError, ServiceUnavailable
from pipeline.evaluation import catalog
from pipeline.evaluation.catalog import Dataset, Download, Split, samples_dir
from pipeline.evaluation.datasets import load_conversations
from tests.conftest import scripted_committee
from workers.cli import EXIT_FAILED, EXIT_INPUT, EXIT_UNAVAILABLE, main
from workers.datasets_fetch import ChecksumMismatch, FetchOptions, cached_path, fetch_split, fetched_info

COQA = (samples_dir() / "coqa-dev-sample.json").read_bytes()
DOQA = (samples_dir() / "doqa-cooking-dev-v2.1-sample.json").read_bytes()


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


ARCHIVE = _zip({"doqa-v9/doqa-cooking-dev-v2.1.json": DOQA, "doqa-v9/other.txt": b"x"})


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class _State:
    files: dict[str, bytes]
    mode: str = "ok"  # ok | error | truncate | ignore-range | wrong-length
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 - the http.server hook's name
        state = self.server.state
        state.requests.append((self.path, self.headers.get("Range")))
        body = state.files.get(self.path.lstrip("/"))
        if body is None or state.mode == "error":
            self.send_error(404 if body is None else 500)
            return
        start = self._range_start(len(body))
        if start is None:
            return
        self.send_response(206 if start else 200)
        length = len(body) - start + (1 if state.mode == "wrong-length" else 0)
        self.send_header("Content-Length", str(length))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.end_headers()
        # "truncate": the headers promise the whole body, the connection closes halfway.
        end = start + (len(body) - start) // 2 if state.mode == "truncate" else len(body)
        self.wfile.write(body[start:end])

    def _range_start(self, size: int) -> int | None:
        """The first byte asked for (0 without a Range, or when the server ignores it); None after a 416."""
        asked = self.headers.get("Range")
        if not asked or self.server.state.mode == "ignore-range":
            return 0
        start = int(asked.removeprefix("bytes=").split("-")[0])
        if start >= size:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        return start

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet test output
        return


class _Server(ThreadingHTTPServer):
    state: _State


@pytest.fixture
def server() -> Iterator[tuple[str, _State]]:
    state = _State({"coqa-dev.json": COQA, "doqa.zip": ARCHIVE})
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.state = state
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", state
    httpd.shutdown()
    httpd.server_close()


def _coqa(base: str, *, sha256: str | None = _sha(COQA), size: int | None = len(COQA)) -> Dataset:
    download = Download(f"{base}/coqa-dev.json", size, sha256, "the test")
    return Dataset("testset", "Test set", "coqa", "CC0", base, (Split("dev", download),))


def _doqa(base: str) -> Dataset:
    download = Download(f"{base}/doqa.zip", len(ARCHIVE), _sha(ARCHIVE), "the test")
    member = "doqa-v9/doqa-cooking-dev-v2.1.json"
    return Dataset(
        "testdoqa",
        "Test DoQA",
        "doqa",
        "CC0",
        base,
        (Split("dev", download, member), Split("train", download, member)),
    )


OPTIONS = FetchOptions(timeout_s=10)


def test_a_good_download_is_cached_verified_and_not_fetched_again(server, tmp_path) -> None:
    base, state = server
    dataset = _coqa(base)

    path = fetch_split(tmp_path, dataset, "dev", OPTIONS)

    assert path == tmp_path / "testset" / "dev" / "coqa-dev.json"
    assert path.read_bytes() == COQA
    assert load_conversations(path)[0].id == "3dr23u6we5exclen4th8uq9rb42tel"
    assert fetched_info(tmp_path, dataset, dataset.split("dev")) == {
        "dataset": "testset",
        "split": "dev",
        "url": f"{base}/coqa-dev.json",
        "sha256": _sha(COQA),
        "verified": True,
        "member": None,
    }
    assert not list(tmp_path.rglob("*.part"))
    # When: fetched again, Then: the cache answers, the server is not asked
    assert fetch_split(tmp_path, dataset, "dev", OPTIONS) == path
    assert len(state.requests) == 1


def test_a_bad_checksum_is_refused_naming_the_file_and_both_digests(server, tmp_path) -> None:
    base, _ = server
    pinned = _sha(b"another file")

    with pytest.raises(ChecksumMismatch) as raised:
        fetch_split(tmp_path, _coqa(base, sha256=pinned), "dev", OPTIONS)

    message = str(raised.value)
    assert "coqa-dev.json" in message and pinned in message and _sha(COQA) in message
    assert not list(tmp_path.rglob("coqa-dev.json*"))  # nothing cached, nothing to resume from
    assert cached_path(tmp_path, _coqa(base, sha256=pinned), "dev") is None


def test_a_server_offering_another_size_is_refused_before_downloading(server, tmp_path) -> None:
    base, _ = server

    with pytest.raises(ChecksumMismatch, match=f"the pinned size is {len(COQA) + 5:,}"):
        fetch_split(tmp_path, _coqa(base, size=len(COQA) + 5), "dev", OPTIONS)

    assert not list(tmp_path.rglob("coqa-dev.json*"))


def test_a_server_error_is_a_service_error_and_caches_nothing(server, tmp_path) -> None:
    base, state = server
    state.mode = "error"

    with pytest.raises(ServiceUnavailable, match="the server answered 500"):
        fetch_split(tmp_path, _coqa(base), "dev", OPTIONS)

    assert cached_path(tmp_path, _coqa(base), "dev") is None


def test_a_truncated_body_is_kept_and_the_next_fetch_resumes_with_a_range(server, tmp_path) -> None:
    base, state = server
    dataset = _coqa(base)
    part = tmp_path / "testset" / "dev" / "coqa-dev.json.part"

    # Given: the connection closes halfway through the body
    state.mode = "truncate"
    with pytest.raises(ServiceUnavailable) as raised:
        fetch_split(tmp_path, dataset, "dev", OPTIONS)
    assert "run the same command again to resume" in str(raised.value)
    kept = part.read_bytes()
    assert 0 < len(kept) < len(COQA) and COQA.startswith(kept)
    assert cached_path(tmp_path, dataset, "dev") is None

    # When: the server behaves again and the fetch is rerun
    state.mode = "ok"
    path = fetch_split(tmp_path, dataset, "dev", OPTIONS)

    # Then: only the missing bytes were asked for, and the file is whole and verified
    assert state.requests[-1] == ("/coqa-dev.json", f"bytes={len(kept)}-")
    assert path.read_bytes() == COQA
    assert not part.exists()


def test_a_server_that_ignores_range_restarts_the_download(server, tmp_path) -> None:
    base, state = server
    part = tmp_path / "testset" / "dev" / "coqa-dev.json.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(COQA[:100])
    state.mode = "ignore-range"

    path = fetch_split(tmp_path, _coqa(base), "dev", OPTIONS)

    assert state.requests == [("/coqa-dev.json", "bytes=100-")]  # asked to resume, got a 200
    assert path.read_bytes() == COQA


def test_a_stale_part_that_is_not_a_prefix_fails_the_digest_and_is_deleted(server, tmp_path) -> None:
    base, _ = server
    part = tmp_path / "testset" / "dev" / "coqa-dev.json.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"X" * 100)  # e.g. left by an older version of the file

    with pytest.raises(ChecksumMismatch):
        fetch_split(tmp_path, _coqa(base), "dev", OPTIONS)
    assert not part.exists()

    # the next run starts from zero and succeeds
    assert fetch_split(tmp_path, _coqa(base), "dev", OPTIONS).read_bytes() == COQA


def test_a_whole_part_answered_416_is_checked_and_kept(server, tmp_path) -> None:
    base, state = server
    part = tmp_path / "testset" / "dev" / "coqa-dev.json.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(COQA)
    dataset = _coqa(base, size=None)  # no pinned size: only the server can say the part is whole

    path = fetch_split(tmp_path, dataset, "dev", OPTIONS)

    assert state.requests == [("/coqa-dev.json", f"bytes={len(COQA)}-")]
    assert path.read_bytes() == COQA


def test_an_unreachable_host_is_a_service_error(tmp_path) -> None:
    dataset = _coqa("http://127.0.0.1:9")  # the discard port: nothing listens there

    with pytest.raises(ServiceUnavailable, match="download of http://127.0.0.1:9/coqa-dev.json failed"):
        fetch_split(tmp_path, dataset, "dev", OPTIONS)


def test_an_unpinned_digest_is_refused_unless_trusted(server, tmp_path) -> None:
    base, state = server
    dataset = _coqa(base, sha256=None)

    with pytest.raises(InputError, match="digest unknown.*--trust-unverified"):
        fetch_split(tmp_path, dataset, "dev", OPTIONS)
    assert state.requests == []

    path = fetch_split(tmp_path, dataset, "dev", FetchOptions(trust_unverified=True, timeout_s=10))

    info = fetched_info(tmp_path, dataset, dataset.split("dev"))
    assert path.read_bytes() == COQA
    assert info is not None and info["verified"] is False and info["sha256"] == _sha(COQA)


def test_an_archive_is_downloaded_once_and_its_member_unpacked_under_its_official_name(
    server, tmp_path
) -> None:
    base, state = server
    dataset = _doqa(base)

    dev = fetch_split(tmp_path, dataset, "dev", OPTIONS)
    train = fetch_split(tmp_path, dataset, "train", OPTIONS)

    assert dev == tmp_path / "testdoqa" / "dev" / "doqa-cooking-dev-v2.1.json"
    assert dev.read_bytes() == DOQA == train.read_bytes()
    assert (tmp_path / "downloads" / "doqa.zip").read_bytes() == ARCHIVE
    assert len(state.requests) == 1  # the second split reused the archive
    assert {c.source for c in load_conversations(dev)} == {"doqa:cooking"}  # the domain, from the name


# --- the command ---------------------------------------------------------------


@pytest.fixture
def cli(server, tmp_path, monkeypatch) -> tuple[str, _State, Path]:
    base, state = server
    monkeypatch.setenv("PEERBLEND_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("COLUMNS", "300")
    monkeypatch.setitem(catalog.DATASETS, "testset", _coqa(base))
    return base, state, tmp_path / "data"


def test_data_fetch_prints_the_file_and_data_list_shows_it_cached(cli, capsys) -> None:
    _, _, data = cli
    assert main(["data", "list"]) == 0
    assert "testset:dev  not cached" in capsys.readouterr().out

    assert main(["data", "fetch", "testset:dev"]) == 0
    assert str(data / "testset" / "dev" / "coqa-dev.json") in capsys.readouterr().out

    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert "testset:dev  cached (verified)" in out
    assert f"sha256 {_sha(COQA)} (pinned from the test)" in out


def test_data_fetch_exit_codes(cli, capsys, monkeypatch) -> None:
    base, state, _ = cli
    monkeypatch.setitem(catalog.DATASETS, "badset", _coqa(base, sha256="0" * 64))

    assert main(["data", "fetch", "badset"]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert "coqa-dev.json" in err and "0" * 64 in err and _sha(COQA) in err

    state.mode = "error"
    assert main(["data", "fetch", "testset"]) == EXIT_UNAVAILABLE
    assert "500" in capsys.readouterr().err

    monkeypatch.setitem(catalog.DATASETS, "unpinned", _coqa(base, sha256=None))
    assert main(["data", "fetch", "unpinned:dev"]) == EXIT_INPUT
    assert "--trust-unverified" in capsys.readouterr().err

    with pytest.raises(SystemExit) as usage:
        main(["data", "fetch", "nosuchset"])
    assert usage.value.code == 2
    assert "unknown dataset 'nosuchset'" in capsys.readouterr().err


def test_data_list_json_names_every_known_dataset_and_its_digest_state(cli, capsys) -> None:
    assert main(["data", "list", "--json"]) == 0

    listed = {d["name"]: d for d in map(json.loads, capsys.readouterr().out.splitlines())}
    assert {"convquestions", "coqa", "quac", "doqa-cooking", "doqa-movies", "doqa-travel", "topiocqa"} <= set(
        listed
    )
    for name in ("convquestions", "coqa", "quac", "doqa-cooking"):
        assert Path(listed[name]["sample"]).is_file()
        assert all(len(s["sha256"]) == 64 and s["size"] > 0 for s in listed[name]["splits"])
    assert listed["topiocqa"]["splits"] == [] and "CC BY-NC-SA" in listed["topiocqa"]["licence"]


def test_replay_fetch_downloads_a_named_dataset_then_replays_it(cli, capsys, monkeypatch) -> None:
    _, state, data = cli
    committee = data.parent / "committee.json"
    committee.write_text(scripted_committee(2, name="fetch").model_dump_json())
    monkeypatch.setenv("PEERBLEND_HOME", str(data.parent / "home"))
    monkeypatch.setenv("PEERBLEND_COMMITTEE_FILE", str(committee))

    # Given: not cached, so a replay without --fetch names the fetch and downloads nothing
    assert main(["replay", "testset:dev", "--run", "r"]) == EXIT_INPUT
    assert "peerblend data fetch testset:dev" in capsys.readouterr().err
    assert state.requests == []

    # When: replayed with --fetch
    assert main(["replay", "testset:dev", "--fetch", "--run", "r", "--limit", "1"]) == 0

    # Then: the file was downloaded once, verified, and its 12 questions replayed
    assert len(state.requests) == 1
    assert (data / "testset" / "dev" / "coqa-dev.json").read_bytes() == COQA
    assert "12/12 turns stored" in capsys.readouterr().out


def test_a_kept_archive_that_is_not_the_pinned_file_is_downloaded_again(server, tmp_path) -> None:
    base, state = server
    kept = tmp_path / "downloads" / "doqa.zip"
    kept.parent.mkdir(parents=True)
    kept.write_bytes(_zip({"doqa-v9/doqa-cooking-dev-v2.1.json": b"{}"}))  # e.g. an older release

    dev = fetch_split(tmp_path, _doqa(base), "dev", OPTIONS)

    assert len(state.requests) == 1
    assert kept.read_bytes() == ARCHIVE and dev.read_bytes() == DOQA
