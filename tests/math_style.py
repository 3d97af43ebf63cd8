"""MATH-500-style rows built in code (problem and solution only, no answer field), for the loader
and `cotlab score` tests: each kind of gold answer MATH writes, inside solutions that box it the ways
MATH does (nested braces, \\boxed 5, \\fbox, an intermediate box before the final one)."""

ANSWER_KINDS = [
    lambda i: str(i + 3),
    lambda i: f"-{i + 2}",
    lambda i: f"{i + 1}.5",
    lambda i: f"\\frac{{{i + 1}}}{{{i + 2 * 7 + 3}}}",
    lambda i: f"\\dfrac{{\\sqrt{{{i + 2}}}}}{{{i + 5}}}",
    lambda i: f"{i + 2}\\sqrt{{{2 * i + 3}}}",
    lambda i: f"\\sqrt[3]{{{i + 9}}}",
    lambda i: f"({i}, {i + 4}]",
    lambda i: f"[{i + 1}, \\infty)",
    lambda i: f"(-\\infty, {i}) \\cup ({i + 3}, \\infty)",
    lambda i: "\\text{(" + "ABCDE"[i % 5] + ")}",
    lambda i: "\\text{" + ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"][i % 5] + "}",
    lambda i: f"{10 + i}^\\circ",
    lambda i: f"\\left( {i + 1}, \\frac{{\\pi}}{{{i + 2}}} \\right)",
    lambda i: f"\\begin{{pmatrix}} {i} \\\\ {i + 1} \\end{{pmatrix}}",
    lambda i: f"x^{{{i + 2}}} + {i + 1}x",
]

BOXINGS = [
    lambda a: f"Putting these together, the answer is $\\boxed{{{a}}}$.",
    lambda a: f"Therefore the value is $\\boxed{{{a}}}.$",
    lambda a: f"We first find $\\boxed{{99}}$ for the smaller case, but the question asks for the total, so the answer is $\\boxed{{{a}}}$.",
    lambda a: f"So the result is \\fbox{{{a}}}.",
]


def math_style_rows(count: int = 120) -> list[tuple[dict, str]]:
    """(row, expected gold) pairs; every answer differs from its neighbours'."""
    pairs = []
    for i in range(count):
        answer = ANSWER_KINDS[i % len(ANSWER_KINDS)](i)
        boxing = BOXINGS[i % len(BOXINGS)]
        if answer.lstrip("-").isdigit() and i % 3 == 0:
            ending = f"The answer is $\\boxed {answer}$."  # MATH also writes \boxed without braces
        else:
            ending = boxing(answer)
        solution = (f"Let $n = {i}$. Expanding $(n + 1)^2 = n^2 + 2n + 1$ and collecting terms with "
                    f"$\\{{ x : x > {i} \\}}$ in mind gives the expression below.\n{ending}")
        pairs.append(({"problem": f"Problem {i}: compute the quantity defined by $n = {i}$ for kind {i % len(ANSWER_KINDS)}.",
                       "solution": solution, "subject": "Algebra", "level": 1 + i % 5}, answer))
    return pairs
