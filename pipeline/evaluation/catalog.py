"""The datasets peerblend knows: official files, pinned digests, licences, shipped samples.

Pure data and path arithmetic: the downloads themselves live in ``workers/datasets_fetch.py``.
A dataset has splits; each split is one data file, either downloaded as is (CoQA, QuAC) or
one member of a downloaded archive (ConvQuestions, DoQA). Every dataset with a loader also
has a ``sample`` split: a few of its conversations shipped in the package
(``pipeline/data/samples``, see the README there), always available, never downloaded.

Where the pinned SHA-256 digests come from: huggingface/datasets recorded, for each file it
downloaded from the official location, its size and SHA-256 (``download_checksums`` in
``datasets/<name>/dataset_infos.json``). Those records are the digests pinned here. They
were not recomputed here (the machines that wrote this have no internet); if an official
host ever changes a file, ``peerblend data fetch`` refuses it and names both digests.
A download whose digest nobody has recorded has ``sha256=None``: fetch refuses it unless
the user passes ``--trust-unverified``, and says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from pipeline.errors import InputError
from pipeline.evaluation.datasets import DatasetFormat

SAMPLE = "sample"  # the split name of a dataset's shipped sample
# Other names people use for the dev split (QuAC calls it val, the Hub validation).
SPLIT_ALIASES = {"val": "dev", "validation": "dev"}


@dataclass(frozen=True)
class Download:
    """One official file: where it is, and what it must be.

    ``size`` in bytes and ``sha256`` (hex) are pinned; None where nobody recorded them.
    ``digest_source`` says who recorded the digest.
    """

    url: str
    size: int | None
    sha256: str | None
    digest_source: str = ""

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def verified(self) -> bool:
        return self.sha256 is not None


@dataclass(frozen=True)
class Split:
    """One split: its download, and the member of the archive that holds it (None: the file itself).

    ``conversations`` / ``questions``: as counted by the dataset's authors or the digest's
    recorder, for ``data list`` (None where unknown).
    """

    name: str
    download: Download
    member: str | None = None
    conversations: int | None = None
    questions: int | None = None

    @property
    def filename(self) -> str:
        """The name of the data file in the cache: the official one (loaders read domains from it)."""
        return (self.member or self.download.filename).rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Dataset:
    """A dataset: its format (None: listed, but peerblend has no loader for it), licence, splits."""

    name: str
    title: str
    format: DatasetFormat | None
    licence: str
    homepage: str
    splits: tuple[Split, ...]
    sample: str | None = None  # file name under pipeline/data/samples
    hub: str | None = None  # also on the Hugging Face Hub as this id (informative: never needed)
    note: str = ""

    def split(self, name: str) -> Split:
        name = SPLIT_ALIASES.get(name, name)
        for split in self.splits:
            if split.name == name:
                return split
        known = ", ".join(self.split_names) or "none"
        raise InputError(f"dataset {self.name} has no split {name!r}; its splits: {known}")

    @property
    def split_names(self) -> tuple[str, ...]:
        names = tuple(s.name for s in self.splits)
        return (*names, SAMPLE) if self.sample else names

    @property
    def fetchable(self) -> bool:
        return self.format is not None and bool(self.splits)


def _hf(name: str) -> str:
    return f"the download_checksums of huggingface/datasets' datasets/{name}/dataset_infos.json; not re-checked here"


_CONVQUESTIONS = "http://qa.mpi-inf.mpg.de/convex/ConvQuestions_{}.zip"
# One archive holds every DoQA domain and split.
_DOQA = Download(
    "https://ixa2.si.ehu.es/convai/doqa-v2.1.zip",
    4_197_671,
    "aa5b236accee68a5ecc49f1d884ea5251f61f4cb7bb2c20fe005e47d41555ef7",
    _hf("doqa"),
)
_DOQA_MEMBER = "doqa-v2.1/doqa_dataset/doqa-{}-{}-v2.1.json"
_DOQA_NOTE = "one archive (doqa-v2.1.zip) holds all three domains: fetching one fetches it once"


def _doqa(domain: str, splits: tuple[tuple[str, int | None, int], ...], sample: str | None) -> Dataset:
    """A DoQA domain: ``splits`` are (name, dialogues, questions)."""
    return Dataset(
        name=f"doqa-{domain}",
        title=f"DoQA v2.1, {domain}",
        format="doqa",
        licence="CC BY-SA 4.0",
        homepage="https://ixa.eus/node/12931",
        splits=tuple(
            Split(name, _DOQA, _DOQA_MEMBER.format(domain, name), dialogues, questions)
            for name, dialogues, questions in splits
        ),
        sample=sample,
        hub="community-datasets/doqa",
        note=_DOQA_NOTE,
    )


DATASETS: dict[str, Dataset] = {
    dataset.name: dataset
    for dataset in (
        Dataset(
            name="convquestions",
            title="ConvQuestions",
            format="convquestions",
            licence="CC BY 4.0",
            homepage="https://convex.mpi-inf.mpg.de",
            splits=(
                Split(
                    "train",
                    Download(
                        _CONVQUESTIONS.format("train"),
                        2_139_687,
                        "093b7ea4106501035e5954213fda6111d0e4747011e8efa558765f2a9705d651",
                        _hf("conv_questions"),
                    ),
                    "train_set/train_set_ALL.json",
                    6720,
                    33600,
                ),
                Split(
                    "dev",
                    Download(
                        _CONVQUESTIONS.format("dev"),
                        594_329,
                        "91faf376a5f702734c78033e2f357c507291cc3c85d9fda39e65c366f0abc7fd",
                        _hf("conv_questions"),
                    ),
                    "dev_set/dev_set_ALL.json",
                    2240,
                    11200,
                ),
                Split(
                    "test",
                    Download(
                        _CONVQUESTIONS.format("test"),
                        542_001,
                        "698e2a1761b9a0bff6490ccc735df8a1be9b85a7bbd8ed451a1b81ff5a1df28d",
                        _hf("conv_questions"),
                    ),
                    "test_set/test_set_ALL.json",
                    2240,
                    11200,
                ),
            ),
            sample="convquestions-dev-sample.json",
            hub="pchristm/conv_questions",
        ),
        Dataset(
            name="coqa",
            title="CoQA v1.0",
            format="coqa",
            licence="per passage source: CC BY-SA 4.0 (Wikipedia, literature), MSR-LA (MCTest), "
            "RACE's own, Apache 2.0 (CNN); see the homepage",
            homepage="https://stanfordnlp.github.io/coqa/",
            splits=(
                Split(
                    "train",
                    Download(
                        "https://downloads.cs.stanford.edu/nlp/data/coqa/coqa-train-v1.0.json",
                        49_001_836,
                        "b0fdb2bc1bd38dd3ca2ce5fa2ac3e02c6288ac914f241ac409a655ffb6619fa6",
                        _hf("coqa"),
                    ),
                    conversations=7199,
                ),
                Split(
                    "dev",
                    Download(
                        "https://downloads.cs.stanford.edu/nlp/data/coqa/coqa-dev-v1.0.json",
                        9_090_845,
                        "dfa367a9733ce53222918d0231d9b3bedc2b8ee831a2845f62dfc70701f2540a",
                        _hf("coqa"),
                    ),
                    conversations=500,
                ),
            ),
            sample="coqa-dev-sample.json",
            hub="stanfordnlp/coqa",
            note="the digests were recorded at nlp.stanford.edu/data/coqa/, which now redirects here; "
            "the test set is hidden",
        ),
        Dataset(
            name="quac",
            title="QuAC v0.2",
            format="quac",
            licence="CC BY-SA 4.0",
            homepage="https://quac.ai",
            splits=(
                Split(
                    "train",
                    Download(
                        "https://s3.amazonaws.com/my89public/quac/train_v0.2.json",
                        68_114_819,
                        "ff5cca5a2e4b4d1cb5b5ced68b9fce88394ef6d93117426d6d4baafbcc05c56a",
                        _hf("quac"),
                    ),
                    conversations=11567,
                ),
                Split(
                    "dev",
                    Download(
                        "https://s3.amazonaws.com/my89public/quac/val_v0.2.json",
                        8_929_167,
                        "09e622916280ba04c9352acb1bc5bbe80f11a2598f6f34e934c51d9e6570f378",
                        _hf("quac"),
                    ),
                    conversations=1000,
                ),
            ),
            sample="quac-val-sample.json",
            hub="allenai/quac",
            note="dev is QuAC's val_v0.2.json; the test set is hidden",
        ),
        _doqa(
            "cooking",
            (("train", None, 4612), ("dev", 200, 911), ("test", None, 1797)),
            "doqa-cooking-dev-v2.1-sample.json",
        ),
        _doqa("movies", (("test", None, 1884),), None),
        _doqa("travel", (("test", None, 1713),), None),
        Dataset(
            name="topiocqa",
            title="TopiOCQA",
            format=None,
            licence="CC BY-NC-SA 4.0 (evaluation allowed for non-commercial use)",
            homepage="https://mcgill-nlp.github.io/topiocqa/",
            splits=(),
            hub="McGill-NLP/TopiOCQA",
            note="listed only: peerblend has no loader for its format yet, and no recorded digest of "
            "its files (https://zenodo.org/records/7709644)",
        ),
    )
}


def dataset(name: str) -> Dataset:
    """The dataset called ``name``; an InputError listing the known ones otherwise."""
    try:
        return DATASETS[name.strip().lower()]
    except KeyError:
        known = ", ".join(DATASETS)
        raise InputError(f"unknown dataset {name!r}; known datasets: {known}") from None


def parse_ref(ref: str) -> tuple[Dataset, list[str]]:
    """``NAME[:SPLIT]`` → the dataset and the split names it means (every split when none is named)."""
    name, colon, split = ref.partition(":")
    found = dataset(name)
    split = split.strip().lower()
    if colon and not split:
        raise InputError(f"{ref!r}: name a split after the colon, one of {', '.join(found.split_names)}")
    if split:
        return found, [found.split(split).name if split != SAMPLE else _sample_split(found)]
    return found, [s.name for s in found.splits]


def _sample_split(found: Dataset) -> str:
    if not found.sample:
        raise InputError(f"dataset {found.name} ships no sample; its splits: {', '.join(found.split_names)}")
    return SAMPLE


def looks_like_ref(text: str) -> bool:
    """Whether ``text`` names a known dataset (``NAME`` or ``NAME:SPLIT``) rather than a file."""
    return text.partition(":")[0].strip().lower() in DATASETS


def sample_path(found: Dataset) -> Path:
    """The shipped sample of ``found`` (a real file: the package is installed unzipped)."""
    if not found.sample:
        raise InputError(f"dataset {found.name} ships no sample")
    return Path(str(resources.files("pipeline").joinpath("data", "samples", found.sample)))


def samples_dir() -> Path:
    return Path(str(resources.files("pipeline").joinpath("data", "samples")))


def split_dir(data_dir: Path, found: Dataset, split: Split) -> Path:
    """Where a fetched split lives: ``<data dir>/<dataset>/<split>/``."""
    return data_dir / found.name / split.name


def data_file(data_dir: Path, found: Dataset, split: Split) -> Path:
    """The data file a fetched split is read from, under its official name."""
    return split_dir(data_dir, found, split) / split.filename


def marker_file(data_dir: Path, found: Dataset, split: Split) -> Path:
    """Written last by a fetch: what was fetched and whether its digest was checked."""
    return split_dir(data_dir, found, split) / "fetched.json"


def download_file(data_dir: Path, download: Download) -> Path:
    """Where an archive is kept once downloaded (one archive may serve several splits)."""
    return data_dir / "downloads" / download.filename
