"""HF-native outputs: adapters name their base by hub id, model cards keep PEFT's metadata, and
`cotlab export` merges a stage's whole adapter chain into a model plain transformers loads."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cotlab import CotlabError
from cotlab.data import load_records
from cotlab.export import export_merged
from cotlab.layout import stage_adapter
from cotlab.layout import Run
from cotlab.models import EMBEDDED_HUB_ID, hub_id
from cotlab.prompts import build_messages, render_prompt, sft_example, think_completion
from cotlab.recipes import DPORecipe, SFTRecipe
from cotlab.training import record_base_model, train_dpo, train_sft

from conftest import CHAIN_SUM, run_cli

# Greedy decoding with plain transformers, in a process where importing cotlab is impossible.
PLAIN = """
import json, sys
sys.modules["cotlab"] = None  # any `import cotlab` now fails
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
folder, prompts, max_new = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
model = AutoModelForCausalLM.from_pretrained(folder).eval()
tokenizer = AutoTokenizer.from_pretrained(folder)
answers, logits = [], []
for prompt in prompts:
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        logits.append(model(**inputs).logits[0, -1])
        out = model.generate(**inputs, do_sample=False, max_new_tokens=max_new, pad_token_id=tokenizer.eos_token_id)
    answers.append(tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip())
torch.save(torch.stack(logits), sys.argv[4])
print(json.dumps({"answers": answers, "dtype": str(model.dtype)}))
"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run directory with a 1-step SFT adapter and a 1-step DPO adapter trained on top of it, in fp32
    on any CPU (the export keeps the dtype a stage trained in, and the comparison below is fp32)."""
    records = load_records(CHAIN_SUM, n=8, split="train")
    run = Run(tmp_path_factory.mktemp("run"))
    train_sft(SFTRecipe(model="tiny-random", output_dir=str(run.training_dir("sft")), max_steps=1,
                        per_device_train_batch_size=4, learning_rate=1e-2, warmup_steps=0, dtype="float32"), [sft_example(r.question, r.rationale, r.answer) for r in records])
    pairs = [{"prompt": sft_example(r.question, r.rationale, r.answer)["prompt"],
              "chosen": [{"role": "assistant", "content": think_completion(r.rationale, r.answer)}],
              "rejected": [{"role": "assistant", "content": think_completion(r.rationale, str(int(r.answer) + 3))}]}
             for r in records]
    train_dpo(DPORecipe(model="tiny-random", adapter=run.adapter("sft"), output_dir=str(run.training_dir("dpo")), max_steps=1,
                        per_device_train_batch_size=4, learning_rate=1e-2, warmup_steps=0, max_length=256, dtype="float32"), pairs)
    return run.root


def test_adapter_card_keeps_peft_metadata_and_adds_the_training_facts(run_dir):
    from huggingface_hub import ModelCard

    card = ModelCard.load(Path(Run(run_dir).adapter("dpo")) / "README.md")
    assert card.data.library_name == "peft" and card.data.base_model  # PEFT's YAML survived
    assert {"cotlab", "dpo", "lora"} <= set(card.data.tags)
    assert "Trained with cotlab (dpo, TRL) for 1 steps" in card.text
    assert Run(run_dir).adapter("sft") in card.text  # the chain it was trained on


def test_adapters_name_their_base_by_hub_id(tmp_path, run_dir):
    assert hub_id("embedded") == EMBEDDED_HUB_ID and hub_id("Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"
    assert hub_id("tiny-random") is None and hub_id(str(tmp_path)) is None
    with pytest.raises(CotlabError):
        hub_id("not a model")
    # tiny-random has no hub id: PEFT's local path stays; a hub id replaces it.
    config = Path(Run(run_dir).adapter("sft")) / "adapter_config.json"
    assert json.loads(config.read_text())["base_model_name_or_path"].endswith("tiny-random-llama")
    (tmp_path / "adapter_config.json").write_text(config.read_text())
    record_base_model(tmp_path, EMBEDDED_HUB_ID)
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    assert saved["base_model_name_or_path"] == EMBEDDED_HUB_ID and saved["r"] == json.loads(config.read_text())["r"]


def adapter_answers(adapter, prompts, max_new):
    """Greedy answers and last-position logits through cotlab's own adapter path."""
    from cotlab.generate import SamplingConfig, generate
    from cotlab.models import load_model

    model, tokenizer = load_model("tiny-random", adapter=adapter, device="cpu", dtype="float32")
    answers = [c[0].text for c in generate(model, tokenizer, prompts, SamplingConfig(max_new_tokens=max_new, batch_size=1), progress=False)]
    with torch.no_grad():
        logits = torch.stack([model(**tokenizer(p, return_tensors="pt", add_special_tokens=False)).logits[0, -1] for p in prompts])
    return answers, logits


@pytest.mark.parametrize("stage", ["sft", "dpo"])
def test_export_merges_the_chain_into_a_model_plain_transformers_loads(tmp_path, run_dir, tokenizer, stage):
    out = tmp_path / "merged"
    if stage == "dpo":  # as a user would; the SFT export through the function (one subprocess less)
        result = run_cli("export", str(run_dir), "--stage", stage, "--merge", str(out))
        assert result.returncode == 0, result.stderr[-2000:]
    else:
        export_merged(stage_adapter(run_dir, stage), out)
    from huggingface_hub import ModelCard

    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "transformers" and "merged" in card.data.tags
    prompts = [render_prompt(tokenizer, build_messages(r.question)) for r in load_records(CHAIN_SUM, n=3, split="test")]
    plain = subprocess.run([sys.executable, "-c", PLAIN, str(out), json.dumps(prompts), "12", str(tmp_path / "logits.pt")],
                           cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert plain.returncode == 0, plain.stderr[-2000:]
    loaded = json.loads(plain.stdout.splitlines()[-1])
    answers, logits = adapter_answers(Run(run_dir).adapter(stage), prompts, 12)
    assert loaded["dtype"] == "torch.float32"
    assert loaded["answers"] == answers
    assert torch.allclose(torch.load(tmp_path / "logits.pt"), logits, atol=1e-4)
    # The adapters did change the model: the base alone answers differently (logits at least).
    base_answers, base_logits = adapter_answers(None, prompts, 12)
    assert not torch.allclose(base_logits, logits, atol=1e-4)


def test_export_refuses_a_missing_stage_and_a_used_folder(tmp_path, run_dir):
    empty_run = tmp_path / "run"
    empty_run.mkdir()
    with pytest.raises(CotlabError, match="no finished grpo adapter"):
        stage_adapter(empty_run, "grpo")
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("x")
    with pytest.raises(CotlabError, match="not empty"):
        export_merged(Run(run_dir).adapter("sft"), used)


def test_a_failed_push_is_one_line_and_keeps_the_export(tmp_path, monkeypatch):
    """A push that cannot reach the hub (offline here; no token or no write access elsewhere) is a
    one-line error that says the merged model is on disk.  The adapter is untrained: only the push matters."""
    import huggingface_hub
    from peft import LoraConfig, get_peft_model

    from cotlab.models import load_base

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    adapter = tmp_path / "adapter"
    get_peft_model(load_base("tiny-random", "float32"), LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(adapter)
    (adapter / "recipe.json").write_text(json.dumps({"model": "tiny-random", "dtype": "float32"}))
    with pytest.raises(CotlabError, match=r"wrote .*merged, but could not push it to the hub as nobody/cotlab-test: \w+") as raised:
        export_merged(adapter, tmp_path / "merged", push_to_hub="nobody/cotlab-test")
    assert "\n" not in str(raised.value)
    assert (tmp_path / "merged" / "model.safetensors").is_file()
