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
