"""Compare every evaluation (predictions.jsonl) of two run directories, token for token.

    python scripts/compare_evaluations.py RUN_A RUN_B

A refactor that claims "behaviour unchanged" runs the suite before and after and shows this
printing `different or missing: 0` (exit 0; 1 when any completion differs or an evaluation is
missing from one side).  Compared: each row's question id, its completion and, with k > 1, every
sample's completion."""
import json, sys
from pathlib import Path
a, b = Path(sys.argv[1]), Path(sys.argv[2])
def evals(root):
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("predictions.jsonl"))}
ea, eb = evals(a), evals(b)
print(f"{len(ea)} evaluations in {a}, {len(eb)} in {b}")
same = differ = 0
for key in sorted(set(ea) | set(eb)):
    if key not in ea or key not in eb:
        print("  only in one:", key); differ += 1; continue
    ra = [json.loads(l) for l in ea[key].read_text().splitlines() if l.strip()]
    rb = [json.loads(l) for l in eb[key].read_text().splitlines() if l.strip()]
    fields = lambda rows: [(r["id"], r["completion"], [s.get("completion") for s in r.get("samples", [])]) for r in rows]
    if fields(ra) == fields(rb):
        same += 1
    else:
        differ += 1
        n = sum(x != y for x, y in zip(fields(ra), fields(rb)))
        print(f"  DIFFERENT: {key} ({n} of {len(ra)} rows differ)")
print(f"identical: {same}, different or missing: {differ}")
sys.exit(1 if differ else 0)
