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
