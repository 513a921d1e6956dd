"""What a GPU fleet would hit first, caught on CPU (issue 22): no test here needs a GPU.

A prefork worker with a member on CUDA is refused before any model loads; members that
spell one model differently share one resident copy; sampling never uses torch's
process-wide generator; dtype "auto" follows a device_map and native bfloat16; tensors
follow the modules' devices, not ``model.device``; stop strings are looked for in a tail
window; the deployment files pick the CUDA build and share the models volume. Running out
of memory, abandoned items and lengths are in tests/test_batching.py; scoring memory in
tests/test_hf_backend.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

os.environ["HF_HUB_OFFLINE"] = "1"

from pipeline.backend import Message, Prompt  # noqa: E402
from pipeline.committee import Committee, Member  # noqa: E402
from pipeline.service.settings import Settings  # noqa: E402
from workers import runtime as runtime_module  # noqa: E402
from workers.app import refuse_prefork_on_cuda  # noqa: E402
from workers.backends.base import BackendSpec  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _member(name: str, **fields: Any) -> Member:
    return Member(name=name, backend="transformers", model="smollm2-135m", **fields)


# --- 1. prefork + CUDA ---------------------------------------------------------------------------


def test_a_prefork_worker_with_a_member_on_cuda_is_refused_naming_threads() -> None:
    committee = Committee(members=(_member("gpu", device="cuda", queue="gpu0"), _member("cpu", queue="cpu")))

    with pytest.raises(SystemExit) as refused:
        refuse_prefork_on_cuda("prefork", committee, {"gpu0"})

    assert "-P threads" in str(refused.value) and "gpu" in str(refused.value)
    assert "\n" not in str(refused.value)  # one line


def test_device_map_counts_as_cuda_and_the_default_pool_is_prefork() -> None:
    committee = Committee(
        members=(_member("spread", options={"device_map": "auto"}, queue="big"), _member("cpu", queue="cpu"))
    )

    with pytest.raises(SystemExit):
        refuse_prefork_on_cuda(None, committee, None)


@pytest.mark.parametrize("pool", ["threads", "solo"])
def test_threads_and_solo_pools_and_cpu_queues_start(pool: str) -> None:
    from celery.concurrency.prefork import TaskPool

    committee = Committee(
        members=(_member("gpu", device="cuda:1", queue="gpu1"), _member("cpu", queue="cpu"))
    )

    refuse_prefork_on_cuda(pool, committee, {"gpu1"})
    refuse_prefork_on_cuda(TaskPool, committee, {"cpu"})  # its queues hold no CUDA member


def test_celery_worker_prefork_on_cuda_exits_at_start_before_loading(tmp_path: Path) -> None:
    # A model path that does not exist: had the worker tried to load it, the message would say so.
    committee = tmp_path / "committee.toml"
    committee.write_text(
        '[[members]]\nname = "gpu"\nbackend = "transformers"\nmodel = "/no/such/model"\n'
        'device = "cuda"\nqueue = "gpu0"\n'
        '[[members]]\nname = "cpu"\nbackend = "transformers"\nmodel = "/no/such/model"\nqueue = "cpu"\n'
    )
    env = {
        **os.environ,
        "PEERBLEND_BROKER_URL": "redis://127.0.0.1:1/0",  # never reached: the worker stops first
        "PEERBLEND_RESULT_BACKEND": "redis://127.0.0.1:1/1",
        "PEERBLEND_COMMITTEE_FILE": str(committee),
        "PEERBLEND_HOME": str(tmp_path),
        "CUDA_VISIBLE_DEVICES": "",
    }
    command = [sys.executable, "-m", "celery", "-A", "workers.app", "worker", "-Q", "gpu0", "-P", "prefork"]

    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)

    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "start this worker with -P threads" in output
    assert "cannot load" not in output and "/no/such/model" not in output


# --- 2. one resident model per weights ------------------------------------------------------------


def test_members_spelling_one_model_differently_share_one_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads: list[BackendSpec] = []

    def fake_create(name: str, spec: BackendSpec, *, test_backends: bool = False) -> object:
        loads.append(spec)
        return object()

    monkeypatch.setattr(runtime_module, "_backends", {})
    monkeypatch.setattr(runtime_module, "create_backend", fake_create)
    committee = Committee(
        members=(
            _member("a", device="cuda", dtype="auto", options={"batch_size": 4}),
            _member("b", device="cuda:0", dtype="bfloat16", options={"batch_size": 16, "prefix_cache": 2}),
            _member("c", device="cuda:1"),  # another GPU: its own copy
            _member("d", device="cpu", dtype="auto"),
            _member("e", device="cpu", dtype="float32", options={"prefix_cache": 0}),
        )
    )
    runtime = runtime_module.Runtime(Settings(home=tmp_path, batch_max=1), committee)

    a, b, c, d, e = (runtime.backend(m) for m in committee.members)

    assert a is b and d is e and c is not a and d is not a
    assert len(loads) == 3
    shared = loads[0]
    assert (shared.device, shared.dtype) == ("cuda:0", "bfloat16")
    # The shared model takes the largest call settings its members ask for (default: 32, 8, 256)
    assert shared.options == {"batch_size": 16, "prefix_cache": 8, "prefix_cache_mb": 256}
    assert (loads[2].device, loads[2].dtype, loads[2].options) == (
        "cpu",
        "float32",
        {"batch_size": 32, "prefix_cache": 8, "prefix_cache_mb": 256},
    )


# --- 3. sampling with a generator of its own ----------------------------------------------------


def test_sampling_draws_from_its_own_generator_not_torchs_global_one() -> None:
    import torch

    from workers.backends.hf import _Sample

    scores = torch.randn(4, 50)

    def picks() -> list[list[int]]:
        sample = _Sample(temperature=1.0, seed=7)
        return [sample(None, scores.clone()).argmax(-1).tolist() for _ in range(6)]  # type: ignore[arg-type]

    expected = picks()
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    assert picks() == expected
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG was not touched
    stop = threading.Event()

    def draw_globally() -> None:  # another model's thread sampling through torch's global RNG
        while not stop.is_set():
            torch.rand(100)

    other = threading.Thread(target=draw_globally)
    other.start()
    try:
        while_drawing = [picks() for _ in range(20)]
    finally:
        stop.set()
        other.join()
    assert all(p == expected for p in while_drawing)
    assert len({tuple(p) for p in expected}) > 1  # it does sample


@pytest.mark.real_model
def test_a_sampled_generation_leaves_the_global_rng_alone_and_repeats_under_its_seed() -> None:
    import torch

    from workers.backends.hf import TransformersBackend

    backend = TransformersBackend(BackendSpec(model="smollm2-135m"))
    prompt = Prompt(
        messages=(Message("user", "Tell me a story."),), max_new_tokens=10, temperature=1.2, seed=3
    )
    first = backend.generate([prompt])
    torch.manual_seed(0)
    state = torch.random.get_rng_state()
    stop = threading.Event()
    other = threading.Thread(target=lambda: [torch.rand(1000) for _ in iter(stop.is_set, True)])

    again = backend.generate([prompt])
    assert torch.equal(torch.random.get_rng_state(), state)
    other.start()
    try:
        while_drawing = backend.generate([prompt])
    finally:
        stop.set()
        other.join()

    assert first == again == while_drawing


# --- 4. dtype and devices (issue 22 item 2) ------------------------------------------------------


def _fake_cuda(monkeypatch: pytest.MonkeyPatch, *, bf16: bool) -> None:
    """A process that sees a GPU, which computes in bfloat16 natively or not."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16)


@pytest.mark.parametrize(
    "bf16, options, device, expected",
    [
        (True, {"device_map": "auto"}, "cpu", "bfloat16"),  # device_map spreads it over the GPUs
        (False, {"device_map": "auto"}, "cpu", "float16"),  # an older GPU: no native bfloat16
        (False, {}, "cuda", "float16"),
        (True, {}, "cpu", "float32"),
    ],
)
def test_auto_dtype_follows_the_device_map_and_native_bfloat16(
    bf16: bool,
    options: dict[str, object],
    device: str,
    expected: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import torch

    from workers.backends import hf

    _fake_cuda(monkeypatch, bf16=bf16)
    asked: dict[str, Any] = {}

    def from_pretrained(source: str, **kwargs: Any) -> None:
        asked.update(kwargs)
        raise OSError("no weights in this test")

    monkeypatch.setattr(hf.AutoTokenizer, "from_pretrained", lambda source, **kwargs: object())
    monkeypatch.setattr(hf.AutoModelForCausalLM, "from_pretrained", from_pretrained)

    with caplog.at_level("INFO"), pytest.raises(hf.BackendError):
        hf.TransformersBackend(BackendSpec(model="/some/model", device=device, options=options))

    assert asked["dtype"] == getattr(torch, expected)
    assert ("no native bfloat16" in caplog.text) == (expected == "float16")


def test_a_device_map_member_and_an_older_gpu_get_the_dtype_auto_means_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads: list[BackendSpec] = []
    monkeypatch.setattr(runtime_module, "_backends", {})
    monkeypatch.setattr(runtime_module, "create_backend", lambda name, spec, **kw: loads.append(spec))
    _fake_cuda(monkeypatch, bf16=False)
    committee = Committee(
        members=(
            _member("spread", options={"device_map": "auto"}),
            _member("older", device="cuda", dtype="auto"),
            _member("same", device="cuda:0", dtype="float16"),
        )
    )
    runtime = runtime_module.Runtime(Settings(home=tmp_path, batch_max=1), committee)

    for member in committee.members:
        runtime.backend(member)

    assert [(s.device, s.dtype) for s in loads] == [("cpu", "float16"), ("cuda:0", "float16")]


def _first_parameter_elsewhere(model: Any) -> None:
    """Put a parameter first on the meta device, so ``model.device`` (the first parameter's)
    names a device that neither the embedding nor the head is on, as under a device_map."""
    import torch

    model.register_parameter("a_first_parameter", torch.nn.Parameter(torch.empty(1, device="meta")))
    assert str(model.device) == "meta"


@pytest.mark.real_model
def test_generation_and_scoring_follow_the_devices_of_the_modules_not_model_device() -> None:
    from pipeline.backend import ScoreRequest
    from workers.backends.hf import TransformersBackend

    backend = TransformersBackend(BackendSpec(model="smollm2-135m"))
    prompt = Prompt(messages=(Message("user", "What is the capital of France?"),), max_new_tokens=6)
    requests = [ScoreRequest(prompt, "Paris"), ScoreRequest(prompt, "It is Lyon, I think.")]
    expected_text, expected_scores = backend.generate([prompt]), backend.score(requests)
    backend._prefixes.clear()

    _first_parameter_elsewhere(backend.model)

    assert backend.score(requests) == pytest.approx(expected_scores, abs=1e-5)
    assert backend.generate([prompt]) == expected_text


# --- 5. stop strings on a tail window (issue 22 item 8) ---------------------------------------------

PIECES = ["a", "b", " ", "\n", "ab", "\n\n", "Paris", ".", "é"]  # token id -> its text


class PieceTokenizer:
    """Decodes ids to PIECES and records how many tokens each decoded row had."""

    def __init__(self) -> None:
        self.decoded: list[int] = []

    def batch_decode(self, rows: list[list[int]], skip_special_tokens: bool = True) -> list[str]:
        self.decoded += [len(row) for row in rows]
        return ["".join(PIECES[i] for i in row) for row in rows]


def _stopped_at(text_of: list[str], stop: tuple[str, ...]) -> int | None:
    """Reference: the first step whose whole new text, leading whitespace skipped, holds a stop."""
    for step in range(1, len(text_of) + 1):
        if any(s in "".join(text_of[:step]).lstrip() for s in stop):
            return step
    return None


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.lists(st.integers(0, len(PIECES) - 1), min_size=40, max_size=40), min_size=1, max_size=4
    ),
    stops=st.lists(
        st.sampled_from([("\n",), ("\n\n",), (" b",), ("Paris.",), ("ab a", "\n")]), min_size=4, max_size=4
    ),
)
def test_stops_are_found_on_a_tail_window_at_the_same_step_as_on_the_whole_text(
    rows: list[list[int]], stops: list[tuple[str, ...]]
) -> None:
    import torch

    from workers.backends.hf import _RowStops

    stops = stops[: len(rows)]
    prompt = 3  # padded prompt width
    tokenizer = PieceTokenizer()
    criteria = _RowStops(tokenizer, stops, [len(r) for r in rows], prompt)  # type: ignore[arg-type]
    ids = torch.tensor([[0] * prompt + r for r in rows])
    finished: list[int | None] = [None] * len(rows)

    for step in range(1, 41):
        done = criteria(ids[:, : prompt + step], torch.zeros(len(rows), 5)).tolist()  # type: ignore[arg-type]
        finished = [
            f if f is not None else (step if d else None) for f, d in zip(finished, done, strict=True)
        ]

    for row, stop, at in zip(rows, stops, finished, strict=True):
        expected = _stopped_at([PIECES[i] for i in row], stop)
        assert at == (expected if expected is not None else len(row))
    # Each step decoded a few tokens per running row, never a row's whole reply
    assert max(tokenizer.decoded) <= 4 * max(len(s) for stop in stops for s in stop) + 2 < 40


# --- 6. deployment: CUDA variant, the models volume, vLLM flags, version floors (issue 22 item 9) ---


def _resolved(tmp_path: Path, **env: str) -> dict[str, Any]:
    """compose.yaml resolved by Compose's own binary, every profile on, with ``env`` set."""
    import json

    from tests.test_compose import SECRETS, _compose

    done = _compose(
        "--profile", "vllm", "--profile", "tools", "config", "--format", "json",
        env={**SECRETS, **env}, tmp_path=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    resolved: dict[str, Any] = json.loads(done.stdout)
    return resolved


def test_the_gpu_image_builds_the_cuda_13_variant_or_the_12_8_one_when_asked(tmp_path: Path) -> None:
    default = _resolved(tmp_path)["services"]["worker-gpu0"]["build"]["args"]
    older = _resolved(
        tmp_path,
        PEERBLEND_CUDA_IMAGE="nvidia/cuda:12.8.1-base-ubuntu24.04",
        PEERBLEND_TORCH_INDEX_URL="https://download.pytorch.org/whl/cu128",
    )["services"]["worker-gpu1"]["build"]["args"]

    assert default["CUDA_IMAGE"].startswith("nvidia/cuda:13.0")
    assert older == {
        "CUDA_IMAGE": "nvidia/cuda:12.8.1-base-ubuntu24.04",
        "TORCH_INDEX_URL": "https://download.pytorch.org/whl/cu128",
    }
    dockerfile = (ROOT / "docker" / "Dockerfile.worker-gpu").read_text()
    assert "ARG CUDA_IMAGE" in dockerfile and "ARG TORCH_INDEX_URL" in dockerfile


def test_everything_that_writes_the_models_volume_runs_as_the_workers_uid_after_models_init(
    tmp_path: Path,
) -> None:
    services = _resolved(tmp_path)["services"]
    writers = {
        name
        for name, service in services.items()
        if any(v.get("source") == "models" for v in service.get("volumes", []))
    } - {"models-init"}
    users = {name: services[name].get("user") for name in writers}

    assert {"vllm-gpu0", "vllm-gpu1", "worker-gpu0", "worker-gpu1"} <= writers
    # The vLLM image would run as root; peerblend's images are uid 10001 (their USER)
    assert users["vllm-gpu0"] == users["vllm-gpu1"] == "10001:10001"
    assert all(u in (None, "10001:10001") for u in users.values()), users
    for name in writers:
        assert services[name]["depends_on"]["models-init"]["condition"] == "service_completed_successfully"
    init = " ".join(services["models-init"]["command"])
    assert services["models-init"]["user"] == "0:0" and "chown -R 10001:10001 /models" in init


def test_the_vllm_servers_say_their_dtype_and_turn_prefix_caching_on(tmp_path: Path) -> None:
    services = _resolved(tmp_path, VLLM_DTYPE="float16")["services"]

    for name in ("vllm-gpu0", "vllm-gpu1"):
        command = services[name]["command"]
        assert "--dtype=float16" in command and "--enable-prefix-caching" in command, name
    assert "--dtype=bfloat16" in _resolved(tmp_path)["services"]["vllm-gpu0"]["command"]


def test_the_version_floors_allow_no_torch_or_transformers_that_lacks_what_the_code_uses() -> None:
    import tomllib

    from packaging.requirements import Requirement
    from packaging.version import Version

    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    specs = {r.name: r.specifier for r in map(Requirement, dependencies)}
    code = "\n".join(p.read_text() for p in (ROOT / "workers").rglob("*.py"))

    # torch.OutOfMemoryError arrived in torch 2.5; from_pretrained(dtype=) in transformers 4.56
    assert "torch.OutOfMemoryError" in code and "from_pretrained(source, dtype=" in code
    assert not specs["torch"].contains(Version("2.4.1")) and specs["torch"].contains(Version("2.5.0"))
    assert not specs["transformers"].contains(Version("4.55.4"))
    assert specs["transformers"].contains(Version("4.56.0"))
