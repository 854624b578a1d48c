#!/usr/bin/env python3
"""The service a team would write in Python, as the baseline of `lecr bench serve`.

FastAPI + uvicorn (one process) + sentence-transformers, answering the same Studio-shaped
`POST /stable/recommend?override_threshold=...` requests as `lecr serve`: the topic text is
built as lecr builds it (title # ancestors from parent to root # description), embedded with
`SentenceTransformer.encode`, and scored against the content matrix of its language, held as one
torch tensor per language; selection is the same dynamic threshold (or the top k with
`override_threshold=True`). Torch uses as many threads as there are cores, under
`torch.inference_mode()`.

Content vectors: `--data DIR` embeds content.csv at start-up (sentence-transformers, batch 64),
or `--features DIR` loads the `content.safetensors` + `content.csv` that `lecr embed --data`
wrote (to skip a long embedding run when only the serving path is measured).

Environment: python3 -m venv V && V/bin/pip install torch sentence-transformers fastapi uvicorn
Run: V/bin/python serve_baseline.py --model MODEL_DIR (--data DIR | --features DIR) --port 8001
"""
import argparse
import csv
import os
import re
import sys

import torch
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sentence_transformers import SentenceTransformer
from starlette.concurrency import run_in_threadpool

SEP = " # "
MAX_SELECTED = 128


def clean(s):
    return (s or "").replace("\r\n", " ").replace("\n", " ").strip()


def content_text(row):
    text = re.sub(r"http\S+", "", clean(row.get("text", "")))
    text = " ".join(text.split(" ")[:32])[:256]
    return f"{clean(row['title'])}{SEP}{clean(row['description'])}{SEP}{text}"


def topic_text(t):
    ancestors = sorted(t.get("ancestors") or [], key=lambda a: -a["level"])
    titles = [t["title"]] + [a["title"] for a in ancestors]
    return SEP.join(clean(x) for x in titles) + SEP + clean(t["description"])


def load_contents(args, model):
    """Returns {language: (ids, metadata rows, tensor of unit vectors)}."""
    csv.field_size_limit(sys.maxsize)
    folder = args.features or args.data
    with open(os.path.join(args.data or args.features, "content.csv"), encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    if args.features:
        from safetensors.torch import load_file
        vectors = load_file(os.path.join(folder, "content.safetensors"))["embeddings"]
        with open(os.path.join(args.data, "content.csv"), encoding="utf-8", newline="") as f:
            meta = {r["id"]: r for r in csv.DictReader(f)}
        rows = [meta[r["id"]] for r in rows]
    else:
        vectors = model.encode([content_text(r) for r in rows], batch_size=64, convert_to_tensor=True,
                               normalize_embeddings=True, show_progress_bar=False)
    by_lang = {}
    for i, r in enumerate(rows):
        by_lang.setdefault(r["language"], []).append(i)
    return {lang: ([rows[i] for i in idx], vectors[idx].contiguous()) for lang, idx in by_lang.items()}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--data", help="Kaggle-layout folder (content.csv)")
    p.add_argument("--features", help="folder of `lecr embed --data` (with --data for the metadata)")
    p.add_argument("--port", type=int, default=8001)
    p.add_argument("--margin", type=float, default=0.18)
    p.add_argument("--top-k", type=int, default=20)
    p.add_argument("--max-len", type=int, default=96)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = SentenceTransformer(args.model, device="cpu")
    model.max_seq_length = args.max_len
    with torch.inference_mode():
        index = load_contents(args, model)
    app = FastAPI()

    @app.get("/stable/connect")
    def connect():
        return {"status": "OK"}

    @app.post("/stable/recommend")
    async def recommend(request: Request):
        override = request.query_params.get("override_threshold", "False") in ("True", "true", "1")
        body = await request.json()
        topics = body["topics"]
        return JSONResponse(await run_in_threadpool(rank, topics, override))

    def rank(topics, override):
        with torch.inference_mode():
            vecs = model.encode([topic_text(t) for t in topics], convert_to_tensor=True,
                                normalize_embeddings=True, show_progress_bar=False)
            out = []
            for t, v in zip(topics, vecs):
                rows, matrix = index.get(t["language"], ([], None))
                recs = []
                if matrix is not None:
                    sims = matrix @ v
                    k = min(max(args.top_k, MAX_SELECTED), sims.shape[0])
                    top = torch.topk(sims, k)
                    values, idx = top.values.tolist(), top.indices.tolist()
                    if override:
                        n = min(args.top_k, k)
                    else:
                        th = values[0] - args.margin * values[0]
                        n = max(1, sum(1 for s in values if s >= th))
                    for rank_, (s, j) in enumerate(zip(values[:n], idx[:n]), 1):
                        r = rows[j]
                        recs.append({"id": r["id"], "channel_id": "", "title": r["title"],
                                     "description": r["description"], "similarity": s, "rank": rank_})
                out.append({"id": t["id"], "recommendations": recs})
            return {"topics": out}

    print(f"baseline ready on port {args.port}", flush=True)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
