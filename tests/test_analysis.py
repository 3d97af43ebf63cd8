"""Analysis functions on small fixtures whose right answers are known."""

import random

import pytest
import torch

from cotlab import CotlabError
from cotlab.budget import recipe_match
from cotlab.lessons.changes import (forgetting, forgetting_verdict, gold_answer_logprob, logprob_change_verdict,
                                    lora_delta_norms, norms_by, score_points, trained_task_control, training_points,
                                    update_comparison, update_size_sentence)
from cotlab.lessons.distillation import self_teaching_sentence, star_sentence
from cotlab.lessons.dpo import margin_sentence, squeezing_sentence
from cotlab.lessons.faithfulness import (accuracy_by_length, before_final_result, chain_effect_verdict, control_phrase,
                                         corrupt_step, cut_before_final_results, early_answering, faithfulness_probes,
                                         filler_chain, finish_steps, forced_answer_control, length_by_difficulty,
                                         length_verdict, model_answerer, own_chains, probe_chain_sets, probe_sentence,
                                         stated_result, stratified_length_verdicts, term_count, think_part, truncate_chain)
from cotlab.lessons.prompting import cot_scale_sentence, parameter_phrase, token_cost_sentence
from cotlab.lessons.scaling import majority_rows, sampling_vs_training_sentence, scaling_curve, scaling_sentence
from cotlab.logs import halves
from cotlab.stats import paper_claim_sentence
from cotlab.stats import compare_paired
from cotlab.data import Record

CHAIN = "12 + 7 = 19\n19 + 30 = 49\n49 - 5 = 44"
RECORD = Record(id="q", question="12 + 7 + 30 - 5 = ?", answer="44")


def last_number_answerer(questions, chains, mode="force"):
    """A perfectly faithful 'model': it answers whatever the chain's last number is."""
    import re

    return [(re.findall(r"-?\d+", c) or [None])[-1] for c in chains]


def constant_answerer(questions, chains, mode="force"):
    """A perfectly unfaithful 'model': it answers 44 whatever the chain says."""
    return ["44"] * len(chains)


def test_chain_edits():
    assert think_part("<think>\n a \n</think><answer>1</answer>") == "a" and think_part("no chain") is None
    assert truncate_chain(CHAIN, 1.0) == CHAIN and truncate_chain(CHAIN, 0.0) == ""
    assert truncate_chain(CHAIN, 0.5) == "12 + 7 = 19\n19 + 30"  # 8 of the 15 words
    corrupted = corrupt_step(CHAIN, random.Random(0), keep_rest=True)
    assert corrupted != CHAIN and corrupted.endswith("= 44")  # the final result is never the one changed
    cut = corrupt_step(CHAIN, random.Random(0))
    assert corrupted.startswith(cut) and cut not in (CHAIN, "") and cut[-1].isdigit()  # cut right after the mistake
    assert corrupt_step("no results here", random.Random(0)) is None
    # A 3-term chain cut before its final result still has its one intermediate result to corrupt.
    short = corrupt_step("1 - 5 = -4\n-4 - 2 =", random.Random(0), keep_rest=True)
    assert short is not None and short.startswith("1 - 5 = ") and short.endswith("\n-4 - 2 =") and "= -4\n" not in short
    assert corrupt_step("1 - 5 = -4", random.Random(0)) is None  # a whole one-step chain: its result is the answer
    assert filler_chain("a b c") == "... ... ..."
    with pytest.raises(CotlabError, match="fraction"):
        truncate_chain(CHAIN, 1.5)


def test_early_answering_curve_on_a_faithful_and_an_unfaithful_answerer():
    curve = early_answering(last_number_answerer, [RECORD], [CHAIN], fractions=(0.0, 0.5, 1.0))
    assert [p["accuracy"] for p in curve] == [0.0, 0.0, 1.0]
    assert curve[-1]["same_as_full"] == 1.0 and curve[0]["same_as_full"] == 0.0
    flat = early_answering(constant_answerer, [RECORD], [CHAIN], fractions=(0.0, 1.0))
    assert [p["accuracy"] for p in flat] == [1.0, 1.0]  # the answer never depended on the chain


def test_faithfulness_probes_separate_faithful_from_unfaithful():
    faithful = faithfulness_probes(last_number_answerer, [RECORD] * 4, [CHAIN] * 4)
    # The chain is cut right after the corrupted result, so a reader of the last number follows it.
    assert faithful["corrupted"]["n"] == 4 and faithful["original_accuracy"] == 1.0
    assert faithful["faithfulness"] == 1.0 and faithful["corrupted"]["accuracy"] == 0.0
    assert faithful["paraphrased"]["unchanged"] == 1.0 and faithful["filler"]["accuracy"] == 0.0
    assert faithful["corrupted"]["changed"] == 4 and faithful["paraphrased"]["n"] == 4
    unfaithful = faithfulness_probes(constant_answerer, [RECORD] * 4, [CHAIN] * 4)
    assert unfaithful["faithfulness"] == 0.0 and unfaithful["filler"]["accuracy"] == 1.0

    def half_faithful(questions, chains, mode="force"):
        """Carries on from a second-step result (answer = it - 5); ignores a first-step one."""
        import re

        answers = []
        for chain in chains:
            results = re.findall(r"=\s*(-?\d+)", chain)
            answers.append(str(int(results[1]) - 5) if mode == "continue" and len(results) >= 2 else "44")
        return answers

    mixed = faithfulness_probes(half_faithful, [RECORD] * 40, [CHAIN] * 40, seed=1)
    assert 0 < mixed["faithfulness"] < 1 and mixed["corrupted"]["follows"] == mixed["faithfulness"]


def test_accuracy_by_length_bins():
    rows = [{"completion_tokens": t, "correct": t < 30} for t in (10, 20, 40, 50)]
    assert accuracy_by_length(rows, 2) == [{"low": 10, "high": 20, "n": 2, "correct": 2, "accuracy": 1.0},
                                           {"low": 40, "high": 50, "n": 2, "correct": 0, "accuracy": 0.0}]


def test_scaling_curve_known_values():
    samples = [{"prediction": "1", "correct": True, "tokens": 10}, {"prediction": "2", "correct": False, "tokens": 20},
               {"prediction": "2", "correct": False, "tokens": 30}]
    curve = scaling_curve([{"id": "q", "samples": samples}], ks=[1, 3])
    assert curve[0]["pass"] == pytest.approx(1 / 3) and curve[1]["pass"] == 1.0
    assert curve[1]["maj"] == 0.0  # two of three say "2", which is wrong
    assert curve[0]["tokens"] == pytest.approx(20) and curve[1]["tokens"] == pytest.approx(60)
    # First-k counts: the first sample is right (k=1), the majority of all three is not.
    assert (curve[0]["pass_count"], curve[0]["maj_count"], curve[1]["pass_count"], curve[1]["maj_count"]) == (1, 1, 1, 0)
    with pytest.raises(CotlabError, match="needs at least 4 samples"):
        scaling_curve([{"id": "q", "samples": samples}], ks=[4])


def test_lora_delta_norms_on_a_known_adapter(tmp_path):
    import json

    from safetensors.torch import save_file

    a = torch.zeros(2, 4); a[0, 0] = 1.0
    b = torch.zeros(4, 2); b[1, 0] = 3.0
    save_file({"base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight": a,
               "base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight": b}, str(tmp_path / "adapter_model.safetensors"))
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 2, "lora_alpha": 4}))
    base = {"model.layers.1.self_attn.q_proj.weight": torch.full((4, 4), 0.5)}  # norm 2
    rows = lora_delta_norms(tmp_path, base)
    assert rows == [{"layer": 1, "module": "q_proj", "norm": pytest.approx(6.0), "relative": pytest.approx(3.0)}]
    assert norms_by(rows, "module") == {"q_proj": pytest.approx(6.0)}
    with pytest.raises(CotlabError, match="not a PEFT LoRA adapter"):
        lora_delta_norms(tmp_path / "missing")


def test_forgetting_is_relative_to_base():
    table = forgetting({"base": {"t": 0.5}, "sft": {"t": 0.3}})
    assert table == {"sft": {"t": pytest.approx(-0.2)}}
    with pytest.raises(CotlabError, match="no 'base' stage"):
        forgetting({"sft": {"t": 0.3}})


def test_model_answerer_forces_an_answer_with_the_tiny_model(tiny):
    model, tokenizer = tiny
    answer = model_answerer(model, tokenizer, max_new_tokens=4, continue_tokens=4, step_tokens=4)
    for mode in ("force", "finish_step", "continue"):
        assert len(answer(["1 + 1 = ?", "2 + 2 = ?"], ["1 + 1 =", ""], mode)) == 2  # random weights: one answer each
    with pytest.raises(CotlabError, match="answer mode"):
        answer(["1 + 1 = ?"], [""], "guess")


# Verdict sentences: each on synthetic numbers, with the branch where the verdict flips ---------------


def _curve(none_correct, full_correct):
    return [{"fraction": 0.0, "n": len(none_correct), "correct": none_correct},
            {"fraction": 1.0, "n": len(full_correct), "correct": full_correct}]


PASSED = {"passed": True, "n": 12, "recovered": 12, "min_recovery": 0.8, "what": "read back"}
FAILED = {**PASSED, "passed": False, "recovered": 0}


def test_chain_effect_verdict_needs_a_paired_test_and_a_passed_control():
    carries = chain_effect_verdict("sft", _curve([False] * 12, [True] * 12), PASSED)
    assert "the chain carries the answer" in carries and "minimum detectable effect" in carries
    assert "positive control passed" in carries
    # 3 fixed, 0 broken: a real difference in the same direction, but McNemar p = 0.25.
    few = chain_effect_verdict("sft", _curve([False] * 3 + [True] * 9, [True] * 12), PASSED)
    assert "no evidence that the answer comes from the chain" in few and "p = 0.25" in few
    assert "worse with the chain" in chain_effect_verdict("sft", _curve([True] * 12, [False] * 12), PASSED)
    # The same numbers with the control failed: no verdict at all.
    blind = chain_effect_verdict("sft", _curve([False] * 12, [True] * 12), FAILED)
    assert blind.startswith("sft: no verdict, the instrument could not see the effect")
    assert "carries" not in blind and "read back the answer 0 of 12" in blind and "failed" in blind


def test_forced_answer_control_reads_back_the_stated_answer():
    assert stated_result(CHAIN) == 44 and stated_result("no steps") is None
    works = forced_answer_control(last_number_answerer, [RECORD] * 3, [CHAIN] * 3)
    assert works["passed"] and works["recovered"] == 3 and works["n"] == 3
    # A read-out that ignores the chain cannot read back a chain that states 19 rather than 44.
    blind = forced_answer_control(constant_answerer, [RECORD] * 3, ["12 + 7 = 19"] * 3)
    assert not blind["passed"] and blind["recovered"] == 0
    assert control_phrase(blind) == ("the forced answer read back the answer 0 of 3 whole chains state "
                                     "(positive control failed, needs 80%)")
    assert not forced_answer_control(last_number_answerer, [RECORD], ["no steps"])["passed"]  # nothing to read back
    seen = []
    forced_answer_control(lambda q, c, mode="force": seen.append(mode) or ["44"] * len(c), [RECORD], [CHAIN])
    assert seen == ["force"]  # the whole chain is read with the answer forced right after it


def test_finish_steps_ends_the_line_it_was_cut_in():
    class Sample:
        def __init__(self, text):
            self.text = text

    outputs = [[Sample(" -6\n</think>")], [Sample(" 7 = 9</think><answer>9")], [Sample("1 + 1 = 2")]]
    assert finish_steps(["-4 - 2 =", "2 +", ""], outputs) == ["-4 - 2 = -6", "2 + 7 = 9", ""]


def test_before_final_result_cuts_the_stated_answer():
    chain = "15 - 43 = -28\n-28 - 75 = -103\n-103 - 72 = -175"
    assert before_final_result(chain) == "15 - 43 = -28\n-28 - 75 = -103\n-103 - 72 ="
    assert before_final_result("3 + 4 = 7 + 1 = 8\nSo the answer is 8.") == "3 + 4 = 7 + 1 ="  # chained step, restated answer
    assert before_final_result("no arithmetic here") is None
    pairs = [("r1", chain), ("r2", "just words"), ("r3", "2 * 3 = 6")]
    assert cut_before_final_results(pairs) == [("r1", before_final_result(chain)), ("r3", "2 * 3 =")]


def test_length_verdict_uses_the_difference_interval():
    bins = [{"low": 5, "high": 9, "n": 40, "correct": 36}, {"low": 30, "high": 60, "n": 40, "correct": 4}]
    assert "is lower than" in length_verdict("base", bins) and "minimum detectable effect" in length_verdict("base", bins)
    even = [{"low": 5, "high": 9, "n": 6, "correct": 3}, {"low": 30, "high": 60, "n": 6, "correct": 3}]
    assert "no difference we can tell from noise" in length_verdict("base", even)
    assert "too few answers" in length_verdict("base", bins[:1])


def test_length_is_read_within_each_term_count():
    three = Record(id="a", question="1 + 2 + 3 =", answer="6", metadata={"num_terms": 3})
    four = Record(id="b", question="1 + 2 + 3 + 4 =", answer="10", rationale="1 + 2 = 3\n3 + 3 = 6\n6 + 4 = 10")
    assert term_count(three) == 3 and term_count(four) == 4 and term_count(Record(id="c", question="?", answer="1")) is None
    # Pooled, longer looks worse (short easy questions right, long hard ones wrong); within a term count it does not.
    rows = ([{"id": "a", "completion_tokens": t, "correct": True} for t in (10, 12, 14, 16)]
            + [{"id": "b", "completion_tokens": t, "correct": False} for t in (30, 32, 34, 36)])
    pooled = length_verdict("sft", accuracy_by_length(rows, 2))
    assert "is lower than" in pooled
    strata = length_by_difficulty(rows, {"a": three, "b": four}, 2)
    assert list(strata) == [3, 4] and [b["n"] for b in strata[3]] == [2, 2]
    sentences = stratified_length_verdicts("sft", strata)
    assert sentences[0].startswith("sft, 3 terms: longest answers") and sentences[1].startswith("sft, 4 terms:")
    assert all("no difference we can tell from noise" in s for s in sentences)


def test_probe_sentence_prints_changed_and_probed_counts():
    probes = faithfulness_probes(last_number_answerer, [RECORD] * 4, [CHAIN] * 4)
    sentence = probe_sentence("sft (gold chains)", probes, PASSED)
    assert "changed after a corrupted step in 4 of 4 probed chains" in sentence
    assert "unchanged in 4 of the 4 chains it changed" in sentence
    flat = faithfulness_probes(constant_answerer, [RECORD] * 4, ["no steps here"] * 4)
    assert flat["faithfulness"] is None and flat["corrupted"]["accuracy"] is None  # not measured, not 0
    assert flat["paraphrased"]["accuracy"] is None
    sentence = probe_sentence("base", flat, PASSED)
    assert "no chain had an intermediate result" in sentence and "changed no chain" in sentence
    blind = probe_sentence("base", probes, FAILED)
    assert blind.startswith("base: probes not read, the instrument could not see the effect") and "corrupted" not in blind


def test_majority_rows_and_the_sampling_vs_training_sentence():
    right, wrong = {"prediction": "1", "correct": True, "tokens": 5}, {"prediction": "2", "correct": False, "tokens": 5}
    rows = [{"id": "a", "samples": [wrong, right, right]}, {"id": "b", "samples": [right, wrong, wrong]}]
    assert majority_rows(rows, 1) == [{"id": "a", "correct": False}, {"id": "b", "correct": True}]
    assert majority_rows(rows, 3) == [{"id": "a", "correct": True}, {"id": "b", "correct": False}]
    tuned = [{"id": i, "correct": i >= 10} for i in range(20)]
    base_vote = [{"id": i, "correct": True} for i in range(20)]
    assert sampling_vs_training_sentence(compare_paired(tuned, base_vote)).startswith("Sampling more beat training")
    assert sampling_vs_training_sentence(compare_paired(base_vote, tuned)).startswith("Sampling more did not make up")
    assert sampling_vs_training_sentence(compare_paired(tuned[8:], tuned[8:])).startswith("Neither")
    assert "minimum detectable effect" in sampling_vs_training_sentence(compare_paired(tuned, base_vote))
    assert sampling_vs_training_sentence(None).startswith("Not measured")
    curve = scaling_curve(rows, ks=[1, 3])
    sentence = scaling_sentence("sft", curve)
    assert "majority of 1 50% (95% CI" in sentence and "any of 3 right (a perfect verifier) 100%" in sentence


def _metrics(**recipe):
    return {"recipe": {"adapter": "sft/final", "max_steps": 10, "learning_rate": 2e-4, "lora_r": 16, "beta": 0.1} | recipe}


def test_update_comparison_is_descriptive_and_lists_what_differs():
    dpo = _metrics(beta=0.1, per_device_train_batch_size=4)
    grpo = _metrics(beta=0.02, per_device_train_batch_size=8, num_generations=4)
    assert recipe_match(dpo, grpo) == {"matched": True, "differences": {}}  # start, steps, lr and rank agree...
    sentence = update_comparison("grpo", "dpo", {"grpo": 0.01, "dpo": 0.02}, {"grpo": grpo, "dpo": dpo})
    # ...but examples per step and beta do not, and the data and objective differ by design
    assert "0.50x" in sentence and "same adapter, max_steps, learning_rate, lora_r;" in sentence
    assert "per_device_train_batch_size 8 vs 4" in sentence and "beta 0.02 vs 0.1" in sentence
    assert "num_generations 4 vs None" in sentence and "training data and objective (by design)" in sentence
    assert "no conclusion about which method" in sentence and "smaller" not in sentence and "matched" not in sentence
    sft = _metrics(adapter=None, max_steps=45, learning_rate=1e-3)
    match = recipe_match(sft, grpo)
    assert not match["matched"] and set(match["differences"]) == {"adapter", "max_steps", "learning_rate"}
    sentence = update_comparison("sft", "grpo", {"sft": 0.5, "grpo": 0.01}, {"sft": sft, "grpo": grpo})
    assert "no conclusion" in sentence and "max_steps 45 vs 10" in sentence and "same lora_r" in sentence


def test_logprob_change_verdict_flips_with_the_sign_test():
    before = [-1.0] * 12
    assert "forgetting" in logprob_change_verdict("sft", before, [-2.0] * 12)
    assert "minimum detectable effect" in logprob_change_verdict("sft", before, [-2.0] * 12)
    assert "more likely" in logprob_change_verdict("sft", before, [-0.5] * 12)
    mixed = logprob_change_verdict("sft", before, [-2.0, -0.5] * 6)
    assert "no change we can tell from noise" in mixed and "fell on 6 and rose on 6" in mixed
    with pytest.raises(CotlabError, match="same questions"):
        logprob_change_verdict("sft", before, [-1.0])


def test_forgetting_verdict_only_when_the_trained_task_gain_shows():
    before = [-1.0] * 12
    gained = trained_task_control(before, [-0.5] * 12)
    assert gained["passed"] and gained["rose"] == 12 and gained["p_value"] < 0.001
    assert forgetting_verdict("sft on syllogism", before, [-2.0] * 12, gained).startswith("sft on syllogism: forgetting")
    flat = trained_task_control(before, [-2.0, -0.5] * 6)
    assert not flat["passed"] and (flat["rose"], flat["fell"]) == (6, 6)
    assert not trained_task_control(before, [-2.0] * 12)["passed"]  # significant, but a fall on the trained task
    blind = forgetting_verdict("sft on syllogism", before, [-2.0] * 12, flat)
    assert blind.startswith("sft on syllogism: no verdict, the instrument could not see the effect")
    assert "forgetting" not in blind.split("effect")[1] and "positive control failed" in blind


def test_lesson_sentences_follow_the_numbers():
    assert parameter_phrase(134_515_008) == "135M" and parameter_phrase(494_032_768) == "494M"
    assert parameter_phrase(1_540_000_000) == "1.5B"
    won = compare_paired([{"id": i, "correct": True} for i in range(12)], [{"id": i, "correct": False} for i in range(12)],
                         a="few_shot_cot", b="direct")
    tie = compare_paired([{"id": 0, "correct": True}], [{"id": 0, "correct": False}], a="zero_shot_cot", b="direct")
    assert "few_shot_cot (p = 0.00049, Holm 0.00098) beat direct answering beyond noise (Holm-adjusted over 2 comparisons), unlike" \
        in cot_scale_sentence(134_515_008, [won, tie])
    none = cot_scale_sentence(134_515_008, [tie])
    assert "no chain-of-thought prompt beat direct" in none and "135M" in none
    assert "absence of evidence, not a confirmation" in none and "in line with" not in none
    # raw p = 0.039 alone clears 0.05; over a family of three it does not (Holm 0.12)
    mild = compare_paired([{"id": i, "correct": i < 10} for i in range(12)], [{"id": i, "correct": i >= 10} for i in range(12)],
                          a="zero_shot_cot", b="direct")
    assert "zero_shot_cot (p = 0.039" in cot_scale_sentence(134_515_008, [mild])
    assert "no chain-of-thought prompt beat" in cot_scale_sentence(134_515_008, [mild, tie, tie])
    assert "nothing to rationalise" in star_sentence(0, 0)
    assert "none of the 5" in star_sentence(0, 5) and "with the answer given" in star_sentence(0, 5)
    assert star_sentence(2, 5).startswith("STaR rationalised 2 of 5 unsolved questions (40%")
    assert "this run agrees" in paper_claim_sentence(won, "P", "a gain")
    assert "does not reproduce it" in paper_claim_sentence(tie, "P", "a gain")
    lost = compare_paired([{"id": i, "correct": False} for i in range(12)], [{"id": i, "correct": True} for i in range(12)])
    assert "points the other way" in paper_claim_sentence(lost, "P", "a gain")


def test_dpo_sentences_read_the_log_history():
    squeezed = [{"logps/chosen": -10 - s, "logps/rejected": -10 - 2 * s, "rewards/margins": 0.1 * s, "step": s + 1} for s in range(4)]
    assert halves(squeezed, "logps/chosen") == (pytest.approx(-10.5), pytest.approx(-12.5))
    assert "squeezing effect" in squeezing_sentence(squeezed) and "descriptive, no test" in squeezing_sentence(squeezed)
    apart = [{"logps/chosen": -10 + s, "logps/rejected": -10 - s, "step": s + 1} for s in range(4)]
    assert "moved apart, no sign of squeezing" in squeezing_sentence(apart) and "no test" in squeezing_sentence(apart)
    assert "too few times" in squeezing_sentence(squeezed[:1]) and "no test" not in squeezing_sentence(squeezed[:1])
    widened = margin_sentence(squeezed, pairs=4, gold_chosen=0)
    assert "margin between its own right and wrong chains widened" in widened and "descriptive, no test" in widened
    gold = margin_sentence(squeezed, pairs=4, gold_chosen=3)
    assert "3 of the 4 chosen chains are gold demonstrations" in gold and "its own right" not in gold
    assert "did not widen" in margin_sentence(list(reversed(squeezed)), pairs=4, gold_chosen=0)


def test_training_points_lists_checkpoints_in_step_order(tmp_path):
    for step in (10, 2, 5):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "adapter_config.json").write_text("{}")
    (tmp_path / "checkpoint-7").mkdir()  # no adapter in it: skipped
    points = training_points(tmp_path, str(tmp_path / "final"), 12)
    assert [(label, step) for label, step, _ in points] == [("base", 0), ("step 2", 2), ("step 5", 5), ("step 10", 10), ("final", 12)]
    assert points[0][2] is None and points[1][2] == str(tmp_path / "checkpoint-2")
    assert [p[1] for p in training_points(tmp_path, str(tmp_path / "final"), 10)] == [0, 2, 5, 10]  # final = last checkpoint


class PrefersTokens(torch.nn.Module):
    """Wraps a model and adds a large bias to some tokens' logits: a model made to prefer them."""

    def __init__(self, inner, token_ids):
        super().__init__()
        self.inner, self.token_ids = inner, token_ids

    def forward(self, input_ids, attention_mask=None):
        from types import SimpleNamespace

        logits = self.inner(input_ids=input_ids, attention_mask=attention_mask).logits.clone()
        logits[..., self.token_ids] += 30.0
        return SimpleNamespace(logits=logits)


def test_gold_answer_logprob_on_the_tiny_model(tiny):
    model, tokenizer = tiny
    records = [RECORD, Record(id="r", question="3 + 4 = ?", answer="7"), Record(id="s", question="Is it?", answer="Yes")]
    scores = gold_answer_logprob(model, tokenizer, records, batch_size=3)
    assert len(scores) == 3 and all(s < 0 for s in scores)
    # Right padding must not change any score: one at a time gives the same numbers.
    assert gold_answer_logprob(model, tokenizer, records, batch_size=1) == pytest.approx(scores, abs=1e-4)
    gold_tokens = tokenizer("7", add_special_tokens=False).input_ids
    preferring = PrefersTokens(model, gold_tokens)
    boosted = gold_answer_logprob(preferring, tokenizer, records, batch_size=3)
    assert boosted[1] > -0.01 and boosted[1] > scores[1]  # its gold is now near-certain
    assert boosted[0] < scores[0] + 1e-6  # another gold ('44') got no more likely
    with pytest.raises(CotlabError, match="at least one record"):
        gold_answer_logprob(model, tokenizer, [])


def test_score_points_scores_the_base_model(tiny):
    scored = score_points("tiny-random", [("base", 0, None)], {"in": [RECORD], "other": [RECORD, RECORD]})
    assert scored[0]["label"] == "base" and len(scored[0]["scores"]["other"]) == 2
    assert scored[0]["mean"]["in"] == pytest.approx(scored[0]["scores"]["other"][0], abs=1e-4)


def test_self_teaching_sentence_claims_a_poor_teacher_only_from_the_interval():
    assert "poor teacher of itself" in self_teaching_sentence(2, 32) and "notebook 02" not in self_teaching_sentence(2, 32)
    assert "poor teacher" not in self_teaching_sentence(2, 4)  # 2 of 4: the interval reaches past a half
    assert self_teaching_sentence(2, 4).startswith("Self-distillation gave a verified chain for 2 of 4 questions (50%")


def test_probe_chain_sets_on_gold_and_own_chains():
    rows = [{"id": "q", "correct": True, "completion": f"<think>{CHAIN}</think><answer>44</answer>"},
            {"id": "q", "correct": False, "completion": "<think>x</think>"}]
    own = own_chains(rows, {"q": RECORD}, limit=5)
    assert own == [(RECORD, CHAIN)]
    results = probe_chain_sets(last_number_answerer, {"sft (gold chains)": [(RECORD, CHAIN)] * 3, "sft (own chains)": own},
                               fractions=(0.0, 1.0))
    assert results["skipped"] == {"sft (own chains)": 1}
    gold = results["sft (gold chains)"]
    assert gold["control"]["passed"] and gold["control"]["recovered"] == 3  # read on the whole chains
    assert gold["probes"]["corrupted"]["changed"] == 3
    # The curve reads the chains cut before their final result: a last-number reader answers 5, never 44.
    assert [p["accuracy"] for p in gold["curve"]] == [0.0, 0.0]


def test_update_size_sentence_describes_or_says_not_measured():
    described = update_size_sentence({"sft": 0.10234, "grpo": 0.0082})
    assert described.startswith("Relative update size ||ΔW||/||W||: sft 0.1023, grpo 0.0082") and "no interval" in described
    assert update_size_sentence({}).startswith("Relative update size: not measured")


def test_token_cost_sentence_sets_each_style_against_direct():
    assert token_cost_sentence("chain_sum", {"direct": 10.0, "zero_shot_cot": 25.0}) == (
        "[chain_sum] mean completion tokens: direct 10, zero_shot_cot 25 (2.5x direct)")
    assert "x direct" not in token_cost_sentence("t", {"zero_shot_cot": 25.0})
