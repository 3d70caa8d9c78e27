"""Saving and loading small torch modules the sentence-transformers way:
``config.json`` (constructor arguments) + ``model.safetensors`` (strict weights)."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from .modeldir import ModelFormatError


class SavableModule:
    """Mixin for ``torch.nn.Module`` subclasses that expose ``get_config()``."""

    def get_config(self) -> dict:  # pragma: no cover - implemented by subclasses
        raise NotImplementedError

    def save(self, path: str | os.PathLike) -> None:
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            (tmp / "config.json").write_text(json.dumps(self.get_config(), indent=1))
            save_file({k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()},
                      str(tmp / "model.safetensors"))
            if path.exists():
                shutil.rmtree(path)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    @classmethod
    def load(cls, path: str | os.PathLike):
        from safetensors.torch import load_file

        path = Path(path)
        try:
            config = json.loads((path / "config.json").read_text())
            state = load_file(str(path / "model.safetensors"))
        except (OSError, ValueError) as e:
            raise ModelFormatError(f"cannot load {cls.__name__} from {str(path)!r}: {e}") from None
        model = cls(**config)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise ModelFormatError(f"{str(path)!r}: weights do not match {cls.__name__}: {e}") from None
        model.eval()
        return model
