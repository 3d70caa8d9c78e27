"""Saving and loading small torch modules the sentence-transformers way:
``config.json`` (constructor arguments) + ``model.safetensors`` (strict weights).

Standalone, a module directory is written with the commit protocol (a manifest with the
files' sha256, checked on load); inside a model version it is plain files that the model's
manifest covers. A config is checked before anything is allocated: only the constructor's
arguments, integers within [0, 65536], finite numbers, short lists.
"""
from __future__ import annotations

import inspect
import json
import math
import os
from pathlib import Path
from typing import Any

from .commit import MANIFEST, Commit, read_pointer, resolve
from .errors import ModelFormatError

MAX_INT = 4096       # dimensions, sizes (a 4096 x 4096 layer is 64 MiB)
MAX_LIST = 1024      # choices


def check_config(cls: type, config: Any, where: str) -> dict:
    """The constructor arguments of ``cls`` in ``config``, bounded; ModelFormatError if not."""
    if not isinstance(config, dict):
        raise ModelFormatError(f"{where}: config.json is not a JSON object")
    params = inspect.signature(cls.__init__).parameters
    unknown = sorted(set(config) - set(params) - {"self"})
    if unknown:
        raise ModelFormatError(f"{where}: config.json has unknown keys {unknown} for {cls.__name__}")

    def ok(v: Any) -> bool:
        if isinstance(v, bool) or v is None or isinstance(v, str):
            return True
        if isinstance(v, int):
            return 0 <= v <= MAX_INT
        if isinstance(v, float):
            return math.isfinite(v)
        if isinstance(v, list):
            return len(v) <= MAX_LIST and all(ok(x) and not isinstance(x, list) for x in v)
        return False

    for k, v in config.items():
        if not ok(v):
            raise ModelFormatError(f"{where}: config.json {k}={str(v)[:80]}: integers must be in "
                                   f"[0, {MAX_INT}], numbers finite, lists at most {MAX_LIST} long")
    return config


class SavableModule:
    """Mixin for ``torch.nn.Module`` subclasses that expose ``get_config()``."""

    def get_config(self) -> dict:  # pragma: no cover - implemented by subclasses
        raise NotImplementedError

    def write_into(self, path: str | os.PathLike) -> None:
        """Write config.json + model.safetensors into directory ``path`` (part of a commit)."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.json").write_text(json.dumps(self.get_config(), indent=1))
        save_file({k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()},
                  str(path / "model.safetensors"))

    def save(self, path: str | os.PathLike) -> None:
        """Save as a committed directory of its own (the previous version stays until then)."""
        from .modeldir import _describe_files

        with Commit(path) as c:
            self.write_into(c.path)
            manifest = {"format": "retgen-module", "class": type(self).__name__,
                        "files": _describe_files(c.path)}
            (c.path / MANIFEST).write_text(json.dumps(manifest, indent=1))
            c.commit()

    @classmethod
    def load(cls, path: str | os.PathLike):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        from .modeldir import sha256_file

        path = Path(path)
        where = f"{cls.__name__} {str(path)!r}"
        root = resolve(path)
        if read_pointer(path) is not None:  # standalone: check its files
            try:
                files = json.loads((root / MANIFEST).read_text())["files"]
                for rel, meta in files.items():
                    if rel in ("config.json", "model.safetensors") and \
                            sha256_file(root / rel) != meta["sha256"]:
                        raise ModelFormatError(f"{where}: {rel} fails its sha256 check")
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise ModelFormatError(f"{where}: damaged manifest: {e}") from None
        try:
            config = json.loads((root / "config.json").read_text())
        except (OSError, ValueError, UnicodeDecodeError) as e:
            raise ModelFormatError(f"cannot load {where}: config.json: {e}") from None
        config = check_config(cls, config, where)
        try:
            state = load_file(str(root / "model.safetensors"))
        except (OSError, ValueError, SafetensorError) as e:
            raise ModelFormatError(f"cannot load {where}: model.safetensors: {e}") from None
        try:
            model = cls(**config)
        except (TypeError, ValueError) as e:
            raise ModelFormatError(f"{where}: config.json does not build a {cls.__name__}: {e}") from None
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise ModelFormatError(f"{where}: weights do not match {cls.__name__}: {e}") from None
        model.eval()
        return model
