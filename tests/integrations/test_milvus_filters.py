"""One filter suite, two backends: every operator evaluated by the faiss store (Python) and by
Milvus Lite (the expression of retgen_engine.docstore.milvus_expr) must select the same
records; what Milvus cannot express exactly raises an error naming the operator; no key or
value can change the expression."""
from __future__ import annotations

import numpy as np
import pytest

from retgen_engine.docstore import CallableFilterError
from retgen_engine.docstore.milvus_expr import to_expr

MDS = {
    "a": {"k": 1, "s": "news", "tags": ["x", "y"]},
    "b": {"k": 2.5, "s": "blog", "tags": ["y"]},
    "c": {"k": "x", "s": 'say "hi" \\ now', "tags": []},
    "d": {"k": None, "s": "", "tags": "x"},
    "e": {},
    "f": {"k": [1, "x"], "s": "Hello World"},
    "g": {"k": True, "s": "a%b_c"},
    "h": {"k": {"z": 1}, "s": "or true or", "tags": [1, 2]},
    "i": {"k": 0, "s": "and", "tags": ["x"], "or": 1, "not exists": 2},
}
IDS = list(MDS)

FILTERS = [
    {}, {"k": 1}, {"k": {"$eq": 1}}, {"k": {"$ne": 1}}, {"k": "x"}, {"k": None},
    {"k": {"$ne": None}}, {"k": True}, {"k": 1.0}, {"k": []}, {"tags": []},
    {"k": {"$gt": 0}}, {"k": {"$gte": 1}}, {"k": {"$lt": 2}}, {"k": {"$lte": 2.5}},
    {"s": {"$gt": "b"}}, {"s": {"$lt": "b"}}, {"k": {"$gt": None}}, {"k": {"$gt": "a"}},
    {"k": {"$in": [1, "x"]}}, {"k": {"$in": []}}, {"k": {"$nin": [1, "x"]}},
    {"k": {"$nin": []}}, {"k": {"$in": [None]}}, {"tags": {"$has": "x"}},
    {"tags": {"$has": 1}}, {"tags": {"$any": ["x", 2]}}, {"tags": {"$any": []}},
    {"tags": {"$all": ["x", "y"]}}, {"tags": {"$all": []}},
    {"s": {"$text_match": "o"}}, {"s": {"$text_match": "World"}}, {"s": {"$text_match": ""}},
    {"s": {"$text_match": 3}}, {"s": {"$itext_match": "123"}},
    {"k": {"$empty": True}}, {"k": {"$empty": False}}, {"tags": {"$empty": True}},
    {"s": {"$empty": True}}, {"missing": {"$empty": True}}, {"missing": {"$ne": 1}},
    {"missing": {"$nin": [1]}}, {"$not": {"k": 1}}, {"$not": {"k": {"$gt": "a"}}},
    {"$not": {"missing": 1}}, {"$not": {"tags": {"$has": "x"}}}, {"$not": {}},
    {"$and": [{"k": {"$gte": 0}}, {"tags": {"$has": "x"}}]},
    {"$or": [{"k": "x"}, {"s": "news"}, {"$not": {"k": {"$empty": False}}}]},
    {"k": {"$gte": 0, "$lt": 2}}, {"s": "news", "k": 1},
    {"s": 'say "hi" \\ now'}, {"s": '" or true or "'}, {"s": '\\" or pk != "'},
    {"s": "or true or"}, {"s": {"$in": ["and", "or true or"]}},
    {"or": 1}, {"not exists": 2}, {"$or": [{"or": {"$ne": 1}}, {"not exists": {"$lt": 0}}]},
]

INEXPRESSIBLE = [
    ({"k": [1, "x"]}, r"\$eq on 'k': comparing with a list"),
    ({"k": {"$ne": {"z": 1}}}, r"\$ne on 'k': comparing with a list or dict"),
    ({"s": {"$itext_match": "world"}}, r"\$itext_match on 's': Milvus has no case-insensitive"),
    ({"s": {"$text_match": "a%b"}}, r"\$text_match on 's'.*LIKE wildcard"),
    ({"s": {"$text_match": "b_c"}}, r"\$text_match on 's'.*LIKE wildcard"),
    ({"s": {"$text_match": "\\"}}, r"\$text_match on 's'.*backslash"),
    ({"tags": {"$has": None}}, r"\$has: list item None"),
    ({"tags": {"$any": [["x"]]}}, r"\$any: list item \['x'\]"),
]


@pytest.fixture(scope="module")
def stores(milvus_db):
    from retgen_engine.docstore import DocumentStore

    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((len(IDS), 16)).astype(np.float32)
    texts = [f"text {x}" for x in IDS]
    faiss = DocumentStore()
    milvus = DocumentStore(backend="milvus", uri=milvus_db, collection="filter_suite")
    for s in (faiss, milvus):
        s.upsert(IDS, texts, vecs, [MDS[x] for x in IDS])
    yield faiss, milvus, vecs[0]
    milvus.clear()


@pytest.mark.parametrize("flt", FILTERS, ids=[repr(f) for f in FILTERS])
def test_same_records_on_both_backends(stores, flt):
    faiss, milvus, q = stores
    want = [r.id for r in faiss.where(flt)]
    assert [r.id for r in milvus.where(flt)] == want  # insertion order, like faiss
    assert {h.id for h in milvus.search(q, k=len(IDS), filter=flt)} == set(want)


@pytest.mark.parametrize("flt, msg", INEXPRESSIBLE, ids=[repr(f) for f, _ in INEXPRESSIBLE])
def test_inexpressible_filters_name_the_operator(stores, flt, msg):
    with pytest.raises(ValueError, match=msg):
        stores[1].search(stores[2], k=3, filter=flt)


@pytest.mark.parametrize("key", ['a"b', "a\\b", "a'b", 'k"] == 1 or metadata["k', "x]", "\n"])
def test_unsafe_keys_are_rejected(stores, key):
    with pytest.raises(ValueError, match="cannot be used in a Milvus filter"):
        stores[1].where({key: 1})


def test_values_are_literals():
    assert to_expr({"s": '" or true or "'}).count('\\"') == 2
    assert '"\\\\\\" or pk != \\""' in to_expr({"s": '\\" or pk != "'})
    assert to_expr({"s": "a\nb"}).count("\\n") == 1
    with pytest.raises(ValueError, match="int64"):
        to_expr({"k": 2 ** 70})
    with pytest.raises(ValueError, match="cannot be written"):
        to_expr({"k": float("nan")})


def test_malformed_filters_raise_like_the_faiss_store(stores):
    faiss, milvus, q = stores
    for flt, msg in [({"k": {"$contains": 1}}, "unknown filter operator '\\$contains'"),
                     ({"$xor": []}, "unknown logical operator"),
                     ({"k": {"$in": 1}}, "takes a list of values"),
                     ({"$and": []}, "non-empty list"), ({"k": {"$empty": 1}}, "true or false")]:
        for s in (faiss, milvus):
            with pytest.raises(ValueError, match=msg):
                s.search(q, k=2, filter=flt)


def test_callable_filters(stores, make_store):
    faiss, milvus, q = stores
    with pytest.raises(CallableFilterError, match="cannot run inside Milvus"):
        milvus.search(q, k=3, filter=lambda md: True)
    with pytest.raises(CallableFilterError):
        milvus.where(lambda md: True)
    client = make_store("milvus", callable_filters="client")
    client.upsert(IDS, [f"text {x}" for x in IDS], faiss.vectors(IDS), [MDS[x] for x in IDS])

    def pred(md):
        return isinstance(md.get("s"), str) and "o" in md["s"].lower()
    assert [r.id for r in client.where(pred)] == [r.id for r in faiss.where(pred)]
    assert [h.id for h in client.search(q, k=9, filter=pred, ids=["a", "f", "e"])] == \
        [h.id for h in faiss.search(q, k=9, filter=pred, ids=["a", "f", "e"])]
