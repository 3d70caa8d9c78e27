"""The ONNX Runtime encoder: a cached export of a sentence-transformers model (float32 or int8).

No torch at query time (torch is imported only to export, once per weights). Two sessions share
the model file: a single-threaded one for single queries (the lean path: the fast tokenizer and
``session.run``, nothing else) and one with the available cores for batches, created lazily.
Thread counts are per session, so nothing global in the process changes.
"""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Sequence

import numpy as np

from .encoders_base import BUNDLED_NAME, Encoder, bundled_minilm_path, fast_tokenizer
from .encoders_export import FILES, cached_export
from .encoders_select import batch_threads

#: let the batch session's idle workers sleep instead of spinning: spinning wins a few per cent
#: on an idle machine and loses several-fold when other processes want the same cores.
ALLOW_SPINNING = "0"


def _session(model_file: Path, threads: int):
    import onnxruntime as ort

    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    o.inter_op_num_threads = 1
    o.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    o.log_severity_level = 3
    if threads > 1:
        o.add_session_config_entry("session.intra_op.allow_spinning", ALLOW_SPINNING)
    return ort.InferenceSession(str(model_file), o, providers=["CPUExecutionProvider"])


class OnnxEncoder(Encoder):
    """all-MiniLM-L6-v2 (or a local Transformer + mean-pooling model) on ONNX Runtime."""

    backend = "onnx"

    def __init__(self, path: str | os.PathLike | None = None, dtype: str = "float32",
                 threads: int | None = None, cache_dir: str | os.PathLike | None = None):
        if dtype not in FILES:
            raise ValueError(f"encoder dtype {dtype!r} with backend 'onnx': use "
                             f"{' or '.join(repr(k) for k in FILES)}")
        p = Path(path) if path is not None else bundled_minilm_path()
        self.path = str(p)
        self.dtype = dtype
        self.export_dir = cached_export(p, cache_dir)
        self.model_file = self.export_dir / FILES[dtype]
        cfg = json.loads((p / "config.json").read_text("utf-8"))
        self.dim = int(cfg["hidden_size"])
        try:
            msl = int(json.loads((p / "sentence_bert_config.json").read_text("utf-8"))
                      ["max_seq_length"])
        except (OSError, ValueError, KeyError):
            msl = 512
        self.max_seq_length = min(msl, int(cfg.get("max_position_embeddings", msl)))
        self.name = BUNDLED_NAME if path is None else p.name
        self._tok = fast_tokenizer(p, self.max_seq_length)
        if self._tok is None:  # exportable() checked for tokenizer.json
            raise FileNotFoundError(f"{self.path!r} has no tokenizer.json")
        self.threads = batch_threads(threads)
        self._one_sess = _session(self.model_file, 1)
        self._many_sess = None
        self._lock = threading.Lock()

    def info(self) -> dict:
        return {"name": self.name, "dim": self.dim, "dtype": self.dtype,
                "max_seq_length": self.max_seq_length, "backend": self.backend}

    def _many(self):
        if self.threads == 1:
            return self._one_sess
        if self._many_sess is None:
            with self._lock:
                if self._many_sess is None:
                    self._many_sess = _session(self.model_file, self.threads)
        return self._many_sess

    @staticmethod
    def _unit(v: np.ndarray) -> np.ndarray:
        v = np.asarray(v, dtype=np.float32)
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)

    def _encode_one(self, text: str) -> np.ndarray:
        ids = np.array([self._tok.encode(text).ids], dtype=np.int64)
        out = self._one_sess.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})
        v = np.asarray(out[0][0], dtype=np.float32)
        return v / max(float(np.sqrt(v @ v)), 1e-12)  # np.linalg.norm costs more than the dot

    def _encode_batch(self, texts: Sequence[str]) -> np.ndarray:
        enc = self._tok.encode_batch(list(texts))
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        sess = self._one_sess if len(texts) == 1 else self._many()
        return self._unit(sess.run(None, {"input_ids": ids, "attention_mask": mask})[0])
