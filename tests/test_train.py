"""SFT on TRL: the masking, resuming and launcher checks that catch API drift between TRL releases."""

import subprocess
import sys

import pytest
import yaml

from cotlab.data import load_records
from cotlab.prompts import sft_example
from cotlab.recipes import SFTRecipe, load_recipe
from cotlab.training import last_checkpoint, train_sft

from conftest import CHAIN_SUM, REPO


@pytest.fixture(scope="module")
def sft_rows():
    return [sft_example(r.question, r.rationale, r.answer) for r in load_records(CHAIN_SUM, n=12, split="train")]


def test_loss_is_on_the_completion_only(sft_rows, tokenizer, tmp_path):
    """Build TRL's own trainer and collate a real example: prompt tokens carry label -100, the
    whole think/answer completion and the closing <|im_end|> carry labels (so the model learns to stop)."""
    from cotlab.training import build_sft_trainer

    trainer, _ = build_sft_trainer(SFTRecipe(model="tiny-random", output_dir=str(tmp_path)), sft_rows[:2])
    batch = trainer.data_collator([trainer.train_dataset[0]])
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    trained = [i for i, label in zip(ids, labels) if label != -100]
    prompt_len = labels.index(next(label for label in labels if label != -100))
    prompt_text = tokenizer.decode(ids[:prompt_len])
    trained_text = tokenizer.decode(trained)
    assert sft_rows[0]["prompt"][1]["content"] in prompt_text  # the question is masked
    assert trained_text.startswith("<think>") and "</answer>" in trained_text
    # The template closes the turn with <|im_end|> and a newline: the end-of-turn token must be trained.
    assert tokenizer.eos_token_id in trained[-2:]
    assert all(label == -100 for label in labels[:prompt_len])


@pytest.mark.parametrize("plain", [True, False])
def test_the_lm_head_scores_only_labelled_positions_on_cpu(sft_rows, tmp_path, monkeypatch, plain):
    """cotlab's trainers make TRL's fused LM head project only labelled positions on CPU (TRL does
    so on Triton devices only) and score them with one log_softmax (`plain`; TRL's tiles above
    `PLAIN_LOGITS_LIMIT`).  Either way the projection sees exactly the labelled positions, and
    their log-probabilities, entropies and top-1 flags are those of the model's full logits.
    Fails if TRL renames what `cotlab.lm_head` relies on."""
    import torch
    import trl.trainer.utils

    import cotlab.lm_head
    from cotlab.training import build_sft_trainer

    trainer, _ = build_sft_trainer(SFTRecipe(model="tiny-random", output_dir=str(tmp_path)), sft_rows[:2])
    monkeypatch.setattr(cotlab.lm_head, "PLAIN_LOGITS_LIMIT", cotlab.lm_head.PLAIN_LOGITS_LIMIT if plain else 0)
    batch = trainer.data_collator([trainer.train_dataset[0], trainer.train_dataset[1]])
    projected = []
    scorer = trl.trainer.utils._ChunkedLogProbFunction
    monkeypatch.setattr(scorer, "apply", lambda hidden, *args, apply=scorer.apply: projected.append(hidden.shape[0]) or apply(hidden, *args))
    model = trainer.model.eval()
    fused = model(**batch, fused_lm_head=True)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
    labels = batch["labels"][:, 1:]
    labelled = labels != -100
    assert projected == [int(labelled.sum())] and projected[0] < labels.numel()
    log_probs = logits.log_softmax(-1)
    expected = log_probs.gather(-1, labels.clamp(min=0)[..., None])[..., 0]
    torch.testing.assert_close(fused.log_probs[labelled], expected[labelled], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fused.entropy[labelled], -(log_probs.exp() * log_probs).sum(-1)[labelled], rtol=1e-4, atol=1e-4)
    assert torch.equal(fused.is_top1[labelled], (logits.argmax(-1) == labels)[labelled])
    assert (fused.log_probs[~labelled] == 0).all()
    fused.loss.backward()  # the loss reaches the adapter
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad)


def test_the_plain_cpu_scorer_matches_trls_tiles_on_every_output():
    """`CpuLogProbs` against TRL's own `ChunkedLogProbFunction` on the same inputs, with a
    temperature, a logit scale and a soft cap: every output, and the gradient of the log-probs."""
    import torch
    from trl.kernels.chunked_logprob import OPTIONAL_OUTPUTS, ChunkedLogProbFunction

    from cotlab.lm_head import CpuLogProbs

    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(6, 16, generator=generator)
    weight, bias = torch.randn(50, 16, generator=generator), torch.randn(50, generator=generator)
    targets = torch.randint(0, 50, (6,), generator=generator)
    outputs, grads = [], []
    for scorer in (ChunkedLogProbFunction, CpuLogProbs(ChunkedLogProbFunction)):
        leaf = hidden.clone().requires_grad_()
        result = scorer.apply(leaf, weight, bias, targets, 0.7, 32, 5.0, 0.5, ("log_probs", *OPTIONAL_OUTPUTS))
        result[0].sum().backward()
        outputs.append([r.detach() for r in result])
        grads.append(leaf.grad)
    for trl_output, cotlab_output in zip(*outputs):
        torch.testing.assert_close(cotlab_output, trl_output, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-5)


def test_sft_trains_saves_an_adapter_and_resumes(sft_rows, tmp_path):
    recipe = SFTRecipe(model="tiny-random", output_dir=str(tmp_path / "sft"), max_steps=2, save_steps=2,
                       per_device_train_batch_size=4, logging_steps=1)
    metrics = train_sft(recipe, sft_rows)
    assert metrics["steps"] == 2 and metrics["tokens_per_second"] > 0 and metrics["peak_memory_mb"] > 0
    # recorded as the policy chose them on this machine (bf16 only on CPUs where it is faster)
    assert metrics["dtype"] in ("float32", "bfloat16") and metrics["precision"] == ("bf16" if recipe.bf16 else "fp32")
    assert (tmp_path / "sft" / "final" / "adapter_config.json").is_file()
    card = (tmp_path / "sft" / "final" / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: peft" in card and "\n# cotlab SFT output" in card  # PEFT's metadata, our text
    assert last_checkpoint(tmp_path / "sft").endswith("checkpoint-2")

    # Asking for more steps continues from checkpoint-2 rather than starting over.
    recipe.max_steps = 4
    resumed = train_sft(recipe, sft_rows)
    assert resumed["steps"] == 4
    logged_steps = [e["step"] for e in resumed["log_history"] if "loss" in e]
    assert logged_steps[0] <= 2 and logged_steps[-1] == 4  # history carried over from the checkpoint
    assert last_checkpoint(tmp_path / "sft").endswith("checkpoint-4")
    # Throughput is the resumed segment's: its tokens (the run's count went on from checkpoint-2's), over its time.
    counts = [e["num_tokens"] for e in resumed["log_history"] if "num_tokens" in e]
    assert resumed["resumed_from_step"] == 2 and counts == sorted(counts)
    assert 0 < resumed["train_tokens"] == counts[-1] - metrics["train_tokens"]
    assert resumed["tokens_per_second"] == round(resumed["train_tokens"] / resumed["wall_seconds"], 1)
    assert "resumed at step 2" in (tmp_path / "sft" / "final" / "README.md").read_text()


def test_a_finished_run_is_read_back_without_loading_a_model(sft_rows, tmp_path, monkeypatch):
    """A re-run with the same recipe and rows costs nothing and rewrites nothing; fewer steps is
    not a resumption (checkpoint-2 would be saved as the 1-step run) but a fresh run."""
    import json

    from cotlab import training

    common = dict(model="tiny-random", output_dir=str(tmp_path / "sft"), save_steps=1, per_device_train_batch_size=4)
    first = train_sft(SFTRecipe(max_steps=2, **common), sft_rows)
    written = (tmp_path / "sft" / "metrics.json").read_text()
    monkeypatch.setattr(training, "build_sft_trainer", lambda *a, **k: pytest.fail("a finished run was built again"))
    again = train_sft(SFTRecipe(max_steps=2, logging_steps=3, **common), sft_rows)  # where it logs: not what it trains
    assert again["reused"] and again["steps"] == 2 and again["train_tokens"] == first["train_tokens"]
    assert (tmp_path / "sft" / "metrics.json").read_text() == written
    monkeypatch.undo()
    fewer = train_sft(SFTRecipe(max_steps=1, **common), sft_rows)
    assert fewer["steps"] == 1 and fewer["resumed_from_step"] == 0 and "reused" not in fewer
    assert json.loads((tmp_path / "sft" / "final" / "recipe.json").read_text())["max_steps"] == 1
    assert json.loads((tmp_path / "sft.earlier-1" / "metrics.json").read_text())["steps"] == 2


def test_recipe_files_reject_unknown_fields(tmp_path):
    from cotlab import CotlabError

    path = tmp_path / "r.yaml"
    path.write_text("model: tiny-random\nlora_rank: 8\n")
    with pytest.raises(CotlabError, match="unknown sft recipe field 'lora_rank'; did you mean 'lora_r'"):
        load_recipe("sft", str(path))


def test_any_trl_config_field_can_be_set_from_a_recipe(tmp_path):
    """Recipes are TRL's own configs: options cotlab never mentions reach the trainer's args."""
    path = tmp_path / "r.yaml"
    path.write_text("model: tiny-random\noptim: adafactor\nweight_decay: 0.1\nuse_liger_kernel: false\n")
    recipe = load_recipe("sft", str(path), ["push_to_hub=false", "neftune_noise_alpha=5"])
    assert (recipe.optim.value, recipe.weight_decay, recipe.neftune_noise_alpha) == ("adafactor", 0.1, 5)
    grpo = load_recipe("grpo", None, ["log_completions=true", "vllm_gpu_memory_utilization=0.3", "loss_type=dr_grpo"])
    assert grpo.log_completions and grpo.vllm_gpu_memory_utilization == 0.3 and grpo.loss_type == "dr_grpo"
    from cotlab import CotlabError

    with pytest.raises(CotlabError, match="bad GRPORecipe setting"):  # TRL's own validation, on one line
        load_recipe("grpo", None, ["log_completions_hub_repo=x/y"])


@pytest.mark.slow
def test_accelerate_launch_entry_point(sft_rows, tmp_path):
    """The same function under `accelerate launch -m cotlab.train`, in smoke form on CPU."""
    import json

    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in sft_rows))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"model": "tiny-random", "dataset": str(data), "output_dir": str(tmp_path / "out"),
                                      "max_steps": 1, "per_device_train_batch_size": 2}))
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(REPO / "configs/accelerate/cpu.yaml"),
               "-m", "cotlab.train", "sft", "--config", str(recipe)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "out" / "final" / "adapter_config.json").is_file()
    assert '"steps": 1' in result.stdout


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_load(path):
    """Every recipe in configs/recipes names only fields its stage knows (catches renamed fields)."""
    stage = path.name.split("_")[0]
    recipe = load_recipe(stage, str(path))
    assert recipe.model and recipe.dataset and recipe.output_dir


def test_a_folder_that_is_not_one_dataset_is_named(tmp_path):
    """A folder that save_to_disk did not write, or that holds several splits, is a one-line error."""
    import datasets

    from cotlab import CotlabError
    from cotlab.training import load_training_dataset

    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not a dataset")
    with pytest.raises(CotlabError, match="is not a dataset folder"):
        load_training_dataset(str(tmp_path / "notes"))
    rows = datasets.Dataset.from_list([{"prompt": "p", "completion": "c"}])
    datasets.DatasetDict({"train": rows}).save_to_disk(str(tmp_path / "splits"))
    with pytest.raises(CotlabError, match="holds the splits train"):
        load_training_dataset(str(tmp_path / "splits"))
    assert load_training_dataset(str(tmp_path / "splits" / "train"))[0] == {"prompt": "p", "completion": "c"}
    with pytest.raises(CotlabError, match="RUN_DIR is a placeholder"):
        load_training_dataset("RUN_DIR/03_dpo/pairs.jsonl")


def test_a_checkpoint_cut_off_mid_save_is_skipped(tmp_path):
    for step, complete in ((2, True), (4, True), (6, False)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if complete:
            (folder / "trainer_state.json").write_text("{}")
    assert last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-4")
    assert last_checkpoint(tmp_path / "nothing") is None


def test_qlora_trains_a_lora_on_a_4bit_base_and_generates(sft_rows, tmp_path):
    """The QLoRA path end to end (bitsandbytes NF4 runs on CPU too): the base layers are 4-bit,
    only the adapter trains, the weights take less memory, and the adapter loads back on a 4-bit base."""
    from bitsandbytes.nn import Linear4bit

    from cotlab.evaluate import evaluate
    from cotlab.generate import SamplingConfig
    from cotlab.models import load_model

    common = dict(model="tiny-random", max_steps=1, per_device_train_batch_size=4, save_steps=10)
    lora = train_sft(SFTRecipe(output_dir=str(tmp_path / "lora"), **common), sft_rows)
    qlora = train_sft(SFTRecipe(output_dir=str(tmp_path / "qlora"), load_in_4bit=True, **common), sft_rows)
    assert qlora["steps"] == 1 and qlora["final_loss"] == qlora["final_loss"]  # trained, loss not NaN
    assert qlora["weights_memory_mb"] < lora["weights_memory_mb"]
    model, tokenizer = load_model("tiny-random", adapter=qlora["output"], load_in_4bit=True)
    assert isinstance(model.base_model.model.model.layers[0].self_attn.q_proj.base_layer, Linear4bit)
    result = evaluate(model, tokenizer, load_records(CHAIN_SUM, n=2, split="test"), sampling=SamplingConfig(max_new_tokens=4), progress=False)
    assert result.summary["n"] == 2 and all(row["completion_tokens"] <= 4 for row in result.rows)


PEAK_AFTER_RESET = """
from cotlab.training import peak_memory_mb, reset_peak_memory
ballast = bytearray(400 * 2**20)
ballast[::4096] = b"x" * len(ballast[::4096])  # touch every page so it is resident
before = peak_memory_mb()
del ballast
reset_peak_memory()
print(before, peak_memory_mb())
"""


def test_peak_memory_is_the_runs_own():
    """A run's peak memory is measured from its start, not the largest thing the process (a
    notebook kernel) held earlier.  Measured in a fresh process: in this one, whatever earlier
    tests left resident would decide the numbers."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", PEAK_AFTER_RESET], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    before, after = map(float, result.stdout.split())
    assert before > 400 and after < before - 300


@pytest.mark.parametrize("checkpointing", [False, True])
def test_activation_checkpointing_is_the_recipes_choice_not_trls_default(sft_rows, tmp_path, checkpointing):
    """TRL's configs turn checkpointing on by default and transformers 5 renamed the argument: the
    recipe's choice must reach the trainer under the new name, without the deprecation warning."""
    import warnings

    from cotlab.training import build_sft_trainer

    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="`gradient_checkpointing` is deprecated")
        trainer, _ = build_sft_trainer(SFTRecipe(model="tiny-random", output_dir=str(tmp_path), max_steps=1,
                                                 activation_checkpointing=checkpointing), sft_rows)
    assert trainer.args.activation_checkpointing is checkpointing and trainer.args.gradient_checkpointing is checkpointing


def test_a_changed_recipe_trains_afresh_and_keeps_the_earlier_run(sft_rows, tmp_path):
    """A notebook re-run with a new learning rate must not resume the old run's finished
    checkpoint: the earlier run is set aside (never lost) and the new one trains from scratch."""
    import json

    out = tmp_path / "sft"
    common = dict(model="tiny-random", output_dir=str(out), max_steps=1, save_steps=1, per_device_train_batch_size=4)
    first = train_sft(SFTRecipe(learning_rate=1e-3, **common), sft_rows)
    again = train_sft(SFTRecipe(learning_rate=1e-3, **common), sft_rows)  # same recipe: resumes, nothing to do
    assert not list(tmp_path.glob("sft.earlier-*")) and first["steps"] == 1 and again["steps"] >= 1
    changed = train_sft(SFTRecipe(learning_rate=3e-4, **common), sft_rows)
    earlier = tmp_path / "sft.earlier-1"
    assert changed["steps"] == 1 and json.loads((earlier / "final" / "recipe.json").read_text())["learning_rate"] == 1e-3
    assert json.loads((out / "final" / "recipe.json").read_text())["learning_rate"] == 3e-4
    fewer_rows = train_sft(SFTRecipe(learning_rate=3e-4, **common), sft_rows[:8])  # other data: afresh too
    assert fewer_rows["train_rows"] == 8 and (tmp_path / "sft.earlier-2").is_dir()


def test_a_batch_log_gets_text_progress_lines(sft_rows, tmp_path, monkeypatch, capfd):
    """Under `cotlab run` writing to a log, the notebook's HTML bar would show nothing, and so would
    the Trainer's own "text" bar (tqdm.auto: a widget again in a kernel): printed lines replace it,
    with the step count and an ETA, and the logged metrics still reach the log."""
    from transformers.trainer_callback import ProgressCallback
    from transformers.utils.notebook import NotebookProgressCallback

    from cotlab.training import build_sft_trainer, text_progress_in_batch_logs

    trainer, _ = build_sft_trainer(SFTRecipe(model="tiny-random", output_dir=str(tmp_path), max_steps=2, logging_steps=1,
                                             per_device_train_batch_size=2, report_to="none"), sft_rows[:4])
    trainer.pop_callback(ProgressCallback)
    trainer.add_callback(NotebookProgressCallback)  # what a notebook kernel gets
    monkeypatch.setenv("COTLAB_TEXT_PROGRESS", "1")
    monkeypatch.setenv("COTLAB_PROGRESS_SECONDS", "0")
    text_progress_in_batch_logs(trainer)
    bars = [c for c in trainer.callback_handler.callbacks if isinstance(c, (ProgressCallback, NotebookProgressCallback))]
    assert len(bars) == 1 and isinstance(bars[0], ProgressCallback) and type(bars[0]) is not ProgressCallback
    capfd.readouterr()
    trainer.train()
    lines = capfd.readouterr().out.splitlines()
    steps = [line for line in lines if line.startswith("training: ") and "ETA" in line]
    assert [line.split(" (")[0] for line in steps] == ["training: 1/2", "training: 2/2"]
    assert any("'loss'" in line for line in lines) and any(line.startswith("training: done 2/2") for line in lines)


def _counted(monkeypatch, calls, module_names, name):
    """Count calls of `name` wherever training can reach it (its own import and cotlab.models')."""
    import importlib

    modules = [importlib.import_module(m) for m in module_names]
    original = getattr(modules[0], name)

    def counting(*args, **kwargs):
        calls[name] += 1
        return original(*args, **kwargs)

    for module in modules:
        monkeypatch.setattr(module, name, counting)


def test_provenance_is_worked_out_once_per_run(sft_rows, tmp_path, monkeypatch):
    """The base's hub id, the adapter chain and the weight digests are computed once per stage, into
    the one record (`Provenance`) that reuse, resumption, the model loading and the card read; a
    finished run read back costs the same single look."""
    import collections

    calls = collections.Counter()
    for name in ("hub_id", "adapter_chain", "weights_digest"):
        _counted(monkeypatch, calls, ["cotlab.models", "cotlab.training"], name)
    common = dict(model="tiny-random", max_steps=1, per_device_train_batch_size=4, save_steps=10)
    first = train_sft(SFTRecipe(output_dir=str(tmp_path / "first"), **common), sft_rows[:4])
    assert calls == {"hub_id": 1, "adapter_chain": 1, "weights_digest": 1}
    calls.clear()
    on_top = SFTRecipe(output_dir=str(tmp_path / "on_top"), adapter=first["output"], **common)  # a non-empty chain
    train_sft(on_top, sft_rows[:4])
    assert calls == {"hub_id": 1, "adapter_chain": 1, "weights_digest": 1}
    assert "trained on top of these adapters" in (tmp_path / "on_top" / "final" / "README.md").read_text()
    calls.clear()
    assert train_sft(on_top, sft_rows[:4])["reused"]
    assert calls == {"hub_id": 1, "adapter_chain": 1, "weights_digest": 1}


# The fields recipe_fingerprint left out before the field lists moved to cotlab.recipes (commit 9fd4054).
FINGERPRINT_BEFORE_LEFT_OUT = {"output_dir", "logging_dir", "run_name", "report_to", "disable_tqdm", "logging_steps", "save_steps",
                               "save_total_limit", "push_to_hub", "hub_model_id", "eval_every", "max_steps", "num_train_epochs"}


def fingerprint_before(recipe, train_dataset=None) -> dict:
    """recipe_fingerprint as it was written before `Provenance`, kept here to prove that a run
    trained before the change is still read back as the same run."""
    import json

    from cotlab.models import weights_digest
    from cotlab.recipes import DistillRecipe

    fields = {k: v for k, v in json.loads(recipe.to_json_string()).items() if k not in FINGERPRINT_BEFORE_LEFT_OUT}
    teacher = {"teacher_weights": weights_digest(recipe.teacher_adapter, recipe.teacher)} if isinstance(recipe, DistillRecipe) else {}
    return {**fields, "train_data": getattr(train_dataset, "_fingerprint", None),
            "start_weights": weights_digest(recipe.adapter, recipe.model), **teacher}


def _fake_adapter(folder, value: float, under: list | None = None) -> str:
    """An adapter folder with weights of its own, recorded as trained on the adapters `under`."""
    import json

    import torch
    from safetensors.torch import save_file

    from cotlab.models import BASE_ADAPTERS_FILE, base_adapters_record

    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text("{}")
    save_file({"w": torch.full((2,), value)}, str(folder / "adapter_model.safetensors"))
    if under:
        (folder / BASE_ADAPTERS_FILE).write_text(json.dumps(base_adapters_record(folder, under)))
    return str(folder)


def test_the_fingerprint_is_the_one_written_before_provenance(sft_rows, tmp_path):
    """For every stage's recipe, with and without an adapter chain or a teacher, the fingerprint
    (and the one in the provenance record) has the same keys, in the same order, and values as
    the formula before the change: finished runs stay finished, resumable runs resumable."""
    import datasets

    from cotlab.recipes import DistillRecipe, DPORecipe, GRPORecipe
    from cotlab.training import grpo_inputs, provenance, recipe_fingerprint

    base = _fake_adapter(tmp_path / "sft" / "final", 0.0)
    top = _fake_adapter(tmp_path / "dpo" / "final", 1.0, under=[base])
    rows = datasets.Dataset.from_list(sft_rows[:4])
    grpo = GRPORecipe(model="tiny-random", adapter=top, output_dir=str(tmp_path / "grpo"), learning_rate=3e-4)
    grpo_inputs(grpo, rows)  # sets reward_weights, as train_grpo does before the fingerprint
    recipes = [SFTRecipe(model="tiny-random", logging_steps=3, max_steps=7), SFTRecipe(model="tiny-random", adapter=base),
               DPORecipe(model="tiny-random", adapter=top, beta=0.2), grpo,
               DistillRecipe(model="tiny-random", teacher="tiny-random", teacher_adapter=top, adapter=base)]
    for recipe in recipes:
        before = fingerprint_before(recipe, rows)
        assert before["start_weights"] is not None or recipe.adapter is None
        for now in (recipe_fingerprint(recipe, rows), provenance(recipe, rows).fingerprint):
            assert list(now) == list(before) and now == before


def test_every_builder_returns_its_trainer_and_what_the_metrics_record(sft_rows, tmp_path):
    """One shape for every stage's `build_*`: (trainer, extra metrics), as train_or_reuse unpacks it."""
    import datasets

    from cotlab.data import load_records
    from cotlab.recipes import DistillRecipe, DPORecipe, GRPORecipe
    from cotlab.rewards import grpo_rows
    from cotlab.training import Built, build_dpo_trainer, build_grpo_trainer, build_onpolicy_trainer, build_sft_trainer

    prompts = datasets.Dataset.from_list(grpo_rows(load_records(CHAIN_SUM, n=4, split="train")))
    pairs = datasets.Dataset.from_list([{"prompt": r["prompt"], "chosen": r["completion"],
                                         "rejected": [{"role": "assistant", "content": "<answer>0</answer>"}]} for r in sft_rows[:4]])
    built = {
        "sft": build_sft_trainer(SFTRecipe(model="tiny-random", output_dir=str(tmp_path / "sft")), sft_rows[:4]),
        "dpo": build_dpo_trainer(DPORecipe(model="tiny-random", output_dir=str(tmp_path / "dpo")), pairs),
        "grpo": build_grpo_trainer(GRPORecipe(model="tiny-random", output_dir=str(tmp_path / "grpo"), guards="off"), prompts),
        "onpolicy": build_onpolicy_trainer(DistillRecipe(model="tiny-random", teacher="tiny-random", output_dir=str(tmp_path / "op")),
                                           prompts),
    }
    expected = {"sft": {"train_rows": 4}, "dpo": {"train_pairs": 4},
                "grpo": {"reward_names": ["correctness_reward", "format_reward"], "reward_weights": [1.0, 0.2], "use_vllm": False},
                "onpolicy": {"train_prompts": 4, "teacher": "tiny-random", "teacher_adapter": None}}
    for stage, result in built.items():
        trainer, extra = result
        assert isinstance(result, Built) and hasattr(trainer, "train") and extra == expected[stage], stage
