"""A real vLLM CPU server for tests/test_vllm.py and tests/benchmarks/bench_vllm.py.

``vllm_python()`` builds (once per machine) or reuses the virtualenv of
``tests/vllm_env.sh``; ``serve()`` starts ``vllm.entrypoints.openai.api_server`` on
a local model folder and waits for ``/health``. Anything that stops vLLM from
installing or starting here (no network to PyPI, too little memory, a server that
exits) raises ``VllmUnavailable`` with the reason, for a test to skip on.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV_SCRIPT = ROOT / "tests" / "vllm_env.sh"
INSTALL_TIMEOUT_S = 1200.0
START_TIMEOUT_S = 900.0  # torch.compile warm-up takes minutes on 2 cores; --enforce-eager skips it
MIN_FREE_MEMORY_GIB = 4.0  # model + 1 GiB KV cache + the engine's processes
_LOG_TAIL = 1500


class VllmUnavailable(Exception):
    """vLLM cannot be installed or started on this machine (the message says why)."""


def vllm_python() -> Path:
    """The vLLM virtualenv's python, building the virtualenv first when it is not cached."""
    try:
        done = subprocess.run(
            ["bash", str(ENV_SCRIPT)], capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        raise VllmUnavailable(f"{ENV_SCRIPT.name} took over {INSTALL_TIMEOUT_S:.0f} s") from None
    if done.returncode != 0:
        raise VllmUnavailable(
            f"{ENV_SCRIPT.name} failed (exit {done.returncode}): {done.stderr[-_LOG_TAIL:]}"
        )
    return Path(done.stdout.strip().splitlines()[-1]) / "bin" / "python"


def free_memory_gib() -> float:
    with open("/proc/meminfo") as meminfo:
        fields = dict(line.split(":", 1) for line in meminfo)
    return int(fields["MemAvailable"].split()[0]) / 2**20


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class VllmServer:
    url: str  # the OpenAI base URL, ".../v1"
    name: str  # --served-model-name
    process: subprocess.Popen[bytes]
    log: Path
    start_s: float  # seconds from launch to a healthy /health

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-_LOG_TAIL:] if self.log.exists() else ""

    def stop(self) -> None:
        """SIGTERM to the server's process group (the API server, its engine core and worker)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


@contextmanager
def serve(
    model_dir: Path,
    name: str,
    *,
    log: Path,
    dtype: str = "float32",
    max_model_len: int = 2048,
    extra_args: Sequence[str] = (),
    python: Path | None = None,
) -> Iterator[VllmServer]:
    """A vLLM OpenAI server for ``model_dir`` on a free port, stopped on exit."""
    if not (model_dir / "config.json").exists():
        raise VllmUnavailable(f"no model folder at {model_dir}")
    if (free := free_memory_gib()) < MIN_FREE_MEMORY_GIB:
        raise VllmUnavailable(f"{free:.1f} GiB of memory free; a vLLM CPU server needs {MIN_FREE_MEMORY_GIB}")
    python = python or vllm_python()
    port = free_port()
    command = [
        str(python), "-m", "vllm.entrypoints.openai.api_server",  # the `vllm` script fails here
        "--model", str(model_dir), "--served-model-name", name,
        "--host", "127.0.0.1", "--port", str(port),
        "--dtype", dtype, "--max-model-len", str(max_model_len),
        *extra_args,
    ]  # fmt: skip
    env = os.environ | {"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1"}
    started = time.perf_counter()
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    server = VllmServer(f"http://127.0.0.1:{port}/v1", name, process, log, 0.0)
    try:
        while not _healthy(f"http://127.0.0.1:{port}/health"):
            if process.poll() is not None:
                raise VllmUnavailable(f"vLLM exited with {process.returncode}: {server.log_tail()}")
            if time.perf_counter() - started > START_TIMEOUT_S:
                raise VllmUnavailable(f"vLLM not healthy after {START_TIMEOUT_S:.0f} s: {server.log_tail()}")
            time.sleep(2)
        server.start_s = time.perf_counter() - started
        print(f"vLLM serving {name} at {server.url} after {server.start_s:.0f} s", file=sys.stderr)
        yield server
    finally:
        server.stop()
