"""Search over the action catalog: keywords (BM25 with synonyms and character n-grams) and meaning
(sentence embeddings), fused into one ranking.

* **Keywords** (:class:`LexicalIndex`): BM25 over the words of each action (name split at case and
  punctuation, description, field names), query words expanded with a small built-in synonym map
  (order~purchase, customer~client~account, ...), and character 3-gram TF-IDF cosine similarity for
  inflections, abbreviations and typos.
* **Meaning** (:class:`SemanticIndex`): each action's operation as words, what it says it does and what its
  parameters are for (:func:`semantic_text`) embedded with all-MiniLM-L6-v2 (int8 ONNX, run offline from an
  installed wheel: :mod:`hub.agent.embed`), the query too, ranked by cosine similarity (one matrix-vector
  product over a contiguous float32 matrix). It finds "text someone on their mobile" for *Create Message*
  although they share no word.
* **Fusion** (:meth:`HybridIndex.scores`): the cosine similarity plus the keyword score weighted by how much
  of the query the action covers, so keywords decide when the query uses the catalog's words and meaning
  decides when it paraphrases; an action enters the results through either half (through meaning only above
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


#: How much a query word found only through one of its synonyms counts towards an action's coverage of the
#: query (the synonym groups are curated: "purchases" asks for orders).
SYNONYM_COVERAGE = 0.8


class LexicalIndex:
    """BM25 over weighted fields plus character 3-gram TF-IDF vectors, built once per catalog.

    Both are kept as postings of numpy arrays (for each term: the actions that have it and the term's BM25
    contribution to each; for each 3-gram: the actions and their vector weights), so a query costs one
    vectorised add per query term instead of a Python loop over every posting (36 ms -> under 1 ms for the
    n-grams of Twilio's 1,447 operations)."""

    K1, B = 1.2, 0.75

    def __init__(self, actions: list[Action]) -> None:
        import numpy as np

        self.n = n = len(actions)
        docs: list[Counter[str]] = []
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
            docs.append(tf)
        lengths = [sum(d.values()) for d in docs]
        avg = (sum(lengths) / n if n else 0.0) or 1.0
        df: Counter[str] = Counter()
        for d in docs:
            df.update(d.keys())
        self.idf = {t: math.log(1 + (n - f + 0.5) / (f + 0.5)) for t, f in df.items()}
        self.max_idf = max(self.idf.values(), default=1.0)
        ids: dict[str, list[int]] = {}
        contrib: dict[str, list[float]] = {}
        for i, d in enumerate(docs):
            norm = self.K1 * (1 - self.B + self.B * lengths[i] / avg)
            for t, f in d.items():
                ids.setdefault(t, []).append(i)
                contrib.setdefault(t, []).append(self.idf[t] * f * (self.K1 + 1) / (f + norm))
        self.postings = {t: (np.array(ids[t], dtype=np.intp), np.array(contrib[t], dtype=np.float64))
                         for t in ids}
        # character n-grams of the name, description and field names (the "meaning" layer's fuzzy half)
        grams = [_ngrams(f"{a.name} {a.description} {' '.join(_field_names(a.output_schema)[:50])}")
                 for a in actions]
        gdf: Counter[str] = Counter()
        for g in grams:
            gdf.update(g.keys())
        self.gidf = {g: math.log((n + 1) / (f + 1)) + 1 for g, f in gdf.items()}
        gids: dict[str, list[int]] = {}
        gweights: dict[str, list[float]] = {}
        for i, v in enumerate(grams):
            for gram, x in self._unit({g: (1 + math.log(c)) * self.gidf[g] for g, c in v.items()}).items():
                gids.setdefault(gram, []).append(i)
                gweights.setdefault(gram, []).append(x)
        self.gpostings = {g: (np.array(gids[g], dtype=np.intp), np.array(gweights[g], dtype=np.float64))
                          for g in gids}

    @staticmethod
    def _unit(vec: dict[str, float]) -> dict[str, float]:
        norm = math.sqrt(sum(x * x for x in vec.values())) or 1.0
        return {k: x / norm for k, x in vec.items()}

    def bm25(self, terms: dict[str, float]) -> np.ndarray:
        """The BM25 score of every action for the weighted *terms* (0 where none occurs)."""
        import numpy as np

        scores = np.zeros(self.n)
        for term, weight in terms.items():
            posting = self.postings.get(term)
            if posting is not None:
                scores[posting[0]] += weight * posting[1]
        return scores

    def coverage(self, query: str) -> np.ndarray:
        """How much of *query* each action contains, 0 to 1: the IDF of the query's words it has over the IDF
        of all of them (a word the catalog never uses counts as the rarest; a word matched only through a
        synonym counts :data:`SYNONYM_COVERAGE`). A query that paraphrases (shares a word or two with many
        actions) covers little of every action."""
        import numpy as np

        own = list(dict.fromkeys(words(query)))
        weights = [self.idf.get(w, self.max_idf) for w in own]
        total = sum(weights) or 1.0
        covered = np.zeros(self.n)
        for word, weight in zip(own, weights, strict=True):
            match = np.zeros(self.n)
            for term, credit in ((word, 1.0), *((stem(s), SYNONYM_COVERAGE) for s in _SYN.get(word, ()))):
                posting = self.postings.get(term)
                if posting is not None:
                    match[posting[0]] = np.maximum(match[posting[0]], credit)
            covered += weight / total * match
        return np.minimum(covered, 1.0)

    def cosine(self, text: str) -> np.ndarray:
        """The character 3-gram cosine similarity of *text* to every action."""
        import numpy as np

        q = _ngrams(text)
        vec = self._unit({g: (1 + math.log(c)) * self.gidf[g] for g, c in q.items() if g in self.gidf})
        scores = np.zeros(self.n)
        for g, x in vec.items():
            ids, weights = self.gpostings[g]
            scores[ids] += x * weights
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

#: Below this cosine similarity an action found by meaning alone is not a hit: "zebra giraffe" must still find
#: nothing (0.14 at best over Twilio's 1,447 operations). At 0.3 it cut off a tune query's answer (0.28);
#: gibberish like "asdf qwerty" reaches 0.28 too, so a lone meaning match this weak is a guess either way.
MIN_SIMILARITY = 0.25
#: Weight of the keyword score (scaled to the best keyword hit, times the action's query coverage squared)
#: added to the cosine similarity; chosen on the tune half of the Twilio queries (docs/benchmarks.md).
KEYWORD_WEIGHT = 0.5
#: Parameters whose descriptions an action's vector text carries, at most (the first sentence of each).
MAX_PARAMETER_NOTES = 8
#: A parameter note shared by more than this share of a catalog's actions (and by more than
#: :data:`COMMON_NOTE_MIN` of them) is boilerplate, left out of the vector text: Twilio's "page size: How many
#: resources to return in each list page", "page: The page index" and "page token: ..." are on 340 of its 1,447
#: operations. They say nothing about one operation and were 14% of the catalog's tokens, that is of the time
#: to build its vectors; the tune half's Recall@5 is the same without them (docs/benchmarks.md).
COMMON_NOTE_SHARE = 0.02
COMMON_NOTE_MIN = 8

_VERB_PATH = re.compile(r"^(GET|PUT|POST|DELETE|PATCH|HEAD|OPTIONS|TRACE) \S+(: )?")
_NOTES = re.compile(r"\s*\((operationId [^)]*)\)|\s*\[tags: [^\]]*\]")
_LINK = re.compile(r"\]\([^)]*\)")  # a Markdown link's target: [text](url) -> [text]
_MARKUP = re.compile(r"[`*\[\]]")
_SENTENCE_END = re.compile(r"(?<=[a-z0-9)])\. ")


def humanize(name: str) -> str:
    """``FetchIncomingPhoneNumber`` / ``get_customers_by_id`` as lower-case words: "fetch incoming phone number"."""
    return " ".join(p.lower() for raw in re.split(r"[^A-Za-z0-9]+", name) for p in _CAMEL.findall(raw))


def _plain(text: str) -> str:
    """Markdown as the words a reader sees: link targets, backticks, emphasis and brackets dropped."""
    return _MARKUP.sub("", _LINK.sub("]", text)).strip()


def _is_identifier(name: str, description: str) -> bool:
    """Parameters that only name another resource ("The SID of the Account that ...", ``ServiceSid``,
    ``customer_id``): every operation under the same parent has them, so they say nothing about this one."""
    last = humanize(name).rsplit(" ", 1)[-1]
    return last in ("sid", "id") or "SID" in description[:40]


def parameter_notes(schema: Any, limit: int = MAX_PARAMETER_NOTES, *,
                    common: frozenset[str] = frozenset()) -> list[str]:
    """"name: first sentence of its description" for the documented parameters of *schema* (a request body's
    fields included), identifiers and the catalog's *common* notes (:func:`common_notes`) left out, at most
    *limit*."""
    out: list[str] = []
    props = schema.get("properties") if isinstance(schema, dict) else None
    for name, sub in (props or {}).items():
        if not isinstance(sub, dict):
            continue
        if sub.get("x-in") == "body":
            out.extend(parameter_notes(sub, limit, common=common))
            continue
        said = sub.get("description")
        if isinstance(said, str) and said.strip() and not _is_identifier(name, said):
            note = f"{humanize(name)}: {_SENTENCE_END.split(_plain(said), 1)[0]}"
            if note not in common:
                out.append(note)
    return out[:limit]


def common_notes(actions: list[Action]) -> frozenset[str]:
    """The parameter notes so many of *actions* share that they are boilerplate (paging, request headers):
    on more than :data:`COMMON_NOTE_SHARE` of the actions and more than :data:`COMMON_NOTE_MIN` of them."""
    counts: Counter[str] = Counter()
    for a in actions:
        counts.update(set(parameter_notes(a.input_schema, limit=10_000)))
    floor = max(COMMON_NOTE_MIN, COMMON_NOTE_SHARE * len(actions))
    return frozenset(note for note, n in counts.items() if n > floor)


def semantic_text(action: Action, common: frozenset[str] = frozenset()) -> str:
    """What the model reads of an action: its operation as words ("create incoming phone number"), what it
    says it does (summary, description, and what its resource is), then what its parameters are for. Method,
    raw path, tags and the API's title are left out (the keyword half has them; on the tune half of the Twilio
    queries the title as a prefix cost 20 points of Recall@5), and so are identifier parameters, which every
    operation under a parent shares, and the catalog's *common* notes (:func:`common_notes`). Parameter notes
    were worth 20 points: they say what a call is about in the words people use. The model reads the first
    :data:`hub.agent.embed.MAX_TOKENS` tokens."""
    op = str(action.binding.get("operation_id") or action.name.split(".", 1)[-1])
    text = _plain(_NOTES.sub("", _VERB_PATH.sub("", action.description)))
    said = ". ".join(dict.fromkeys(p.strip().rstrip(".") for p in text.split(" - ") if p.strip()))
    pieces = [humanize(op), said, "; ".join(parameter_notes(action.input_schema, common=common))]
    return ". ".join(p for p in pieces if p)


class SemanticIndex:
    """The unit vectors of the catalog's actions; a query's scores are its cosine similarities to them."""

    def __init__(self, actions: list[Action], *, store_path: Path | None = None) -> None:
        from hub.agent.embed import VectorStore, default_store_path, shared_embedder

        self.embedder = shared_embedder()
        store = VectorStore(store_path or default_store_path())
        common = common_notes(actions)
        self.vectors = self.embedder.cached([semantic_text(a, common) for a in actions], store)

    def similarity(self, query: str) -> np.ndarray:
        """Cosine similarity of *query* to every action (unit vectors: a dot product)."""
        import numpy as np

        # einsum, not np.dot or @: those call OpenBLAS, whose threads wake up slowly on a loaded machine (p95
        # 21 ms for 1,447 x 384 under load 10 on 2 cores); einsum's own loop takes 0.07 ms (p95 0.16 ms)
        return np.einsum("ij,j->i", self.vectors, self.embedder.embed([query])[0])


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
        import numpy as np

        self.actions = actions
        self.lexical = LexicalIndex(actions)
        self._name_rank = np.argsort(np.argsort([a.name for a in actions], kind="stable"), kind="stable")
        self.semantic: SemanticIndex | None = None
        if semantic is not False and actions:
            try:
                self.semantic = SemanticIndex(actions, store_path=store_path)
            except ModelMissing as exc:
                if semantic:
                    raise
                _warn_once(str(exc))

    def keyword_scores(self, query: str) -> np.ndarray:
        """BM25 on words and synonyms scaled to the best hit, plus half the character n-gram similarity
        (from 0.2): 0 to 1.5 for every action, a higher is a better match, 0 no match."""
        import numpy as np

        bm = self.lexical.bm25(expand(query))
        top = float(bm.max(initial=0.0)) or 1.0
        grams = self.lexical.cosine(query)
        return bm / top + np.where(grams >= 0.2, 0.5 * grams, 0.0)

    def scores(self, query: str) -> np.ndarray:
        """The fused score of every action (0 where it matches *query* neither by keywords nor by meaning).

        Meaning is the cosine similarity; keywords add up to :data:`KEYWORD_WEIGHT` times the keyword score
        (scaled to the best keyword hit) times the action's coverage of the query squared (the larger of the
        share of the query's words it has and its character n-gram similarity). A query whose words an action
        has finds it as keywords alone would; a paraphrase matches a word or two of many actions, and those
        stray matches must not outrank what the sentence means (with the weighted sum of before they did:
        Recall@5 0.27 where the cosine alone had 0.42, docs/benchmarks.md)."""
        import numpy as np

        keywords = self.keyword_scores(query)
        if self.semantic is None:
            return keywords
        similarity = self.semantic.similarity(query).astype(np.float64)
        cover = np.maximum(self.lexical.coverage(query), self.lexical.cosine(query))
        top = float(keywords.max(initial=0.0)) or 1.0
        fused = np.maximum(similarity, 0.0) + KEYWORD_WEIGHT * keywords / top * cover ** 2
        found = (keywords > 0) | (similarity >= MIN_SIMILARITY)
        return np.where(found, np.maximum(fused, 1e-9), 0.0)

    def rank(self, query: str, limit: int) -> list[tuple[int, float]]:
        """The best *limit* (action index, score), best first; ties by action name."""
        import numpy as np

        scores = self.scores(query)
        hits = np.flatnonzero(scores > 0)
        if len(hits) > limit > 0:  # only those scoring at least the limit-th best need ordering (ties kept)
            cutoff = -np.partition(-scores[hits], limit - 1)[limit - 1]
            hits = hits[scores[hits] >= cutoff]
        order = np.lexsort((self._name_rank[hits], -scores[hits]))[:limit]
        return [(int(i), float(scores[i])) for i in hits[order]]
