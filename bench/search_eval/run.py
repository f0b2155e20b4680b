"""Search by meaning on Twilio's real catalog: Recall@1/@5 of keywords alone (BM25 + synonyms + n-grams)
against the hybrid (keywords + all-MiniLM-L6-v2 embeddings), per half of the queries, with query and build times.

    PYTHONPATH=. .venv/bin/python bench/search_eval/run.py [--split tune|heldout|both] [--misses]
                                                           [--out bench/results/search.md]

The catalog is every operation of the 55 OpenAPI documents in ../shared/realworld/openapi/twilio/, read with
the agent's own :func:`hub.protocols.rest.actions.openapi_operations`, one system per document named after its file
(``twilio_api_v2010``). The queries (bench/search_eval/twilio_queries.yaml, checked by check_overlap.py) share
no content word with the operations they mean. A query counts as found at k when any of its expected
operations is among the first k results. Tune on the tune half only; ``--misses`` lists the tune half's misses
and refuses to list the held-out half's.

The hybrid's index is built with a cold vector cache (a fresh temporary store, model load included); the
warm build (same texts, cache on disk) is reported too.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from hub.agent import embed, search  # noqa: E402
from hub.agent.catalog import Action, Catalog  # noqa: E402
from hub.protocols.rest.actions import openapi_operations  # noqa: E402

QUERIES = Path(__file__).with_name("twilio_queries.yaml")
CATALOG = next((p / "shared" / "realworld" / "openapi" / "twilio" for p in (ROOT.parent, ROOT.parent.parent)
                if (p / "shared" / "realworld" / "openapi" / "twilio").is_dir()),
               ROOT.parent / "shared" / "realworld" / "openapi" / "twilio")


def load_actions(folder: Path) -> list[Action]:
    """Every operation of every document in *folder*, one system per document (named after the file)."""
    actions: list[Action] = []
    for doc in sorted(folder.glob("*.json")):
        data = json.loads(doc.read_text(encoding="utf-8"))
        actions.extend(Action(**op) for op in openapi_operations(data, doc.stem))
    return actions


def expected_names(query: dict[str, Any], by_key: dict[tuple[str, str, str], str]) -> set[str]:
    names = set()
    for e in query["expected"]:
        key = (Path(e["file"]).stem, str(e["method"]).upper(), e["path"])
        if key not in by_key:
            raise SystemExit(f"{QUERIES}: query {query['query']!r}: no action for {key}")
        names.add(by_key[key])
    return names


def evaluate(catalog: Catalog, queries: list[dict[str, Any]], by_key: dict[tuple[str, str, str], str]
             ) -> dict[str, Any]:
    hits1 = hits5 = 0
    times: list[float] = []
    misses: list[tuple[str, list[str], set[str]]] = []
    for q in queries:
        want = expected_names(q, by_key)
        started = time.perf_counter()
        found = [a.name for a in catalog.search(q["query"], 5)]
        times.append(time.perf_counter() - started)
        hits1 += bool(found[:1] and found[0] in want)
        hits5 += bool(want & set(found))
        if not want & set(found):
            misses.append((q["query"], found, want))
    times.sort()
    n = len(queries) or 1
    return {"n": len(queries), "r1": hits1 / n, "r5": hits5 / n, "median_ms": 1000 * statistics.median(times),
            "p95_ms": 1000 * times[min(len(times) - 1, round(0.95 * (len(times) - 1)))], "misses": misses}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--queries", type=Path, default=QUERIES)
    ap.add_argument("--catalog", type=Path, default=CATALOG)
    ap.add_argument("--split", choices=("tune", "heldout", "both"), default="both")
    ap.add_argument("--misses", action="store_true", help="list the tune half's misses (never the held-out's)")
    ap.add_argument("--keyword-weight", type=float, help=f"override search.KEYWORD_WEIGHT "
                                                         f"({search.KEYWORD_WEIGHT}) while tuning")
    ap.add_argument("--min-similarity", type=float, help=f"override search.MIN_SIMILARITY "
                                                         f"({search.MIN_SIMILARITY}) while tuning")
    ap.add_argument("--out", type=Path, help="also write the report (Markdown) to this file")
    args = ap.parse_args()
    if args.keyword_weight is not None:
        search.KEYWORD_WEIGHT = args.keyword_weight
    if args.min_similarity is not None:
        search.MIN_SIMILARITY = args.min_similarity

    queries = yaml.safe_load(args.queries.read_text(encoding="utf-8"))["queries"]
    started = time.perf_counter()
    actions = load_actions(args.catalog)
    load_s = time.perf_counter() - started
    by_key = {(a.system, a.binding["method"], a.binding["path"]): a.name for a in actions}

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "vectors.sqlite"
        hybrid = Catalog(actions=actions, semantic=True, vector_store=store)
        started = time.perf_counter()
        hybrid.index  # noqa: B018 - builds it: model load + embedding every action, cold cache
        cold_s = time.perf_counter() - started
        model = embed.shared_embedder()
        tokens, padded = model.tokens, model.padded_tokens
        embed.shared_embedder()._memory.clear()  # warm = from the disk store, as a new process would
        warm = Catalog(actions=actions, semantic=True, vector_store=store)
        started = time.perf_counter()
        warm.index  # noqa: B018
        warm_s = time.perf_counter() - started
    keywords = Catalog(actions=actions, semantic=False)
    started = time.perf_counter()
    keywords.index  # noqa: B018
    keyword_build_s = time.perf_counter() - started

    halves = ["tune", "heldout"] if args.split == "both" else [args.split]
    lines = [f"{len(actions)} operations from {len(list(args.catalog.glob('*.json')))} documents "
             f"(read in {load_s:.1f} s); index build: keywords {keyword_build_s:.2f} s, hybrid {cold_s:.1f} s "
             f"cold (model load + embedding every action: {tokens:,} tokens, {padded:,} with padding, "
             f"{embed.default_threads()} thread(s)), {warm_s:.2f} s warm (vectors from the disk cache); "
             f"keyword weight {search.KEYWORD_WEIGHT}, min similarity {search.MIN_SIMILARITY}; "
             f"load average {' '.join(f'{x:.2f}' for x in load_before)} before, "
             f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} after the builds.", "",
             "| half | queries | search | Recall@1 | Recall@5 | median ms | p95 ms |",
             "| --- | ---: | --- | ---: | ---: | ---: | ---: |"]
    results: dict[tuple[str, str], dict[str, Any]] = {}
    for half in halves:
        subset = [q for q in queries if q["split"] == half]
        for label, catalog in (("keywords (BM25)", keywords), ("hybrid", hybrid)):
            r = evaluate(catalog, subset, by_key)
            results[(half, label)] = r
            lines.append(f"| {half} | {r['n']} | {label} | {r['r1']:.2f} | {r['r5']:.2f} | "
                         f"{r['median_ms']:.1f} | {r['p95_ms']:.1f} |")
    report = "\n".join(lines)
    print(report)
    if args.misses and "tune" in halves:
        print("\nTune-half misses of the hybrid (top 5 found / expected):")
        for query, found, want in results[("tune", "hybrid")]["misses"]:
            print(f"- {query!r}\n    found: {found}\n    want:  {sorted(want)}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
