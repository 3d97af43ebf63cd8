import json

import pytest

from cotlab import CotlabError
from cotlab.models import count_parameters, embedded_checkpoint, load_model, resolve_dtype, resolve_model


def test_embedded_checkpoint_is_a_plain_trainable_checkpoint():
    path = embedded_checkpoint()
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "llama"
    assert "quantization_config" not in config  # de-quantised: Trainer must accept it
    assert (path / "chat_template.jinja").is_file() or "chat_template" in (path / "tokenizer_config.json").read_text()


def test_tiny_random_model_shares_the_real_tokenizer(tiny):
    model, tokenizer = tiny
    assert count_parameters(model)["total"] < 5_000_000
    assert model.config.vocab_size == len(tokenizer)
    assert tokenizer.eos_token == "<|im_end|>"
    assert model.dtype == resolve_dtype("auto")  # the policy: fp32 on a CPU without AMX, bf16 with it


@pytest.mark.parametrize("name", ["./no/such/folder", "/tmp/definitely-missing-model", "nonsense"])
def test_unknown_model_names_fail_clearly(name):
    with pytest.raises(CotlabError, match="unknown model"):
        resolve_model(name)


def test_hub_ids_pass_through():
    assert resolve_model("Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"


def test_unreachable_hub_model_fails_clearly():
    with pytest.raises(CotlabError, match="cannot load"):
        load_model("cotlab-test/does-not-exist")


def test_missing_adapter_folder(tmp_path):
    with pytest.raises(CotlabError, match="no adapter_config.json"):
        load_model("tiny-random", adapter=str(tmp_path))


def test_dtype_policy(monkeypatch):
    import torch

    from cotlab import models
    from cotlab.models import resolve_dtype, trainer_precision

    monkeypatch.setattr(models, "cpu_flags", lambda: {"avx2", "avx512f"})  # no bf16 instructions
    assert resolve_dtype("auto", "cpu") == resolve_dtype(None, "cpu") == torch.float32
    assert resolve_dtype("float32", "cpu") == resolve_dtype(torch.float32, "cpu") == torch.float32
    with pytest.raises(CotlabError, match="bfloat16 needs a CPU"):
        resolve_dtype("bfloat16", "cpu")
    assert trainer_precision("auto", "cpu") == {"bf16": False, "fp16": False, "use_cpu": True}
    monkeypatch.setattr(models, "cpu_flags", lambda: {"avx512f", "avx512_bf16"})  # bf16 exists but is slower than fp32
    assert resolve_dtype("auto", "cpu") == torch.float32 and resolve_dtype("bf16", "cpu") == torch.bfloat16
    assert trainer_precision("bfloat16", "cpu") == {"bf16": True, "fp16": False, "use_cpu": True}
    monkeypatch.setattr(models, "cpu_flags", lambda: {"avx512_bf16", "amx_bf16", "amx_tile"})
    assert resolve_dtype("auto", "cpu") == (torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else torch.float32)
    for bad in ("float16", "half", "int8", "nonsense"):
        with pytest.raises(CotlabError, match="unknown dtype"):
            resolve_dtype(bad, "cpu")


def test_load_model_takes_a_dtype_name():
    model, _ = load_model("tiny-random", dtype="float32")
    assert str(model.dtype) == "torch.float32"


def test_a_full_checkpoint_given_as_adapter_says_so(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CotlabError, match="full checkpoint: load it as the model"):
        load_model("tiny-random", adapter=str(tmp_path))


def test_trained_in_4bit_reads_the_adapters_recipe(tmp_path):
    from cotlab.models import trained_in_4bit

    assert not trained_in_4bit(None) and not trained_in_4bit(str(tmp_path))
    (tmp_path / "recipe.json").write_text(json.dumps({"load_in_4bit": True}))
    assert trained_in_4bit(str(tmp_path))


def test_an_adapter_chain_is_checked_by_content_and_survives_a_moved_run(tmp_path):
    """An adapter trained on top of another records the other's path (relative inside one run
    directory) and digest: the run directory can move, but a base retrained into the same folder
    makes the top adapter stale -- loading it is a one-line error, its digest changes, and its
    stage, asked again with the same recipe, trains afresh rather than reading the old run back."""
    import shutil

    from cotlab.data import load_records
    from cotlab.models import adapter_chain, weights_digest
    from cotlab.prompts import sft_example
    from cotlab.recipes import SFTRecipe
    from cotlab.training import train_sft

    from conftest import CHAIN_SUM

    rows = [sft_example(r.question, r.rationale, r.answer) for r in load_records(CHAIN_SUM, n=4, split="train")]
    common = dict(model="tiny-random", max_steps=1, per_device_train_batch_size=4, save_steps=10, learning_rate=1e-2, warmup_steps=0)
    first = tmp_path / "run"
    train_sft(SFTRecipe(output_dir=str(first / "02_sft" / "main"), **common), rows)
    train_sft(SFTRecipe(output_dir=str(first / "03_dpo" / "train"), adapter=str(first / "02_sft" / "main" / "final"), **common), rows)
    record = json.loads((first / "03_dpo" / "train" / "final" / "cotlab_base_adapters.json").read_text())
    assert record["relative"] == ["../../../02_sft/main/final"] and len(record["digests"]) == 1

    root = tmp_path / "moved"
    shutil.move(first, root)
    base, top = root / "02_sft" / "main" / "final", str(root / "03_dpo" / "train" / "final")
    assert adapter_chain(top) == [str(base), top]
    assert type(load_model("tiny-random", adapter=top)[0]).__name__ == "PeftModelForCausalLM"
    before = weights_digest(top)
    assert before not in (weights_digest(str(base)), None)

    train_sft(SFTRecipe(output_dir=str(root / "02_sft" / "main"), seed=1, **common), rows)  # the base, retrained in place
    with pytest.raises(CotlabError, match=f"trained on top of {base}, which has been retrained since"):
        load_model("tiny-random", adapter=top)
    assert weights_digest(top) != before
    again = train_sft(SFTRecipe(output_dir=str(root / "03_dpo" / "train"), adapter=str(base), **common), rows)
    assert "reused" not in again and (root / "03_dpo" / "train.earlier-1").is_dir()
    assert type(load_model("tiny-random", adapter=top)[0]).__name__ == "PeftModelForCausalLM"


@pytest.fixture(scope="module")
def tiny_fp32():
    """The tiny model in fp32 (the `tiny` fixture is in `auto`: bf16 on an AMX CPU)."""
    return load_model("tiny-random", dtype="float32")


def _prompts(tokenizer):
    from cotlab.prompts import build_messages, render_prompt

    return [render_prompt(tokenizer, build_messages(f"What is {a} + {b}?", "think")) for a, b in [(1, 2), (13, 8), (40, 2), (7, 7)]]


def test_int8_decoding_generates_and_mostly_agrees_with_fp32(tiny_fp32):
    """dtype int8 is accepted by load_model, quantises every Linear layer, generates, and picks
    fp32's next token on nearly every position of fp32's own greedy completions (teacher-forced,
    so one early difference does not count against every later token)."""
    import torch

    from cotlab.generate import SamplingConfig, generate
    from cotlab.models import weights_dtype
    from cotlab.quantize import is_int8

    fp32, tokenizer = tiny_fp32
    int8, _ = load_model("tiny-random", dtype="int8")
    assert is_int8(int8) and weights_dtype(int8) == "int8" and not is_int8(fp32)
    assert type(int8.model.layers[0].mlp.down_proj).__name__ == type(int8.lm_head).__name__ == "Int8Linear"
    assert int8.model.layers[0].mlp.down_proj.weight.dtype == torch.int8
    prompts = _prompts(tokenizer)
    sampling = SamplingConfig(max_new_tokens=12, batch_size=4)
    reference = [c[0].text for c in generate(fp32, tokenizer, prompts, sampling, progress=False)]
    assert all(c[0].tokens > 0 for c in generate(int8, tokenizer, prompts, sampling, progress=False))
    tokenizer.padding_side = "right"
    batch = tokenizer([p + c for p, c in zip(prompts, reference)], return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        same = fp32(**batch).logits.argmax(-1) == int8(**batch).logits.argmax(-1)
    assert same[batch["attention_mask"].bool()].float().mean() >= 0.9


def test_int8_merges_the_adapter_before_quantising(tiny_fp32, tmp_path):
    """An adapter loaded with dtype int8 is folded into the weights: a plain (not PEFT) model with
    no LoRA layers left, whose logits follow base + adapter, not the base alone."""
    import torch
    from peft import LoraConfig, get_peft_model

    from cotlab.models import load_base

    torch.manual_seed(0)
    lora = get_peft_model(load_base("tiny-random", "float32"), LoraConfig(r=8, target_modules="all-linear", init_lora_weights=False))
    lora.save_pretrained(tmp_path)
    int8, tokenizer = load_model("tiny-random", adapter=str(tmp_path), dtype="int8")
    assert "Peft" not in type(int8).__name__ and not any("lora" in name for name, _ in int8.named_modules())
    adapted, _ = load_model("tiny-random", adapter=str(tmp_path), dtype="float32")
    batch = tokenizer(_prompts(tokenizer), return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        got, want, base = (m(**batch).logits for m in (int8, adapted, tiny_fp32[0]))
    assert (got - want).abs().mean() < 0.2 * (base - want).abs().mean()


def test_int8_is_for_cpu_decoding_only():
    from cotlab.models import resolve_dtype

    with pytest.raises(CotlabError, match="int8 is for CPU decoding only"):
        resolve_dtype("int8")  # training and the trainers' precision never take it
    with pytest.raises(CotlabError, match="for CPU decoding"):
        load_model("tiny-random", dtype="int8", device="cuda")
    with pytest.raises(CotlabError, match="exclude each other"):
        load_model("tiny-random", dtype="int8", load_in_4bit=True)


def test_auto_decodes_in_int8_only_where_a_measurement_for_this_cpu_class_says_so(monkeypatch):
    """`decoding_dtype("auto")` follows CPU_DECODING_MEASURED by the CPU's class (AMX, VNNI without
    AMX, neither): today no class says int8, so auto is the float policy everywhere.  A measured
    int8 entry turns it on for CPU decoding of that class only (torch's int8 product present, no 4-bit base);
    an explicit dtype, and training (resolve_dtype, trainer_precision), never follow it."""
    import torch

    from cotlab import models

    monkeypatch.setattr(models, "int8_available", lambda: True)
    classes = {"amx": {"amx_bf16", "amx_int8", "amx_tile", "avx512_vnni", "avx512_bf16"}, "vnni": {"avx512_vnni"}, "": {"avx2"}}
    for name, flags in classes.items():
        monkeypatch.setattr(models, "cpu_flags", lambda flags=flags: flags)
        assert models.cpu_class() == name
        assert models.decoding_dtype("auto", "cpu") == models.resolve_dtype("auto", "cpu") != "int8"
    monkeypatch.setattr(models, "cpu_flags", lambda: {"avx_vnni"})
    assert models.cpu_class() == "vnni" and models.decoding_dtype(None, "cpu") == torch.float32  # not measured: fp32
    assert models.CPU_DECODING_MEASURED["amx"] == "bfloat16"  # measured: bf16 beat int8 (and fp32) there

    monkeypatch.setitem(models.CPU_DECODING_MEASURED, "vnni", "int8")  # as a measurement on a VNNI CPU would say
    assert models.decoding_dtype("auto", "cpu") == models.decoding_dtype(None, "cpu") == "int8"
    assert models.decoding_dtype("float32", "cpu") == torch.float32
    assert models.decoding_dtype("auto", "cpu", load_in_4bit=True) == torch.float32
    assert models.decoding_dtype("auto", "cuda") != "int8"
    assert models.resolve_dtype("auto", "cpu") == torch.float32 and models.trainer_precision("auto", "cpu")["bf16"] is False
    with pytest.raises(CotlabError, match="int8 is for CPU decoding only"):
        models.trainer_precision("int8", "cpu")
    monkeypatch.setattr(models, "cpu_flags", lambda: {"amx_bf16", "amx_int8", "avx512_vnni"})
    assert models.decoding_dtype("auto", "cpu") != "int8"  # another class keeps its own entry
    monkeypatch.setattr(models, "cpu_flags", lambda: {"avx512_vnni"})
    monkeypatch.setattr(models, "int8_available", lambda: False)
    assert models.decoding_dtype("auto", "cpu") == torch.float32  # without torch._int_mm: the float policy


def test_auto_int8_is_what_an_evaluation_records(monkeypatch):
    """Where the table says int8, load_model in auto quantises, and the evaluation's summary records
    dtype int8 (as it records float32 or bfloat16)."""
    from cotlab import models
    from cotlab.data import Record
    from cotlab.evaluate import evaluate
    from cotlab.generate import SamplingConfig

    monkeypatch.setattr(models, "cpu_flags", lambda: {"avx512_vnni"})
    monkeypatch.setitem(models.CPU_DECODING_MEASURED, "vnni", "int8")
    model, tokenizer = load_model("tiny-random", device="cpu")
    assert models.weights_dtype(model) == "int8"
    result = evaluate(model, tokenizer, [Record(id="q1", question="What is 1 + 2?", answer="3")], sampling=SamplingConfig(max_new_tokens=4),
                      progress=False)
    assert result.summary["dtype"] == "int8"


def test_a_onednn_isa_cap_below_amx_hides_amx_from_the_dtype_policy(monkeypatch):
    """ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 keeps oneDNN off AMX; cpu_flags then leaves the amx_*
    flags out, so auto picks what it would on a CPU without AMX (fp32, VNNI class): the emulation
    bench/results/*_vnni_emulated.json and the emulated main job rely on."""
    from pathlib import Path

    import torch

    from cotlab import models

    cpuinfo = "processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16 avx512_vnni amx_bf16 amx_tile amx_int8\n"
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: cpuinfo)
    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        monkeypatch.delenv(name, raising=False)
    assert {"amx_bf16", "amx_int8", "avx512_vnni"} <= models.cpu_flags() and models.cpu_class() == "amx"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX")
    assert models.cpu_class() == "amx"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx512_core_bf16")
    assert models.cpu_flags() == {"fpu", "avx512f", "avx512_bf16", "avx512_vnni"} and models.cpu_class() == "vnni"
    assert not models.cpu_bf16_is_fast() and models.default_dtype("cpu") == torch.float32
