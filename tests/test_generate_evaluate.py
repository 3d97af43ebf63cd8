import json
from pathlib import Path

import pytest

from cotlab import CotlabError
from cotlab.data import load_records
from cotlab.evaluate import accuracy_summary, evaluate, majority_vote, pass_at_k, write_eval
from cotlab.stats import wilson_interval
from cotlab.generate import SamplingConfig, generate
from cotlab.prompts import build_messages, render_prompt

from conftest import CHAIN_SUM


def test_pass_at_k_known_values():
    assert pass_at_k(4, 0, 1) == 0.0
    assert pass_at_k(4, 4, 2) == 1.0
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2)
    assert pass_at_k(5, 3, 3) == 1.0  # fewer than k wrong: some draw of 3 must hit


def test_majority_vote():
    assert majority_vote(["3", "4", "3", None]) == "3"
    assert majority_vote(["4", "3"]) == "4"  # tie: first seen
    assert majority_vote([None, None]) is None


def test_sampling_rejects_k_samples_when_greedy():
    with pytest.raises(CotlabError, match="temperature"):
        SamplingConfig(k=4, temperature=0.0)


def test_batched_generation_keeps_order_and_counts_tokens(tiny):
    model, tokenizer = tiny
    prompts = [render_prompt(tokenizer, build_messages(q, "think")) for q in ["1 + 1?", "A much longer question " * 5, "2?"]]
    out = generate(model, tokenizer, prompts, SamplingConfig(max_new_tokens=6, temperature=1.0, k=2, batch_size=4), progress=False)
    assert [len(c) for c in out] == [2, 2, 2]
    for completions in out:
        for c in completions:
            assert 1 <= c.tokens <= 6
            assert c.finished == (c.tokens < 6) or c.tokens == 6
    # Greedy decoding is order-independent: one prompt alone gives the same text as in a batch.
    greedy = SamplingConfig(max_new_tokens=6)
    alone = generate(model, tokenizer, prompts[2:], greedy, progress=False)[0][0].text
    batched = generate(model, tokenizer, prompts, greedy, progress=False)[2][0].text
    assert alone == batched


@pytest.mark.parametrize("batch_size", [16, 2])  # 2: sequences leave the batch and waiting prompts refill it
def test_greedy_answers_do_not_depend_on_batching(tiny, batch_size):
    from cotlab.generate import common_prefix_length

    model, tokenizer = tiny
    questions = ["1 + 1?", "A much longer question " * 5, "2?", "17 * 3 - 4 =", "x" * 40]
    prompts = [render_prompt(tokenizer, build_messages(q, "think")) for q in questions]
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    assert 0 < common_prefix_length(encoded) < min(map(len, encoded))  # the system prompt is shared
    greedy = SamplingConfig(max_new_tokens=10, batch_size=batch_size)
    one_at_a_time = [generate(model, tokenizer, [p], greedy, progress=False)[0][0] for p in prompts]
    batched = [c[0] for c in generate(model, tokenizer, prompts, greedy, progress=False)]
    assert batched == one_at_a_time  # same order as the prompts, same text, tokens and finished flags
    # ... and the same as transformers' own generate on one unpadded prompt
    inputs = tokenizer(prompts[1], return_tensors="pt", add_special_tokens=False)
    hf = model.generate(**inputs, max_new_tokens=10, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert tokenizer.decode(hf[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip() == batched[1].text


def test_common_prefix_leaves_each_prompt_a_token():
    from cotlab.generate import common_prefix_length

    assert common_prefix_length([[1, 2, 3], [1, 2, 4]]) == 2
    assert common_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2
    assert common_prefix_length([[5], [5, 6]]) == 0


def test_sampling_is_seeded(tiny):
    model, tokenizer = tiny
    prompts = [render_prompt(tokenizer, build_messages(q, "think")) for q in ["1 + 1?", "2?"]]
    sampling = SamplingConfig(max_new_tokens=6, temperature=1.0, top_p=0.9, k=3, batch_size=4)
    first, again = (generate(model, tokenizer, prompts, sampling, progress=False) for _ in range(2))
    assert first == again and len({c.text for c in first[0]}) > 1


def test_evaluate_writes_predictions_and_refuses_to_overwrite(tiny, tmp_path):
    model, tokenizer = tiny
    records = load_records(CHAIN_SUM, n=3, split="test")
    result = evaluate(model, tokenizer, records, sampling=SamplingConfig(max_new_tokens=5, temperature=0.8, k=3), progress=False)
    row = result.rows[0]
    for key in ("id", "question", "gold", "prediction", "correct", "prediction_lenient", "correct_lenient",
                "completion", "completion_tokens", "samples", "majority"):
        assert key in row
    assert {"accuracy", "accuracy_lenient", "interval", "n", "mean_completion_tokens", "pass@3", "maj@3",
            "clipped_ratio"} <= set(result.summary)
    assert result.summary["accuracy"] <= result.summary["accuracy_lenient"]
    assert result.summary["dtype"] == str(model.dtype).removeprefix("torch.")  # which precision produced these answers
    write_eval(tmp_path, result)
    with pytest.raises(CotlabError, match="already holds"):
        write_eval(tmp_path, result)


def test_evaluate_to_reuses_the_same_evaluation_and_redoes_a_different_one(tiny, tmp_path):
    from cotlab.evaluate import evaluate_to, load_eval

    records = load_records(CHAIN_SUM, n=3, split="test")
    sampling = SamplingConfig(max_new_tokens=6, batch_size=3)
    first = evaluate_to(tmp_path / "e", records, model="tiny-random", loaded=tiny, sampling=sampling, progress=False)
    assert load_eval(tmp_path / "e").rows == first.rows
    # A resumed run reads it back without a model (loaded=None and no model name would fail to load).
    again = evaluate_to(tmp_path / "e", records, model="tiny-random", sampling=sampling)
    assert again.rows == first.rows
    # Other questions (a changed n_eval): the earlier evaluation is kept aside, never overwritten.
    fewer = evaluate_to(tmp_path / "e", records[:2], model="tiny-random", loaded=tiny, sampling=sampling, progress=False)
    assert len(fewer.rows) == 2 and load_eval(tmp_path / "e.earlier-1").rows == first.rows
    assert load_eval(tmp_path / "nothing") is None


def test_an_evaluation_of_retrained_weights_is_not_reused(tmp_path):
    """The same adapter folder, retrained: its weights' digest differs, so the old evaluation is set aside."""
    from safetensors.torch import save_file
    import torch

    from cotlab.models import weights_digest

    folder = tmp_path / "adapter"
    folder.mkdir()
    save_file({"w": torch.zeros(2)}, str(folder / "adapter_model.safetensors"))
    before = weights_digest(str(folder))
    save_file({"w": torch.ones(2)}, str(folder / "adapter_model.safetensors"))
    assert before != weights_digest(str(folder)) and weights_digest(None) is None


def test_evaluate_to_redoes_an_evaluation_of_another_model_prompt_or_question_text(tiny, tmp_path):
    """Reuse needs the same model name, exemplars, quantisation and questions (id, text and gold
    answer: ids alone repeat across task options and files), not only the same ids and sampling."""
    from dataclasses import replace

    from cotlab.evaluate import evaluate_to, questions_digest

    records = load_records(CHAIN_SUM, n=2, split="test")
    sampling = SamplingConfig(max_new_tokens=2, batch_size=2)
    kwargs = dict(loaded=tiny, sampling=sampling, progress=False)
    first = evaluate_to(tmp_path / "e", records, model="tiny-random", **kwargs)
    assert first.summary["questions_digest"] == questions_digest(records) and first.summary["load_in_4bit"] is False
    assert evaluate_to(tmp_path / "e", records, model="tiny-random", sampling=sampling).rows == first.rows  # read back, no model
    exemplars = [("1 + 1?", "1 + 1 = 2", "2")]
    reworded = [replace(records[0], question=records[0].question + " "), records[1]]
    changes = [({"model": "embedded"}, records), ({"model": "tiny-random", "style": "few_shot_cot", "exemplars": exemplars}, records),
               ({"model": "tiny-random", "style": "few_shot_cot", "exemplars": exemplars * 2}, records),
               ({"model": "tiny-random"}, reworded), ({"model": "tiny-random", "load_in_4bit": True}, reworded)]
    for n, (change, questions) in enumerate(changes, 1):
        evaluate_to(tmp_path / "e", questions, **kwargs, **change)
        assert (tmp_path / f"e.earlier-{n}").is_dir(), change
    assert not (tmp_path / f"e.earlier-{len(changes) + 1}").exists()


def test_trained_stages_leaves_out_an_evaluation_of_other_weights(tmp_path):
    """An evaluation is paired with the adapter only while the adapter holds the weights it scored."""
    from safetensors.torch import save_file
    import torch

    from cotlab.evaluate import EvalResult
    from cotlab.layout import Run
    from cotlab.models import weights_digest

    run = Run(tmp_path)
    final = run.training_dir("sft") / "final"
    final.mkdir(parents=True)
    (final / "adapter_config.json").write_text("{}")
    save_file({"w": torch.zeros(2)}, str(final / "adapter_model.safetensors"))
    result = EvalResult([{"id": "a", "correct": True, "correct_lenient": True, "completion_tokens": 1, "finished": True, "format_ok": True}],
                        {"accuracy": 1.0})
    write_eval(run.evaluation_dir("base"), result)
    write_eval(run.evaluation_dir("sft"), result, weights=weights_digest(str(final)))
    assert list(run.trained_stages()) == ["base", "sft"] and run.trained_stages()["sft"]["adapter"] == str(final)
    save_file({"w": torch.ones(2)}, str(final / "adapter_model.safetensors"))  # retrained since
    assert list(run.trained_stages()) == ["base"]


def test_answer_changes_counts_fixed_and_broken():
    from cotlab.evaluate import answer_changes

    before = [{"id": "a", "correct": True}, {"id": "b", "correct": False}, {"id": "c", "correct": True}, {"id": "d", "correct": False}]
    after = [{"id": "a", "correct": False}, {"id": "b", "correct": True}, {"id": "c", "correct": True}, {"id": "d", "correct": False}]
    assert answer_changes(before, after) == {"fixed": 1, "broken": 1, "kept_right": 1, "kept_wrong": 1}
    with pytest.raises(CotlabError, match="same questions"):
        answer_changes(before, after[:3])


def test_accuracy_is_strict_with_lenient_beside_it():
    rows = [{"correct": True, "correct_lenient": True}, {"correct": False, "correct_lenient": True},
            {"correct": False, "correct_lenient": False}, {"correct": False, "correct_lenient": False}]
    summary = accuracy_summary(rows)
    assert (summary["n"], summary["accuracy"], summary["accuracy_lenient"]) == (4, 0.25, 0.5)
    assert summary["interval"] == list(wilson_interval(1, 4))  # the one Wilson function, cotlab.stats


def test_rows_that_finish_at_different_times_are_all_returned(tiny, monkeypatch):
    """Refilled slots: when some rows stop early and waiting prompts take their places, every
    prompt still gets its k samples, and greedy answers do not depend on the batch.  A third of the
    vocabulary is made a stop token, so rows end at scattered steps (the random model rarely
    says EOS, and rows that all end together never exercise a refill)."""
    import cotlab.generate as generation

    model, tokenizer = tiny
    monkeypatch.setattr(generation, "_stop_ids", lambda tokenizer, model: list(range(0, len(tokenizer), 3)))
    prompts = [render_prompt(tokenizer, build_messages(r.question, "think")) for r in load_records(CHAIN_SUM, n=12, split="test")]
    sampled = generation.generate(model, tokenizer, prompts, SamplingConfig(max_new_tokens=12, temperature=1.0, k=3, batch_size=5),
                                  progress=False)
    assert [len(samples) for samples in sampled] == [3] * len(prompts)
    lengths = {c.tokens for samples in sampled for c in samples}
    assert len(lengths) > 3  # the rows really did stop at different steps
    batched = generation.generate(model, tokenizer, prompts, SamplingConfig(max_new_tokens=12, batch_size=4), progress=False)
    alone = generation.generate(model, tokenizer, prompts, SamplingConfig(max_new_tokens=12, batch_size=1), progress=False)
    assert [s[0].text for s in batched] == [s[0].text for s in alone]


def test_roomy_cache_layer_holds_what_concatenation_would():
    """The decode cache writes new columns into spare room instead of concatenating; it must hold
    exactly what DynamicLayer's torch.cat would, through growth past its room, rows admitted by
    assignment and rows dropped."""
    import torch

    from cotlab.generate import _roomy_layer_class

    layer, expected = _roomy_layer_class()(room=2), None
    for width in (3, 1, 1, 4, 1):  # 3 then 4 columns at once exceed the room of 2: the buffer grows
        keys, values = torch.randn(2, 3, width, 4), torch.randn(2, 3, width, 4)
        got = layer.update(keys, values)
        expected = (keys, values) if expected is None else (torch.cat([expected[0], keys], -2), torch.cat([expected[1], values], -2))
        assert all(torch.equal(g, e) for g, e in zip(got, expected))
    assert layer.get_seq_length() == 10
    layer.batch_select_indices(torch.tensor([1]))
    assert torch.equal(layer.keys, expected[0][1:]) and torch.equal(layer.values, expected[1][1:])
    layer.update(torch.ones(1, 3, 1, 4), torch.ones(1, 3, 1, 4))
    assert layer.keys.shape == (1, 3, 11, 4) and torch.equal(layer.keys[:, :, :10], expected[0][1:])


def test_earlier_rows_reads_a_larger_evaluation_back_for_fewer_questions_without_touching_it(tiny, tmp_path):
    """Lesson 11 reads notebook 02's base and SFT evaluations for its own (fewer) held-out questions:
    the same model, weights and greedy settings give the rows of those questions, in their order,
    whatever the batch size; anything else gives None, and the folder is never set aside."""
    from cotlab.evaluate import earlier_rows, evaluate_to, load_eval

    records = load_records(CHAIN_SUM, n=4, split="test")
    sampling = SamplingConfig(max_new_tokens=6, batch_size=4)
    whole = evaluate_to(tmp_path / "e", records, model="tiny-random", loaded=tiny, sampling=sampling, progress=False)
    fewer = earlier_rows(tmp_path / "e", records[:2], model="tiny-random", sampling=SamplingConfig(max_new_tokens=6, batch_size=2))
    assert fewer.rows == whole.rows[:2] and fewer.summary["n"] == 2 and fewer.summary["read_from"] == str(tmp_path / "e")
    assert fewer.summary["accuracy"] == sum(r["correct"] for r in whole.rows[:2]) / 2
    assert earlier_rows(tmp_path / "e", records[:2], model="embedded", sampling=sampling) is None  # another model
    assert earlier_rows(tmp_path / "e", records[:2], model="tiny-random", sampling=SamplingConfig(max_new_tokens=7, batch_size=4)) is None
    assert earlier_rows(tmp_path / "e", load_records(CHAIN_SUM, n=6, split="test"), model="tiny-random", sampling=sampling) is None
    assert earlier_rows(tmp_path / "nothing", records, model="tiny-random", sampling=sampling) is None
    assert load_eval(tmp_path / "e").rows == whole.rows and not (tmp_path / "e.earlier-1").exists()


# Backends ---------------------------------------------------------------------------------------


def test_auto_backend_is_hf_without_vllm_and_the_summary_says_so(tiny, tmp_path):
    from cotlab.evaluate import evaluate_to
    from cotlab.generate import choose_backend

    assert choose_backend("auto") == "hf" and choose_backend("hf") == "hf"
    records = load_records(CHAIN_SUM, n=2, split="test")
    sampling = SamplingConfig(max_new_tokens=4, batch_size=2)
    result = evaluate_to(tmp_path / "e", records, model="tiny-random", loaded=tiny, sampling=sampling, backend="auto")
    assert result.summary["backend"] == "hf"
    assert json.loads((tmp_path / "e" / "summary.json").read_text())["backend"] == "hf"
    # An evaluation written before backends were recorded was made by hf: still read back as this one.
    path = tmp_path / "e" / "summary.json"
    path.write_text(json.dumps({k: v for k, v in json.loads(path.read_text()).items() if k != "backend"}))
    again = evaluate_to(tmp_path / "e", records, model="tiny-random", sampling=sampling, backend="hf")
    assert again.rows == result.rows and not (tmp_path / "e.earlier-1").exists()


def test_the_vllm_backend_without_vllm_is_a_one_line_error():
    from cotlab.generate import choose_backend, vllm_available

    assert not vllm_available()  # this CPU machine has neither vLLM nor a GPU
    with pytest.raises(CotlabError) as error:
        choose_backend("vllm")
    message = str(error.value)
    assert "\n" not in message and "vLLM" in message and "COTLAB_GPU_EXTRAS=full bash scripts/setup.sh" in message
    with pytest.raises(CotlabError, match="unknown generation backend"):
        choose_backend("tensorrt")


def _adapter(base, folder, seed):
    """A random LoRA adapter for the tiny model, saved in `folder`."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    model.save_pretrained(folder)
    model.unload()
    return str(folder)


def test_evaluation_runs_through_vllm_with_the_model_path_adapter_and_sampling(fake_vllm, tiny, tmp_path):
    from cotlab.evaluate import evaluate_to
    from cotlab.generate import choose_backend
    from cotlab.models import load_base, tiny_random_checkpoint

    adapter = _adapter(load_base("tiny-random", "float32"), tmp_path / "adapter", seed=1)
    records = load_records(CHAIN_SUM, n=3, split="test")
    sampling = SamplingConfig(max_new_tokens=5, temperature=0.7, top_p=0.9, k=2, seed=4)
    result = evaluate_to(tmp_path / "e", records, model="tiny-random", adapter=adapter, sampling=sampling, backend="vllm", progress=False)
    (call,) = fake_vllm
    assert call["model"] == str(tiny_random_checkpoint()) and call["enable_lora"] and call["max_lora_rank"] == 8
    assert call["lora"].path == adapter and call["seed"] == 4 and 0 < call["gpu_memory_utilization"] <= 0.45
    params = call["params"]
    assert (params.n, params.temperature, params.top_p, params.max_tokens, params.seed) == (2, 0.7, 0.9, 5, 4)
    assert call["prompts"][0].startswith("<|im_start|>system") and records[0].question in call["prompts"][0]
    assert result.summary["backend"] == "vllm" and result.summary["dtype"] == "bfloat16"
    assert result.rows[0]["completion"] == "<answer>7</answer>" and result.rows[0]["completion_tokens"] == 3
    assert json.loads((tmp_path / "e" / "summary.json").read_text())["backend"] == "vllm"
    # An evaluation made with another backend is not this one: hf sets the vLLM one aside and redoes it.
    again = evaluate_to(tmp_path / "e", records, model="tiny-random", adapter=adapter, sampling=sampling, backend="hf",
                        loaded=tiny, progress=False)
    assert again.summary["backend"] == "hf" and (tmp_path / "e.earlier-1" / "summary.json").is_file()
    # "auto" where vLLM runs is vLLM, except for a model meant for a 4-bit base (QLoRA).
    assert choose_backend("auto") == "vllm" and choose_backend("auto", load_in_4bit=True) == "hf"


def test_an_adapter_chain_is_merged_before_vllm_sees_it(fake_vllm, tmp_path, monkeypatch):
    from cotlab import export
    from cotlab.evaluate import evaluate_vllm
    from cotlab.models import BASE_ADAPTERS_FILE, base_adapters_record, load_base

    monkeypatch.setattr(export, "cache_dir", lambda: tmp_path / "cache")
    for where in ("peft.utils.save_and_load", "peft.peft_model"):  # the GPU is make-believe: PEFT loads adapters on the CPU
        monkeypatch.setattr(f"{where}.infer_device", lambda: "cpu")
    sft = _adapter(load_base("tiny-random", "float32"), tmp_path / "run" / "sft" / "final", seed=1)
    dpo = _adapter(load_base("tiny-random", "float32", merge=[sft]), tmp_path / "run" / "dpo" / "final", seed=2)
    (tmp_path / "run" / "dpo" / "final" / "recipe.json").write_text(json.dumps({"model": "tiny-random", "dtype": "float32"}))
    (tmp_path / "run" / "dpo" / "final" / BASE_ADAPTERS_FILE).write_text(json.dumps(base_adapters_record(dpo, [sft])))
    records = load_records(CHAIN_SUM, n=2, split="test")
    evaluate_vllm("tiny-random", records, adapter=dpo, sampling=SamplingConfig(max_new_tokens=4), progress=False)
    (call,) = fake_vllm
    merged = Path(call["model"])
    assert merged.parent == tmp_path / "cache" / "merged" and (merged / "config.json").is_file()
    assert call["lora"] is None and "enable_lora" not in call
    assert sft in (merged / "README.md").read_text()  # the export's card: the SFT adapter merged under the DPO one
    # Merged once: a second evaluation of the same chain reuses the folder.
    evaluate_vllm("tiny-random", records, adapter=dpo, sampling=SamplingConfig(max_new_tokens=4), progress=False)
    assert fake_vllm[1]["model"] == str(merged) and len(list(merged.parent.iterdir())) == 1


# Progress in batch logs ---------------------------------------------------------------------------


def test_generation_prints_progress_lines_with_an_eta_in_batch_logs(tiny, capsys, monkeypatch):
    model, tokenizer = tiny
    prompts = [render_prompt(tokenizer, build_messages(r.question, "think")) for r in load_records(CHAIN_SUM, n=3, split="test")]
    sampling = SamplingConfig(max_new_tokens=3, batch_size=2)
    monkeypatch.delenv("COTLAB_TEXT_PROGRESS", raising=False)
    generate(model, tokenizer, prompts, sampling)
    assert capsys.readouterr().out == ""  # at a terminal or in a notebook: tqdm's bar, on stderr or as a widget
    monkeypatch.setenv("COTLAB_TEXT_PROGRESS", "1")  # what `cotlab run` sets when its output goes to a log
    monkeypatch.setenv("COTLAB_PROGRESS_SECONDS", "0")
    generate(model, tokenizer, prompts, sampling)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" (")[0] for line in lines[:3]] == ["generating: 1/3", "generating: 2/3", "generating: 3/3"]
    assert all("ETA" in line and "sequences/s" in line for line in lines[:3])
    assert lines[-1].startswith("generating: done 3/3 in ")
    generate(model, tokenizer, prompts, sampling, progress=False)
    assert capsys.readouterr().out == ""


def test_text_progress_prints_at_most_every_interval_and_counts_a_resumed_start():
    import io

    from cotlab.progress import TextProgress

    out = io.StringIO()
    bar = TextProgress(10, "rejection", initial=4, unit="questions", interval=3600, file=out)
    bar.update(2)
    assert out.getvalue() == ""  # within the interval: quiet
    bar.interval = 0
    bar.update(1)
    bar.close()
    bar.close()
    first, last = out.getvalue().splitlines()
    assert first.startswith("rejection: 7/10 (70%)") and "questions/s" in first and "ETA" in first
    assert last.startswith("rejection: done 7/10 in ")
