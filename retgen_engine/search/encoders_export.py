"""Offline ONNX export of a local sentence-transformers model, cached once per weights.

The graph is the whole encoder: ``(input_ids, attention_mask) -> mean-pooled, L2-normalized
[n, dim]`` float32 (token_type_ids are zeros inside). It is exported with PyTorch's own ONNX
exporter from the local weights (no hub, no network) and quantized to int8 with ONNX Runtime's
dynamic quantization. Optimum (and sentence-transformers' ``backend="onnx"``, which wraps it) is
not used: its releases pin ``transformers<4.58``.

Cache: ``<root>/<sha>/{model.onnx, model_int8.onnx, meta.json}`` where ``root`` is
``$RETGEN_CACHE_DIR/onnx`` or ``~/.cache/retgen/onnx`` and ``sha`` hashes the weights, the model
config, the pooling config and :data:`FORMAT`. A directory is built under a temporary name and
renamed into place, so a reader sees either nothing or a complete, verified export.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

FORMAT = "retgen-onnx-1"  # bump when the graph's inputs/outputs or the export recipe change
FILES = {"float32": "model.onnx", "int8": "model_int8.onnx"}
_HASHED = ("model.safetensors", "pytorch_model.bin", "config.json", "modules.json",
           "1_Pooling/config.json")
EXPORTS = 0  # exports done by this process (tests check that a cached export is reused)
_sha_memo: dict[tuple, str] = {}


def cache_root() -> Path:
    base = os.environ.get("RETGEN_CACHE_DIR")
    root = Path(base) if base else Path(os.environ.get("XDG_CACHE_HOME") or
                                        Path.home() / ".cache") / "retgen"
    return root / "onnx"


def exportable(path: Path) -> str | None:
    """None when ``path`` is a Transformer + mean Pooling (+ Normalize) model; else why not."""
    mods = path / "modules.json"
    if not mods.is_file():
        return f"{str(path)!r} has no modules.json"
    try:
        kinds = [m["type"].rsplit(".", 1)[-1] for m in json.loads(mods.read_text("utf-8"))]
        pool = json.loads((path / "1_Pooling" / "config.json").read_text("utf-8"))
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"{str(path)!r}: unreadable modules/pooling config ({e})"
    if kinds[:2] != ["Transformer", "Pooling"] or any(k != "Normalize" for k in kinds[2:]):
        return f"{str(path)!r}: modules {kinds} are not Transformer, Pooling[, Normalize]"
    modes = [k for k, v in pool.items() if k.startswith("pooling_mode") and v]
    if modes != ["pooling_mode_mean_tokens"]:
        return f"{str(path)!r}: pooling {modes} is not mean pooling"
    if not (path / "tokenizer.json").is_file():
        return f"{str(path)!r} has no tokenizer.json (a fast tokenizer is needed)"
    return None


def weights_sha(path: Path) -> str:
    """sha256 over the files that determine the exported graph (memoized per size/mtime)."""
    files = [path / f for f in _HASHED if (path / f).is_file()]
    key = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    if key not in _sha_memo:
        h = hashlib.sha256(FORMAT.encode())
        for f in files:
            h.update(f.relative_to(path).as_posix().encode() + b"\0")
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 22), b""):
                    h.update(block)
        _sha_memo[key] = h.hexdigest()[:32]
    return _sha_memo[key]


def cached_export(path: Path, root: Path | None = None) -> Path:
    """The cache directory holding ``path``'s ONNX exports; exports them first if absent."""
    why = exportable(path)
    if why:
        raise ValueError(f"cannot export to ONNX: {why}")
    root = Path(root) if root is not None else cache_root()
    final = root / weights_sha(path)
    if (final / "meta.json").is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    try:
        t = time.perf_counter()
        meta = export(path, tmp)
        meta["seconds"] = round(time.perf_counter() - t, 2)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1), "utf-8")
        try:
            os.rename(tmp, final)  # atomic; fails if another process got there first
        except OSError:
            if not (final / "meta.json").is_file():
                raise
        log.info("exported %s to ONNX in %.1fs: %s", path, meta["seconds"], final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _torch_module(path: Path):
    import torch
    from transformers import AutoModel

    from .encoders_base import quiet_loading

    with quiet_loading():
        model = AutoModel.from_pretrained(str(path), attn_implementation="eager",
                                          local_files_only=True).eval().float()

    class Pooled(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask):
            h = self.m(input_ids=input_ids, attention_mask=attention_mask,
                       token_type_ids=torch.zeros_like(input_ids)).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(h.dtype)
            v = (h * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(v, p=2.0, dim=-1)

    return Pooled(model).eval()


def _probe_batch(path: Path):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    tok.no_truncation()
    tok.enable_padding(pad_id=tok.token_to_id("[PAD]") or 0)
    texts = ["the game was released in", "a", "of the", "Valkyria Chronicles III is a tactical "
             "role @-@ playing video game developed by Sega", "1 @,@ 000"]
    enc = tok.encode_batch(texts)
    ids = np.array([e.ids for e in enc], dtype=np.int64)
    return ids, np.array([e.attention_mask for e in enc], dtype=np.int64)


def _onnx_export(module, args, out: Path) -> str:
    import torch

    names = dict(input_names=["input_ids", "attention_mask"], output_names=["embedding"])
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:  # the TorchScript exporter: its graph is the one ONNX Runtime fuses best
            torch.onnx.export(module, args, str(out), opset_version=17, dynamo=False,
                              do_constant_folding=True, **names,
                              dynamic_axes={"input_ids": {0: "batch", 1: "seq"},
                                            "attention_mask": {0: "batch", 1: "seq"},
                                            "embedding": {0: "batch"}})
            return "torch.onnx.export(dynamo=False)"
        except Exception as e:  # noqa: BLE001 - a torch without it: use torch.export
            log.info("TorchScript ONNX export failed (%s); trying dynamo=True", e)
        batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq", max=4096)
        torch.onnx.export(module, args, str(out), dynamo=True, external_data=False, **names,
                          dynamic_shapes={"input_ids": {0: batch, 1: seq},
                                          "attention_mask": {0: batch, 1: seq}})
        return "torch.onnx.export(dynamo=True)"


def _int8_nodes(model_file: Path) -> list[str]:
    """The MatMuls to quantize: those with a constant weight, except the feed-forward
    down-projections (weight [intermediate, hidden], fed by GELU outputs whose skewed range
    quantizes poorly per tensor); measured: mean cosine to float32 0.990 -> 0.995."""
    import onnx
    from onnx import numpy_helper

    g = onnx.load(str(model_file)).graph
    shapes = {t.name: tuple(t.dims) for t in g.initializer}
    for n in g.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].t.dims:
            shapes[n.output[0]] = tuple(numpy_helper.to_array(n.attribute[0].t).shape)
    return [n.name for n in g.node if n.op_type == "MatMul" and len(shapes.get(n.input[1], ())) == 2
            and shapes[n.input[1]][0] <= shapes[n.input[1]][1]]


def export(path: Path, out: Path) -> dict:
    """Write ``model.onnx`` (float32) and ``model_int8.onnx`` into ``out``; verify both."""
    global EXPORTS
    import onnx
    import onnxruntime as ort
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    module = _torch_module(path)
    ids, mask = _probe_batch(path)
    with torch.no_grad():
        ref = module(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    how = _onnx_export(module, (torch.from_numpy(ids), torch.from_numpy(mask)), out / FILES["float32"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        root = logging.getLogger()  # quantize_dynamic logs a "pre-process first" nag on it
        was, root.disabled = root.disabled, True
        try:
            quantize_dynamic(str(out / FILES["float32"]), str(out / FILES["int8"]),
                             weight_type=QuantType.QInt8, per_channel=True,
                             nodes_to_quantize=_int8_nodes(out / FILES["float32"]),
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        finally:
            root.disabled = was
    cos = {}
    for dt, f in FILES.items():
        sess = ort.InferenceSession(str(out / f), providers=["CPUExecutionProvider"])
        # a different batch/sequence shape than the traced one, to catch baked-in shapes
        got = sess.run(None, {"input_ids": ids[1:], "attention_mask": mask[1:]})[0]
        cos[dt] = float(np.min(np.sum(got * ref[1:], axis=1)))
        if cos[dt] < (0.999 if dt == "float32" else 0.97):
            raise RuntimeError(f"ONNX export of {path} ({dt}) disagrees with torch: "
                               f"min cosine {cos[dt]:.4f}")
    EXPORTS += 1
    return {"format": FORMAT, "source": str(path), "exporter": how, "torch": torch.__version__,
            "onnx": onnx.__version__, "onnxruntime": ort.__version__, "probe_cosine": cos,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
