"""Int8 decoding on CPU: every Linear layer's weights in int8 (a scale per output channel), its
activations quantised to int8 on the fly with a scale per token (W8A8 dynamic, as torchao's
`Int8DynamicActivationInt8WeightConfig` does it; the product runs in `torch._int_mm`, which oneDNN
maps onto VNNI or AMX-INT8).

Why torchao and not PyTorch's own `quantize_dynamic`: torch.ao's dynamic Linear scales a whole
batch's activations with one number, so one token with an outlier (SmolLM2 has them) coarsens
every other row; on the embedded model it kept the fp32 model's next token only 58% of the time
along fp32's own completions, against 92% for torchao's per-token scales (bf16: 98%).  torch.ao's
quantised tensors are also deprecated in favour of torchao.

A LoRA adapter is merged into the fp32 weights first: quantising the base and adding an fp32
LoRA branch beside it would pay for both.  The result is for generation only (no gradients).
"""

from __future__ import annotations

import importlib.util

import torch

from cotlab import CotlabError

INT8 = "int8"


def int8_available() -> bool:
    return importlib.util.find_spec("torchao") is not None


def quantize_int8(model, skip: tuple[str, ...] = ()):
    """The model with its Linear layers quantised to int8 (weights per channel, activations per
    token, dynamically), in place and returned, for CPU decoding.  A PEFT model is merged first.
    skip: names of Linear modules to leave in fp32."""
    if not int8_available():
        raise CotlabError("int8 decoding needs torchao: pip install 'cotlab[int8]' (or torchao), or use float32")
    if next(model.parameters()).device.type != "cpu":
        raise CotlabError("int8 decoding is for CPUs: on a GPU use bfloat16")
    if hasattr(model, "merge_and_unload"):  # a PeftModel: fold the LoRA deltas into the weights first
        model = model.merge_and_unload()
    if next(model.parameters()).dtype != torch.float32:
        model = model.float()
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    quantize_(model, Int8DynamicActivationInt8WeightConfig(),
              filter_fn=lambda module, name: isinstance(module, torch.nn.Linear) and name not in skip)
    model.cotlab_quantized = INT8
    return model.eval()


def is_int8(model) -> bool:
    return getattr(model, "cotlab_quantized", None) == INT8
