#!/usr/bin/env python3
"""A breadth probe for the built-in embedder: a BEIR-layout collection made
from passages of scripts/distill-corpus-broad.sh that no training corpus
holds.

Each query is a passage's heading of 2 to 12 words (a documentation section
title, a docstring's function name, a dictionary headword of several words;
one-word headwords, most of the dictionary's, are left out so that rare
words do not make up the probe); its one relevant document is that
passage's body. Passages without a heading (prose, code comments) are
added as distractors. Headings that head more than one body are dropped.
The probe draws on the same sources as the broad corpus (other passages of
them), so it favours models trained on that corpus; it measures breadth
over those sources' topics, not transfer to a user's collection.

Usage: scripts/distill-probe-collection.py POOL OUT_DIR --exclude CORPUS...
    [--queries 1500] [--distractors 1500] [--seed 20261207]
POOL is a large build of scripts/distill-corpus-broad.sh (e.g. 120000).
"""
import argparse
import collections
import json
import os
import random


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("pool")
    ap.add_argument("out")
    ap.add_argument("--exclude", nargs="+", required=True,
                    help="training corpora whose passages must not appear")
    ap.add_argument("--queries", type=int, default=1500)
    ap.add_argument("--distractors", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=20261207)
    a = ap.parse_args()
    seen = set()
    for f in a.exclude:
        with open(f, encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                seen.add(line)
                seen.add(line.split("\t")[-1])
    headed, plain = [], []
    with open(a.pool, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line or line in seen or line.split("\t")[-1] in seen:
                continue
            if "\t" in line:
                h, b = line.split("\t", 1)
                headed.append((h.strip(), b.strip()))
            else:
                plain.append(line)
    heads = collections.Counter(h.lower() for h, _ in headed)
    headed = sorted((h, b) for h, b in headed if heads[h.lower()] == 1 and 2 <= len(h.split()) <= 12)
    rng = random.Random(a.seed)
    rng.shuffle(headed)
    plain.sort()
    rng.shuffle(plain)
    pairs = headed[: a.queries]
    docs = [b for _, b in pairs] + plain[: a.distractors]
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "corpus.jsonl"), "w") as fh:
        for i, d in enumerate(docs):
            fh.write(json.dumps({"_id": f"d{i}", "title": "", "text": d}) + "\n")
    with open(os.path.join(a.out, "queries.jsonl"), "w") as fh:
        for i, (h, _) in enumerate(pairs):
            fh.write(json.dumps({"_id": f"q{i}", "text": h}) + "\n")
    with open(os.path.join(a.out, "qrels.tsv"), "w") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for i in range(len(pairs)):
            fh.write(f"q{i}\td{i}\t1\n")
    print(f"{a.out}: {len(pairs)} queries, {len(docs)} documents "
          f"({len(headed)} headed and {len(plain)} plain passages were unused)")


if __name__ == "__main__":
    main()
