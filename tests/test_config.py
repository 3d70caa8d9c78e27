import numpy as np
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


def test_paper_fields_read_their_sections():
    cfg = RETGENConfig()
    cfg.index.nlist, cfg.index.nprobe, cfg.index.pq_nbits, cfg.index.pq_nsplits = 300, 7, 6, 24
    cfg.energy.energy_temperature, cfg.policy.policy_hidden_dim = 0.7, 48
    assert (cfg.nlist, cfg.nprobe, cfg.pq_nbits, cfg.pq_nsplits, cfg.energy_temperature,
            cfg.policy_hidden_dim) == (300, 7, 6, 24, 0.7, 48)
    with pytest.raises(AttributeError):  # read-only views: the sections own the values
        cfg.nprobe = 3


def test_runtime_parameters_share_the_config_bounds():
    """One bound per parameter: the per-call objects refuse what the config refuses."""
    from retgen_engine.lm.mixture import RetrievalParams
    from retgen_engine.lm.sampling import SamplingParams
    from retgen_engine.ngram.cache import ContextCache

    with pytest.raises(ValidationError):
        RETGENConfig().retrieval.lam = 1.0
    with pytest.raises(ValueError, match="lam=1.0"):
        RetrievalParams(lam=1.0)
    with pytest.raises(ValueError, match="k=5000"):
        RetrievalParams(k=5000)
    assert RetrievalParams(k=np.int64(8)).k == 8
    with pytest.raises(ValueError, match="top_p=1.5"):
        SamplingParams(top_p=1.5)
    cfg = RETGENConfig()
    assert ContextCache.from_config(cfg.cache) == ContextCache()  # the same defaults
    assert SamplingParams.from_config(cfg.generation) == SamplingParams()
    assert (RetrievalParams().k, RetrievalParams().lam) == (cfg.retrieval.k, cfg.retrieval.lam)


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
