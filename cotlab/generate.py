"""Batched sampling: many prompts, k samples each, token counts and whether each one stopped.

The HF backend left-pads a batch so every prompt ends where generation starts, and sorts
prompts by length so a batch wastes little padding.  On a GPU with vLLM installed,
`vllm_generate` does the same job with paged attention and continuous batching.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch

from cotlab import CotlabError


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
    """k completions for each prompt (already chat-formatted text), in the prompts' order."""
    from tqdm.auto import tqdm

    sampling = sampling or SamplingConfig()
    stats = stats if stats is not None else GenerationStats()
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    stop_ids = _stop_ids(tokenizer, model)
    per_batch = max(1, sampling.batch_size // sampling.k)
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    results: list[list[Completion]] = [[] for _ in prompts]
    torch.manual_seed(sampling.seed)
    device = next(model.parameters()).device
    bar = tqdm(total=len(prompts), desc="generating", disable=not progress, leave=False)
    start = time.perf_counter()
    for b in range(0, len(order), per_batch):
        batch = order[b : b + per_batch]
        # Chat templates already contain the special tokens: adding BOS again would double it.
        inputs = tokenizer([prompts[i] for i in batch], return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        sample = sampling.temperature > 0
        try:
            output = model.generate(
                **inputs,
                max_new_tokens=sampling.max_new_tokens,
                do_sample=sample,
                temperature=sampling.temperature if sample else None,
                top_p=sampling.top_p if sample else None,
                top_k=None,
                num_return_sequences=sampling.k,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=stop_ids,
            )
        except torch.cuda.OutOfMemoryError:
            raise CotlabError(f"GPU out of memory while generating: lower batch_size (now {sampling.batch_size}; each prompt "
                              f"makes k={sampling.k} sequences) or max_new_tokens (now {sampling.max_new_tokens})") from None
        new_tokens = output[:, inputs["input_ids"].shape[1] :].tolist()
        for row, ids in enumerate(new_tokens):
            length, finished = len(ids), False
            for position, token in enumerate(ids):
                if token in stop_ids:
                    length, finished = position + 1, True
                    break
            text = tokenizer.decode(ids[:length], skip_special_tokens=True)
            results[batch[row // sampling.k]].append(Completion(text=text.strip(), tokens=length, finished=finished))
            stats.tokens += length
            stats.sequences += 1
        bar.update(len(batch))
    bar.close()
    stats.seconds += time.perf_counter() - start
    return results


def vllm_available() -> bool:
    import importlib.util

    return torch.cuda.is_available() and importlib.util.find_spec("vllm") is not None


def vllm_generate(model_path: str, prompts: list[str], sampling: SamplingConfig | None = None,
                  adapter: str | None = None, stats: GenerationStats | None = None) -> list[list[Completion]]:
    """The same contract as `generate`, with vLLM (GPU only): use for large evaluations and sweeps."""
    from vllm import LLM, SamplingParams

    sampling = sampling or SamplingConfig()
    stats = stats if stats is not None else GenerationStats()
    llm = LLM(model=model_path, enable_lora=adapter is not None, seed=sampling.seed)
    params = SamplingParams(n=sampling.k, temperature=sampling.temperature, top_p=sampling.top_p,
                            max_tokens=sampling.max_new_tokens, seed=sampling.seed)
    lora = None
    if adapter:
        from vllm.lora.request import LoRARequest

        lora = LoRARequest("adapter", 1, adapter)
    start = time.perf_counter()
    outputs = llm.generate(prompts, params, lora_request=lora)
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
