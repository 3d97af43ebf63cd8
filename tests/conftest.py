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
