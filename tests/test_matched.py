"""Matched comparisons: which GRPO objectives coincide, budget checks, seed-level verdicts, and the
chain-form datasets of notebook 10 (same questions and answers, only the chain changed)."""


import pytest

from cotlab import CotlabError
from cotlab.chains import chain_is_right, check_steps
from cotlab.budget import matched_budget
from cotlab.lesson import sft_start
from cotlab.lessons.chain_forms import (chain_datasets, CHAIN_FORMS, changed_fraction, check_matched, DELIBERATELY_WRONG,
                                        long_form_sentence, structure_verdict, token_ratio_sentence, with_checks)
from cotlab.lessons.objectives import (objective_figure, objective_settings, objective_verdict, OBJECTIVES, pooled_paired,
                                       same_updates, seed_difference_verdict)
from cotlab.logs import mean_logged
from cotlab.prompts import think_completion
from cotlab.stats import across_seeds, compare_paired, paired_mde_phrase, with_holm

CHAIN = "15 - 43 = -28\n-28 - 75 = -103\n-103 - 72 = -175"


def gold_rows(n: int = 6) -> list[dict]:
    rows = []
    for i in range(n):
        a, b, c = 10 + i, 3 + i, 7
        chain = f"{a} + {b} = {a + b}\n{a + b} - {c} = {a + b - c}\n{a + b - c} * 2 = {2 * (a + b - c)}"
        rows.append({"source_id": f"q{i}", "question": f"What is ({a} + {b} - {c}) * 2?", "answer": str(2 * (a + b - c)),
                     "rationale": chain})
    return rows


# GRPO objectives ----------------------------------------------------------------------------------


def test_objective_settings_name_trl_fields():
    assert objective_settings("gspo") == {"loss_type": "grpo", "importance_sampling_level": "sequence"}
    assert objective_settings("dr_grpo") == {"loss_type": "dr_grpo"}
    with pytest.raises(CotlabError, match="unknown GRPO objective 'ppo'"):
        objective_settings("ppo")


def test_same_updates_groups_what_trl_computes_identically():
    names = list(OBJECTIVES)
    assert same_updates(names) == [["grpo", "gspo"], ["dr_grpo"], ["dapo", "bnpo"]]
    # A second pass over the samples moves the ratios off 1: GSPO is no longer GRPO.
    assert same_updates(names, num_iterations=2) == [["grpo"], ["dr_grpo"], ["dapo", "bnpo"], ["gspo"]]
    # Accumulated or distributed batches: DAPO's global token count is no longer the local one.
    assert same_updates(names, gradient_accumulation_steps=2) == [["grpo", "gspo"], ["dr_grpo"], ["dapo"], ["bnpo"]]
    assert same_updates(["dapo", "bnpo"], world_size=2) == [["dapo"], ["bnpo"]]


def test_matched_budget_allows_only_the_varied_fields():
    from cotlab.recipes import GRPORecipe

    common = {"model": "tiny-random", "max_steps": 3, "num_generations": 2, "per_device_train_batch_size": 4, "use_vllm": False}
    recipes = {name: GRPORecipe(output_dir=f"/tmp/unused/{name}", seed=i, **common, **objective_settings(name))
               for i, name in enumerate(OBJECTIVES)}
    shared = matched_budget(recipes)
    assert shared["max_steps"] == 3 and "loss_type" not in shared and "seed" not in shared
    recipes["faster"] = GRPORecipe(output_dir="/tmp/unused/faster", learning_rate=1e-3, **common)
    with pytest.raises(CotlabError, match="faster and grpo differ in learning_rate"):
        matched_budget(recipes)
    with pytest.raises(CotlabError, match="differ in loss_type"):
        matched_budget({"a": recipes["grpo"], "b": recipes["dapo"]}, varying=())


def test_mean_logged_takes_the_last_fraction_of_steps():
    history = [{"step": s, "reward": float(s)} for s in range(1, 5)] + [{"step": 4, "loss": 1.0}]
    assert mean_logged(history, "reward") == 2.5
    assert mean_logged(history, "reward", 0.5) == 3.5
    assert mean_logged(history, "entropy") is None


def test_seed_difference_verdict_uses_the_t_interval_of_paired_seed_differences():
    higher = seed_difference_verdict("grpo", "dapo", "accuracy", [0.50, 0.52, 0.55], [0.40, 0.41, 0.43], scale=100, unit=" points")
    assert higher.startswith("grpo has higher accuracy than dapo") and "over 3 seeds" in higher
    lower = seed_difference_verdict("dapo", "grpo", "accuracy", [0.40, 0.41, 0.43], [0.50, 0.52, 0.55])
    assert lower.startswith("dapo has lower accuracy than grpo")
    noisy = seed_difference_verdict("grpo", "dapo", "reward", [0.5, 0.2], [0.3, 0.4])
    assert "no difference we can tell from seed-to-seed noise" in noisy
    low, high = across_seeds([0.2, -0.2])["interval"]
    assert f"{low:+.3g} to {high:+.3g}" in noisy
    assert "single seed" in seed_difference_verdict("a", "b", "reward", [1.0], [0.5])
    identical = seed_difference_verdict("grpo", "dapo", "accuracy", [0.43, 0.43], [0.43, 0.43], scale=100, unit=" points")
    assert identical.startswith("grpo vs dapo accuracy: identical on every seed") and "exactly 0 on all 2" in identical
    assert "noise" not in seed_difference_verdict("a", "b", "reward", [0.5, 0.2], [0.5, 0.2]).split(":")[1].split(",")[0]
    with pytest.raises(CotlabError):
        seed_difference_verdict("a", "b", "reward", [1.0, 2.0], [0.5])


def test_pooled_paired_counts_each_question_once_over_seeds():
    a = {0: [{"id": "x", "correct": True}, {"id": "y", "correct": True}, {"id": "z", "correct": False}],
         1: [{"id": "x", "correct": True}, {"id": "y", "correct": False}, {"id": "z", "correct": True}]}
    b = {0: [{"id": "x", "correct": False}, {"id": "y", "correct": True}, {"id": "z", "correct": True}],
         1: [{"id": "x", "correct": False}, {"id": "y", "correct": False}, {"id": "z", "correct": True}]}
    pooled = pooled_paired(a, b, "gspo", "dapo")
    # x: A 2 of 2, B 0 of 2 -> win; y: 1 vs 1 -> tie; z: 1 vs 2 -> loss.  Three questions, not six pairs.
    assert (pooled["wins"], pooled["losses"], pooled["ties"], pooled["n"], pooled["seeds"]) == (1, 1, 1, 3, 2)
    assert pooled["p_value"] == 1.0
    assert pooled["accuracy_a"] == pytest.approx(4 / 6) and pooled["difference"] == pytest.approx(4 / 6 - 3 / 6)
    with pytest.raises(CotlabError, match="same seeds"):
        pooled_paired(a, {0: b[0]}, "gspo", "dapo")
    with pytest.raises(CotlabError, match="same questions"):
        pooled_paired(a, {0: b[0], 1: b[1][:2]}, "gspo", "dapo")


def test_pooled_paired_is_not_fooled_by_the_same_questions_on_every_seed():
    # 6 questions A gets right and B wrong on each of 5 seeds: 30 pooled pairs would give p ~ 2e-9,
    # but there are only 6 independent questions: p = 2 / 2**6.
    a = {s: outcomes("111111") for s in range(5)}
    b = {s: outcomes("000000") for s in range(5)}
    pooled = pooled_paired(a, b, "a", "b")
    assert (pooled["wins"], pooled["losses"]) == (6, 0)
    assert pooled["p_value"] == pytest.approx(2 / 64)


def test_objective_figure_draws_each_seed_with_its_wilson_interval(tmp_path):
    from matplotlib.container import ErrorbarContainer

    history = [{"step": s, "reward": s / 4, "completions/mean_length": 30 - s} for s in range(1, 4)]
    counts = {"dapo": [(0, 10), (5, 10)], "gspo": [(4, 10)]}
    fig = objective_figure({"dapo": [history, history], "gspo": [history]}, ["reward", "completions/mean_length", "entropy"], counts,
                           tmp_path / "o.png")
    assert (tmp_path / "o.png").stat().st_size > 1000
    accuracy = fig.axes[-1]
    dots = [c for c in accuracy.containers if isinstance(c, ErrorbarContainer) and c.lines[0] is not None]
    spans = [tuple(seg[:, 1].round(3)) for seg in dots[0].lines[2][0].get_segments()]
    assert spans == [(0.0, 0.278), (0.237, 0.763)]  # seed 0 right on 0 of 10: Wilson 0-28%, not a zero-width bar
    assert "95% Wilson interval" in accuracy.get_ylabel() and "t interval over seeds" in accuracy.get_ylabel()


def test_objective_verdict_states_the_mde_ties_and_twins():
    a = {0: [{"id": f"q{i}", "correct": i < 12} for i in range(20)]}
    b = {0: [{"id": f"q{i}", "correct": i < 2} for i in range(20)]}
    better = pooled_paired(a, b, "grpo", "dapo")
    sentence = objective_verdict(better, twin=False)
    assert sentence.startswith("grpo beats dapo") and paired_mde_phrase(better) in sentence and "10 ties" in sentence
    same = objective_verdict(pooled_paired(a, a, "gspo", "dapo"), twin=True)
    assert same.startswith("identical updates by construction here") and "no difference we can tell" in same


# The starting point -------------------------------------------------------------------------------


class FakeRun:
    def __init__(self, adapter=None):
        self._adapter = adapter

    def adapter(self, stage):
        return self._adapter


def test_sft_start_prefers_the_runs_adapter_then_trains_or_reads_back_its_fallback(tmp_path, monkeypatch):
    """No shortcut on a bare final/: the fallback goes through train_sft, which reads back only a
    finished run of the same recipe and rows, and trains afresh when they changed."""
    from cotlab import training

    assert sft_start(FakeRun("/runs/sft/final"), "tiny-random", "rg:chain_sum", tmp_path / "sft", 1) == (
        "/runs/sft/final", "the run's SFT adapter (notebook 02)")
    adapter, said = sft_start(FakeRun(), "tiny-random", "rg:chain_sum", tmp_path / "sft", 1, n_train=8)
    assert adapter == str(tmp_path / "sft" / "final") and "trained here" in said
    with monkeypatch.context() as patched:
        patched.setattr(training, "build_sft_trainer", lambda *a, **k: pytest.fail("a finished fallback was trained again"))
        again, said = sft_start(FakeRun(), "tiny-random", "rg:chain_sum", tmp_path / "sft", 1, n_train=8)
    assert again == adapter and "earlier" in said
    sft_start(FakeRun(), "tiny-random", "rg:chain_sum", tmp_path / "sft", 1, n_train=8, data_seed=1)  # other rows
    assert (tmp_path / "sft.earlier-1" / "final" / "adapter_config.json").is_file()


# Chain forms --------------------------------------------------------------------------------------


def test_with_checks_doubles_the_chain_and_keeps_it_right_to_the_last_value():
    long = with_checks(CHAIN)
    assert long.splitlines()[:2] == ["15 - 43 = -28", "check: -28 + 43 = 15"]
    assert len(long.splitlines()) == 7 and check_steps(long) == []
    assert long.splitlines()[-1] == "so -103 - 72 = -175" and chain_is_right(long, "-175")  # ends on the answer, not a check
    assert with_checks("3 * 4 = 12").splitlines() == ["3 * 4 = 12", "check: 12 / 4 = 3", "so 3 * 4 = 12"]
    assert with_checks("1 + 2 + 3 = 6") == "1 + 2 + 3 = 6"  # three numbers: no single step to undo
    assert with_checks("1 / 3 = 0.5") == "1 / 3 = 0.5"  # not whole numbers: not checked


def test_chain_datasets_share_questions_and_answers_and_change_only_the_chain():
    rows = gold_rows()
    sets = chain_datasets(rows, list(CHAIN_FORMS), seed=0)
    assert check_matched(sets) == len(rows)
    for form, edited in sets.items():
        for row, gold, gold_row in zip(edited, rows, sets["gold"]):
            assert row["prompt"] == gold_row["prompt"]
            assert row["final_answer"] == gold["answer"] and row["source_id"] == gold["source_id"] and row["form"] == form
            assert row["completion"][0]["content"].endswith(f"<answer>{gold['answer']}</answer>")
    assert sets["gold"][0]["completion"][0]["content"] == think_completion(rows[0]["rationale"], rows[0]["answer"])
    assert all(check_steps(r["completion"][0]["content"]) for r in sets["wrong_numbers"])
    assert all(check_steps(r["completion"][0]["content"]) == [] for r in sets["long"])
    assert sets["answer_only"][0]["completion"][0]["content"].startswith("<think>\n\n</think>")
    # The controls wrong on purpose say so; every other form with a chain passes the whole-chain check.
    assert set(DELIBERATELY_WRONG) == {"wrong_numbers", "shuffled", "deleted"}
    for form, edited in sets.items():
        assert all(r["deliberately_wrong"] == (form in DELIBERATELY_WRONG) for r in edited)
        if form not in DELIBERATELY_WRONG and form != "answer_only":
            assert all(chain_is_right(r["completion"][0]["content"], r["final_answer"]) for r in edited), form
    assert not all(chain_is_right(r["completion"][0]["content"], r["final_answer"]) for r in sets["wrong_numbers"])
    assert changed_fraction(sets["short"], sets["gold"]) == 0.0  # bare calculations: the short form is the chain
    assert changed_fraction(sets["shuffled"], sets["gold"]) == 1.0
    assert chain_datasets(rows, ["wrong_numbers"], seed=0) == chain_datasets(rows, ["wrong_numbers"], seed=0)
    assert chain_datasets(rows, ["shuffled"], seed=0) != chain_datasets(rows, ["shuffled"], seed=1)


def test_a_row_no_form_can_edit_is_dropped_from_every_set():
    rows = gold_rows(3) + [{"source_id": "prose", "question": "Q?", "answer": "4", "rationale": "It is four."}]
    sets = chain_datasets(rows, ["gold", "wrong_numbers"])
    assert [r["source_id"] for r in sets["gold"]] == [r["source_id"] for r in sets["wrong_numbers"]] == ["q0", "q1", "q2"]
    with pytest.raises(CotlabError, match="unknown chain form"):
        chain_datasets(rows, ["gold", "reversed"])
    with pytest.raises(CotlabError, match="no gold row"):
        chain_datasets(rows[-1:], ["wrong_numbers"])


def test_check_matched_refuses_sets_with_different_questions():
    sets = chain_datasets(gold_rows(), ["gold", "shuffled"])
    sets["shuffled"] = sets["shuffled"][::-1]
    with pytest.raises(CotlabError, match="shuffled and gold"):
        check_matched(sets)


def outcomes(pattern: str) -> list[dict]:
    return [{"id": f"q{i}", "correct": c == "1"} for i, c in enumerate(pattern)]


GOLD = outcomes("1" * 30)
SAME = outcomes("1" * 29 + "0")
WORSE = outcomes("0" * 12 + "1" * 18)


def versus_gold(**runs) -> dict:
    return {form: compare_paired(rows, GOLD, a=form, b="gold") for form, rows in runs.items()}


def test_structure_verdict_follows_which_edit_costs_accuracy():
    agrees = structure_verdict(versus_gold(wrong_numbers=SAME, shuffled=WORSE, deleted=SAME))
    assert agrees.startswith("Broken structure cost accuracy beyond noise here (shuffled)")
    assert "absence of evidence" in agrees and "wrong numbers did not" not in agrees and "not tested" in agrees
    flipped = structure_verdict(versus_gold(wrong_numbers=WORSE, shuffled=SAME, deleted=SAME))
    assert flipped.startswith("Unlike *LLMs Can Easily Learn") and "not detected" in flipped
    both = structure_verdict(versus_gold(wrong_numbers=WORSE, shuffled=WORSE, deleted=WORSE))
    assert both.startswith("Both mattered here") and "shuffled and deleted" in both
    none = structure_verdict(versus_gold(wrong_numbers=SAME, shuffled=SAME))
    assert none.startswith("No edit's cost was detected at this sample size") and "absence of evidence" in none
    assert "needs a wrong_numbers run" in structure_verdict(versus_gold(shuffled=WORSE))


def test_structure_verdict_follows_holm_adjusted_p_values():
    # 6 vs 0 discordant questions: raw p = 0.031, Holm over three tests 0.094: no longer a cost.
    mild = outcomes("0" * 6 + "1" * 24)
    family = with_holm(versus_gold(wrong_numbers=SAME, shuffled=mild, deleted=SAME))
    assert family["shuffled"]["p_value"] < 0.05 < family["shuffled"]["p_holm"]
    held = structure_verdict(family)
    assert held.startswith("No edit's cost was detected") and "shuffled -20% (p = 0.031, Holm 0.094)" in held
    assert structure_verdict(versus_gold(wrong_numbers=SAME, shuffled=mild)).startswith("Broken structure cost")


def test_long_form_sentence_follows_the_paired_test():
    tokens, trained = {"gold": 30.0, "long": 61.0}, {"gold": 400, "long": 700}
    worse = long_form_sentence(tokens, trained, compare_paired(WORSE, GOLD, a="long", b="gold"))
    assert worse.startswith("Long vs gold chains: 61 vs 30 tokens per answer; long trained on 700 tokens")
    assert "long is worse than gold" in worse and "minimum detectable effect" in worse
    same = long_form_sentence(tokens, trained, compare_paired(SAME, GOLD, a="long", b="gold"))
    assert "long vs gold: no difference we can tell from noise" in same


def test_token_ratio_sentence_is_measured_from_train_tokens():
    assert token_ratio_sentence({"gold": 400, "long": 700}) == ("long trained on 700 tokens, gold on 400: "
                                                                 "1.75 times the tokens, at the same steps and rows")
    with pytest.raises(CotlabError, match="needs train_tokens of long"):
        token_ratio_sentence({"gold": 400})
    with pytest.raises(CotlabError, match="no tokens"):
        token_ratio_sentence({"gold": 0, "long": 5})
