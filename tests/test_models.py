import json

import pytest

from cotlab import CotlabError
from cotlab.models import count_parameters, embedded_checkpoint, load_model, resolve_model


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
    assert str(model.dtype) == "torch.float32"  # CPU: fp32


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
