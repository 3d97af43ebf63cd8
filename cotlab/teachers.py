"""Teachers: where chains of thought come from.

Every teacher has one method, `complete(conversations, sampling)`, returning k completions per
conversation: a local HF model (`LocalTeacher`), any OpenAI-compatible server (`HTTPTeacher`:
vLLM, llama.cpp, Ollama, `transformers serve`, a hosted API), or the dataset's own gold
rationales (`GoldTeacher`, which has `rationales(records)` instead: the human-annotated
baseline the distillation papers compare against).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cotlab import CotlabError
from cotlab.generate import Completion, GenerationStats, SamplingConfig, choose_backend, generate_with, vllm_engine, vllm_model
from cotlab.models import load_model, load_tokenizer, trained_in_4bit
from cotlab.prompts import render_prompt
from cotlab.distill import gold_rationales


class LocalTeacher:
    """A local model (the embedded model by default; any hub id or folder on a GPU), sampled by
    cotlab's decoder or, with backend "vllm" (or "auto" where vLLM runs), by vLLM; `backend` says
    which (`cotlab.generate.choose_backend`).  vLLM loads the model itself: `model` is then None."""

    def __init__(self, model: str = "embedded", adapter: str | None = None, loaded=None, backend: str = "hf"):
        self.name = model + (f"+{Path(adapter).name}" if adapter else "")
        self.model_name, self.adapter = model, adapter
        self.backend = choose_backend(backend, trained_in_4bit(adapter))
        self.engine = None  # vLLM's, started on the first call and kept: distillation calls once a chunk
        if self.backend == "vllm":
            self.model, self.tokenizer = None, load_tokenizer(model)
        else:
            self.model, self.tokenizer = loaded or load_model(model, adapter=adapter)
        self.stats = GenerationStats()

    def complete(self, conversations: list[list[dict]], sampling: SamplingConfig, progress: bool = False) -> list[list[Completion]]:
        prompts = [render_prompt(self.tokenizer, c) for c in conversations]
        if self.backend == "vllm" and self.engine is None:
            self.engine = vllm_engine(*vllm_model(self.model_name, self.adapter), seed=sampling.seed)
        return generate_with(self.backend, prompts, sampling, loaded=(self.model, self.tokenizer), model=self.model_name,
                             adapter=self.adapter, engine=self.engine, progress=progress, stats=self.stats)


class HTTPTeacher:
    """Any OpenAI-compatible chat-completions endpoint.  One request per sample (many servers
    ignore `n`), at most `concurrency` in flight, each retried on connection errors, timeouts
    and 429/5xx answers with exponential back-off."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout: float = 120.0,
                 max_retries: int = 3, concurrency: int = 4):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.name = f"http:{model}"
        self.model, self.api_key = model, api_key
        self.timeout, self.max_retries, self.concurrency = timeout, max_retries, concurrency
        self.backend = "http"
        self.stats = GenerationStats()

    def _request(self, messages: list[dict], sampling: SamplingConfig, seed: int) -> Completion:
        body = json.dumps({"model": self.model, "messages": messages, "max_tokens": sampling.max_new_tokens,
                           "temperature": sampling.temperature, "top_p": sampling.top_p, "seed": seed}).encode()
        headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {self.api_key}"} if self.api_key else {})}
        for attempt in range(self.max_retries + 1):
            try:
                request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    answer = json.loads(response.read())
                choice = answer["choices"][0]
                tokens = (answer.get("usage") or {}).get("completion_tokens") or len(choice["message"]["content"].split())
                return Completion(choice["message"]["content"].strip(), tokens, choice.get("finish_reason") == "stop")
            except urllib.error.HTTPError as e:
                if e.code not in (408, 429) and e.code < 500 or attempt == self.max_retries:
                    raise CotlabError(f"teacher {self.url} answered HTTP {e.code}: {e.read()[:200]!r}") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                if attempt == self.max_retries:
                    raise CotlabError(f"teacher {self.url} unreachable after {attempt + 1} tries: {e}") from None
            time.sleep(min(2**attempt, 30))
        raise AssertionError("unreachable")

    def complete(self, conversations: list[list[dict]], sampling: SamplingConfig, progress: bool = False) -> list[list[Completion]]:
        jobs = [(i, j) for i in range(len(conversations)) for j in range(sampling.k)]
        start = time.perf_counter()
        with ThreadPoolExecutor(self.concurrency) as pool:
            done = list(pool.map(lambda job: self._request(conversations[job[0]], sampling, sampling.seed + job[1]), jobs))
        self.stats.seconds += time.perf_counter() - start
        results: list[list[Completion]] = [[] for _ in conversations]
        for (i, _), completion in zip(jobs, done):
            results[i].append(completion)
            self.stats.tokens += completion.tokens
            self.stats.sequences += 1
        return results


class GoldTeacher:
    """The dataset's own rationales (GSM8K solutions, reasoning-gym answer_cot or scratchpads):
    the human-annotated baseline the distillation papers compare against."""

    name = "gold"

    def rationales(self, records) -> list[dict]:
        """The records' chains that pass the whole-chain check (`cotlab.distill.gold_rationales`
        also counts the others)."""
        return gold_rationales(records)[0]


def teacher_from(spec: str, url: str | None = None, api_key: str | None = None, concurrency: int = 4, backend: str = "hf"):
    """A teacher from the CLI's words; `backend` is for a local model (a server or gold set has its own)."""
    if url:
        return HTTPTeacher(url, spec, api_key=api_key, concurrency=concurrency)
    if spec == "gold":
        return GoldTeacher()
    return LocalTeacher(spec, backend=backend)
