#!/usr/bin/env python3
"""What a running `lecr serve` recommends for the topics of one fold, scored as `lecr eval`
scores (mean per-topic F2, precision, recall; per language and all).

    python3 bench/served_accuracy.py --url http://127.0.0.1:8000 --data SPLIT --fold 1 \
        [--hide-out KNOWN]

The topics go out as Kolibri Studio sends them (their own ids, channel, title, description,
language and ancestors), so the data folder's topic ids must be Studio-shaped
(`lecr synth --studio-ids`). `--hide-out KNOWN` only writes KNOWN: the data folder without the
fold's links, to start the server with `--data KNOWN` (a topic's own links must not be in
the tree context it is scored with; `lecr eval` hides them the same way). Standard library
only.
"""

import argparse
import csv
import json
import os
import shutil
import sys
import urllib.request
from collections import defaultdict


def read(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def f2(pred, truth):
    if not pred or not truth:
        return 0.0, 0.0, 0.0
    hit = len(set(pred) & truth)
    p, r = hit / len(pred), hit / len(truth)
    return p, r, (5 * p * r / (4 * p + r) if p + r else 0.0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url")
    ap.add_argument("--data", required=True)
    ap.add_argument("--fold", type=int, required=True)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--hide-out")
    a = ap.parse_args()
    topics = {t["id"]: t for t in read(os.path.join(a.data, "topics.csv"))}
    fold = {i for i, t in topics.items() if t.get("fold") == str(a.fold)}
    corr = read(os.path.join(a.data, "correlations.csv"))
    truth = {c["topic_id"]: set(c["content_ids"].split()) for c in corr if c["topic_id"] in fold}
    if a.hide_out:
        os.makedirs(a.hide_out, exist_ok=True)
        for name in os.listdir(a.data):
            src = os.path.join(a.data, name)
            if name != "correlations.csv":
                shutil.copy(src, os.path.join(a.hide_out, name))
        with open(os.path.join(a.data, "correlations.csv"), newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        with open(os.path.join(a.hide_out, "correlations.csv"), "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(rows[0])
            w.writerows(r for r in rows[1:] if r[0] not in fold)
        print(f"wrote {a.hide_out} without the links of {len(truth)} fold-{a.fold} topics")
        return
    if not a.url:
        sys.exit("--url is required (or --hide-out)")

    def ancestors(t):
        out, p = [], t.get("parent")
        while p and p in topics:
            q = topics[p]
            out.append({"id": q["id"], "title": q["title"], "description": q["description"],
                        "level": int(q["level"] or 0)})
            p = q.get("parent")
        return out

    ids = sorted(truth)
    got = {}
    for k in range(0, len(ids), a.batch):
        chunk = ids[k:k + a.batch]
        body = {"topics": [{"id": i, "channel_id": topics[i]["channel"], "title": topics[i]["title"],
                            "description": topics[i]["description"],
                            "language": topics[i]["language"], "ancestors": ancestors(topics[i])}
                           for i in chunk]}
        req = urllib.request.Request(a.url.rstrip("/") + "/stable/recommend",
                                     data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req) as r:
            for t in json.load(r)["topics"]:
                got[t["id"]] = [x["id"] for x in t["recommendations"]]
    groups = defaultdict(lambda: [0.0, 0.0, 0.0, 0])
    for i in ids:
        p, r, f = f2(got.get(i, []), truth[i])
        for g in (topics[i]["language"], "all"):
            s = groups[g]
            s[0] += f
            s[1] += p
            s[2] += r
            s[3] += 1
    print("| group | topics | F2 | precision | recall |\n| --- | --- | --- | --- | --- |")
    for g in sorted(groups, key=lambda g: (g == "all", g)):
        f, p, r, n = groups[g]
        print(f"| {g} | {n} | {f / n:.4f} | {p / n:.4f} | {r / n:.4f} |")


if __name__ == "__main__":
    main()
