"""How sure can we be?  Intervals, paired tests and the sentences the notebooks print from them.

Evaluations here are small (tens to a few hundred questions), so every number a notebook reports
needs its noise beside it.  Pure Python on purpose: the package must not need scipy for this.

- One accuracy: the Wilson score interval (Wilson 1927), which stays inside [0, 1] and keeps a
  non-zero width at 0/n and n/n, where the textbook Wald interval collapses (Agresti & Coull 1998).
- Two stages on the same questions: the exact McNemar test (McNemar 1947) on the discordant
  pairs, the binomial form Agresti recommends for small counts (*Categorical Data Analysis*, §10.1).
- Two accuracies on different questions: Newcombe's hybrid score interval for the difference
  (Newcombe 1998, method 10), built from the two Wilson intervals.
- One number over several seeds: a Student t interval of the mean across runs.
- A family of tests read together (every pair of stages, every chain form against gold): Holm's
  step-down adjustment (Holm 1979, *A Simple Sequentially Rejective Multiple Test Procedure*),
  which keeps the chance of any false direction at alpha without Bonferroni's full price.
"""

from __future__ import annotations

import hashlib
import math
from statistics import NormalDist

from cotlab import CotlabError

# One accuracy -------------------------------------------------------------------------------------


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise CotlabError(f"confidence must be between 0 and 1 (exclusive), got {confidence}")


def _check_count(successes: int, n: int) -> None:
    if n <= 0:
        raise CotlabError(f"an accuracy needs at least one question, got n={n}")
    if not 0 <= successes <= n:
        raise CotlabError(f"successes must be between 0 and n={n}, got {successes}")


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval for a proportion (Wilson 1927).  Why not p ± z·SE: that Wald
    interval has zero width at 0/n and n/n and covers badly for small n (Agresti & Coull 1998);
    Wilson's inverts the score test, so 0 right out of 10 still admits up to ~28%."""
    _check_count(successes, n)
    _check_confidence(confidence)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    shrink = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / shrink
    half = z / shrink * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # At 0/n and n/n the end on that side is exactly 0 or 1; rounding must not move it off.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def accuracy_phrase(k: int, n: int, confidence: float = 0.95) -> str:
    """'38% (95% CI 26–52%, n=50)': an accuracy is never printed without its Wilson interval."""
    low, high = wilson_interval(k, n, confidence)
    return f"{100 * k / n:.0f}% ({100 * confidence:g}% CI {100 * low:.0f}–{100 * high:.0f}%, n={n})"


# Two stages on the same questions ----------------------------------------------------------------


def _correct_by_id(rows: list[dict], name: str) -> dict:
    by_id = {}
    for row in rows:
        if "id" not in row or "correct" not in row:
            raise CotlabError(f"every row of {name} needs 'id' and 'correct', got keys {sorted(row)}")
        if row["id"] in by_id:
            raise CotlabError(f"question {row['id']!r} appears twice in {name}")
        by_id[row["id"]] = bool(row["correct"])
    return by_id


def paired_outcomes(a_rows: list[dict], b_rows: list[dict]) -> dict:
    """Per-question agreement of two stages on the SAME questions: wins (A right, B wrong), losses
    (A wrong, B right), both_right, both_wrong, n.  Pairing is what makes small differences
    visible: questions both get right or both get wrong carry no evidence (McNemar 1947)."""
    a, b = _correct_by_id(a_rows, "A"), _correct_by_id(b_rows, "B")
    if a.keys() != b.keys():
        only_a, only_b = a.keys() - b.keys(), b.keys() - a.keys()
        raise CotlabError(f"a paired comparison needs the same questions: {len(only_a)} only in A, "
                          f"{len(only_b)} only in B (e.g. {min(map(str, only_a | only_b))!r})")
    counts = {"wins": 0, "losses": 0, "both_right": 0, "both_wrong": 0}
    for qid, a_right in a.items():
        b_right = b[qid]
        counts["both_right" if a_right and b_right else "wins" if a_right else "losses" if b_right
               else "both_wrong"] += 1
    return {**counts, "n": len(a)}


def mcnemar_exact(wins: int, losses: int) -> float:
    """Exact two-sided McNemar p-value: under 'no difference' each discordant question is equally
    likely to go either way, so min(wins, losses) is Binomial(wins + losses, 1/2); the p-value is
    twice its lower tail, capped at 1 (McNemar 1947; Agresti, *Categorical Data Analysis*, §10.1).
    Exact because the discordant counts of a small eval are too few for the chi-squared form."""
    if wins < 0 or losses < 0 or int(wins) != wins or int(losses) != losses:
        raise CotlabError(f"wins and losses must be counts, got {wins} and {losses}")
    n = int(wins + losses)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(int(min(wins, losses)) + 1))
    return min(1.0, 2 * tail / 2**n)  # integer numerator and denominator: exact until the last division


def compare_paired(a_rows: list[dict], b_rows: list[dict], a: str = "sft", b: str = "base") -> dict:
    """Everything a notebook says about stage A against stage B on the same questions: the paired
    counts, the exact McNemar p-value, each accuracy, their difference (A minus B) and the hash of
    the question set they share."""
    counts = paired_outcomes(a_rows, b_rows)
    n = counts["n"]
    if n == 0:
        raise CotlabError("a paired comparison needs at least one question")
    accuracy_a = (counts["wins"] + counts["both_right"]) / n
    accuracy_b = (counts["losses"] + counts["both_right"]) / n
    return {"a": a, "b": b, **counts, "p_value": mcnemar_exact(counts["wins"], counts["losses"]),
            "accuracy_a": accuracy_a, "accuracy_b": accuracy_b, "difference": accuracy_a - accuracy_b,
            "eval_set": eval_set_hash([r["id"] for r in a_rows])}


def _p_text(p: float) -> str:
    return f"{p:.2g}" if p >= 0.001 else f"{p:.1e}"


def _questions(count: int) -> str:
    return f"{count} question{'' if count == 1 else 's'}"


def paired_verdict(comparison: dict, alpha: float = 0.05) -> str:
    """The 'what we saw' sentence for a compare_paired() result: who wins, by how many questions
    each way, and the exact McNemar p.  A direction is claimed only when p < alpha; otherwise the
    sentence says the difference cannot be told from noise."""
    if not 0 < alpha < 1:
        raise CotlabError(f"alpha must be between 0 and 1 (exclusive), got {alpha}")
    a, b, wins, losses, p = (comparison[key] for key in ("a", "b", "wins", "losses", "p_value"))
    evidence = f"{_questions(wins)} fixed, {losses} broken, exact McNemar p = {_p_text(p)}"
    if "p_holm" in comparison:  # one of a family (with_holm): the direction follows the adjusted p
        p = comparison["p_holm"]
        if comparison["family_size"] > 1:
            evidence += f", Holm-adjusted p = {_p_text(p)} over {comparison['family_size']} tests"
    if p < alpha and wins > losses:
        return f"{a} beats {b}: {evidence}"
    if p < alpha and wins < losses:
        return f"{a} is worse than {b}: {evidence}"
    return f"{a} vs {b}: no difference we can tell from noise ({evidence})"


# A family of tests ------------------------------------------------------------------------------


def holm(p_values: dict) -> dict:
    """Holm's step-down adjusted p-values (Holm 1979) for a family of tests, by the same keys:
    sort the m raw p-values, multiply the i-th smallest (from 0) by m - i, carry the running
    maximum so the order is kept, cap at 1.  A test clears alpha after adjustment exactly when
    Holm's procedure rejects it, and the chance of any false rejection in the family stays at
    most alpha, whatever the dependence between the tests."""
    for key, p in p_values.items():
        if not 0 <= p <= 1:
            raise CotlabError(f"p-value of {key!r} must be in [0, 1], got {p}")
    m, running, adjusted = len(p_values), 0.0, {}
    for i, (key, p) in enumerate(sorted(p_values.items(), key=lambda item: item[1])):
        running = max(running, min(1.0, (m - i) * p))
        adjusted[key] = running
    return {key: adjusted[key] for key in p_values}


def with_holm(comparisons: dict) -> dict:
    """compare_paired() results read as one family: each gets `p_holm` (Holm-adjusted over all of
    them) and `family_size`, so paired_verdict claims a direction only when the adjusted p clears
    alpha and prints both p-values."""
    adjusted = holm({key: c["p_value"] for key, c in comparisons.items()})
    return {key: {**c, "p_holm": adjusted[key], "family_size": len(comparisons)} for key, c in comparisons.items()}


# Two accuracies on different questions -----------------------------------------------------------


def difference_interval(k_a: int, n_a: int, k_b: int, n_b: int, confidence: float = 0.95) -> tuple[float, float]:
    """Interval for accuracy A minus accuracy B when A and B were measured on different questions
    (in- vs out-of-distribution): Newcombe's hybrid score interval (Newcombe 1998, method 10),
    which combines the two Wilson intervals and, like them, behaves at 0/n and n/n.  Why not 'the
    two Wilson intervals overlap': that rule is far too conservative, two 95% intervals can
    overlap while the difference is clearly real (Schenker & Gentleman 2001)."""
    low_a, high_a = wilson_interval(k_a, n_a, confidence)
    low_b, high_b = wilson_interval(k_b, n_b, confidence)
    p_a, p_b = k_a / n_a, k_b / n_b
    d = p_a - p_b
    return (d - math.sqrt((p_a - low_a) ** 2 + (high_b - p_b) ** 2),
            d + math.sqrt((high_a - p_a) ** 2 + (p_b - low_b) ** 2))


def fisher_exact(k_a: int, n_a: int, k_b: int, n_b: int) -> float:
    """Two-sided p-value of Fisher's exact test (Fisher 1935, *The Design of Experiments*) that two
    independent accuracies k_a/n_a and k_b/n_b are equal: with the margins fixed, the right answers
    of A are hypergeometric; the p-value sums every table no more likely than the one observed.
    Exact, so it holds at the small counts of short comparison runs, and a p-value, so a family
    of such tests can be Holm-adjusted."""
    _check_count(k_a, n_a)
    _check_count(k_b, n_b)
    right, total = k_a + k_b, n_a + n_b
    weight = {x: math.comb(n_a, x) * math.comb(n_b, right - x) for x in range(max(0, right - n_b), min(n_a, right) + 1)}
    observed = weight[k_a]
    # integer weights: 'no more likely' is compared exactly, then one division
    return min(1.0, sum(w for w in weight.values() if w <= observed) / math.comb(total, right))


def difference_verdict(k_a: int, n_a: int, k_b: int, n_b: int, a: str = "in-distribution",
                       b: str = "out-of-distribution", confidence: float = 0.95) -> str:
    """The 'what we saw' sentence for two independent accuracies: both accuracies, the difference
    in points with its Newcombe interval, and a direction only when that interval excludes zero."""
    low, high = difference_interval(k_a, n_a, k_b, n_b, confidence)
    d = k_a / n_a - k_b / n_b
    evidence = (f"{a} {100 * k_a / n_a:.0f}% (n={n_a}) vs {b} {100 * k_b / n_b:.0f}% (n={n_b}), difference "
                f"{100 * d:+.0f} points, {100 * confidence:g}% CI {100 * low:+.0f} to {100 * high:+.0f}")
    if low > 0:
        return f"{a} is higher than {b}: {evidence}"
    if high < 0:
        return f"{a} is lower than {b}: {evidence}"
    return f"{a} vs {b}: no difference we can tell from noise ({evidence})"


# One number over several seeds -------------------------------------------------------------------


def _t_central_mass(t: float, df: int) -> float:
    """P(|T| < t) for Student's t with integer df, by the finite series of Abramowitz & Stegun
    26.7.3-4: exact for every df, so no scipy and no table."""
    theta = math.atan(t / math.sqrt(df))
    s, c2 = math.sin(theta), math.cos(theta) ** 2
    if df % 2 == 0:
        term = total = 1.0
        for j in range(1, df // 2):
            term *= c2 * (2 * j - 1) / (2 * j)
            total += term
        return s * total
    term = total = math.cos(theta) if df > 1 else 0.0
    for j in range(1, (df - 1) // 2):
        term *= c2 * (2 * j) / (2 * j + 1)
        total += term
    return 2 / math.pi * (theta + s * total)


def _t_quantile(confidence: float, df: int) -> float:
    """The t with P(|T| < t) = confidence, by bisection on the exact central mass."""
    low, high = 0.0, 1.0
    while _t_central_mass(high, df) < confidence:
        low, high = high, 2 * high
    for _ in range(100):
        mid = (low + high) / 2
        low, high = (mid, high) if _t_central_mass(mid, df) < confidence else (low, mid)
    return (low + high) / 2


def across_seeds(values: list[float], confidence: float = 0.95) -> dict:
    """Mean of one metric over runs that differ only in seed, with a Student t interval of that
    mean (mean ± t_{df=n-1} · s/√n): it says where the mean run lies, not where the next run will
    land.  With one run there is no spread to estimate, so the interval is None."""
    _check_confidence(confidence)
    values = [float(v) for v in values]
    if not values:
        raise CotlabError("across_seeds needs at least one run")
    if not all(math.isfinite(v) for v in values):
        raise CotlabError(f"across_seeds needs finite values, got {values}")
    n = len(values)
    mean = sum(values) / n
    if n == 1:
        return {"mean": mean, "std": None, "interval": None, "n_runs": 1}
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = _t_quantile(confidence, n - 1) * std / math.sqrt(n)
    return {"mean": mean, "std": std, "interval": (mean - half, mean + half), "n_runs": n}


# Which questions --------------------------------------------------------------------------------


def pooled_paired(a_rows_by_seed: dict, b_rows_by_seed: dict, a: str, b: str) -> dict:
    """Objective A against B on the same held-out questions over several seeds, question by
    question: for each question, on how many seeds A was right and on how many B was; a win when
    A's count is higher, a loss when lower, a tie otherwise; the exact two-sided sign test
    (`stats.mcnemar_exact`) on wins and losses.  Why not one pair per (seed, question): the same
    question recurs once per seed, and a question that is easy for A and hard for B is so on every
    seed, so those pairs are not independent and the pooled p-value would be too small.  One
    outcome per question keeps the test's assumption.  `accuracy_a`/`accuracy_b` are the means
    over all seeds' answers, `n` the number of questions, `seeds` how many seeds each count is of."""
    if a_rows_by_seed.keys() != b_rows_by_seed.keys() or not a_rows_by_seed:
        raise CotlabError(f"{a} and {b} need runs for the same seeds")
    counts: dict = {}
    for side, by_seed in ((0, a_rows_by_seed), (1, b_rows_by_seed)):
        for seed, rows in by_seed.items():
            right = {row["id"]: bool(row["correct"]) for row in rows}
            if counts and right.keys() != counts.keys():
                raise CotlabError(f"every seed of {a} and {b} must answer the same questions (seed {seed} differs)")
            for qid, correct in right.items():
                counts.setdefault(qid, [0, 0])[side] += correct
    wins = sum(x > y for x, y in counts.values())
    losses = sum(x < y for x, y in counts.values())
    seeds, n = len(a_rows_by_seed), len(counts)
    accuracy_a, accuracy_b = (sum(c[side] for c in counts.values()) / (n * seeds) for side in (0, 1))
    return {"a": a, "b": b, "wins": wins, "losses": losses, "ties": n - wins - losses, "n": n, "seeds": seeds,
            "p_value": mcnemar_exact(wins, losses), "accuracy_a": accuracy_a, "accuracy_b": accuracy_b,
            "difference": accuracy_a - accuracy_b, "eval_set": eval_set_hash(list(counts))}


def over_seeds(rows_by_seed: dict, reference_rows: list[dict] | dict, a: str, b: str) -> dict:
    """A stage trained with several seeds from one start (DPO or GRPO from the SFT adapter), against
    that start's one set of answers, on the same questions.  Two views of the same runs:
    `pooled_paired` (per question: on how many seeds A was right against B's 0 or all; the exact
    sign test on the questions that differ) and `across_seeds` (each seed's accuracy difference,
    with its Student t interval: how much training randomness alone moves the result).  B's own
    training noise is not in it when B is one run; when B too was trained with each seed
    (`reference_rows` a {seed: rows} dict: lesson 11's two methods), run i of A meets run i of B."""
    by_seed = reference_rows if isinstance(reference_rows, dict) else {seed: reference_rows for seed in rows_by_seed}
    pooled = pooled_paired(rows_by_seed, by_seed, a, b)
    accuracy = lambda rows: sum(bool(r["correct"]) for r in rows) / len(rows)
    differences = {str(seed): accuracy(rows) - accuracy(by_seed[seed]) for seed, rows in rows_by_seed.items()}
    return {**pooled, "n_seeds": len(rows_by_seed), "seeds_difference": differences,
            "across_seeds": across_seeds(list(differences.values()))}


def over_seeds_winner(comparison: dict, alpha: float = 0.05) -> str | None:
    """'a' or 'b' when both views of an `over_seeds` comparison agree: the per-question sign test
    clears alpha and the seeds' t interval excludes zero on the same side; else None."""
    interval = comparison["across_seeds"]["interval"]
    winner = paired_winner(comparison, alpha)
    if interval is None or winner is None:
        return None
    low, high = interval
    return winner if (low > 0 and winner == "a") or (high < 0 and winner == "b") else None


def over_seeds_verdict(comparison: dict, alpha: float = 0.05) -> str:
    """The sentence for an `over_seeds` comparison: a direction only when the per-question test
    clears alpha AND the seeds' t interval excludes zero on the same side; one seed says so."""
    a, b, n, seeds = comparison["a"], comparison["b"], comparison["n"], comparison["n_seeds"]
    spread = comparison["across_seeds"]
    mean = 100 * spread["mean"]
    detectable = paired_mde_phrase(comparison, alpha, "per-question sign test")
    per_question = (f"per question, {a} right on more seeds than {b} on {comparison['wins']} and on fewer on "
                    f"{comparison['losses']} of {n} (exact sign test {_p_text(comparison['p_value'])}; {detectable})")
    if seeds < 2 or spread["interval"] is None:
        return (f"{a} vs {b} on one training seed: {mean:+.1f} points, {per_question}; one seed cannot separate the "
                f"method from training noise")
    low, high = (100 * x for x in spread["interval"])
    across = f"{mean:+.1f} points on average over {seeds} training seeds (95% t interval {low:+.1f} to {high:+.1f})"
    if low == high == 0:
        return f"{a} and {b} answered alike on every seed ({across}; {per_question}): no difference"
    winner = over_seeds_winner(comparison, alpha)
    if winner:
        return f"{a} is {'better' if winner == 'a' else 'worse'} than {b}: {across}; {per_question}"
    if comparison["p_value"] < alpha or low > 0 or high < 0:
        return (f"{a} vs {b}: the seeds and the questions disagree ({across}; {per_question}): no conclusion "
                f"beyond noise")
    return f"no difference between {a} and {b} beyond noise: {across}; {per_question}"


def eval_set_hash(ids: list[str]) -> str:
    """A short stable name for the set of questions evaluated (sha1 of the sorted, distinct ids,
    first 12 hex digits): run summaries carry it so that only runs on the same questions are
    compared question by question."""
    if not ids:
        raise CotlabError("eval_set_hash needs at least one question id")
    return hashlib.sha1("\n".join(sorted({str(i) for i in ids})).encode()).hexdigest()[:12]


def paper_claim_sentence(comparison: dict, paper: str, claim: str, alpha: float = 0.05) -> str:
    """A paper's claim (stage A beats stage B) against this run's paired test: agreed, not
    reproduced at this scale and budget, or pointing the other way."""
    if "n_seeds" in comparison:  # an over_seeds comparison: both the questions and the seeds must agree
        verdict, winner = over_seeds_verdict(comparison, alpha), over_seeds_winner(comparison, alpha)
    else:
        verdict, winner = paired_verdict(comparison, alpha), paired_winner(comparison, alpha)
    if winner:
        return f"*{paper}* reports {claim}; this run {'agrees' if winner == 'a' else 'points the other way'}: {verdict}."
    return f"*{paper}* reports {claim}; this run does not reproduce it at this scale and budget: {verdict}."


def paired_winner(comparison: dict, alpha: float = 0.05) -> str | None:
    """'a' or 'b' when the exact McNemar test separates two stages at `alpha`, else None."""
    if comparison["p_value"] >= alpha or comparison["wins"] == comparison["losses"]:
        return None
    return "a" if comparison["wins"] > comparison["losses"] else "b"


def _block_means(values: list[float], blocks: int) -> list[float]:
    size = len(values) // blocks
    return [sum(values[i * size : (i + 1) * size]) / size for i in range(blocks)]


def trend_verdict(values: list[float], name: str = "entropy", confidence: float = 0.95, blocks: int = 3) -> str:
    """Did a logged metric rise or fall over training?  Successive logged steps are positively
    autocorrelated (each step starts from the last one's weights and the metric drifts smoothly),
    so a t interval over single steps is too narrow: it would find trends in noise.  Each half of
    the logged steps is cut into `blocks` blocks of consecutive steps (at least 2 steps each) and
    the t interval is taken over the block means, a batch-means estimate (Schmeiser 1982,
    *Batch Size Effects in the Analysis of Simulation Output*); a direction is named only when the
    first half's interval and the last half's do not overlap.  Block means weaken the dependence,
    they do not remove it, so this is a rough check, not a calibrated test: it is not claimed to be
    conservative.  Too few logged steps for blocks: the half means only, described, with no test."""
    half = len(values) // 2
    if half < 2:
        return f"{name}: {len(values)} logged step(s), too few to tell a trend"
    if half // blocks < 2:
        first, last = sum(values[:half]) / half, sum(values[-half:]) / half
        return (f"{name}: mean {first:.3g} over the first {half} logged steps and {last:.3g} over the last {half}; "
                f"descriptive only (no test: {len(values)} logged steps are too few for {blocks} blocks of 2 or more per half, "
                "and single steps are not independent)")
    first, last = (across_seeds(_block_means(part, blocks), confidence) for part in (values[:half], values[-half:]))
    (a_low, a_high), (b_low, b_high) = first["interval"], last["interval"]
    evidence = (f"mean {first['mean']:.3g} over the first {half} logged steps ({confidence:.0%} t interval over {blocks} block "
                f"means {a_low:.3g} to {a_high:.3g}) and {last['mean']:.3g} over the last {half} ({b_low:.3g} to {b_high:.3g}); "
                "a rough check, successive steps are not independent")
    if b_high < a_low:
        return f"{name} fell during training: {evidence}"
    if b_low > a_high:
        return f"{name} rose during training: {evidence}"
    return f"{name}: no trend detected beyond step-to-step noise ({evidence})"


# What a test of this size could have seen --------------------------------------------------------


def _rejecting_wins(n: int, alpha: float) -> list[int | None]:
    """For each number D of discordant questions up to n, the fewest wins out of D that the exact
    two-sided McNemar test rejects at alpha (None when even D out of D does not)."""
    found = []
    for discordant in range(n + 1):
        wins = next((w for w in range(discordant // 2 + 1, discordant + 1) if mcnemar_exact(w, discordant - w) < alpha), None)
        found.append(wins)
    return found


def _binomial_tail(n: int, p: float, at_least: int) -> float:
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(at_least, n + 1))


def paired_power(n: int, difference: float, discordance: float, alpha: float = 0.05, _thresholds=None) -> float:
    """Exact power of the two-sided exact McNemar test to find stage A better than stage B on n
    paired questions when A wins on a share p10 of them and loses on p01, with p10 - p01 =
    `difference` and p10 + p01 = `discordance`: the number of discordant questions is
    Binomial(n, discordance) and, given it, A's wins are Binomial(D, p10 / discordance).  Exact
    sums, no normal approximation, so it holds at the handful of questions a probe set has."""
    if not 0 <= difference <= discordance <= 1:
        raise CotlabError(f"need 0 <= difference <= discordance <= 1, got {difference} and {discordance}")
    if discordance == 0:
        return 0.0
    thresholds = _thresholds or _rejecting_wins(n, alpha)
    share_won = (discordance + difference) / 2 / discordance
    return sum(math.comb(n, d) * discordance**d * (1 - discordance) ** (n - d) * _binomial_tail(d, share_won, wins)
               for d, wins in enumerate(thresholds) if wins is not None)


def mde_paired(n: int, discordance: float = 0.0, alpha: float = 0.05, power: float = 0.8) -> float | None:
    """Minimum detectable effect of a paired design (the same questions under A and B, the exact
    McNemar or sign test): the smallest difference in accuracy (A minus B, a share of the n
    questions, on a grid of 0.5 points) that the test finds with at least `power` at `alpha`, by
    `paired_power`.  The share of questions on which A and B disagree is taken as
    max(`discordance`, difference): pass the share that disagreed in this run, 0 when none did
    (then every disagreement is assumed to favour A), or 1 for a sign test on a continuous score,
    where every question moves one way or the other.  None when no difference up to all n
    questions is detectable: with n = 4 even 4 wins and 0 losses give p = 0.125."""
    if n < 1:
        raise CotlabError(f"a minimum detectable effect needs at least one question, got n={n}")
    if not 0 <= discordance <= 1:
        raise CotlabError(f"discordance must be a share in [0, 1], got {discordance}")
    thresholds = _rejecting_wins(n, alpha)

    def enough(step: int) -> bool:
        difference = step / 200
        return paired_power(n, difference, max(discordance, difference), alpha, thresholds) >= power

    if not enough(200):
        return None
    low, high = 0, 200  # power rises with the difference: bisect for the first step that is enough
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if enough(middle) else (middle, high)
    return high / 200


def mde_two_proportions(n_a: int, n_b: int, baseline: float, alpha: float = 0.05, power: float = 0.8) -> float | None:
    """Minimum detectable effect of a two-group design (two accuracies on different questions, as
    in the length strata): the smallest rise above `baseline` (B's accuracy) that a two-sided test
    at alpha finds with `power`, by Cohen's arcsine effect size h = 2·asin√p_A − 2·asin√p_B
    (*Statistical Power Analysis for the Behavioral Sciences*), h = (z_{1-α/2} + z_power)·√(1/n_a + 1/n_b).
    A fall is searched when no rise fits below 1; None when neither fits."""
    if n_a < 1 or n_b < 1:
        raise CotlabError(f"a minimum detectable effect needs questions in both groups, got {n_a} and {n_b}")
    if not 0 <= baseline <= 1:
        raise CotlabError(f"baseline must be an accuracy in [0, 1], got {baseline}")
    z = NormalDist()
    h = (z.inv_cdf(1 - alpha / 2) + z.inv_cdf(power)) * math.sqrt(1 / n_a + 1 / n_b)
    start = math.asin(math.sqrt(baseline))
    for angle in (start + h / 2, start - h / 2):
        if 0 <= angle <= math.pi / 2:
            return abs(math.sin(angle) ** 2 - baseline)
    return None


def mde_phrase(mde: float | None, n: int, design: str) -> str:
    """'minimum detectable effect 31 points (80% power, α = 0.05, n=30, paired)': printed beside a
    verdict, so a null reads as 'an effect this large would likely have shown', not 'no effect'."""
    if mde is None:
        return f"no effect is detectable at 80% power, α = 0.05 with n={n} ({design})"
    return f"minimum detectable effect {100 * mde:.0f} points (80% power, α = 0.05, n={n}, {design})"


def paired_mde_phrase(comparison: dict, alpha: float = 0.05, design: str = "paired, exact McNemar") -> str:
    """mde_phrase of a paired comparison (compare_paired, paired_at_k, pooled_paired: anything with
    `n`, `wins` and `losses`), the share of questions that disagreed in this run as its discordance.
    In a family (`with_holm`) the design says the effect is before Holm's adjustment."""
    n = comparison["n"]
    if comparison.get("family_size", 1) > 1:
        design += ", before Holm's adjustment"
    return mde_phrase(mde_paired(n, (comparison["wins"] + comparison["losses"]) / n, alpha), n, design)


def verdict_with_mde(comparison: dict, alpha: float = 0.05) -> str:
    """paired_verdict with its test's minimum detectable effect beside it, so that 'no difference
    we can tell from noise' is read against the effect this many questions could have shown."""
    return f"{paired_verdict(comparison, alpha)}; {paired_mde_phrase(comparison, alpha)}"


def seeds_sentence(seeds: int, what: str) -> str:
    """What a comparison's training seeds allow: with one, each run's result is one draw of its
    seed, so a difference between runs is this run's, not the method's; with several, say how many."""
    if seeds < 1:
        raise CotlabError(f"a comparison needs at least one training seed, got {seeds}")
    if seeds == 1:
        return (f"{what} rests on one training seed: each run is one draw, and another seed could move it, so the paired "
                "tests above speak for these runs, not for the methods in general")
    return f"{what} is repeated over {seeds} training seeds"


def all_controls(controls: dict, what: str) -> dict:
    """A results file's `positive_control`: passed only when every named control passed (and
    there is at least one), each control's own numbers kept beside it."""
    return {"passed": bool(controls) and all(c["passed"] for c in controls.values()), "what": what, "controls": controls}
