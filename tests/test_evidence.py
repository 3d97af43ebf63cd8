"""cotlab.evidence and cotlab.controls: a run's numbers and sentences come from its evaluations on disk."""

import pytest

from cotlab import CotlabError
from cotlab.controls import answer_only_rows
from cotlab.evaluate import EvalResult, write_eval
from cotlab.evidence import (across_runs, across_runs_phrase, answer_changes_sentence, attribution_sentence, carry_over_sentence,
                             error_bars, family_comparisons, family_verdicts, run_evidence, short_run_verdict, short_runs_against,
                             stage_lines, training_budget, verdicts)
from cotlab.layout import Run
from cotlab.prompts import sft_example
from cotlab.stats import compare_paired, eval_set_hash, mcnemar_exact, wilson_interval
from cotlab.verify import format_ok


def rows_from(pattern: str, prefix: str = "q") -> list[dict]:
    """'1100' -> four questions, the first two right."""
    return [{"id": f"{prefix}{i}", "correct": c == "1", "completion_tokens": 10 + i} for i, c in enumerate(pattern)]


def write_stage(run: Run, stage: str, pattern: str, ood: bool = False, prefix: str = "q"):
    rows = rows_from(pattern, prefix)
    write_eval(run.evaluation_dir(stage, ood), EvalResult(rows, {"accuracy": sum(r["correct"] for r in rows) / len(rows), "dtype": "float32"}))


def test_answer_only_rows_keep_prompts_and_answers_and_drop_the_chain():
    rows = [sft_example("What is 2 + 3 + 4?", "2 + 3 = 5\n5 + 4 = 9", "9", source_id="a"),
            sft_example("What is 7 - 1?", "7 - 1 = 6", "6", source_id="b")]
    control = answer_only_rows(rows)
    assert [r["prompt"] for r in control] == [r["prompt"] for r in rows]
    assert [r["source_id"] for r in control] == ["a", "b"]
    assert control[0]["completion"] == [{"role": "assistant", "content": "<think>\n</think>\n<answer>9</answer>"}]
    assert all(format_ok(r["completion"][0]["content"]) for r in control)  # the evaluation's format check still passes
    assert rows[0]["completion"][0]["content"].startswith("<think>\n2 + 3")  # the CoT rows are not modified
    with pytest.raises(CotlabError, match="closed <answer> tag"):
        answer_only_rows([{"prompt": [], "completion": [{"role": "assistant", "content": "no answer here"}]}])
    with pytest.raises(CotlabError, match="prompt/completion"):
        answer_only_rows([{"messages": []}])


def write_sft_stages(run: Run) -> None:
    """base, sft and its answer-only control on ten questions; sft and base on two out of distribution."""
    write_stage(run, "base", "0000000000")
    write_stage(run, "sft", "1111111100")
    write_stage(run, "sft_answer_only", "1100000000")
    write_stage(run, "sft", "10", ood=True, prefix="o")
    write_stage(run, "base", "00", ood=True, prefix="o")


def test_run_evidence_is_computed_from_the_evaluations_on_disk(tmp_path):
    run = Run(tmp_path)
    write_sft_stages(run)
    write_stage(run, "grpo", "1111111000")
    evidence = run_evidence(tmp_path)

    assert evidence["accuracy"] == {"base": 0.0, "sft_answer_only": 0.2, "sft": 0.8, "grpo": 0.7}
    assert evidence["interval"]["sft"] == list(wilson_interval(8, 10))
    assert evidence["interval"]["base"][0] == 0.0 and evidence["interval"]["base"][1] > 0.2  # not zero-width at 0/n
    assert evidence["n_eval"] == 10 and evidence["eval_set"] == eval_set_hash([f"q{i}" for i in range(10)])
    sft_vs_base = evidence["paired"]["sft_vs_base"]
    assert (sft_vs_base["wins"], sft_vs_base["losses"]) == (8, 0) and sft_vs_base["p_value"] == mcnemar_exact(8, 0)
    assert evidence["paired"]["sft_vs_sft_answer_only"]["wins"] == 6
    assert evidence["paired"]["grpo_vs_sft"]["losses"] == 1 and "dpo_vs_sft" not in evidence["paired"]  # no dpo evaluation
    assert evidence["accuracy_ood"] == {"base": 0.0, "sft": 0.5} and evidence["n_eval_ood"] == 2
    assert evidence["eval_set_ood"] != evidence["eval_set"] and set(evidence["paired_ood"]) == {"sft_vs_base"}
    assert evidence["mean_completion_tokens"]["sft"] == pytest.approx(14.5)
    assert evidence["dtype"] == {"base": "float32", "sft_answer_only": "float32", "sft": "float32", "grpo": "float32"}
    # six pairs over both distributions are one family: the smallest p (8 vs 0) is multiplied by 6
    assert sft_vs_base["family_size"] == 6 and sft_vs_base["p_holm"] == pytest.approx(6 * mcnemar_exact(8, 0))
    assert evidence["paired"]["sft_vs_sft_answer_only"]["p_holm"] == pytest.approx(4 * mcnemar_exact(6, 0))


def test_a_pair_on_different_questions_gets_no_paired_test(tmp_path):
    run = Run(tmp_path)
    write_stage(run, "base", "0000")
    write_stage(run, "sft", "1111", prefix="other")
    evidence = run_evidence(tmp_path)
    assert evidence["paired"] == {} and evidence["n_eval"] == 8
    empty = run_evidence(tmp_path / "empty")
    assert empty["accuracy"] == {} and empty["n_eval"] is None and empty["eval_set"] is None


def test_error_bars_reach_the_wilson_interval_and_survive_zero():
    below, above = error_bars([(0, 10), (5, 10)])
    assert below[0] == 0.0 and above[0] == pytest.approx(wilson_interval(0, 10)[1])
    assert 0.5 - below[1] == pytest.approx(wilson_interval(5, 10)[0]) and above[1] == pytest.approx(below[1])


def test_attribution_names_a_cause_only_when_its_test_clears_alpha():
    strong, none, reverse = (compare_paired(rows_from(a), rows_from(b), "x", "y") for a, b in
                             (("1" * 12 + "0" * 8, "0" * 20), ("10" * 10, "01" * 10), ("0" * 20, "1" * 12 + "0" * 8)))
    assert attribution_sentence(strong, none).startswith("The chain of thought itself helps")
    assert "format alone also beats" in attribution_sentence(strong, strong)
    assert attribution_sentence(none, strong).startswith("The answer format alone explains")
    assert attribution_sentence(reverse, none).startswith("The chain of thought costs accuracy")
    assert attribution_sentence(none, none).startswith("These questions cannot tell")


def test_sentences_carry_intervals_and_verdicts():
    rows = {"base": rows_from("0000000000"), "sft": rows_from("1111111100")}
    lines = stage_lines(rows, {"sft": rows_from("10", "o")})
    assert lines[0] == "base: 0% (95% CI 0–28%, n=10)"
    assert lines[1].startswith("sft: 80% (95% CI") and "out of distribution 50%" in lines[1]
    assert verdicts(rows) == ["sft beats base: 8 questions fixed, 0 broken, exact McNemar p = 0.0078; minimum detectable effect 74 "
                              "points (80% power, α = 0.05, n=10, paired, exact McNemar)"]  # a family of one, beside what it could see
    assert verdicts(rows, label="ID: ")[0].startswith("ID: sft beats base")
    runs = {"a": {"accuracy": 0.5}, "b": {"accuracy": 0.45}}
    sentence = short_run_verdict("a", "b", runs, 20)
    assert "a 50% (n=20) vs b 45% (n=20)" in sentence and "no difference" in sentence and sentence.endswith("conservative)")


def test_answer_changes_are_described_without_a_conclusion():
    sft = {"steps": 45, "recipe": {"learning_rate": 1e-3, "lora_r": 16, "adapter": None}}
    grpo = {"steps": 10, "recipe": {"learning_rate": 2e-4, "lora_r": 16, "adapter": "/x/sft/final"}}
    assert training_budget(sft) == "45 steps at learning rate 0.001 from the base model (LoRA r=16)"
    assert training_budget(None) == "an unrecorded budget"
    assert training_budget({**sft, "steps": 1}).startswith("1 step at")
    sentence = answer_changes_sentence({"fixed": 9, "broken": 1}, {"fixed": 2, "broken": 2}, sft, grpo)
    assert sentence.startswith("SFT changed 10 answers relative to the base model (9 fixed, 1 broken); grpo changed 4 relative to sft")
    assert "no conclusion" in sentence and "10 steps at learning rate 0.0002 from the SFT adapter" in sentence
    assert "LoRA" in sentence and "fine-tuned all weights" in sentence


def test_across_runs_gives_a_t_interval_per_stage():
    summaries = [{"accuracy": {"base": 0.1, "sft": 0.4}}, {"accuracy": {"base": 0.1, "sft": 0.5}},
                 {"accuracy": {"sft": 0.6}}]
    spread = across_runs(summaries)
    assert list(spread) == ["base", "sft"]
    assert spread["sft"]["n_runs"] == 3 and spread["sft"]["mean"] == pytest.approx(0.5)
    low, high = spread["sft"]["interval"]
    assert low < 0.4 and high > 0.6  # t with 2 df is wide: 0.5 ± 4.30 · 0.1/√3
    assert high - 0.5 == pytest.approx(4.302653 * 0.1 / 3 ** 0.5, rel=1e-4)
    assert across_runs_phrase("sft", spread["sft"]).startswith("sft: mean 50% over 3 runs (95% t interval of the mean")
    assert spread["base"]["interval"] == [0.1, 0.1]
    assert "single run" in across_runs_phrase("x", across_runs([{"accuracy": {"x": 0.3}}])["x"])


def test_family_comparisons_holm_adjust_over_both_distributions():
    in_dist = {"base": rows_from("0" * 10), "sft": rows_from("1" * 6 + "0" * 4), "sft_answer_only": rows_from("1" * 6 + "0" * 4)}
    out = {"base": rows_from("0" * 6, "o"), "sft": rows_from("1" * 6, "o")}
    family = family_comparisons({"in distribution": in_dist, "out of distribution": out})
    raw = family["in distribution"]["sft_vs_base"]["p_value"]
    assert raw == mcnemar_exact(6, 0) < 0.05
    assert family["out of distribution"]["sft_vs_base"]["family_size"] == 4  # three pairs in, one out
    assert family["in distribution"]["sft_vs_base"]["p_holm"] == pytest.approx(min(1, 4 * raw))
    lines = family_verdicts(family)
    assert len(lines) == 4 and lines[0].startswith("in distribution: sft vs base: no difference")  # 4 · 0.031 > 0.05
    assert "Holm-adjusted p = 0.12 over 4 tests" in lines[0]
    # the attribution sentence follows the adjusted p too: raw 0.031 alone would name the format
    chain, answer_format = family["in distribution"]["sft_vs_sft_answer_only"], family["in distribution"]["sft_answer_only_vs_base"]
    assert attribution_sentence(chain, answer_format).startswith("These questions cannot tell")
    assert attribution_sentence(chain, {**answer_format, "p_holm": 0.01, "family_size": 4}).startswith("The answer format alone explains")
    single = verdicts({"base": rows_from("0" * 10), "sft": rows_from("1" * 6 + "0" * 4), "grpo": rows_from("1" * 6 + "0" * 4)})
    assert all("Holm-adjusted p" in line for line in single)


def test_carry_over_is_the_paired_gain_out_of_distribution():
    gain = compare_paired(rows_from("1" * 8 + "00", "o"), rows_from("0" * 10, "o"), "sft", "base")
    assert carry_over_sentence(gain).startswith("Yes: out of distribution SFT still beats the base model")
    loss = compare_paired(rows_from("0" * 10, "o"), rows_from("1" * 8 + "00", "o"), "sft", "base")
    assert carry_over_sentence(loss).startswith("No, it reverses")
    unclear = carry_over_sentence(compare_paired(rows_from("1100", "o"), rows_from("0000", "o"), "sft", "base"))
    assert unclear.startswith("Not detected") and "absence of evidence" in unclear
    assert carry_over_sentence({**gain, "p_holm": 0.2, "family_size": 3}).startswith("Not detected")


def test_short_runs_are_each_compared_with_the_reference_and_holm_adjusted():
    runs = {"gold_r4": {"accuracy": 0.5}, "gold_r16": {"accuracy": 0.5}, "gold_full": {"accuracy": 0.0},
            "mixed_r16": {"accuracy": 0.3}}
    lines = short_runs_against("gold_r16", runs, 20)
    assert lines[0].startswith("Short runs against gold_r16 (20 questions each): not a matched sweep")
    assert "Holm-adjusted over 3 comparisons" in lines[0] and len(lines) == 4
    assert lines[1].startswith("gold_r4 vs gold_r16: no difference detected at this sample size") and "Fisher p = 1" in lines[1]
    # 0 of 20 against 10 of 20: Fisher p = 2·C(20,10)/C(40,10) = 0.00044, times 3 still below 0.05
    assert lines[2].startswith("gold_full is lower than gold_r16:") and "Fisher p = 0.00044, Holm p = 0.0013" in lines[2]
    assert lines[3].startswith("mixed_r16 vs gold_r16: no difference")
    assert not any("best" in line or "worst" in line for line in lines)
    with pytest.raises(CotlabError, match="no short run 'gold_r8'"):
        short_runs_against("gold_r8", runs, 20)


def test_the_run_has_one_holm_family_that_summary_and_notebook_04_share(tmp_path):
    """The same test got Holm p 0.09, 0.11 and 0.22 in 02, 04 and summary.json: now summary.json names
    one family, and the verdicts notebook 04 prints are computed over exactly it."""
    from cotlab.evidence import RUN_FAMILY, run_family_verdicts

    write_sft_stages(Run(tmp_path))
    evidence = run_evidence(tmp_path)
    assert evidence["holm_family"]["name"] == RUN_FAMILY and evidence["holm_family"]["size"] == 4
    assert set(evidence["holm_family"]["tests"]) == {"sft_vs_base", "sft_answer_only_vs_base", "sft_vs_sft_answer_only", "sft_vs_base_ood"}
    lines = run_family_verdicts(tmp_path)
    p_holm = evidence["paired"]["sft_vs_base"]["p_holm"]
    assert any(line.startswith("In distribution: sft beats base") and f"Holm-adjusted p = {p_holm:.2g}"[:24] in line for line in lines)
    assert "family of 4 tests" in lines[-1]


def test_unadjusted_verdicts_say_so():
    from cotlab.evidence import unadjusted_verdicts

    lines = unadjusted_verdicts({"In": {"sft": rows_from("1111111100"), "base": rows_from("0000000000")}})
    assert lines == [lines[0]] and lines[0].startswith("In: sft beats base") and lines[0].endswith("(unadjusted)")
    assert "Holm" not in lines[0]


def test_summary_pairs_carry_how_many_training_seeds_stand_behind_them(tmp_path):
    from cotlab.stats import over_seeds

    run = Run(tmp_path)
    write_stage(run, "sft", "1111100000")
    write_stage(run, "dpo", "1111000000")
    write_stage(run, "grpo", "1111110000")
    assert run_evidence(tmp_path)["paired"]["dpo_vs_sft"]["n_seeds"] == 1  # no seed runs recorded
    over = over_seeds({0: rows_from("1111000000"), 1: rows_from("1110000000"), 2: rows_from("1111100000")},
                      rows_from("1111100000"), "dpo", "sft")
    run.save_results("dpo", {"over_seeds": over})
    paired = run_evidence(tmp_path)["paired"]
    assert paired["dpo_vs_sft"]["n_seeds"] == 3 and paired["dpo_vs_sft"]["over_seeds"]["losses"] == 2
    assert paired["grpo_vs_sft"]["n_seeds"] == 1


def test_sft_change_and_qlora_sentences_follow_the_numbers():
    from cotlab.evidence import qlora_sentence, sft_change_sentence

    before, after = {"format_ok_ratio": 0.1, "mean_completion_tokens": 60}, {"format_ok_ratio": 0.9, "mean_completion_tokens": 40}
    up = sft_change_sentence(600, "gold", 45, 2.5, before, after)
    assert "format compliance rose 10% -> 90%" in up and "mean length fell 60 -> 40" in up
    assert "format compliance fell 90% -> 10%" in sft_change_sentence(600, "gold", 45, 2.5, after, before)
    small = {"weights_memory_mb": 100, "peak_memory_mb": 900, "tokens_per_second": 50}
    big = {"weights_memory_mb": 400, "peak_memory_mb": 1200, "tokens_per_second": 80}
    assert "4.0x smaller" in qlora_sentence(small, big, 16) and "slower" in qlora_sentence(small, big, 16)
    assert "saved nothing" in qlora_sentence(big, small, 16) and "faster" in qlora_sentence(big, small, 16)
