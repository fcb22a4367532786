#!/usr/bin/env python3
"""Builds samples/quickstart (BEIR layout) from a Cranfield collection in BEIR
layout: 60 judged queries, every document judged for them, and other documents
up to 600 in all. Deterministic. Usage:
    scripts/make-quickstart-sample.py /path/to/cranfield samples/quickstart
"""
import hashlib, json, sys, os

src, out = sys.argv[1], sys.argv[2]
def h(s): return hashlib.blake2b(s.encode(), digest_size=8).hexdigest()
qrels = {}
with open(os.path.join(src, "qrels.tsv")) as f:
    next(f)
    for line in f:
        q, d, s = line.rstrip("\n").split("\t")[:3]
        if int(s) > 0:
            qrels.setdefault(q, {})[d] = int(s)
queries = [json.loads(l) for l in open(os.path.join(src, "queries.jsonl")) if l.strip()]
queries = [q for q in queries if str(q["_id"]) in qrels]
queries.sort(key=lambda q: h("q" + str(q["_id"])))
queries = queries[:60]
keep = set()
for q in queries:
    keep |= set(qrels[str(q["_id"])])
docs = [json.loads(l) for l in open(os.path.join(src, "corpus.jsonl")) if l.strip()]
others = sorted((d for d in docs if str(d["_id"]) not in keep), key=lambda d: h("d" + str(d["_id"])))
keep |= {str(d["_id"]) for d in others[: max(0, 600 - len(keep))]}
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, "corpus.jsonl"), "w") as f:
    for d in docs:
        if str(d["_id"]) in keep:
            f.write(json.dumps({"_id": str(d["_id"]), "title": d.get("title", ""), "text": d.get("text", "")}) + "\n")
with open(os.path.join(out, "queries.jsonl"), "w") as f:
    for q in sorted(queries, key=lambda q: int(q["_id"]) if str(q["_id"]).isdigit() else 0):
        f.write(json.dumps({"_id": str(q["_id"]), "text": q["text"]}) + "\n")
with open(os.path.join(out, "qrels.tsv"), "w") as f:
    f.write("query-id\tcorpus-id\tscore\n")
    for q in queries:
        for d, s in sorted(qrels[str(q["_id"])].items()):
            f.write(f"{q['_id']}\t{d}\t{s}\n")
print(f"{len(keep)} documents, {len(queries)} queries")
