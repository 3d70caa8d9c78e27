"""LlamaIndex ``MetadataFilters`` translated onto the engine's dict filters: every operator
and condition, and the semantics of the adapter's former own operators."""
from __future__ import annotations

import pytest

pytest.importorskip("llama_index.core")

from llama_index.core.vector_stores.types import (FilterCondition, FilterOperator,  # noqa: E402
                                                  MetadataFilter, MetadataFilters)

from retgen_engine.docstore.filters import OPERATORS  # noqa: E402
from retgen_integrations.llama_index.filters import (NAMES, to_dict_filter,  # noqa: E402
                                                     to_predicate)

MDS = {"a": {"tags": ["x", "y"], "title": "Rain Later", "n": 1},
       "b": {"tags": [], "title": "", "n": 2},
       "c": {"tags": None, "n": 3},
       "d": {}}


def _f(key, op, value, condition=None):
    return MetadataFilters(filters=[MetadataFilter(key=key, operator=op, value=value)],
                           **({"condition": condition} if condition else {}))


def _match(filters):
    pred = to_predicate(filters)
    return {k for k, md in MDS.items() if pred(md)}


def test_every_llama_operator_has_an_engine_operator():
    assert set(NAMES) == set(FilterOperator)
    assert all(NAMES[op] in OPERATORS for op in FilterOperator)


@pytest.mark.parametrize("op, key, value, expected, dict_filter", [
    (FilterOperator.EQ, "n", 1, {"a"}, {"n": {"$eq": 1}}),
    (FilterOperator.NE, "n", 1, {"b", "c"}, {"n": {"$ne": 1}}),  # d: missing never matches
    (FilterOperator.GT, "n", 1, {"b", "c"}, {"n": {"$gt": 1}}),
    (FilterOperator.GTE, "n", 2, {"b", "c"}, {"n": {"$gte": 2}}),
    (FilterOperator.LT, "n", 2, {"a"}, {"n": {"$lt": 2}}),
    (FilterOperator.LTE, "n", 2, {"a", "b"}, {"n": {"$lte": 2}}),
    (FilterOperator.IN, "n", [1, 3], {"a", "c"}, {"n": {"$in": [1, 3]}}),
    (FilterOperator.IN, "n", 3, {"c"}, {"n": {"$in": [3]}}),  # a scalar: a one-item list
    (FilterOperator.NIN, "n", [1, 3], {"b"}, {"n": {"$nin": [1, 3]}}),
    (FilterOperator.TEXT_MATCH, "title", "Rain", {"a"}, {"title": {"$text_match": "Rain"}}),
    (FilterOperator.TEXT_MATCH, "title", "rain", set(), {"title": {"$text_match": "rain"}}),
    (FilterOperator.TEXT_MATCH, "title", "", {"a", "b"}, {"title": {"$text_match": ""}}),
    (FilterOperator.TEXT_MATCH, "n", 1, set(), {"n": {"$text_match": 1}}),
    (FilterOperator.TEXT_MATCH_INSENSITIVE, "title", "rain later", {"a"},
     {"title": {"$itext_match": "rain later"}}),
    (FilterOperator.CONTAINS, "tags", "x", {"a"}, {"tags": {"$has": "x"}}),
    (FilterOperator.ANY, "tags", ["z", "y"], {"a"}, {"tags": {"$any": ["z", "y"]}}),
    (FilterOperator.ANY, "tags", "y", {"a"}, {"tags": {"$any": ["y"]}}),
    (FilterOperator.ALL, "tags", ["x", "y"], {"a"}, {"tags": {"$all": ["x", "y"]}}),
    (FilterOperator.ALL, "tags", ["x", "z"], set(), {"tags": {"$all": ["x", "z"]}}),
    (FilterOperator.IS_EMPTY, "tags", None, {"b", "c", "d"}, {"tags": {"$empty": True}}),
    (FilterOperator.IS_EMPTY, "title", "ignored", {"b", "c", "d"}, {"title": {"$empty": True}}),
])
def test_operators(op, key, value, expected, dict_filter):
    f = _f(key, op, value)
    assert to_dict_filter(f) == {"$and": [dict_filter]}
    assert _match(f) == expected


def test_conditions_and_nesting():
    n1 = MetadataFilter(key="n", value=1)
    n2 = MetadataFilter(key="n", value=2)
    tags = MetadataFilter(key="tags", operator=FilterOperator.CONTAINS, value="x")
    assert _match(MetadataFilters(filters=[n1, tags])) == {"a"}
    assert _match(MetadataFilters(filters=[n1, n2], condition=FilterCondition.OR)) == {"a", "b"}
    assert _match(MetadataFilters(filters=[n1], condition=FilterCondition.NOT)) == {"b", "c", "d"}
    nested = MetadataFilters(filters=[MetadataFilters(filters=[n1, n2],
                                                      condition=FilterCondition.OR),
                                      MetadataFilter(key="title", value="",
                                                     operator=FilterOperator.TEXT_MATCH)])
    assert _match(nested) == {"a", "b"}
    assert to_dict_filter(nested) == {"$and": [{"$or": [{"n": {"$eq": 1}}, {"n": {"$eq": 2}}]},
                                               {"title": {"$text_match": ""}}]}


def test_empty_filter_lists_keep_their_meaning():
    assert _match(MetadataFilters(filters=[])) == set(MDS)  # and of nothing: everything
    assert _match(MetadataFilters(filters=[], condition=FilterCondition.OR)) == set()
    assert _match(MetadataFilters(filters=[], condition=FilterCondition.NOT)) == set()
    assert to_predicate(None) is None and to_dict_filter(None) is None


def test_bad_operands_raise():
    with pytest.raises(ValueError, match="\\$gt on 'n' takes a scalar"):
        to_predicate(_f("n", FilterOperator.GT, [1]))
