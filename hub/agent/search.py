"""Search over the action catalog: keywords (BM25 with synonyms and character n-grams) and meaning
(sentence embeddings), fused into one ranking.

* **Keywords** (:class:`LexicalIndex`): BM25 over the words of each action (name split at case and
  punctuation, description, field names), query words expanded with a small built-in synonym map
  (order~purchase, customer~client~account, ...), and character 3-gram TF-IDF cosine similarity for
  inflections, abbreviations and typos.
* **Meaning** (:class:`SemanticIndex`): each action's name and description embedded with all-MiniLM-L6-v2
  (int8 ONNX, run offline from an installed wheel: :mod:`hub.agent.embed`), the query too, ranked by cosine
  similarity. It finds "text someone on their mobile" for *Create Message* although they share no word.
* **Fusion** (:class:`HybridIndex`): a weighted sum of the keyword score (scaled to the best keyword hit) and
  the cosine similarity; an action enters the results through either half (through meaning only above
  :data:`MIN_SIMILARITY`, so nonsense queries still find nothing). The weights were chosen on the tune half of
  ``bench/search_eval/twilio_queries.yaml`` (docs/benchmarks.md).

Without the model (package not installed) the index falls back to keywords alone, with one warning per process.
Vectors are cached in memory and on disk by text hash (:class:`hub.agent.embed.VectorStore`), so rebuilding a
catalog embeds only actions whose text changed.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hub import protocols
from hub.errors import ModelMissing

if TYPE_CHECKING:
    import numpy as np

    from hub.agent.catalog import Action

log = logging.getLogger(__name__)

#: Groups of words that mean the same to the catalog's users. Each word of a query also matches the others
#: of its group (with a lower weight). Lower case, singular; plurals are handled by stemming.
SYNONYMS: list[set[str]] = [
    {"order", "purchase", "po", "sale"},
    {"customer", "client", "account", "buyer", "party"},
    {"invoice", "bill", "billing"},
    {"stock", "inventory", "level", "quantity", "onhand"},
    {"warehouse", "depot", "site", "location", "dc"},
    {"payment", "statement", "transaction", "transfer", "booking", "bank"},
    {"contact", "interaction", "activity", "touchpoint", "call", "meeting"},
    {"product", "item", "sku", "article", "material"},
    {"line", "position", "item"},
    {"get", "read", "fetch", "list", "retrieve", "show", "find", "search", "query", "lookup"},
    {"create", "add", "post", "insert", "new", "register"},
    {"update", "put", "patch", "modify", "change", "edit", "set"},
    {"delete", "remove", "cancel", "drop"},
    {"shipment", "delivery", "shipping", "dispatch", "ship"},
    {"price", "cost", "amount", "value", "revenue", "total"},
    {"date", "day", "time", "period", "window", "since", "until"},
    {"employee", "staff", "worker", "person", "user"},
    {"supplier", "vendor", "partner"},
    {"region", "territory", "area", "country"},
    {"file", "drop", "document", "csv"},
]
_SYN: dict[str, set[str]] = {}
for _group in SYNONYMS:
    for _w in _group:
        _SYN.setdefault(_w, set()).update(_group - {_w})

_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")
_STOP = {"the", "a", "an", "of", "to", "in", "on", "for", "and", "or", "by", "with", "is", "are", "be", "from",
         "at", "as", "its", "it", "this", "that", "one", "each", "every", "all", "me", "my", "i", "we", "our",
         "which", "what", "who", "how", "do", "does", "can", "please", "show"}


def stem(word: str) -> str:
    """A crude English stemmer: plurals and a few endings, enough to match order/orders/ordered."""
    w = word.lower()
    for suffix, keep in (("ies", "y"), ("sses", "ss"), ("ches", "ch"), ("shes", "sh"), ("xes", "x")):
        if w.endswith(suffix) and len(w) > len(suffix) + 2:
            return w[: -len(suffix)] + keep
    if w.endswith("s") and not w.endswith("ss") and len(w) > 3:
        w = w[:-1]
    for suffix in ("ing", "ed"):
        if w.endswith(suffix) and len(w) > len(suffix) + 3:
            return w[: -len(suffix)]
    return w


def words(text: str) -> list[str]:
    """The stemmed words of *text*: camelCase, snake_case, dotted and slashed names are split."""
    out = []
    for raw in re.split(r"[^A-Za-z0-9]+", text):
        for part in _CAMEL.findall(raw):
            w = stem(part)
            if w and w not in _STOP:
                out.append(w)
    return out


def _ngrams(text: str, n: int = 3) -> Counter[str]:
    grams: Counter[str] = Counter()
    for w in re.split(r"[^a-z0-9]+", " ".join(re.findall(r"[A-Z]?[a-z]+|[A-Z]+|\d+", text)).lower()):
        if not w:
            continue
        padded = f" {w} "
        grams.update(padded[i:i + n] for i in range(len(padded) - n + 1))
    return grams


def _field_names(schema: Any, depth: int = 0) -> list[str]:
    if not isinstance(schema, dict) or depth > 6:
        return []
    out: list[str] = []
    for name, sub in (schema.get("properties") or {}).items():
        out.append(name)
        out.extend(_field_names(sub, depth + 1))
    for key in ("items", "additionalProperties"):
        out.extend(_field_names(schema.get(key), depth + 1))
    for key in ("anyOf", "oneOf", "allOf"):
        for sub in schema.get(key) or []:
            out.extend(_field_names(sub, depth + 1))
    return out


class LexicalIndex:
    """BM25 over weighted fields plus character 3-gram TF-IDF vectors, built once per catalog."""

    K1, B = 1.2, 0.75

    def __init__(self, actions: list[Action]) -> None:
        self.docs: list[Counter[str]] = []
        for a in actions:
            op = a.name.split(".", 1)[-1]
            tf: Counter[str] = Counter()
            tf.update(words(op) * 3)  # the operation name counts most
            tf.update(words(a.system) * 2)
            tf.update(words(a.description))
            tf.update(words(" ".join(str(v) for v in a.binding.values() if isinstance(v, str))))
            tf.update(words(" ".join(_field_names(a.output_schema))))
            if a.protocol in protocols.registry() and protocols.get(a.protocol).searchable_inputs:
                tf.update(words(" ".join(_field_names(a.input_schema))))
            self.docs.append(tf)
        n = len(actions)
        self.lengths = [sum(d.values()) for d in self.docs]
        self.avg = sum(self.lengths) / n if n else 0.0
        df: Counter[str] = Counter()
        for d in self.docs:
            df.update(d.keys())
        self.idf = {t: math.log(1 + (n - f + 0.5) / (f + 0.5)) for t, f in df.items()}
        self.postings: dict[str, list[int]] = {}
        for i, d in enumerate(self.docs):
            for t in d:
                self.postings.setdefault(t, []).append(i)
        # character n-grams of the name, description and field names (the "meaning" layer's fuzzy half)
        grams = [_ngrams(f"{a.name} {a.description} {' '.join(_field_names(a.output_schema)[:50])}")
                 for a in actions]
        gdf: Counter[str] = Counter()
        for g in grams:
            gdf.update(g.keys())
        self.gidf = {g: math.log((n + 1) / (f + 1)) + 1 for g, f in gdf.items()}
        self.gvecs = [self._unit({g: (1 + math.log(c)) * self.gidf[g] for g, c in v.items()}) for v in grams]
        self.gpostings: dict[str, list[int]] = {}
        for i, vec in enumerate(self.gvecs):
            for gram in vec:
                self.gpostings.setdefault(gram, []).append(i)

    @staticmethod
    def _unit(vec: dict[str, float]) -> dict[str, float]:
        norm = math.sqrt(sum(x * x for x in vec.values())) or 1.0
        return {k: x / norm for k, x in vec.items()}

    def bm25(self, terms: dict[str, float]) -> dict[int, float]:
        scores: dict[int, float] = {}
        for term, weight in terms.items():
            idf = self.idf.get(term)
            if idf is None:
                continue
            for i in self.postings[term]:
                d = self.docs[i]
                f = d[term]
                length = self.lengths[i]
                s = idf * f * (self.K1 + 1) / (f + self.K1 * (1 - self.B + self.B * length / (self.avg or 1)))
                scores[i] = scores.get(i, 0.0) + weight * s
        return scores

    def cosine(self, text: str) -> dict[int, float]:
        q = _ngrams(text)
        vec = self._unit({g: (1 + math.log(c)) * self.gidf[g] for g, c in q.items() if g in self.gidf})
        scores: dict[int, float] = {}
        for g, x in vec.items():
            for i in self.gpostings.get(g, ()):
                scores[i] = scores.get(i, 0.0) + x * self.gvecs[i][g]
        return scores


def expand(query: str) -> dict[str, float]:
    """The query's words (weight 1) and their synonyms (weight 0.4)."""
    terms: dict[str, float] = {}
    for w in words(query):
        terms[w] = 1.0
    for w in list(terms):
        for s in _SYN.get(w, ()):
            terms.setdefault(stem(s), 0.4)
    return terms



# --- meaning ---------------------------------------------------------------------------------------------

#: Below this cosine similarity an action found by meaning alone is not a hit (unrelated texts score about
#: 0.0-0.2 with this model, paraphrases 0.3 and up): "zebra giraffe" must still find nothing.
MIN_SIMILARITY = 0.3
#: Weight of the keyword score in the fused score (the rest is the cosine similarity's); chosen on the tune half.
KEYWORD_WEIGHT = 0.2

_VERB_PATH = re.compile(r"^(GET|PUT|POST|DELETE|PATCH|HEAD|OPTIONS|TRACE) \S+(: )?")
_NOTES = re.compile(r"\s*\((operationId [^)]*)\)|\s*\[tags: [^\]]*\]")
_LINK = re.compile(r"\]\([^)]*\)")  # a Markdown link's target: [text](url) -> [text]


def humanize(name: str) -> str:
    """``FetchIncomingPhoneNumber`` / ``get_customers_by_id`` as lower-case words: "fetch incoming phone number"."""
    return " ".join(p.lower() for raw in re.split(r"[^A-Za-z0-9]+", name) for p in _CAMEL.findall(raw))


def _descriptions(schema: Any, depth: int = 0) -> list[str]:
    """"name: description" of each documented property (nested up to 3 levels), links' targets dropped."""
    out: list[str] = []
    if not isinstance(schema, dict) or depth > 3:
        return out
    for name, sub in (schema.get("properties") or {}).items():
        if isinstance(sub, dict):
            if isinstance(sub.get("description"), str) and sub["description"].strip():
                out.append(f"{humanize(name)}: {_LINK.sub(']', sub['description'].strip())}")
            out.extend(_descriptions(sub, depth + 1))
    return out


def semantic_text(action: Action) -> str:
    """What the model reads of an action: its operation as words, what it says it does, and what its
    parameters are for (the model reads the first :data:`hub.agent.embed.MAX_TOKENS` tokens). Method, raw path
    and tags are left out (the keyword half has them). Parameter descriptions were worth 20 points of Recall@5
    on the tune half of the Twilio queries: they say what a call is about in the words people use."""
    op = str(action.binding.get("operation_id") or action.name.split(".", 1)[-1])
    text = _LINK.sub("]", _NOTES.sub("", _VERB_PATH.sub("", action.description)).strip())
    said = "; ".join(dict.fromkeys(p.strip() for p in text.split(" - ") if p.strip()))  # "summary - summary" once
    pieces = [humanize(op), said, " ".join(_descriptions(action.input_schema))]
    return ". ".join(p for p in pieces if p)


class SemanticIndex:
    """The unit vectors of the catalog's actions; a query's scores are its cosine similarities to them."""

    def __init__(self, actions: list[Action], *, store_path: Path | None = None) -> None:
        from hub.agent.embed import VectorStore, default_store_path, shared_embedder

        self.embedder = shared_embedder()
        store = VectorStore(store_path or default_store_path())
        self.vectors = self.embedder.cached([semantic_text(a) for a in actions], store)

    def similarity(self, query: str) -> np.ndarray:
        """Cosine similarity of *query* to every action (unit vectors: a dot product)."""
        import numpy as np

        # np.dot, not the @ operator: with this numpy and OpenBLAS, @ on a matrix and a vector took 1-10 ms
        # where dot takes 0.02 ms
        return np.dot(self.vectors, self.embedder.embed([query])[0])


_warned = False
_warn_lock = threading.Lock()


def _warn_once(reason: str) -> None:
    global _warned
    with _warn_lock:
        if not _warned:
            _warned = True
            log.warning("search by meaning is off, keywords only: %s", reason)


class HybridIndex:
    """Keywords and meaning over one catalog's actions, built once (the vectors from the cache when known).

    *semantic*: True requires the model (:class:`ModelMissing` without it), False uses keywords only, None
    (default) uses the model when it is installed and otherwise keywords, warning once per process.
    """

    def __init__(self, actions: list[Action], *, semantic: bool | None = None,
                 store_path: Path | None = None) -> None:
        self.actions = actions
        self.lexical = LexicalIndex(actions)
        self.semantic: SemanticIndex | None = None
        if semantic is not False and actions:
            try:
                self.semantic = SemanticIndex(actions, store_path=store_path)
            except ModelMissing as exc:
                if semantic:
                    raise
                _warn_once(str(exc))

    def keyword_scores(self, query: str) -> dict[int, float]:
        """BM25 on words and synonyms scaled to the best hit, plus half the character n-gram similarity
        (from 0.2): 0 to 1.5, a higher is a better match."""
        bm = self.lexical.bm25(expand(query))
        top = max(bm.values(), default=0.0) or 1.0
        scores = {i: s / top for i, s in bm.items()}
        for i, c in self.lexical.cosine(query).items():
            if c >= 0.2:
                scores[i] = scores.get(i, 0.0) + 0.5 * c
        return scores

    def scores(self, query: str) -> dict[int, float]:
        """The fused score of every action that matches *query* by keywords or by meaning."""
        keywords = self.keyword_scores(query)
        if self.semantic is None:
            return keywords
        similarity = self.semantic.similarity(query)
        top = max(keywords.values(), default=0.0) or 1.0
        fused: dict[int, float] = {}
        for i, k in keywords.items():
            fused[i] = KEYWORD_WEIGHT * k / top + (1 - KEYWORD_WEIGHT) * max(float(similarity[i]), 0.0)
        for i in (similarity >= MIN_SIMILARITY).nonzero()[0].tolist():
            if i not in fused:
                fused[i] = (1 - KEYWORD_WEIGHT) * float(similarity[i])
        return fused

    def rank(self, query: str, limit: int) -> list[tuple[int, float]]:
        """The best *limit* (action index, score), best first; ties by action name."""
        ranked = sorted(self.scores(query).items(), key=lambda kv: (-kv[1], self.actions[kv[0]].name))
        return ranked[:limit]
