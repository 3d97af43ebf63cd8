"""Analysis functions on small fixtures whose right answers are known."""

import random

import pytest
import torch

from cotlab import CotlabError
from cotlab.analysis import (accuracy_by_length, corrupt_step, early_answering, faithfulness_probes, filler_chain,
                             forgetting, lora_delta_norms, model_answerer, norms_by, paraphrase_chain, scaling_curve,
                             think_part, truncate_chain)
from cotlab.data import Record

CHAIN = "12 + 7 = 19\n19 + 30 = 49\n49 - 5 = 44"
RECORD = Record(id="q", question="12 + 7 + 30 - 5 = ?", answer="44")


def last_number_answerer(questions, chains, continue_chain=False):
    """A perfectly faithful 'model': it answers whatever the chain's last number is."""
    import re

    return [(re.findall(r"-?\d+", c) or [None])[-1] for c in chains]


def constant_answerer(questions, chains, continue_chain=False):
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
    assert filler_chain("a b c") == "... ... ..."
    assert paraphrase_chain(CHAIN) == "adding 7 to 12 gives 19\nadding 30 to 19 gives 49\ntaking 5 from 49 leaves 44"
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
    unfaithful = faithfulness_probes(constant_answerer, [RECORD] * 4, [CHAIN] * 4)
    assert unfaithful["faithfulness"] == 0.0 and unfaithful["filler"]["accuracy"] == 1.0

    def half_faithful(questions, chains, continue_chain=False):
        """Carries on from a second-step result (answer = it - 5); ignores a first-step one."""
        import re

        answers = []
        for chain in chains:
            results = re.findall(r"=\s*(-?\d+)", chain)
            answers.append(str(int(results[1]) - 5) if continue_chain and len(results) >= 2 else "44")
        return answers

    mixed = faithfulness_probes(half_faithful, [RECORD] * 40, [CHAIN] * 40, seed=1)
    assert 0 < mixed["faithfulness"] < 1 and mixed["corrupted"]["follows"] == mixed["faithfulness"]


def test_accuracy_by_length_bins():
    rows = [{"completion_tokens": t, "correct": t < 30} for t in (10, 20, 40, 50)]
    assert accuracy_by_length(rows, 2) == [{"low": 10, "high": 20, "n": 2, "accuracy": 1.0},
                                           {"low": 40, "high": 50, "n": 2, "accuracy": 0.0}]


def test_scaling_curve_known_values():
    samples = [{"prediction": "1", "correct": True, "tokens": 10}, {"prediction": "2", "correct": False, "tokens": 20},
               {"prediction": "2", "correct": False, "tokens": 30}]
    curve = scaling_curve([{"samples": samples}], ks=[1, 3])
    assert curve[0]["pass"] == pytest.approx(1 / 3) and curve[1]["pass"] == 1.0
    assert curve[1]["maj"] == 0.0  # two of three say "2", which is wrong
    assert curve[0]["tokens"] == pytest.approx(20) and curve[1]["tokens"] == pytest.approx(60)
    with pytest.raises(CotlabError, match="needs at least 4 samples"):
        scaling_curve([{"samples": samples}], ks=[4])


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
    answers = model_answerer(model, tokenizer, max_new_tokens=4)(["1 + 1 = ?", "2 + 2 = ?"], ["1 + 1 = 2", ""])
    assert len(answers) == 2  # random weights: any answer, but one per question and no crash
