"""Int8 decoding on CPU: every Linear layer's weights in int8 (a scale per output channel), its
activations quantised to int8 on the fly with a scale per token (W8A8 dynamic), the product in
torch's own int8 matrix multiply, `torch._int_mm`, which oneDNN runs on AVX-512 VNNI or AMX-INT8.

Why this small module and not a library's quantiser (measured in bench/generation.py, README
"Int8 decoding on CPU"):
- torchao's `Int8DynamicActivationInt8WeightConfig` is the same scheme and calls the same
  `torch._int_mm`, but its eager CPU path wraps every product in tensor-subclass dispatch and
  separate choose-qparams / quantise ops: in a profile of the embedded model's decoding the int8
  product itself was 18% of the time, and whole decoding ran no faster than fp32 (torchao's PyPI
  wheel carries no CPU kernels to fuse them).  Int8Linear below does the same arithmetic in four
  tensor ops.
- PyTorch's `torch.ao.quantization.quantize_dynamic` scales a whole batch's activations with one
  number, so one token with an outlier (SmolLM2 has them) coarsens every other row: on the
  embedded model it kept fp32's next token 58% of the time along fp32's own completions, against
  92% with per-token scales (bf16: 98%).  torch.ao's quantised tensors are also deprecated.

A LoRA adapter is merged into the fp32 weights first: quantising the base and adding an fp32
LoRA branch beside it would pay for both.  The result is for generation only (no gradients).
"""

from __future__ import annotations

import torch

from cotlab import CotlabError

INT8 = "int8"


def int8_available() -> bool:
    """Whether this torch has the int8 matrix multiply on CPU (torch >= 2.2 does)."""
    return hasattr(torch, "_int_mm")


class Int8Linear(torch.nn.Module):
    """A Linear layer's forward in int8: y = (q(x) @ q(W).T) * x_scale * w_scale + bias, where q
    rounds to int8 with a symmetric scale per token (rows of x) and per output channel (rows of W)."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        weight = linear.weight.detach().float()
        scale = weight.abs().amax(dim=1).clamp(min=1e-8) / 127
        quantised = torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8)
        # Stored [out, in] and read transposed (a column-major [in, out] view): oneDNN's int8 product
        # was about 20% faster on that layout than on a contiguous [in, out] copy.
        self.register_buffer("weight", quantised)
        self.register_buffer("weight_scale", scale)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float())
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        rows = x.reshape(-1, shape[-1]).float()
        scale = rows.abs().amax(dim=1, keepdim=True).clamp(min=1e-8) / 127
        quantised = torch.round(rows / scale).clamp_(-127, 127).to(torch.int8)
        out = torch._int_mm(quantised, self.weight.t()).float().mul_(scale).mul_(self.weight_scale)
        if self.bias is not None:
            out.add_(self.bias)
        return out.reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weights and activations"


def quantize_int8(model, skip: tuple[str, ...] = ()):
    """The model with its Linear layers replaced by `Int8Linear` (weights per channel, activations
    per token, dynamically), in place and returned, for CPU decoding.  A PEFT model is merged first.
    skip: names of Linear modules to leave in fp32."""
    if not int8_available():
        raise CotlabError(f"int8 decoding needs torch._int_mm (torch >= 2.2; this is {torch.__version__}): use float32")
    if next(model.parameters()).device.type != "cpu":
        raise CotlabError("int8 decoding is for CPUs: on a GPU use bfloat16")
    if hasattr(model, "merge_and_unload"):  # a PeftModel: fold the LoRA deltas into the weights first
        model = model.merge_and_unload()
    if next(model.parameters()).dtype != torch.float32:
        model = model.float()
    linears = [(name, module) for name, module in model.named_modules()
               if isinstance(module, torch.nn.Linear) and name not in skip]
    for name, linear in linears:
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, Int8Linear(linear))
    model.cotlab_quantized = INT8
    return model.eval()


def is_int8(model) -> bool:
    return getattr(model, "cotlab_quantized", None) == INT8
