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
