"""Metadata filter language: every operator, missing keys, bad input."""
from __future__ import annotations

import pytest

from retgen_engine.docstore.filters import compile_filter

MD = {"genre": "news", "year": 2005, "tags": "a", "score": 0.5}


@pytest.mark.parametrize("flt, expected", [
    ({"genre": "news"}, True),
    ({"genre": "blog"}, False),
    ({"genre": {"$eq": "news"}}, True),
    ({"genre": {"$ne": "news"}}, False),
    ({"year": {"$gt": 2004}}, True),
    ({"year": {"$gt": 2005}}, False),
    ({"year": {"$gte": 2005}}, True),
    ({"year": {"$lt": 2005}}, False),
    ({"year": {"$lte": 2005}}, True),
    ({"year": {"$gte": 2000, "$lt": 2010}}, True),
    ({"year": {"$gte": 2000, "$lt": 2005}}, False),
    ({"tags": {"$in": ["a", "b"]}}, True),
    ({"tags": {"$nin": ["a", "b"]}}, False),
    ({"$and": [{"genre": "news"}, {"year": 2005}]}, True),
    ({"$and": [{"genre": "news"}, {"year": 2006}]}, False),
    ({"$or": [{"genre": "blog"}, {"year": 2005}]}, True),
    ({"$or": [{"genre": "blog"}, {"year": 2006}]}, False),
    ({"$not": {"genre": "news"}}, False),
    ({"$not": {"genre": "blog"}}, True),
    ({"genre": "news", "year": 2006}, False),  # top-level keys are and-ed
    ({"$or": [{"$and": [{"genre": "news"}, {"score": {"$lt": 1}}]}, {"x": 1}]}, True),
])
def test_operators(flt, expected):
    assert compile_filter(flt)(MD) is expected


@pytest.mark.parametrize("flt", [{"missing": 1}, {"missing": {"$ne": 1}},
                                 {"missing": {"$nin": [1]}}, {"missing": {"$gt": 0}}])
def test_missing_keys_never_match(flt):
    assert compile_filter(flt)(MD) is False


def test_not_selects_records_without_a_key():
    assert compile_filter({"$not": {"missing": {"$eq": 1}}})(MD) is True


def test_incomparable_types_do_not_match():
    assert compile_filter({"genre": {"$gt": 3}})(MD) is False


def test_callable_filter():
    assert compile_filter(lambda md: md["year"] > 2000)(MD) is True
    assert compile_filter(lambda md: md.get("nope"))(MD) is False


def test_none_is_no_filter():
    assert compile_filter(None) is None


@pytest.mark.parametrize("flt, msg", [
    ({"year": {"$regex": "x"}}, "unknown filter operator '\\$regex'.*allowed: \\$eq"),
    ({"$xor": []}, "unknown logical operator '\\$xor'"),
    ({"tags": {"$in": "a"}}, "\\$in on 'tags' takes a list"),
    ({"year": {"$gt": [1]}}, "\\$gt on 'year' takes a scalar"),
    ({"$and": {"a": 1}}, "\\$and takes a non-empty list"),
    ({"$or": []}, "\\$or takes a non-empty list"),
    ({"$not": [1]}, "\\$not takes one filter dict"),
    ({"$and": [1]}, "\\$and items must be filter dicts"),
    ("genre", "filter must be a dict or a callable"),
    ({1: 2}, "filter key 1 must be a string"),
])
def test_bad_filters_raise_clear_errors(flt, msg):
    with pytest.raises(ValueError, match=msg):
        compile_filter(flt)


# -- list, text and emptiness operators (the LlamaIndex operators, defined in the engine) --

LISTS = {"tags": ["a", "b"], "title": "Weather Today", "none": None, "blank": "", "nil": [],
         "n": 0}


@pytest.mark.parametrize("flt, expected", [
    ({"tags": {"$has": "a"}}, True),
    ({"tags": {"$has": "z"}}, False),
    ({"title": {"$has": "W"}}, False),  # not a list
    ({"tags": {"$any": ["z", "b"]}}, True),
    ({"tags": {"$any": ["z", "y"]}}, False),
    ({"tags": {"$any": []}}, False),
    ({"title": {"$any": ["Weather"]}}, False),
    ({"tags": {"$all": ["b", "a"]}}, True),
    ({"tags": {"$all": ["a", "z"]}}, False),
    ({"tags": {"$all": []}}, True),  # every value of nothing: any list
    ({"title": {"$all": []}}, False),  # but only a list
    ({"title": {"$text_match": "Weather"}}, True),
    ({"title": {"$text_match": "weather"}}, False),
    ({"title": {"$itext_match": "weather"}}, True),
    ({"title": {"$itext_match": "WEATHER t"}}, True),
    ({"title": {"$itext_match": "rain"}}, False),
    ({"title": {"$text_match": 5}}, False),  # a non-string operand matches nothing
    ({"tags": {"$text_match": "a"}}, False),  # nor a non-string value
    ({"none": {"$empty": True}}, True),
    ({"blank": {"$empty": True}}, True),
    ({"nil": {"$empty": True}}, True),
    ({"n": {"$empty": True}}, False),  # 0 is a value
    ({"tags": {"$empty": True}}, False),
    ({"tags": {"$empty": False}}, True),
    ({"none": {"$empty": False}}, False),
    ({"missing": {"$empty": True}}, True),  # the one operator that matches a missing key
    ({"missing": {"$empty": False}}, False),
    ({"tags": {"$has": "a", "$all": ["a", "b"]}, "title": {"$itext_match": "today"}}, True),
    ({"$or": [{"tags": {"$has": "z"}}, {"title": {"$text_match": "Today"}}]}, True),
    ({"$not": {"tags": {"$any": ["a"]}}}, False),
])
def test_list_text_and_empty_operators(flt, expected):
    assert compile_filter(flt)(LISTS) is expected


@pytest.mark.parametrize("op, operand", [("$has", "a"), ("$any", ["a"]), ("$all", ["a"]),
                                         ("$all", []), ("$text_match", "a"),
                                         ("$itext_match", "a")])
def test_new_operators_never_match_a_missing_key(op, operand):
    assert compile_filter({"missing": {op: operand}})(LISTS) is False


@pytest.mark.parametrize("flt, msg", [
    ({"tags": {"$any": "a"}}, "\\$any on 'tags' takes a list"),
    ({"tags": {"$all": 3}}, "\\$all on 'tags' takes a list"),
    ({"tags": {"$empty": 1}}, "\\$empty on 'tags' takes true or false"),
    ({"tags": {"$empty": None}}, "\\$empty on 'tags' takes true or false"),
    ({"tags": {"$and": [{"a": 1}]}}, "unknown filter operator '\\$and' on key 'tags'"),
])
def test_new_operators_validate_operands(flt, msg):
    with pytest.raises(ValueError, match=msg):
        compile_filter(flt)


def test_one_operator_table():
    from retgen_engine.docstore.filters import FIELD_OPERATORS, LOGICAL_OPERATORS, OPERATORS

    assert FIELD_OPERATORS == ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin",
                               "$has", "$any", "$all", "$text_match", "$itext_match", "$empty")
    assert LOGICAL_OPERATORS == ("$and", "$or", "$not")
    assert list(OPERATORS) == [*FIELD_OPERATORS, *LOGICAL_OPERATORS]
    assert all(op.doc and op.operand for op in OPERATORS.values())
    assert [n for n, op in OPERATORS.items() if op.matches_missing] == ["$empty"]
    with pytest.raises(ValueError, match="allowed: \\$eq, .*\\$itext_match, \\$empty$"):
        compile_filter({"a": {"$contains": 1}})
