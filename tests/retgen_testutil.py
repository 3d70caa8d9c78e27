"""Shared helpers for the engine tests (imported by name; pytest puts tests/ on sys.path)."""
from __future__ import annotations

from pathlib import Path

from retgen_engine import RETGENConfig

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "examples" / "data" / "wikitext2_sample.tokens"
SHARED = ROOT.parent / "shared" / "data"


def hashing_config(**index) -> RETGENConfig:
    cfg = RETGENConfig()
    cfg.encoder.name = "hashing:64"
    for k, v in index.items():
        setattr(cfg.index, k, v)
    return cfg


def live(d: Path) -> Path:
    """The directory of a committed model's live version (its files and manifest)."""
    from retgen_engine.persist.commit import resolve

    return resolve(d)


def rewrite_manifest(d: Path, edit) -> None:
    """Change a model's manifest as a consistent writer would (re-sealed, pointer updated):
    for tests of what a loader does with a valid manifest that says something else."""
    import hashlib
    import json

    from retgen_engine.persist.modeldir import seal

    v = live(d)
    m = json.loads((v / "manifest.json").read_text())
    edit(m)
    (v / "manifest.json").write_text(json.dumps(seal(m)))
    ptr = json.loads((d / "CURRENT").read_text())
    ptr["manifest_sha256"] = hashlib.sha256((v / "manifest.json").read_bytes()).hexdigest()
    (d / "CURRENT").write_text(json.dumps(ptr))
