"""Check the Twilio search queries: no query shares a content word with the operations it means.

    .venv/bin/python bench/search_eval/check_overlap.py [--queries bench/search_eval/twilio_queries.yaml]
                                                         [--catalog ../shared/realworld/openapi/twilio]

A query paraphrases an operation of Twilio's OpenAPI documents; search by meaning must find it although a
keyword search has nothing to match. For every query and every operation it accepts, this script collects the
operation's text — the operationId split on case changes, digits and underscores, the path's segments (split
the same way, parameters included), the summary and the description — and fails when a content word of the
query equals a word of that text after lowercasing and stemming (Snowball English; a word and its stem both
count, and a stem also matches with a trailing "e" dropped, so "queue" and "queued" are one word). Stop words
are ignored. It also fails when an expected operation does not exist (file, method, path, and operationId
when given), when a query is repeated, or when its half (tune / heldout) is not the one the split rule gives:
queries ordered by the SHA-1 of their text, the 1st, 3rd, ... tune, the 2nd, 4th, ... heldout.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from functools import cache
from pathlib import Path
from typing import Any

import snowballstemmer
import yaml

ROOT = Path(__file__).resolve().parents[2]
QUERIES = Path(__file__).with_name("twilio_queries.yaml")
# ../shared of the main checkout (/work/main) or of a worktree's parent folder (/work/wt/NAME)
CATALOG = next((p / "shared" / "realworld" / "openapi" / "twilio" for p in (ROOT.parent, ROOT.parent.parent)
                if (p / "shared" / "realworld" / "openapi" / "twilio").is_dir()),
               ROOT.parent / "shared" / "realworld" / "openapi" / "twilio")
METHODS = ("get", "post", "put", "patch", "delete")

# Function words only (articles, pronouns, auxiliaries, conjunctions, prepositions without meaning of their
# own): every word that carries meaning counts, including "up", "out", "own", "same", "before", "after".
_FUNCTION_WORDS = """
a about am an and any are as at be because been being both but by can could did do does doing during each for
from had has have having he her here hers herself him himself his how i if in into is it its itself just let me
my myself nor of on or our ours ourselves she should so some such than that the their theirs them themselves
then there these they this those to was we were what when where which while who whom why will with would you
your yours yourself yourselves s t don re ve ll d m o y
"""
STOP = frozenset(_FUNCTION_WORDS.split())

_stemmer = snowballstemmer.stemmer("english")


def words(text: str) -> list[str]:
    """Lowercased words of *text*, camelCase / PascalCase / digits / underscores / punctuation split apart."""
    text = re.sub(r"([a-z])([A-Z])", r"\1 \2", text)
    text = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1 \2", text)
    return [w for w in re.split(r"[^a-z0-9]+", text.lower()) if w and not w.isdigit()]


@cache
def forms(word: str) -> frozenset[str]:
    """The forms a word is compared by: itself, its stem, and both without a trailing e."""
    stem = _stemmer.stemWord(word)
    out = {word, stem}
    out |= {f[:-1] for f in list(out) if f.endswith("e") and len(f) > 3}
    return frozenset(out)


def content(text: str) -> set[str]:
    return {w for w in words(text) if w not in STOP}


def operation_text(op: dict[str, Any], path: str) -> str:
    return " ".join([str(op.get("operationId") or ""), path.replace("/", " "), str(op.get("summary") or ""),
                     str(op.get("description") or "")])


def load_catalog(folder: Path) -> dict[tuple[str, str, str], dict[str, Any]]:
    ops = {}
    for doc in sorted(folder.glob("*.json")):
        data = json.loads(doc.read_text(encoding="utf-8"))
        for path, item in (data.get("paths") or {}).items():
            for method, op in item.items():
                if method in METHODS and isinstance(op, dict):
                    ops[(doc.name, method.upper(), path)] = op
    return ops


def shared(query: str, text: str) -> list[str]:
    """The query's content words that also occur (by form) in *text*."""
    theirs = set().union(*(forms(w) for w in content(text))) if content(text) else set()
    return sorted(w for w in content(query) if forms(w) & theirs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--queries", type=Path, default=QUERIES)
    ap.add_argument("--catalog", type=Path, default=CATALOG)
    args = ap.parse_args()
    catalog = load_catalog(args.catalog)
    data = yaml.safe_load(args.queries.read_text(encoding="utf-8"))
    queries = data["queries"]
    problems: list[str] = []
    seen: set[str] = set()
    halves = {"tune": 0, "heldout": 0}
    for n, q in enumerate(queries, 1):
        where = f"query {n} ({q.get('query')!r})"
        text = str(q.get("query") or "")
        if not content(text):
            problems.append(f"{where}: no content word")
        if text.lower() in seen:
            problems.append(f"{where}: repeated")
        seen.add(text.lower())
        if q.get("split") not in halves:
            problems.append(f"{where}: split must be tune or heldout")
        else:
            halves[q["split"]] += 1
        expected = q.get("expected") or []
        if not expected:
            problems.append(f"{where}: no expected operation")
        for e in expected:
            key = (e.get("file"), str(e.get("method", "")).upper(), e.get("path"))
            op = catalog.get(key)
            if op is None:
                problems.append(f"{where}: no operation {key} in {args.catalog}")
                continue
            if e.get("operationId") and e["operationId"] != op.get("operationId"):
                problems.append(f"{where}: {key} has operationId {op.get('operationId')!r}, not {e['operationId']!r}")
            clash = shared(text, operation_text(op, key[2]))
            if clash:
                problems.append(f"{where}: shares {clash} with {e.get('operationId') or key}")
    order = sorted(queries, key=lambda q: hashlib.sha1(str(q.get("query")).encode()).hexdigest())
    for k, q in enumerate(order):
        want = "tune" if k % 2 == 0 else "heldout"
        if q.get("split") != want:
            problems.append(f"query {q.get('query')!r}: split {q.get('split')!r}, the rule gives {want!r}")
    for p in problems:
        print("PROBLEM:", p)
    print(f"{len(queries)} queries (tune {halves['tune']}, heldout {halves['heldout']}), "
          f"{sum(len(q.get('expected') or []) for q in queries)} expected operations, "
          f"{len(catalog)} operations in the catalog: {'FAIL' if problems else 'ok'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
