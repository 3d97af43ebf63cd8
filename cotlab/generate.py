"""Batched sampling: many prompts, k samples each, token counts and whether each one stopped.

The HF backend left-pads a batch so every prompt ends where generation starts, and sorts
prompts by length so a batch wastes little padding.  On a GPU with vLLM installed,
`vllm_generate` does the same job with paged attention and continuous batching.
"""

from __future__ import annotations

import functools
import time
from dataclasses import asdict, dataclass

import torch

from cotlab import CotlabError
from cotlab.progress import progress_bar


@dataclass
class SamplingConfig:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 means greedy decoding
    top_p: float = 1.0
    k: int = 1  # samples per prompt
    batch_size: int = 16  # sequences per forward pass (prompts x k)
    seed: int = 0

    def __post_init__(self):
        if self.k < 1 or self.batch_size < 1 or self.max_new_tokens < 1:
            raise CotlabError("k, batch_size and max_new_tokens must be positive")
        if self.temperature < 0:
            raise CotlabError(f"temperature must be >= 0, got {self.temperature}")
        if self.k > 1 and self.temperature == 0:
            raise CotlabError("k > 1 samples need temperature > 0 (greedy decoding gives k identical samples)")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Completion:
    text: str
    tokens: int  # generated tokens, the end-of-sequence token included when there was one
    finished: bool  # False when max_new_tokens cut the completion off (it was clipped)


@dataclass
class GenerationStats:
    sequences: int = 0
    tokens: int = 0
    seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def _stop_ids(tokenizer, model) -> list[int]:
    ids = {tokenizer.eos_token_id}
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(config_eos if isinstance(config_eos, list) else [config_eos])
    return [i for i in ids if i is not None]


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], sampling: SamplingConfig | None = None, progress: bool = True,
             stats: GenerationStats | None = None) -> list[list[Completion]]:
    """k completions for each prompt (already chat-formatted text), in the prompts' order.

    `model.generate` on a left-padded batch wastes most of a CPU's time: every prompt re-reads
    the same system prompt, and a finished sequence keeps its slot until the longest one ends.
    Here the prompts' common token prefix is encoded once and shared, a finished sequence
    leaves the batch, and waiting prompts refill the free slots (continuous batching); the KV
    cache keeps spare room, so a decode step writes its column in place instead of copying the
    whole cache.  bench/generation.py measures the whole against plain batched `model.generate`.
    """
    sampling = sampling or SamplingConfig()
    stats = stats if stats is not None else GenerationStats()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # Chat templates already contain the special tokens: adding BOS again would double it.
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    results: list[list[Completion]] = [[] for _ in prompts]
    if not prompts:
        return results
    if any(not ids for ids in encoded):
        raise CotlabError("cannot generate from an empty prompt")
    bar = progress_bar(len(prompts) * sampling.k, "generating", disable=not progress, unit="sequences")
    decoder = _SlotDecoder(model, encoded, sampling, _stop_ids(tokenizer, model))
    start = time.perf_counter()
    try:
        for prompt, ids, finished in decoder.run():
            text = tokenizer.decode(ids, skip_special_tokens=True)
            results[prompt].append(Completion(text=text.strip(), tokens=len(ids), finished=finished))
            stats.tokens += len(ids)
            stats.sequences += 1
            bar.update(1)
    except torch.cuda.OutOfMemoryError:
        raise CotlabError(f"GPU out of memory while generating: lower batch_size (now {sampling.batch_size}; each prompt "
                          f"makes k={sampling.k} sequences) or max_new_tokens (now {sampling.max_new_tokens})") from None
    finally:
        bar.close()
    stats.seconds += time.perf_counter() - start
    # Sequences finish in any order; a prompt's samples keep the order they were drawn in.
    for completions, order in zip(results, decoder.sample_order):
        completions[:] = [completions[i] for i in sorted(range(len(order)), key=order.__getitem__)]
    return results


def common_prefix_length(sequences: list[list[int]]) -> int:
    """Tokens every sequence starts with, leaving each at least one token of its own (the step
    that gives its first logits)."""
    shortest = min(len(s) for s in sequences)
    length = 0
    while length < shortest - 1 and all(s[length] == sequences[0][length] for s in sequences):
        length += 1
    return length


class _SlotDecoder:
    """Up to `batch_size` sequences decode together; a finished one is dropped from the KV cache
    and, once a quarter of the slots are free, waiting prompts are prefilled into them.

    The cache holds, per row: the shared prefix, a gap of masked zeros, then the row's own
    tokens (its prompt suffix and what it generated).  Rows of different lengths line up by
    widening the gap, and explicit position ids keep every token at its true position, so a
    row's greedy tokens do not depend on what else is in the batch (up to float rounding).
    """

    def __init__(self, model, encoded: list[list[int]], sampling: SamplingConfig, stop_ids: list[int]):
        self.model, self.sampling, self.stop_ids = model, sampling, set(stop_ids)
        self.device = next(model.parameters()).device
        self.prefix_len = common_prefix_length(encoded)
        self.prefix_ids = encoded[0][: self.prefix_len]
        self.suffixes = [ids[self.prefix_len :] for ids in encoded]
        # Longest prompts first: a refill then takes prompts of similar length, so its prefill pads little.
        self.queue = [(i, s) for i in sorted(range(len(encoded)), key=lambda i: -len(encoded[i])) for s in range(sampling.k)]
        self.sample_order: list[list[int]] = [[] for _ in encoded]
        self.generator = torch.Generator(device=self.device).manual_seed(sampling.seed)
        self.cache = None  # DynamicCache of the live rows
        self.mask = None  # [rows, cache length]: 1 where a row's cache holds a real token
        self.positions = None  # [rows]: the position of each row's next token
        self.rows: list[tuple[int, int, list[int]]] = []  # (prompt, sample, generated ids)

    def run(self):
        """Yield (prompt index, generated token ids, finished) as each sequence ends."""
        self.prefix_cache = self._new_cache()
        if self.prefix_len:
            prefix = torch.tensor([self.prefix_ids], device=self.device)
            self.model(input_ids=prefix, past_key_values=self.prefix_cache, use_cache=True, logits_to_keep=1)
        capacity = self.sampling.batch_size
        while self.queue or self.rows:
            free = capacity - len(self.rows)
            if self.queue and (not self.rows or free >= max(1, capacity // 4)):
                admitted, self.queue = self.queue[:free], self.queue[free:]
                yield from self._admit(admitted)
            if self.rows:
                yield from self._decode_step()

    def _new_cache(self):
        """A DynamicCache whose full-attention layers keep room to grow (see `_roomy_layer_class`)."""
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        roomy = _roomy_layer_class()
        cache = DynamicCache(config=self.model.config)
        cache.layers = [roomy(self.sampling.max_new_tokens) if type(layer) is DynamicLayer else layer for layer in cache.layers]
        return cache

    def _admit(self, admitted: list[tuple[int, int]]):
        """Prefill new rows' prompt suffixes on top of the shared prefix and add them to the batch."""
        suffixes = [self.suffixes[i] for i, _ in admitted]
        width = max(len(s) for s in suffixes)
        live_len = self.mask.shape[1] if self.rows else 0
        gap = max(0, live_len - self.prefix_len - width)  # widen the new rows' gap to the live rows' length ...
        if self.rows and self.prefix_len + width > live_len:  # ... or the live rows' gap to theirs
            self._widen_gap(self.cache, self.prefix_len + width - live_len)
            self.mask = _insert_columns(self.mask, self.prefix_len, self.prefix_len + width - live_len)
        n = len(admitted)
        cache = self._new_cache()
        templates = self.cache.layers if self.rows else [None] * len(cache.layers)
        for layer, prefix_layer, live_layer in zip(cache.layers, self.prefix_cache.layers, templates):
            parts = []
            if self.prefix_len:
                parts.append((prefix_layer.keys, prefix_layer.values))
            if gap:  # masked zeros, shaped like the live rows' cache
                shape = (1, live_layer.keys.shape[1], gap, live_layer.keys.shape[3])
                parts.append((live_layer.keys.new_zeros(shape), live_layer.values.new_zeros(shape)))
            if parts:
                keys = torch.cat([k for k, _ in parts], dim=-2).expand(n, -1, -1, -1)
                values = torch.cat([v for _, v in parts], dim=-2).expand(n, -1, -1, -1)
                layer.lazy_initialization(keys, values)
                layer.keys, layer.values = keys.contiguous(), values.contiguous()
        ids = torch.full((n, width), self.suffixes[admitted[0][0]][0], dtype=torch.long)
        mask = torch.zeros((n, self.prefix_len + gap + width), dtype=torch.long)
        mask[:, : self.prefix_len] = 1
        positions = torch.full((n, width), self.prefix_len, dtype=torch.long)
        for row, suffix in enumerate(suffixes):  # left-pad each suffix inside the gap
            ids[row, width - len(suffix) :] = torch.tensor(suffix)
            mask[row, mask.shape[1] - len(suffix) :] = 1
            positions[row, width - len(suffix) :] = torch.arange(self.prefix_len, self.prefix_len + len(suffix))
        mask, positions = mask.to(self.device), positions.to(self.device)
        logits = self.model(input_ids=ids.to(self.device), attention_mask=mask, position_ids=positions,
                            past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
        new_rows = [(prompt, sample, []) for prompt, sample in admitted]
        if self.rows:
            for layer, new_layer in zip(self.cache.layers, cache.layers):
                layer.keys = torch.cat([layer.keys, new_layer.keys])
                layer.values = torch.cat([layer.values, new_layer.values])
            self.mask = torch.cat([self.mask, mask])
            self.positions = torch.cat([self.positions, positions[:, -1] + 1])
        else:
            self.cache, self.mask, self.positions = cache, mask, positions[:, -1] + 1
        first = len(self.rows)
        self.rows += new_rows
        yield from self._take(logits, first)  # the new rows' first tokens; the live rows wait for the next step

    def _decode_step(self):
        last = torch.tensor([[ids[-1]] for _, _, ids in self.rows], device=self.device)
        self.mask = torch.cat([self.mask, self.mask.new_ones((len(self.rows), 1))], dim=1)
        logits = self.model(input_ids=last, attention_mask=self.mask, position_ids=self.positions[:, None],
                            past_key_values=self.cache, use_cache=True, logits_to_keep=1).logits[:, -1]
        self.positions = self.positions + 1
        yield from self._take(logits)

    def _take(self, logits: torch.Tensor, first: int = 0):
        """Append the next token of rows[first:] (one row of logits each); drop (and yield) the rows
        that stopped or hit max_new_tokens."""
        tokens = self._next_tokens(logits).tolist()
        if len(tokens) != len(self.rows) - first:
            raise AssertionError(f"{len(tokens)} next tokens for {len(self.rows) - first} rows")
        keep = list(range(first))
        for row, ((prompt, sample, ids), token) in enumerate(zip(self.rows[first:], tokens), start=first):
            ids.append(token)
            stopped = token in self.stop_ids
            if stopped or len(ids) >= self.sampling.max_new_tokens:
                self.sample_order[prompt].append(sample)
                yield prompt, ids, stopped
            else:
                keep.append(row)
        if len(keep) < len(self.rows):
            index = torch.tensor(keep, dtype=torch.long, device=self.device)
            self.cache.batch_select_indices(index)
            self.mask, self.positions = self.mask[index], self.positions[index]
            self.rows = [self.rows[row] for row in keep]

    def _next_tokens(self, logits: torch.Tensor) -> torch.Tensor:
        if self.sampling.temperature == 0:
            return logits.argmax(dim=-1)
        logits = logits.float() / self.sampling.temperature
        if self.sampling.top_p < 1:
            # Nucleus sampling: keep the smallest set of tokens whose probability reaches top_p.
            sorted_logits, order = logits.sort(dim=-1, descending=True)
            cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
            drop = cumulative - sorted_logits.softmax(dim=-1) >= self.sampling.top_p
            logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
        return torch.multinomial(logits.softmax(dim=-1), 1, generator=self.generator).squeeze(-1)

    def _widen_gap(self, cache, columns: int) -> None:
        if columns <= 0:
            return
        for layer in cache.layers:
            if layer.is_initialized and layer.get_seq_length():
                layer.keys = _insert_columns(layer.keys, self.prefix_len, columns, dim=-2)
                layer.values = _insert_columns(layer.values, self.prefix_len, columns, dim=-2)


@functools.cache
def _roomy_layer_class():
    from transformers.cache_utils import DynamicLayer

    class RoomyLayer(DynamicLayer):
        """A DynamicLayer whose keys and values are views of a buffer with `room` free columns:
        a decode step writes its column in place, where DynamicLayer concatenates (copies) the
        whole cache: 11% of greedy decoding's time in a profile on the 2-core CPU, and
        bench/generation.py went from 255 to 278 tokens/s.  Assigning `keys`/`values` (admitting
        rows, widening the gap, dropping ended rows) copies into a new buffer; keys and values
        are always assigned together, so they share `length`."""

        def __init__(self, room: int):
            super().__init__()
            self.room, self.length, self._keys, self._values = max(1, room), 0, None, None

        def _roomy(self, tensor: torch.Tensor, needed: int = 0) -> torch.Tensor:
            buffer = tensor.new_empty((*tensor.shape[:-2], tensor.shape[-2] + max(self.room, needed), tensor.shape[-1]))
            buffer[..., : tensor.shape[-2], :] = tensor
            self.length = tensor.shape[-2]
            return buffer

        keys = property(lambda self: None if self._keys is None else self._keys[..., : self.length, :],
                        lambda self, tensor: setattr(self, "_keys", None if tensor is None or tensor.dim() < 2 else self._roomy(tensor)))
        values = property(lambda self: None if self._values is None else self._values[..., : self.length, :],
                          lambda self, tensor: setattr(self, "_values", None if tensor is None or tensor.dim() < 2 else self._roomy(tensor)))

        def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
            self.dtype, self.device = key_states.dtype, key_states.device
            self.is_initialized = True

        def get_seq_length(self) -> int:
            return self.length if self._keys is not None else 0

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            if self._keys is None:
                self.keys, self.values = key_states, value_states
                return self.keys, self.values
            end = self.length + key_states.shape[-2]
            if end > self._keys.shape[-2]:  # out of room: one copy into a bigger buffer
                needed = key_states.shape[-2]
                self._keys, self._values = self._roomy(self.keys, needed), self._roomy(self.values, needed)
            self._keys[..., self.length : end, :] = key_states
            self._values[..., self.length : end, :] = value_states
            self.length = end
            return self.keys, self.values

    return RoomyLayer


def _insert_columns(tensor: torch.Tensor, at: int, columns: int, dim: int = 1) -> torch.Tensor:
    """Zeros inserted at index `at` along `dim` (masked-out cache slots)."""
    shape = list(tensor.shape)
    shape[dim] = columns
    return torch.cat([tensor.narrow(dim, 0, at), tensor.new_zeros(shape), tensor.narrow(dim, at, tensor.shape[dim] - at)], dim=dim)


# Backends --------------------------------------------------------------------------------------

BACKENDS = ("auto", "hf", "vllm")
VLLM_INSTALL = "COTLAB_GPU_EXTRAS=full bash scripts/setup.sh"


def vllm_missing() -> str | None:
    """What the vLLM backend lacks here ("vLLM", "a CUDA GPU", both), or None when it can run."""
    import importlib.util

    missing = [] if importlib.util.find_spec("vllm") is not None else ["vLLM"]
    if not torch.cuda.is_available():
        missing.append("a CUDA GPU")
    return " and ".join(missing) or None


def vllm_available() -> bool:
    return vllm_missing() is None


def choose_backend(backend: str = "auto", load_in_4bit: bool = False) -> str:
    """The one place a generation backend is chosen: "hf" (cotlab's batched decoder, `generate`) or
    "vllm" (`vllm_generate`).  "auto" takes vLLM when it is installed and a GPU is present, else hf.
    A model meant to run on a 4-bit base (a QLoRA adapter) stays on hf: vLLM would score it on
    full-precision weights it never learned to correct."""
    if backend not in BACKENDS:
        raise CotlabError(f"unknown generation backend {backend!r}: use {', '.join(BACKENDS)}")
    if backend == "hf":
        return "hf"
    missing = vllm_missing()
    if backend == "auto":
        return "vllm" if missing is None and not load_in_4bit else "hf"
    if missing:
        raise CotlabError(f"the vllm backend needs {missing}, missing here: on a GPU machine run {VLLM_INSTALL} (or use backend hf)")
    if load_in_4bit:
        raise CotlabError("the vllm backend cannot run a 4-bit (QLoRA) model as it was trained: use backend hf")
    return "vllm"


def vllm_model(model: str, adapter: str | None = None) -> tuple[str, str | None]:
    """(model path or hub id, LoRA adapter or None) for vLLM, which reads checkpoints, not loaded
    models: the embedded model's converted folder (`cotlab.models.resolve_model`), and a lone
    adapter as a LoRA.  An adapter trained on top of others (DPO on SFT) only means something with
    its chain underneath, so the whole chain is merged into a cached folder (`cotlab.export`)."""
    from cotlab.models import base_adapters, resolve_model

    if adapter and base_adapters(adapter):
        from cotlab.export import merged_chain

        return str(merged_chain(adapter)), None
    return resolve_model(model), adapter


def vllm_engine(model_path: str, adapter: str | None = None, seed: int = 0):
    """A vLLM engine for the model (and LoRA adapter) by path.  vLLM reserves a share of the whole
    GPU and refuses to start when that is not free: a notebook kernel may still hold a model it
    trained, so it asks for 90% of what is free, not of the GPU."""
    from vllm import LLM

    options = {"enable_lora": True, "max_lora_rank": vllm_lora_rank(adapter)} if adapter else {}
    free, total = torch.cuda.mem_get_info()
    return LLM(model=model_path, seed=seed, dtype=vllm_dtype(), gpu_memory_utilization=round(0.9 * free / total, 3), **options)


def vllm_generate(model_path: str, prompts: list[str], sampling: SamplingConfig | None = None,
                  adapter: str | None = None, stats: GenerationStats | None = None, progress: bool = True,
                  engine=None) -> list[list[Completion]]:
    """The same contract as `generate`, with vLLM (GPU only): use for large evaluations and sweeps.
    `engine`: one from `vllm_engine` to reuse (a teacher sampling chunk after chunk: starting one
    takes a minute); without it one is started here and shut down after."""
    import gc

    from vllm import SamplingParams

    sampling = sampling or SamplingConfig()
    stats = stats if stats is not None else GenerationStats()
    lora = None
    if adapter:
        from vllm.lora.request import LoRARequest

        lora = LoRARequest("adapter", 1, adapter)
    llm = engine or vllm_engine(model_path, adapter, sampling.seed)
    params = SamplingParams(n=sampling.k, temperature=sampling.temperature, top_p=sampling.top_p,
                            max_tokens=sampling.max_new_tokens, seed=sampling.seed)
    start = time.perf_counter()
    try:
        outputs = llm.generate(prompts, params, lora_request=lora, use_tqdm=progress)
    finally:
        if engine is None:  # the engine's memory goes back before the kernel trains or loads the next model
            del llm
            gc.collect()
            torch.cuda.empty_cache()
    stats.seconds += time.perf_counter() - start
    results = []
    for output in outputs:
        completions = []
        for choice in output.outputs:
            tokens = len(choice.token_ids)
            completions.append(Completion(text=choice.text.strip(), tokens=tokens, finished=choice.finish_reason == "stop"))
            stats.tokens += tokens
            stats.sequences += 1
        results.append(completions)
    return results


def vllm_dtype() -> str:
    """The dtype vLLM computes in: the one cotlab's policy picks for the GPU (`default_dtype`)."""
    from cotlab.models import default_dtype

    return str(default_dtype("cuda")).removeprefix("torch.")


def vllm_lora_rank(adapter: str) -> int:
    """The smallest LoRA rank vLLM accepts that holds the adapter's (vLLM's default, 16, refuses a
    rank-32 adapter)."""
    import json
    from pathlib import Path

    rank = json.loads((Path(adapter) / "adapter_config.json").read_text()).get("r", 16)
    return next((r for r in (8, 16, 32, 64, 128, 256, 320, 512) if r >= rank), rank)


def generate_with(backend: str, prompts: list[str], sampling: SamplingConfig, *, loaded=None, model: str | None = None,
                  adapter: str | None = None, engine=None, progress: bool = True,
                  stats: GenerationStats | None = None) -> list[list[Completion]]:
    """k completions per prompt with a backend `choose_backend` returned: hf on the `loaded`
    (model, tokenizer), vllm on `model` + `adapter` by path (in `engine` when one is given)."""
    if backend == "vllm":
        path, lora = vllm_model(model, adapter)
        return vllm_generate(path, prompts, sampling, lora, stats, progress=progress, engine=engine)
    lm, tokenizer = loaded
    return generate(lm, tokenizer, prompts, sampling, progress=progress, stats=stats)
