import os
import subprocess
import sys
from pathlib import Path

import pytest

# Tests never reach a hub: everything runs on the embedded checkpoint and the tiny random model.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures"
CHAIN_SUM = "rg:chain_sum?min_terms=3&max_terms=4&min_digits=1&max_digits=2"


@pytest.fixture(scope="session")
def tiny():
    """(model, tokenizer) of the tiny random Llama with the real SmolLM2 tokenizer."""
    from cotlab.models import load_model

    return load_model("tiny-random")


@pytest.fixture(scope="session")
def tokenizer(tiny):
    return tiny[1]


def run_cli(*args, cwd=None, timeout=600):
    """Run the cotlab CLI in a subprocess, as a user would."""
    return subprocess.run([sys.executable, "-m", "cotlab.cli", *args], cwd=cwd or REPO, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def fake_vllm(monkeypatch):
    """A stand-in `vllm` package and a GPU that says it is there: what cotlab hands vLLM is recorded
    (`calls`: each LLM's arguments, its last prompts, sampling parameters and LoRA request, and how
    many times it generated) and every prompt
    gets `k` answers "<answer>7</answer>" of three tokens that stopped on their own."""
    import importlib.machinery
    import types
    from types import SimpleNamespace

    import torch

    calls = []

    class LLM:
        def __init__(self, model, **options):
            calls.append({"model": model, **options})

        def generate(self, prompts, params, lora_request=None, use_tqdm=True):
            calls[-1].update(prompts=list(prompts), params=params, lora=lora_request, generated=calls[-1].get("generated", 0) + 1)
            choice = SimpleNamespace(text=" <answer>7</answer> ", token_ids=[1, 2, 3], finish_reason="stop")
            return [SimpleNamespace(outputs=[choice] * params.n) for _ in prompts]

    def module(name, **attributes):
        made = types.ModuleType(name)
        made.__spec__ = importlib.machinery.ModuleSpec(name, None)
        made.__dict__.update(attributes)
        monkeypatch.setitem(sys.modules, name, made)
        return made

    module("vllm", LLM=LLM, SamplingParams=lambda **kwargs: SimpleNamespace(**kwargs))
    module("vllm.lora")
    module("vllm.lora.request", LoRARequest=lambda name, number, path: SimpleNamespace(name=name, id=number, path=path))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *args: (40 * 2**30, 80 * 2**30))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    return calls
