"""TRL's fused LM head, fitted to the CPU.

TRL's trainers score tokens through a fused LM head (`trl.trainer.utils.add_fused_lm_head`): the
log-probability of each labelled token without the `[tokens, vocabulary]` logits, in tiles.  It is
built for GPUs.  On a CPU it projects every position, prompt and padding included (so that a graph
compiler, XLA or Neuron, sees fixed shapes), and folds each tile with a dozen elementwise passes
in place of the Triton kernel.  cotlab runs eagerly on CPU, where neither pays: on the embedded
model the projection of unlabelled positions was 27% of an SFT step, and the folding 9% of what
was left (8 steps took 35.3 s, then 25.8 s, then 23.5 s; for one batch's 350 labelled tokens one
`log_softmax` does in 336 ms what the tiles did in 546, backward included).
`fit_trl_lm_head_to_cpu` changes both, on CPU only, for the trainers built after it; the
log-probabilities of the labelled positions are the same (tests/test_train.py checks them against
the model's full logits).
"""

from __future__ import annotations

import torch

# Above this many logits (tokens x vocabulary) the plain path would hold more than ~0.5 GB per
# [tokens, vocabulary] tensor: leave such batches to TRL's tiles, which never materialise them.
PLAIN_LOGITS_LIMIT = 2**27


def fit_trl_lm_head_to_cpu() -> None:
    """Make TRL's fused LM head project only labelled positions on CPU, and score them with plain
    ops there.  Process-wide (TRL looks both up at call time) and idempotent; GPUs keep TRL's own path."""
    import trl.trainer.distillation_trainer
    import trl.trainer.utils

    # Which positions to project: TRL asks `_use_triton(device)` (compact on Triton devices only).
    for module in (trl.trainer.utils, trl.trainer.distillation_trainer):
        if not getattr(module._use_triton, "cotlab", False):
            module._use_triton = _compact_on_cpu(module._use_triton)
    if not isinstance(trl.trainer.utils._ChunkedLogProbFunction, CpuLogProbs):
        trl.trainer.utils._ChunkedLogProbFunction = CpuLogProbs(trl.trainer.utils._ChunkedLogProbFunction)


def _compact_on_cpu(triton_device):
    def compact(device: torch.device) -> bool:
        return device.type == "cpu" or triton_device(device)

    compact.cotlab = True
    return compact


class CpuLogProbs:
    """TRL's `ChunkedLogProbFunction.apply` contract (log-probabilities and the optional entropy,
    log-sum of squared probabilities, mean logit and top-1 flag of each token), computed with one
    `log_softmax` over the whole logits on CPU when they are small enough; TRL's own otherwise."""

    def __init__(self, chunked):
        self.chunked = chunked

    def apply(self, hidden, weight, bias, targets, temperature, chunk_size, final_logit_softcapping=None,
              logit_scale=1.0, outputs=("log_probs",)):
        if hidden.device.type != "cpu" or hidden.shape[0] * weight.shape[0] > PLAIN_LOGITS_LIMIT:
            return self.chunked.apply(hidden, weight, bias, targets, temperature, chunk_size, final_logit_softcapping,
                                      logit_scale, outputs)
        logits = torch.nn.functional.linear(hidden, weight, bias).float() * logit_scale
        if final_logit_softcapping is not None:
            logits = final_logit_softcapping * torch.tanh(logits / final_logit_softcapping)
        logits = logits / temperature
        log_probs = logits.log_softmax(-1)
        chosen = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        # TRL's entropy carries a gradient (a loss may use it); the other outputs do not.
        entropy = -(log_probs.exp() * log_probs).sum(-1) if "entropy" in outputs else None
        with torch.no_grad():
            log_sum_sq_probs = (2 * log_probs).logsumexp(-1) if "log_sum_sq_probs" in outputs else None
            mean_logits = logits.mean(-1) if "mean_logits" in outputs else None
            is_top1 = log_probs.argmax(-1) == targets if "is_top1" in outputs else None
        return chosen, entropy, log_sum_sq_probs, mean_logits, is_top1
