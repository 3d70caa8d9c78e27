import pytest
from pydantic import ValidationError

from retgen_engine import RETGENConfig
from retgen_engine.config import PatternConfig


def test_json_round_trip(tmp_path):
    cfg = RETGENConfig()
    cfg.index.nlist = 256
    cfg.retrieval.k = 7
    cfg.patterns = PatternConfig(lengths=[2, 5], min_counts=[1, 3])
    path = tmp_path / "c.json"
    cfg.save(path)
    back = RETGENConfig.load(path)
    assert back == cfg
    assert back.patterns.lengths == [2, 5]


def test_paper_fields_present():
    cfg = RETGENConfig()
    for name in ("nlist", "nprobe", "pq_nbits", "pq_nsplits", "energy_temperature",
                 "policy_hidden_dim"):
        assert hasattr(cfg, name)
    assert cfg.pq_nsplits == cfg.index.pq_nsplits


@pytest.mark.parametrize("section,field,value", [
    ("retrieval", "k", 0), ("retrieval", "temperature", -1.0), ("retrieval", "lam", 1.5),
    ("generation", "top_p", 0.0), ("generation", "top_p", 1.5), ("index", "nprobe", 0),
    ("index", "pq_nbits", 0), ("policy", "policy_hidden_dim", 0),
])
def test_invalid_values_name_the_field(section, field, value):
    with pytest.raises(ValidationError) as e:
        RETGENConfig.model_validate({section: {field: value}})
    assert field in str(e.value)


def test_nprobe_above_nlist_rejected():
    with pytest.raises(ValidationError, match="nprobe"):
        RETGENConfig.model_validate({"index": {"nlist": 8, "nprobe": 16}})


def test_unknown_field_rejected():
    with pytest.raises(ValidationError, match="bogus"):
        RETGENConfig.model_validate({"retrieval": {"bogus": 1}})


def test_pattern_lengths_must_match_min_counts():
    with pytest.raises(ValidationError, match="min_counts"):
        RETGENConfig.model_validate({"patterns": {"lengths": [1, 2], "min_counts": [1]}})


def test_bad_json_file(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        RETGENConfig.load(p)
