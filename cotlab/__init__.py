"""cotlab: a Jupyter-first teaching and research suite for chain-of-thought fine-tuning.

The package is flat on purpose: one module per idea (models, data, prompts, verify, generate,
evaluate, distill, train, rewards, analysis, plots, runs, cli).  Notebooks call into it.
"""

import logging

__version__ = "0.1.0"


class CotlabError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits non-zero."""


# bitsandbytes on a CPU with AVX512-BF16 tries to fetch an optional fused 4-bit kernel from the hub
# at import and warns when it cannot (always, offline); its own fallback kernel then runs.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
# torchao (--dev installs it for a bench comparison row) is imported by transformers whenever it is
# installed, and on a CPU torch it warns that its CUDA kernels do not load, and torch that it
# registers its enums the deprecated way: noise on every command's stderr, none of it about cotlab.
logging.getLogger("torchao").setLevel(logging.ERROR)
logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
