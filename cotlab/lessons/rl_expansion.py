"""Does RL teach new reasoning, or sharpen what the model could already do?  pass@k curves,
coverage and the policy's entropy.

*DeepSeekMath* and *DeepSeek-R1* credit GRPO with reasoning the base model lacked.  *Does
Reinforcement Learning Really Incentivize Reasoning Capacity in LLMs Beyond the Base Model?*
(Yue et al., 2025) measures it differently: sample many answers per question and compare pass@k
over k.  RL models win at k=1 but the base model catches up and passes them at large k, so the
questions RL solves are mostly ones the base model could already solve with enough tries: RL
sharpens the distribution (and its entropy falls) rather than widening what it can reach; the same
paper finds distillation does widen it.

Every function takes evaluation rows sampled with k > 1 (`cotlab.evaluate`: each row has its
`samples`), so a notebook, a test or another run's predictions.jsonl all work.
"""

from __future__ import annotations

import math

from cotlab import CotlabError
from cotlab.evaluate import pass_at_k
from cotlab.stats import accuracy_phrase, mcnemar_exact, mde_paired, mde_phrase


def sample_counts(rows: list[dict]) -> dict[str, tuple[int, int]]:
    """{question id: (samples, correct samples)}: all that pass@k needs."""
    counts = {}
    for row in rows:
        if "samples" not in row:
            raise CotlabError("pass@k needs rows evaluated with k > 1 samples (a 'samples' list per row)")
        counts[row["id"]] = (len(row["samples"]), sum(bool(s["correct"]) for s in row["samples"]))
    return counts


def k_grid(k_max: int) -> list[int]:
    """1, 2, 4, ... up to k_max, and k_max itself: pass@k curves are read on a log scale."""
    if k_max < 1:
        raise CotlabError(f"k_max must be at least 1, got {k_max}")
    ks = [2**i for i in range(int(math.log2(k_max)) + 1)]
    return ks if ks[-1] == k_max else ks + [k_max]


def pass_at_k_curve(rows: list[dict], ks: list[int]) -> list[float]:
    """Mean unbiased pass@k over the questions (Chen et al., *Evaluating Large Language Models
    Trained on Code*) for each k: the chance that at least one of k samples is right."""
    counts = sample_counts(rows)
    if not counts:
        raise CotlabError("pass@k needs at least one question")
    return [sum(pass_at_k(n, c, k) for n, c in counts.values()) / len(counts) for k in ks]


def coverage(rows: list[dict]) -> tuple[int, int]:
    """(questions solved by at least one sample, questions): the reach of a stage at k = n."""
    counts = sample_counts(rows)
    return sum(c > 0 for _, c in counts.values()), len(counts)


def paired_at_k(a_rows: list[dict], b_rows: list[dict], k: int, a: str = "grpo", b: str = "base") -> dict:
    """Stage A against stage B at one k, question by question: on how many questions A's pass@k
    is higher (wins) or lower (losses), and the exact two-sided sign test on those (McNemar's
    binomial: ties carry no evidence).  At k = n every pass@k is 0 or 1, so this is exactly the
    McNemar test on coverage."""
    counts_a, counts_b = sample_counts(a_rows), sample_counts(b_rows)
    if counts_a.keys() != counts_b.keys():
        raise CotlabError(f"paired_at_k needs the same questions for {a} and {b}")
    wins = losses = 0
    pass_a = pass_b = 0.0
    for qid, (n, c) in counts_a.items():
        pa, pb = pass_at_k(n, c, k), pass_at_k(*counts_b[qid], k)
        pass_a, pass_b = pass_a + pa, pass_b + pb
        wins, losses = wins + (pa > pb), losses + (pa < pb)
    total = len(counts_a)
    return {"a": a, "b": b, "k": k, "n": total, "wins": wins, "losses": losses, "ties": total - wins - losses,
            "p_value": mcnemar_exact(wins, losses), "pass_a": pass_a / total, "pass_b": pass_b / total,
            "difference": (pass_a - pass_b) / total}


def curve_crossing(ks: list[int], curve_a: list[float], curve_b: list[float], tolerance: float = 1e-9) -> dict | None:
    """Where curve A minus curve B first changes sign (ties within `tolerance` are skipped):
    {"after": k, "before": k', "a_above_first": bool}, or None when one never passes the other."""
    if not len(ks) == len(curve_a) == len(curve_b):
        raise CotlabError("curve_crossing needs one value per k in both curves")
    last = None  # (k, sign) of the last point where the curves differ
    for k, x, y in zip(ks, curve_a, curve_b):
        sign = 0 if abs(x - y) <= tolerance else (1 if x > y else -1)
        if sign and last and sign != last[1]:
            return {"after": last[0], "before": k, "a_above_first": last[1] > 0}
        last = (k, sign) if sign else last
    return None


def coverage_sentence(covered: dict[str, tuple[int, int]], k: int) -> str:
    """Each stage's coverage at k = K with its Wilson interval, naming any stage that solved no
    question at all (its pass@k is then 0 at every k)."""
    phrases = "; ".join(f"{stage} {accuracy_phrase(*counts)}" for stage, counts in covered.items())
    none = [stage for stage, (solved, _) in covered.items() if solved == 0]
    return (f"Coverage at k={k}: {phrases}." + (f" {' and '.join(none)} solved no question within {k} samples." if none else ""))


def coverage_control(start_rows: list[dict], start: str = "base") -> dict:
    """The crossover question's positive control: the model a stage started from must solve at
    least one question within its K samples.  With coverage 0 its pass@k is 0 at every k, so no
    curve can fall below it and 'sharpening, not widening' cannot show whatever RL did."""
    covered, n = coverage(start_rows)
    return {"passed": covered > 0, "start": start, "covered": covered, "n": n,
            "what": f"{start}'s coverage (questions solved by at least one of K samples) is above 0"}


def _side(result: dict, alpha: float) -> int:
    """+1 when A is above B beyond noise, -1 when below, 0 when the test cannot tell."""
    if result["p_value"] >= alpha or result["wins"] == result["losses"]:
        return 0
    return 1 if result["wins"] > result["losses"] else -1


def _evidence(result: dict) -> str:
    p = result["p_value"]
    n = result["n"]
    mde = mde_paired(n, (result["wins"] + result["losses"]) / n)
    return (f"pass@{result['k']} {result['pass_a']:.0%} vs {result['pass_b']:.0%}, higher on {result['wins']} questions and "
            f"lower on {result['losses']} of {n}, sign test p = {p:.2g}, {mde_phrase(mde, n, 'paired sign test')}")


def expansion_verdict(first: dict, last: dict, crossing: dict | None, control: dict, alpha: float = 0.05) -> str:
    """The 'what we saw' sentence on stage A (trained) against stage B (its start) at k = 1
    (`first`) and k = K (`last`), both from paired_at_k: sharpening (A better at k=1, worse at
    k=K), widening (A reaches questions B never did) or not to be told from noise, each test with
    its minimum detectable effect.  No verdict when B's `coverage_control` failed."""
    a, b, big_k = first["a"], first["b"], last["k"]
    if not control["passed"]:
        return (f"{a} vs {b}: no verdict, the instrument could not see the effect: {b} solved {control['covered']} of "
                f"{control['n']} questions within {big_k} samples (coverage 0), so its pass@k curve is 0 at every k and "
                "no curve can cross it (positive control failed).")
    low, high = _side(first, alpha), _side(last, alpha)
    if high > 0:
        claim = (f"{a} widens what {b} reaches: it solves questions {b} did not within {big_k} samples, unlike the "
                 "sharpening *Does Reinforcement Learning Really Incentivize Reasoning Capacity…* reports for RL")
    elif low > 0 and high < 0:
        claim = (f"{a} sharpens {b}, as *Does Reinforcement Learning Really Incentivize Reasoning Capacity…* reports for "
                 f"RL: better at k=1, but given {big_k} tries {b} solves more questions")
    elif high < 0:
        claim = f"{a} reaches fewer questions than {b} at k={big_k}, with no gain at k=1 that we can tell from noise"
    elif low > 0:
        claim = f"{a} sharpens {b} at k=1; at k={big_k} the two cannot be told apart, so no sign of a narrower or wider reach"
    elif low < 0:
        claim = f"{a} is worse than {b} at k=1, and at k={big_k} the two cannot be told apart"
    else:
        claim = f"{a} vs {b}: no difference we can tell from noise at k=1 or at k={big_k}"
    where = (f"the mean curves cross between k={crossing['after']} and k={crossing['before']}" if crossing
             else f"the mean curves do not cross for k up to {big_k}")
    return f"{claim} ({_evidence(first)}; {_evidence(last)}); {where}."


def pass_at_k_figure(ks: list[int], curves: dict[str, list[float]], n: int, path=None, title: str = "pass@k by stage"):
    """pass@k against k (log scale), one line per stage, each in a band: the Wilson 95% interval of
    the mean over the n questions (`plots.wilson_yerr_of_means`: a mean of per-question values in
    [0, 1], taken as a proportion, so the band is if anything too wide).  Where the lines cross is
    the lesson; whether they cross beyond noise is the paired tests'."""
    import matplotlib.pyplot as plt

    from cotlab.plots import wilson_yerr_of_means

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for i, (label, values) in enumerate(curves.items()):
        below, above = wilson_yerr_of_means(values, n)
        ax.plot(ks, values, marker="o", color=f"C{i}", label=label)
        ax.fill_between(ks, [v - b for v, b in zip(values, below)], [v + a for v, a in zip(values, above)], color=f"C{i}", alpha=0.15)
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set(xlabel="k (samples per question)", ylabel="pass@k", ylim=(0, 1.02), title=f"{title}\n(bands: 95% Wilson intervals, n={n})")
    ax.legend()
    fig.tight_layout()
    if path:
        fig.savefig(path, dpi=110)
    return fig
