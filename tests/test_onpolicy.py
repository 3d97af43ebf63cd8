"""On-policy distillation (lesson 11): one real DistillationTrainer step with the tiny model (the
check that catches API drift between TRL releases), the teacher's loading, the recipe, and the
comparison's package functions on made-up rows."""

import json

import pytest

from cotlab import CotlabError
from cotlab.data import load_records
from cotlab.generate import Completion, SamplingConfig
from cotlab.prompts import sft_example, think_completion
from cotlab.recipes import DistillRecipe, SFTRecipe, load_recipe
from cotlab.rewards import grpo_rows
from cotlab.training import load_teacher, recipe_fingerprint, train_onpolicy, train_sft

from conftest import CHAIN_SUM


@pytest.fixture(scope="module")
def records():
    return load_records(CHAIN_SUM, n=8, split="train")


@pytest.fixture(scope="module")
def teacher_adapter(records, tmp_path_factory):
    """A tiny SFT adapter: a teacher that differs from the student it started from."""
    out = tmp_path_factory.mktemp("teacher") / "sft"
    rows = [sft_example(r.question, r.rationale, r.answer) for r in records]
    train_sft(SFTRecipe(model="tiny-random", output_dir=str(out), max_steps=2, per_device_train_batch_size=4, learning_rate=1e-2), rows)
    return str(out / "final")


def test_onpolicy_step_logs_the_divergence_and_saves_an_adapter(records, teacher_adapter, tmp_path, monkeypatch):
    recipe = DistillRecipe(model="tiny-random", teacher="tiny-random", teacher_adapter=teacher_adapter, output_dir=str(tmp_path / "op"),
                           max_steps=2, per_device_train_batch_size=2, max_completion_length=16, save_steps=2)
    metrics = train_onpolicy(recipe, grpo_rows(records[:4]))
    assert metrics["steps"] == 2 and metrics["train_prompts"] == 4 and metrics["teacher_adapter"] == teacher_adapter
    logged = [e for e in metrics["log_history"] if "loss" in e]
    # TRL's DistillationTrainer metric names: the curves notebook 11 draws and the tokens cotlab counts.
    for key in ("loss", "entropy", "completions/mean_length", "completions/clipped_ratio", "num_tokens"):
        assert key in logged[0], f"DistillationTrainer no longer logs {key}"
    assert [e["step"] for e in logged] == [1, 2] and metrics["train_tokens"] > 0
    assert logged[0]["loss"] > 0  # the SFT teacher disagrees with the untrained student
    final = tmp_path / "op" / "final"
    assert (final / "adapter_config.json").is_file() and json.loads((final / "recipe.json").read_text())["teacher_adapter"] == teacher_adapter
    assert "\n# cotlab ONPOLICY output" in (final / "README.md").read_text()

    from cotlab import training

    monkeypatch.setattr(training, "build_onpolicy_trainer", lambda *a, **k: pytest.fail("a finished run was built again"))
    again = train_onpolicy(recipe, grpo_rows(records[:4]))
    assert again["reused"] and again["steps"] == 2


def test_the_teacher_is_merged_frozen_and_in_eval_mode(teacher_adapter):
    teacher = load_teacher(DistillRecipe(model="tiny-random", teacher="tiny-random", teacher_adapter=teacher_adapter))
    assert type(teacher).__name__ == "LlamaForCausalLM" and not teacher.training  # the adapter merged, not a PeftModel
    assert not any(p.requires_grad for p in teacher.parameters())
    with pytest.raises(CotlabError, match="needs a teacher"):
        load_teacher(DistillRecipe(model="tiny-random"))


def test_a_retrained_teacher_makes_the_run_stale(tmp_path):
    """The teacher's weights are part of what a distillation run is: its digest is in the fingerprint."""
    import torch
    from safetensors.torch import save_file

    folder = tmp_path / "teacher"
    folder.mkdir()
    (folder / "adapter_config.json").write_text("{}")
    save_file({"w": torch.zeros(2)}, str(folder / "adapter_model.safetensors"))
    recipe = DistillRecipe(model="tiny-random", teacher="tiny-random", teacher_adapter=str(folder))
    before = recipe_fingerprint(recipe)["teacher_weights"]
    save_file({"w": torch.ones(2)}, str(folder / "adapter_model.safetensors"))
    assert before and recipe_fingerprint(recipe)["teacher_weights"] != before
    assert "teacher_weights" not in recipe_fingerprint(SFTRecipe(model="tiny-random"))


def test_the_recipe_is_trls_distillation_config_with_a_teacher():
    recipe = load_recipe("onpolicy", None, ["teacher=tiny-random", "beta=0.5", "temperature=0.7", "log_completions=true"])
    assert (recipe.teacher, recipe.beta, recipe.temperature, recipe.log_completions) == ("tiny-random", 0.5, 0.7, True)
    assert load_recipe("onpolicy", None, ["teacher_model_name_or_path=tiny-random"]).teacher == "tiny-random"  # TRL's name
    with pytest.raises(CotlabError, match="unknown onpolicy recipe field 'teachr'; did you mean 'teacher'"):
        load_recipe("onpolicy", None, ["teachr=tiny-random"])
    with pytest.raises(CotlabError, match="name different teachers"):
        DistillRecipe(teacher="tiny-random", teacher_model_name_or_path="embedded")
    with pytest.raises(CotlabError, match="too short"):
        DistillRecipe(max_completion_length=8)
    with pytest.raises(CotlabError, match="bad DistillRecipe setting: beta must be in"):  # TRL's own check, on one line
        DistillRecipe(beta=2.0)


def test_cotlab_train_onpolicy_from_a_task_spec(tmp_path):
    """`cotlab train onpolicy` from the shipped cpu recipe, a task spec's train split as the prompts."""
    from conftest import run_cli

    out = tmp_path / "op_cli"
    result = run_cli("train", "onpolicy", "--config", "configs/recipes/onpolicy_cpu.yaml", "--set", "model=tiny-random",
                     "--set", "teacher=tiny-random", "--set", "teacher_adapter=null", "--set", f"output_dir={out}", "--set", "max_steps=1",
                     "--set", "n_prompts=2", "--set", "per_device_train_batch_size=2", "--set", "max_completion_length=16")
    assert result.returncode == 0, result.stderr[-2000:]
    assert '"steps": 1' in result.stdout and (out / "final" / "adapter_config.json").is_file()
    listed = run_cli("train", "onpolicy", "--list-fields")
    assert {"teacher", "teacher_adapter", "beta", "max_completion_length"} <= set(listed.stdout.split())


# The comparison's package functions ------------------------------------------------------------


class ScriptedTeacher:
    def __init__(self, texts):
        self.texts = texts

    def complete(self, conversations, sampling):
        return [[Completion(text, 10 + i, finished)] for i, (text, finished) in zip(range(len(conversations)), self.texts)]


def test_teacher_chain_rows_keep_every_chain_and_count_the_right_ones(records):
    from cotlab.lessons.onpolicy import teacher_chain_rows

    right = think_completion("step", records[0].answer)
    wrong = think_completion("step", str(int(records[1].answer) + 1))
    rows, stats = teacher_chain_rows(ScriptedTeacher([(right, True), (wrong, True), ("<think>cut", False)]), records[:3],
                                     SamplingConfig(max_new_tokens=16))
    assert [r["completion"][0]["content"] for r in rows] == [right, wrong, "<think>cut"]  # nothing filtered
    assert rows[0]["prompt"][-1]["content"] == records[0].question and rows[0]["source_id"] == records[0].id
    assert stats == {"chains": 3, "right": pytest.approx(1 / 3), "finished": pytest.approx(2 / 3), "mean_tokens": 11.0}
    with pytest.raises(CotlabError, match="no training questions"):
        teacher_chain_rows(ScriptedTeacher([]), [], SamplingConfig())


def test_same_budget_names_what_differs():
    from cotlab.lessons.onpolicy import same_budget

    common = dict(model="tiny-random", max_steps=4, learning_rate=1e-3, per_device_train_batch_size=8, seed=1, output_dir="x")
    shared = same_budget(SFTRecipe(**common), DistillRecipe(teacher="tiny-random", **{**common, "output_dir": "y"}))
    assert shared["max_steps"] == 4 and shared["lr_scheduler_type"] == "cosine" and shared["seed"] == 1
    with pytest.raises(CotlabError, match=r"differ in learning_rate \(0.001 vs 0.0002\)"):
        same_budget(SFTRecipe(**common), DistillRecipe(**{**common, "learning_rate": 2e-4}))


def _rows(right: list[int], n: int = 40) -> list[dict]:
    return [{"id": f"q{i}", "correct": i in right} for i in range(n)]


def test_distillation_verdicts_follow_the_tests():
    from cotlab.lessons.onpolicy import distillation_comparisons, distillation_verdicts

    rows = {"base": _rows([]), "teacher": _rows(range(30)), "sft_on_teacher": _rows(range(10)), "on_policy": _rows(range(25))}
    comparisons = distillation_comparisons(rows)
    assert (comparisons["primary"]["wins"], comparisons["primary"]["losses"]) == (15, 0)
    assert comparisons["references"]["teacher_vs_base"]["family_size"] == 3
    lines = distillation_verdicts(comparisons, steps=4)
    assert lines[0].startswith("There is something to distil: teacher beats base")
    assert "sft_on_teacher beats base" in lines[1] and "on_policy beats base" in lines[2]
    assert "this run agrees" in lines[3] and "On-Policy Distillation of Language Models" in lines[3]
    assert "75-point lead" in lines[4] and "+25 points (33%)" in lines[4] and "+62 (83%)" in lines[4]

    flat = distillation_verdicts(distillation_comparisons({stage: _rows([1]) for stage in rows}), steps=1)
    assert flat[0].startswith("There is little to distil") and "Neither method moved the student beyond noise in 1 step:" in flat[3]
    assert "does not reproduce it" in flat[4] and flat[5].startswith("No share of the teacher's lead")
    with pytest.raises(CotlabError, match="missing on_policy"):
        distillation_comparisons({stage: rows[stage] for stage in ("base", "teacher", "sft_on_teacher")})


def test_divergence_name_follows_trls_beta():
    from cotlab.lessons.onpolicy import divergence_name

    assert [divergence_name(b) for b in (1.0, 0, 0.5, 0.25)] == ["reverse KL", "forward KL", "JSD", "generalised JSD (beta 0.25)"]


def test_choose_teacher(tmp_path):
    from cotlab.layout import Run
    from cotlab.lessons.onpolicy import choose_teacher

    run = Run(tmp_path / "run")
    assert choose_teacher(run, "Qwen/Qwen2.5-1.5B-Instruct", None, "Qwen/Qwen2.5-0.5B-Instruct", CHAIN_SUM, tmp_path, 1) == \
        ("Qwen/Qwen2.5-1.5B-Instruct", None, "Qwen/Qwen2.5-1.5B-Instruct")
    final = run.training_dir("sft") / "final"
    final.mkdir(parents=True)
    (final / "adapter_config.json").write_text("{}")
    model, adapter, said = choose_teacher(run, "sft", None, "tiny-random", CHAIN_SUM, tmp_path, 1)
    assert (model, adapter) == ("tiny-random", str(final)) and "notebook 02" in said
    with pytest.raises(CotlabError, match="leave teacher_adapter unset"):
        choose_teacher(run, "sft", str(final), "tiny-random", CHAIN_SUM, tmp_path, 1)


def test_onpolicy_sentences_follow_the_numbers():
    from cotlab.lessons.onpolicy import clipped_sentence, cost_sentence, teacher_chains_sentence

    assert "Most are wrong" in teacher_chains_sentence({"right": 0.2, "finished": 0.9, "chains": 32})
    assert "Most are wrong" not in teacher_chains_sentence({"right": 0.8, "finished": 0.9, "chains": 32})
    assert "never finished" in clipped_sentence({"base": 0.9, "on_policy": 0.1}) and "base 90%" in clipped_sentence({"base": 0.9})
    assert "never finished" not in clipped_sentence({"base": 0.2, "on_policy": 0.1})
    a, b = {"train_tokens": 100, "wall_seconds": 10}, {"train_tokens": 300, "wall_seconds": 30}
    assert "3.0 times A's time" in cost_sentence(a, b) and "dearer" in cost_sentence(a, b) and "cheaper" in cost_sentence(b, a)


def test_two_methods_each_trained_per_seed_meet_seed_by_seed():
    from cotlab.stats import over_seeds, over_seeds_verdict

    a = {0: _rows(range(30), 30), 1: _rows(range(28), 30), 2: _rows(range(29), 30)}
    b = {0: _rows(range(10), 30), 1: _rows(range(12), 30), 2: _rows(range(8), 30)}
    over = over_seeds(a, b, "on_policy", "sft_on_teacher")
    assert over["seeds_difference"]["1"] == pytest.approx((28 - 12) / 30)
    assert over_seeds_verdict(over).startswith("on_policy is better than sft_on_teacher")
    assert "on one training seed" in over_seeds_verdict(over_seeds({0: a[0]}, {0: b[0]}, "on_policy", "sft_on_teacher"))
