#!/usr/bin/env python3
"""The learning curve of a distillation run in retrieval terms.

For every model directory that `anectx distill --export-checkpoints` wrote
under RUN/steps/ (and RUN itself, the best checkpoint, when it is finished),
runs `anectx eval <collection> --mode dense` on each collection and prints
one row per step: the held-out cosine to the teacher on passages and on
pseudo-queries, the held-out agreement (from RUN/checkpoints/state.json),
dense nDCG@10 per collection, their mean, the change of the mean against the
first row (the --init model when given) with a 95 % paired bootstrap interval
over each collection's queries (resampled separately, 2,000 draws, fixed
seed), and the mean as a share of the teacher's (MiniLM's dense nDCG@10 measured the same way; pass
--teacher-ndcg, or let the script measure it with --teacher DIR, which takes
minutes per collection on a CPU).

Usage:
  scripts/distill-curve.py RUN [--collections DIR ...] [--anectx BIN]
      [--init DIR] [--teacher-ndcg 0.430,0.421,0.787 | --teacher DIR] [--json OUT]

Each evaluation indexes into a scratch store under RUN/curve/ that is kept,
so a rerun only evaluates new steps.
"""
import argparse
import glob
import json
import os
import random
import subprocess
import sys


def dense_ndcg(anectx, collection, model, store):
    """Dense nDCG@10 and the per-query values {query id: nDCG@10}."""
    out = os.path.join(store, "eval.json")
    if not os.path.exists(out):
        os.makedirs(store, exist_ok=True)
        r = subprocess.run(
            [anectx, "eval", collection, "--mode", "dense", "--model", model,
             "--store", os.path.join(store, "store"), "--json"],
            capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"anectx eval failed for {model} on {collection}:\n{r.stderr}")
        with open(out, "w") as fh:
            fh.write(r.stdout)
    with open(out) as fh:
        modes = json.load(fh)["modes"]
    m = next(m for m in modes if m["mode"] == "dense")
    return m["ndcg_10"], {q["query_id"]: q["ndcg_10"] for q in m["per_query"]}


def paired_ci(base, now, draws=2000, seed=20261207):
    """95 % bootstrap interval of the change in the mean over collections of
    each collection's mean nDCG@10; queries resampled within a collection."""
    rng = random.Random(seed)
    diffs = [[now[c][q] - base[c][q] for q in sorted(base[c])] for c in range(len(base))]
    stats = []
    for _ in range(draws):
        total = 0.0
        for d in diffs:
            total += sum(d[rng.randrange(len(d))] for _ in d) / len(d)
        stats.append(total / len(diffs))
    stats.sort()
    return stats[int(0.025 * draws)], stats[int(0.975 * draws) - 1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("run")
    ap.add_argument("--collections", nargs="+", default=[
        "../shared/data/eval/cranfield", "../shared/data/eval/cisi", "../shared/data/eval/med"])
    ap.add_argument("--anectx", default=os.path.expanduser("~/.cache/anectx-target/release/anectx"))
    ap.add_argument("--init", help="the model the run started from (--init), evaluated as step 0")
    ap.add_argument("--teacher-ndcg", help="the teacher's dense nDCG@10, comma-separated, per collection")
    ap.add_argument("--teacher", help="measure the teacher's dense nDCG@10 with this model directory")
    ap.add_argument("--json", help="also write the rows as JSON here")
    a = ap.parse_args()

    names = [os.path.basename(os.path.normpath(c)) for c in a.collections]
    history = {}
    state = os.path.join(a.run, "checkpoints", "state.json")
    if os.path.exists(state):
        for p in json.load(open(state))["history"]:
            history[p["step"]] = p
    models = []
    if a.init:
        models.append((0, a.init))
    for d in sorted(glob.glob(os.path.join(a.run, "steps", "step-*"))):
        models.append((int(d.rsplit("-", 1)[1]), d))
    if os.path.exists(os.path.join(a.run, "metrics.json")):
        m = json.load(open(os.path.join(a.run, "metrics.json")))
        models.append((f"best ({m['best_step']})", a.run))
    if not models:
        sys.exit(f"no model under {a.run}/steps (run distill with --export-checkpoints)")

    teacher = None
    if a.teacher_ndcg:
        teacher = [float(x) for x in a.teacher_ndcg.split(",")]
    elif a.teacher:
        teacher = [dense_ndcg(a.anectx, c, a.teacher, os.path.join(a.run, "curve", "teacher", n))[0]
                   for c, n in zip(a.collections, names)]
    if teacher and len(teacher) != len(names):
        sys.exit("--teacher-ndcg needs one value per collection")

    rows = []
    print("step\tcos\tq_cos\tagree\t" + "\t".join(names) + "\tmean\tchange [95 % CI]"
          + ("\tshare" if teacher else ""))
    base = None
    for step, model in models:
        tag = str(step) if isinstance(step, int) else "best"
        res = [dense_ndcg(a.anectx, c, model, os.path.join(a.run, "curve", f"{tag}", n))
               for c, n in zip(a.collections, names)]
        nd = [r[0] for r in res]
        per_query = [r[1] for r in res]
        if base is None:
            base = (nd, per_query)
        change = sum(nd) / len(nd) - sum(base[0]) / len(base[0])
        lo, hi = paired_ci(base[1], per_query)
        h = history.get(step, {}) if isinstance(step, int) else {}
        mean = sum(nd) / len(nd)
        share = mean / (sum(teacher) / len(teacher)) if teacher else None
        row = {"step": step, "heldout_cosine": h.get("heldout_cosine"),
               "heldout_query_cosine": h.get("heldout_query_cosine"),
               "heldout_agreement": h.get("heldout_agreement"),
               "dense_ndcg_10": dict(zip(names, nd)), "mean": mean,
               "change": change, "change_ci95": [lo, hi], "share_of_teacher": share}
        rows.append(row)
        f = lambda x: "-" if x is None else f"{x:.4f}"
        print("\t".join([str(step), f(row["heldout_cosine"]), f(row["heldout_query_cosine"]),
                         f(row["heldout_agreement"])] + [f"{x:.4f}" for x in nd] + [f"{mean:.4f}"]
                        + [f"{change:+.4f} [{lo:+.4f}, {hi:+.4f}]"]
                        + ([f"{100 * share:.1f}%"] if teacher else [])), flush=True)
    if a.json:
        json.dump({"run": a.run, "collections": names, "teacher_ndcg": teacher, "rows": rows},
                  open(a.json, "w"), indent=2)


if __name__ == "__main__":
    main()
