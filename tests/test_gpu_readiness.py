"""What a GPU fleet would hit first, caught on CPU (issue 22): no test here needs a GPU.

A prefork worker with a member on CUDA is refused before any model loads; members that
spell one model differently share one resident copy; sampling never uses torch's
process-wide generator.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

from pipeline.backend import Message, Prompt  # noqa: E402
from pipeline.committee import Committee, Member  # noqa: E402
from pipeline.settings import Settings  # noqa: E402
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
    # The shared model takes the largest call settings its members ask for (default: 32, 8)
    assert shared.options == {"batch_size": 16, "prefix_cache": 8}
    assert (loads[2].device, loads[2].dtype, loads[2].options) == (
        "cpu",
        "float32",
        {"batch_size": 32, "prefix_cache": 8},
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
