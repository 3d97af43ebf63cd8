"""DPO and GRPO on TRL with the tiny model: one real optimisation step each (the checks that
catch API drift between TRL releases), preference pairs, and stacking on an SFT adapter."""

import json

import pytest

from cotlab import CotlabError
from cotlab.data import load_records
from cotlab.pairs import preference_pairs
from cotlab.generate import Completion, SamplingConfig
from cotlab.prompts import sft_example, think_completion
from cotlab.rewards import grpo_rows
from cotlab.recipes import DPORecipe, GRPORecipe, SFTRecipe
from cotlab.training import train_dpo, train_grpo, train_sft

from conftest import CHAIN_SUM


@pytest.fixture(scope="module")
def records():
    return load_records(CHAIN_SUM, n=8, split="train")


class ScriptedTeacher:
    """A teacher whose samples are fixed, so the pairing rules can be checked exactly."""

    name = "scripted"

    def __init__(self, samples):
        self.samples = samples

    def complete(self, prompts, sampling):
        return [self.samples[i % len(self.samples)] for i in range(len(prompts))]


def _sample(text, tokens, finished=True):
    return Completion(text=text, tokens=tokens, finished=finished)


def test_preference_pairs_correct_vs_wrong_and_long_vs_short(records):
    record = records[0]
    right_long = think_completion("step one\nstep two\nstep three", record.answer)
    right_short = think_completion("step", record.answer)
    wrong = think_completion("guess", str(int(record.answer) + 1))
    cut_off = "<think>step one"  # unfinished: never a chosen chain
    teacher = ScriptedTeacher([[_sample(right_long, 30), _sample(right_short, 10), _sample(wrong, 8), _sample(cut_off, 64, False)]])
    sampling = SamplingConfig(k=4, temperature=1.0, max_new_tokens=64)

    pairs, stats = preference_pairs(teacher, [record], sampling, "correct_vs_wrong")
    assert len(pairs) == 1 and stats["questions_with_pair"] == 1.0
    assert pairs[0]["chosen"][0]["content"] in (right_long, right_short)
    assert pairs[0]["rejected"][0]["content"] == wrong  # a cut-off sample is never rejected either
    assert stats["cut_off_excluded"] == 1 and stats["cut_off_rejected"] == 0
    assert pairs[0]["prompt"][-1]["role"] == "user" and pairs[0]["source_id"] == record.id

    pairs, _ = preference_pairs(teacher, [record], sampling, "long_vs_short")
    assert (pairs[0]["chosen"][0]["content"], pairs[0]["rejected"][0]["content"]) == (right_long, right_short)
    pairs, stats = preference_pairs(teacher, [record], sampling, "short_vs_long")
    assert pairs[0]["chosen_tokens"] == 10 and stats["mean_rejected_tokens"] == 30

    only_right = ScriptedTeacher([[_sample(right_long, 30), _sample(right_long, 30)]])
    pairs, stats = preference_pairs(only_right, [record], sampling, "correct_vs_wrong")
    assert pairs == [] and stats["questions_with_pair"] == 0.0
    with pytest.raises(CotlabError, match="unknown pair mode"):
        preference_pairs(teacher, [record], sampling, "best_vs_worst")


def _gold_pairs(records):
    """Gold chain chosen, a wrong-answer chain rejected: enough for one DPO step."""
    rows = []
    for r in records:
        chosen = think_completion(r.rationale, r.answer)
        rejected = think_completion(r.rationale, str(int(r.answer) + 3))
        rows.append({"prompt": sft_example(r.question, r.rationale, r.answer)["prompt"],
                     "chosen": [{"role": "assistant", "content": chosen}],
                     "rejected": [{"role": "assistant", "content": rejected}]})
    return rows


def test_dpo_step_on_top_of_an_sft_adapter(records, tmp_path):
    sft_rows = [sft_example(r.question, r.rationale, r.answer) for r in records]
    train_sft(SFTRecipe(model="tiny-random", output_dir=str(tmp_path / "sft"), max_steps=1, per_device_train_batch_size=4), sft_rows)
    sft_adapter = str(tmp_path / "sft" / "final")

    recipe = DPORecipe(model="tiny-random", adapter=sft_adapter, output_dir=str(tmp_path / "dpo"), max_steps=2,
                       per_device_train_batch_size=4, beta=0.1, loss_type="sigmoid", max_length=256, eval_every=2)
    metrics = train_dpo(recipe, _gold_pairs(records), held_out=records[:2], held_out_sampling=SamplingConfig(max_new_tokens=8))
    assert metrics["steps"] == 2 and metrics["train_pairs"] == len(records)
    logged = [e for e in metrics["log_history"] if "loss" in e]
    # TRL's DPO metric names: the curves notebook 03 draws.
    for key in ("rewards/margins", "rewards/chosen", "rewards/rejected", "logps/chosen", "logps/rejected"):
        assert key in logged[0], f"DPOTrainer no longer logs {key}"
    assert [e["step"] for e in metrics["log_history"] if "heldout/accuracy" in e] == [0, 2]
    assert [e["step"] for e in logged] == [1, 2]  # the held-out log took no step's own log away
    final = tmp_path / "dpo" / "final"
    assert json.loads((final / "cotlab_base_adapters.json").read_text())["merged_adapters"] == [sft_adapter]

    # Loading the DPO adapter merges the SFT adapter underneath it first.
    from cotlab.models import load_model

    model, _ = load_model("tiny-random", adapter=str(final))
    assert type(model).__name__ == "PeftModelForCausalLM"


def test_grpo_step_logs_rewards_and_clipping(records, tmp_path, monkeypatch):
    import collections

    import cotlab.rewards
    from cotlab import training

    made = collections.Counter()  # the prompts and reward functions are made once per run, not again by the builder
    for module, name in ((training, "prompt_rows"), (cotlab.rewards, "reward_functions")):
        monkeypatch.setattr(module, name, lambda *a, _f=getattr(module, name), _n=name, **k: made.update([_n]) or _f(*a, **k))
    recipe = GRPORecipe(model="tiny-random", output_dir=str(tmp_path / "grpo"), max_steps=1, num_generations=2,
                        per_device_train_batch_size=4, max_completion_length=16, guards="warn",  # all clipped: it cannot learn
                        rewards={"correctness": 1.0, "format": 0.5, "length": 0.1})
    metrics = train_grpo(recipe, grpo_rows(records))
    assert made == {"prompt_rows": 1, "reward_functions": 1}
    assert metrics["steps"] == 1 and metrics["use_vllm"] is False
    assert metrics["reward_names"] == ["correctness_reward", "format_reward", "length_reward"] and metrics["reward_weights"] == [1.0, 0.5, 0.1]
    logged = next(e for e in metrics["log_history"] if "reward" in e)
    for key in ("rewards/correctness_reward/mean", "rewards/format_reward/mean", "rewards/length_reward/mean",
                "reward_std", "frac_reward_zero_std", "completions/clipped_ratio", "completions/mean_length"):
        assert key in logged, f"GRPOTrainer no longer logs {key}"
    # A random model never closes its chain within 16 tokens: every completion is clipped, and the
    # length reward's truncation penalty is what it earns.
    assert logged["completions/clipped_ratio"] == 1.0
    assert logged["rewards/length_reward/mean"] == pytest.approx(-1.0)
    assert (tmp_path / "grpo" / "final" / "adapter_config.json").is_file()


@pytest.mark.parametrize("kwargs, message", [
    ({"num_generations": 3, "per_device_train_batch_size": 8}, "multiple of num_generations"),
    ({"num_generations": 1}, "at least 2"),
    ({"max_completion_length": 8}, "too short"),
])
def test_grpo_recipe_rejects_bad_parameters_before_any_work(kwargs, message):
    with pytest.raises(CotlabError, match=message):
        GRPORecipe(**kwargs)


def test_cut_off_samples_are_rejected_only_when_allowed(records):
    """Truncation control: with only a cut-off wrong sample there is no pair, unless the caller
    allows cut-off rejected samples (the smoke test's random model), and then they are counted."""
    from cotlab.pairs import pairs_from_samples

    record = records[0]
    right = _sample(think_completion("step", record.answer), 10)
    cut_off = _sample("<think>step one", 64, finished=False)
    pairs, stats = pairs_from_samples([record], [[right, cut_off]], "correct_vs_wrong")
    assert pairs == [] and stats["cut_off_excluded"] == 1
    pairs, stats = pairs_from_samples([record], [[right, cut_off]], "correct_vs_wrong", require_finished=False)
    assert pairs[0]["rejected"][0]["content"] == cut_off.text and stats["cut_off_rejected"] == 1
    assert stats["cut_off_excluded"] == 0
    cut_right = _sample(think_completion("step", record.answer), 64, finished=False)
    pairs, _ = pairs_from_samples([record], [[cut_right, cut_off]], "correct_vs_wrong", require_finished=False)
    assert pairs == []  # a cut-off chain is never chosen


def test_gold_fallback_gives_a_weak_model_pairs(records):
    from cotlab.pairs import pairs_from_samples

    wrong = [[_sample(think_completion("guess", str(int(r.answer) + 1)), 8)] * 2 for r in records[:3]]
    pairs, stats = pairs_from_samples(records[:3], wrong, "correct_vs_wrong")
    assert pairs == []
    pairs, stats = pairs_from_samples(records[:3], wrong, "correct_vs_wrong", gold_fallback=True, count_tokens=len)
    assert stats["pairs"] == stats["gold_chosen"] == 3
    assert pairs[0]["chosen"][0]["content"] == think_completion(records[0].rationale, records[0].answer)
    assert pairs[0]["chosen_tokens"] == len(pairs[0]["chosen"][0]["content"])


def test_cotlab_train_grpo_from_a_task_spec(tmp_path):
    """`cotlab train grpo` straight from a task spec: the questions' train split becomes the prompts."""
    from conftest import run_cli

    out = tmp_path / "grpo_cli"
    result = run_cli("train", "grpo", "--config", "configs/recipes/grpo_cpu.yaml", "--set", "model=tiny-random", "--set", "adapter=null",
                     "--set", f"output_dir={out}", "--set", "max_steps=1", "--set", "n_prompts=4", "--set", "num_generations=2",
                     "--set", "per_device_train_batch_size=4", "--set", "max_completion_length=16", "--set", "guards=warn")
    assert result.returncode == 0, result.stderr[-2000:]
    assert '"steps": 1' in result.stdout and (out / "final" / "adapter_config.json").is_file()
    bad = run_cli("train", "grpo", "--set", "model=tiny-random", "--set", "num_generations=3", "--set", "per_device_train_batch_size=8")
    assert bad.returncode == 2 and "multiple of num_generations" in bad.stderr and "Traceback" not in bad.stderr


def test_pairs_sentence_says_when_there_is_nothing_to_learn_from():
    from cotlab.lessons.dpo import pairs_sentence

    stats = {"pairs": 10, "questions": 32, "gold_chosen": 0, "cut_off_excluded": 3, "mean_chosen_tokens": 40, "mean_rejected_tokens": 52}
    assert pairs_sentence(stats, "correct_vs_wrong").startswith("10 of 32 training questions gave a correct_vs_wrong pair")
    assert "DPO has nothing to learn from" in pairs_sentence({**stats, "pairs": 0}, "correct_vs_wrong")
