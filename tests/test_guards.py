"""The guards that stop a GRPO run that cannot learn, and held-out accuracy logged beside the reward."""

import logging
from types import SimpleNamespace

import pytest
from transformers import TrainerControl, TrainerState

from cotlab import CotlabError
from cotlab.data import load_records
from cotlab.generate import SamplingConfig
from cotlab.guards import LearningSignalGuard, check_chat_template, check_rewards, checked_reward
from cotlab.models import load_tokenizer
from cotlab.recipes import DPORecipe, GRPORecipe, load_recipe
from cotlab.rewards import grpo_rows, reward_functions
from cotlab.training import train_grpo

from conftest import CHAIN_SUM, run_cli


@pytest.fixture(scope="module")
def records():
    return load_records(CHAIN_SUM, n=4, split="train")


def _step(clipped, zero_std, reward=0.0):
    return {"completions/clipped_ratio": clipped, "frac_reward_zero_std": zero_std, "reward": reward, "loss": 0.0}


def _feed(guard, entries, max_steps=10):
    """Hand the guard one logged step after another, as the Trainer would."""
    for step, logs in enumerate(entries, start=1):
        guard.on_log(None, TrainerState(global_step=step, max_steps=max_steps), TrainerControl(), logs=logs)


def test_identical_rewards_in_every_group_stop_the_run():
    guard = LearningSignalGuard("error", window=2, max_completion_length=64)
    _feed(guard, [_step(0.5, 1.0)])  # one step is not yet the window: no verdict
    with pytest.raises(CotlabError, match="rewards were identical") as caught:
        _feed(guard, [_step(0.25, 1.0)])
    assert "max_completion_length" not in str(caught.value) and "\n" not in str(caught.value)


def test_all_clipped_names_max_completion_length_and_its_value():
    guard = LearningSignalGuard("error", window=2, max_completion_length=16)
    with pytest.raises(CotlabError, match=r"max_completion_length \(16\)") as caught:
        _feed(guard, [_step(1.0, 0.5), _step(1.0, 0.0)])
    assert "identical" not in str(caught.value)


def test_a_signal_in_any_step_of_the_window_lets_training_go_on():
    guard = LearningSignalGuard("error", window=2, max_completion_length=16)
    _feed(guard, [_step(1.0, 1.0), _step(0.5, 0.5), _step(1.0, 1.0), _step(1.0, 1.0)])  # checked once, after step 2
    assert guard.checked


def test_a_run_shorter_than_the_window_is_checked_at_its_last_step():
    guard = LearningSignalGuard("error", window=5, max_completion_length=16)
    with pytest.raises(CotlabError, match="in the first 1 step"):
        _feed(guard, [_step(1.0, 1.0)], max_steps=1)


def test_logs_without_grpo_metrics_are_not_counted():
    guard = LearningSignalGuard("error", window=1, max_completion_length=16)
    _feed(guard, [{"heldout/accuracy": 0.0}, {"train_runtime": 1.0}])
    assert guard.entries == [] and not guard.checked


def test_warn_logs_and_trains_on_and_off_checks_nothing(caplog):
    with caplog.at_level(logging.WARNING, logger="cotlab.guards"):
        _feed(LearningSignalGuard("warn", window=1, max_completion_length=16), [_step(1.0, 1.0)])
    assert "GRPO cannot learn" in caplog.text and "max_completion_length (16)" in caplog.text
    off = LearningSignalGuard("off", window=1)
    _feed(off, [_step(1.0, 1.0)])
    assert off.entries == []
    with pytest.raises(CotlabError, match="guards must be"):
        LearningSignalGuard("maybe")


def test_the_guard_switch_is_a_recipe_field():
    assert load_recipe("grpo", None, ["guards=warn", "guard_steps=3"]).guard_steps == 3
    assert DPORecipe(guards="off", eval_every=5).eval_every == 5
    with pytest.raises(CotlabError, match="guards must be error, warn or off"):
        GRPORecipe(guards="quiet")
    with pytest.raises(CotlabError, match="eval_every"):
        DPORecipe(eval_every=-1)


def test_a_reward_with_the_wrong_number_of_scores_is_named():
    def per_prompt_reward(completions, **_):
        return [1.0]

    checked = checked_reward(per_prompt_reward)
    assert checked.__name__ == "per_prompt_reward"  # TRL logs rewards/<__name__>/mean
    assert checked(completions=["a"]) == [1.0]
    with pytest.raises(CotlabError, match="per_prompt_reward returned 1 scores for 3 completions"):
        checked(completions=["a", "b", "c"])


def test_preflight_calls_each_reward_as_grpo_will(records):
    tokenizer = load_tokenizer("tiny-random")
    prompts = grpo_rows(records)
    functions, _ = reward_functions({"correctness": 1.0, "format": 0.2, "length": 0.1}, 64)
    check_rewards(functions, prompts, tokenizer)  # cotlab's own rewards pass

    def per_prompt_reward(completions, **_):
        return [0.0]

    def word_reward(completions, **_):
        return ["good"] * len(completions)

    def needs_a_column(completions, solution, **_):
        return [0.0] * len(completions)

    for function, message in [(per_prompt_reward, "per_prompt_reward returned 1 scores for 4 completions"),
                              (word_reward, "word_reward returned a str, not a number"),
                              (needs_a_column, "needs_a_column failed on a sample batch: TypeError")]:
        with pytest.raises(CotlabError, match=message):
            check_rewards([functions[0], function], prompts, tokenizer)


def test_chat_prompts_need_a_chat_template(records):
    chat_prompts = grpo_rows(records)
    with pytest.raises(CotlabError, match="has no chat template"):
        check_chat_template(SimpleNamespace(chat_template=None), chat_prompts, "some/base-model")
    check_chat_template(SimpleNamespace(chat_template=None), [{"prompt": "2 + 3 ="}], "some/base-model")  # plain text
    check_chat_template(load_tokenizer("tiny-random"), chat_prompts, "tiny-random")


def test_cli_stops_a_grpo_run_that_cannot_learn_in_one_line(tmp_path):
    """The tiny random model never closes a chain in 16 tokens, and no completion earns a reward:
    the run stops after the guard's first step, before the adapter is written."""
    out = tmp_path / "grpo"
    recipe = tmp_path / "grpo.yaml"
    recipe.write_text(f"model: tiny-random\ndataset: '{CHAIN_SUM}'\nn_prompts: 4\noutput_dir: {out}\nnum_generations: 2\n"
                      "per_device_train_batch_size: 4\nmax_completion_length: 16\nmax_steps: 5\nguard_steps: 1\n")
    result = run_cli("train", "grpo", "--config", str(recipe))
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 2, result.stderr[-2000:]
    assert last.startswith("cotlab: error: GRPO cannot learn: in the first 1 step(s)"), last
    assert "max_completion_length (16)" in last and "rewards were identical" in last
    assert "Traceback" not in result.stderr and not (out / "final").exists()


def test_heldout_accuracy_is_logged_beside_the_reward(records, tmp_path, caplog):
    held_out = load_records(CHAIN_SUM, n=2, split="test")
    recipe = GRPORecipe(model="tiny-random", output_dir=str(tmp_path / "grpo"), max_steps=2, num_generations=2,
                        per_device_train_batch_size=4, max_completion_length=16, guards="warn", eval_every=2)
    with caplog.at_level(logging.WARNING, logger="cotlab.guards"):
        metrics = train_grpo(recipe, grpo_rows(records), held_out=held_out, held_out_sampling=SamplingConfig(max_new_tokens=8))
    assert "GRPO cannot learn" in caplog.text  # warned, and trained on
    history = metrics["log_history"]
    held = [e for e in history if "heldout/accuracy" in e]
    assert [e["step"] for e in held] == [0, 2]  # before training, then every eval_every steps
    assert all(0.0 <= e["heldout/accuracy"] <= 1.0 and e["heldout/mean_completion_tokens"] <= 8 for e in held)
    # Logging held-out accuracy must not swallow a step's own training log.
    assert [e["step"] for e in history if "reward" in e and "train_runtime" not in e] == [1, 2]
    with pytest.raises(CotlabError, match="no held-out records"):
        train_grpo(GRPORecipe(model="tiny-random", output_dir=str(tmp_path / "none"), max_steps=1, num_generations=2,
                              per_device_train_batch_size=4, eval_every=1), grpo_rows(records))


@pytest.mark.parametrize("rewards,zero,clipped,expected", [
    ([0.0] * 6 + [1.0] * 6, 0.2, 0.1, "rose during training"),
    ([0.5] * 12, 0.9, 0.1, "most groups gave no learning signal"),
    ([0.0] * 12, 0.2, 0.8, "most chains were cut off"),
    ([0.3], 0.0, 0.0, "too few to tell a trend"),
])
def test_reward_sentence_says_what_keeps_the_reward_at_zero(rewards, zero, clipped, expected):
    from cotlab.logs import reward_sentence, reward_summary

    history = [{"step": i + 1, "reward": r, "frac_reward_zero_std": zero, "completions/clipped_ratio": clipped} for i, r in enumerate(rewards)]
    summary = reward_summary(history)
    assert summary["rewards"] == rewards and summary["clipped_ratio"] == pytest.approx(clipped)
    assert expected in reward_sentence(summary)
