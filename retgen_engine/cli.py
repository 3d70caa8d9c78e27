"""The ``retgen`` command line: build, train, eval, generate, info, demo, memory."""
# (--help shows DESCRIPTION below, plain text, not this docstring)
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from . import cli_memory

DESCRIPTION = ("RETGEN: a retrieval-enhanced non-parametric language model. Build a model "
               "from a corpus, then evaluate it, generate text with per-token sources, train "
               "its learned parts, add documents to its memory, or describe it. 'retgen "
               "COMMAND --help' lists a command's options.")
BACKENDS = ("auto", "torch", "onnx")
DTYPES = ("auto", "float32", "bfloat16", "int8")


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every option's default, unless its help already says what the default is."""

    def _get_help_string(self, action):
        h = action.help or ""
        return h if "default" in h else super()._get_help_string(action)


def _encoder_overrides(a: argparse.Namespace) -> dict[str, str]:
    return {k: v for k, v in (("backend", getattr(a, "encoder_backend", None)),
                               ("dtype", getattr(a, "encoder_dtype", None))) if v is not None}


def _load_engine(a: argparse.Namespace, verify: bool = True):
    """The model of ``--model``, its encoder loaded with --encoder-backend/--encoder-dtype."""
    from . import RETGENConfig, RetgenEngine

    encoder = None
    if over := _encoder_overrides(a):
        from .persist.commit import resolve
        from .search.encoder import load_encoder_from_config

        try:
            config = RETGENConfig.from_json((resolve(Path(a.model)) / "config.json").read_text(
                encoding="utf-8"))
        except Exception:  # noqa: BLE001 - not a model: the plain load says why, in one line
            config = None
        if config is not None:
            enc = type(config.encoder).model_validate({**config.encoder.model_dump(), **over})
            encoder = load_encoder_from_config(enc)
    return RetgenEngine.load(a.model, encoder=encoder, verify=verify)


def _load_dataset(name: str, split: str):
    try:
        import datasets
    except ImportError:
        raise ValueError("--dataset needs the 'datasets' package: pip install 'retgen[datasets]'") from None
    if not Path(name).is_dir():
        return datasets.load_dataset(name, split=split)
    ds = datasets.load_from_disk(name)
    if isinstance(ds, datasets.DatasetDict) and split not in ds:
        raise ValueError(f"dataset {name!r} has no split {split!r}; splits: {list(ds)}")
    return ds[split] if isinstance(ds, datasets.DatasetDict) else ds


def _apply_cache(eng, a: argparse.Namespace) -> None:
    eng.set_cache(a.cache_window, a.cache_unigram, a.cache_bigram, a.cache_trigram, a.cache_decay,
                  a.cache_kappa)


def _retrieval_overrides(a: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in (("k", a.k), ("temperature", a.tau), ("lam", a.lam),
                               ("nprobe", a.nprobe), ("budget", a.budget)) if v is not None}


def cmd_build(a: argparse.Namespace) -> int:
    from . import RETGENConfig, RetgenEngine
    from .learn.tuning import summary

    config = RETGENConfig.load(a.config) if a.config else RETGENConfig()
    if over := _encoder_overrides(a):
        config.encoder = type(config.encoder).model_validate({**config.encoder.model_dump(),
                                                              **over})
    dataset = _load_dataset(a.dataset, a.split) if a.dataset else None
    t = time.perf_counter()
    eng = RetgenEngine.build(a.corpus, out=a.out, config=config, dataset=dataset,
                             text_column=a.text_column, split_paragraphs=a.paragraphs,
                             encoding_errors=a.encoding_errors, overwrite=a.overwrite,
                             progress=not a.quiet, tune=not a.no_tune, memory_uri=a.memory_uri,
                             memory_collection=a.memory_collection, memory_token=a.memory_token)
    s = eng.manifest.get("build_stats", {})
    print(f"built {a.out}: {s.get('corpus_tokens')} tokens, {s.get('num_patterns')} patterns, "
          f"index {s.get('index_spec')}, {time.perf_counter() - t:.1f}s")
    print("\n".join(summary(s.get("tuning"))))
    return 0


def cmd_eval(a: argparse.Namespace) -> int:
    eng = _load_engine(a)
    _apply_cache(eng, a)
    rep = eng.perplexity(a.data, progress=not a.quiet, **_retrieval_overrides(a))
    rep["data"] = str(a.data)
    if a.json:
        print(json.dumps(rep, indent=2))
    else:
        print(f"perplexity {rep['perplexity']:.2f} (back-off {rep['backoff_perplexity']:.2f}) over "
              f"{rep['tokens']} tokens; retrieval coverage {rep['retrieval_coverage']:.3f}; "
              f"{rep['ms_per_token']:.3f} ms/token")
    return 0


def _print_trace(tok) -> None:
    """A token's sources, each once (shares of one source summed), none under 0.05%."""
    merged: dict[tuple, list] = {}
    for e in tok.trace:
        m = merged.setdefault((e.document, e.offset, e.snippet), [0.0, []])
        m[0] += e.weight
        if e.kind not in m[1]:
            m[1].append(e.kind)
    for (doc, off, snippet), (w, kinds) in sorted(merged.items(), key=lambda kv: -kv[1][0]):
        if w >= 0.0005:  # what prints as 0.0% is no source; line breaks shown as a marker
            snippet = snippet.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "⏎")
            print(f"    {w:6.1%} {'+'.join(kinds):7s} {doc}@{off}: ...{snippet}")


def cmd_generate(a: argparse.Namespace) -> int:
    eng = _load_engine(a)
    _apply_cache(eng, a)
    kw = dict(max_new_tokens=a.max_new_tokens, temperature=a.temperature, top_k=a.top_k,
              top_p=a.top_p, repetition_penalty=a.repetition_penalty, min_p=a.min_p,
              typical_p=a.typical_p, stop=a.stop or None, seed=a.seed, trace=a.trace,
              **_retrieval_overrides(a))
    if a.stream:
        sys.stdout.write(a.prompt)
        toks = []
        for tok in eng.stream(a.prompt, **kw):
            print(tok.text, end="", flush=True)
            toks.append(tok)
        sys.stdout.write("\n")
    else:
        toks = eng.generate(a.prompt, **kw).tokens
        print(a.prompt + "".join(t.text for t in toks))
    if a.trace:  # the whole text first, then each token's sources
        print("\nsources per token:")
        for tok in toks:
            print(f"  {tok.text or tok.token!r:24} p={math.exp(tok.logprob):.3f}")
            _print_trace(tok)
    return 0


def cmd_train(a: argparse.Namespace) -> int:
    from .learn.training import train

    eng = _load_engine(a)
    rep = train(eng, reranker=not a.policy_only, policy=not a.reranker_only, seed=a.seed,
                max_queries=a.queries, fraction=a.fraction, progress=not a.quiet,
                policy_method=a.policy_method, cost=a.retrieval_cost,
                skip_budget=a.retrieval_budget, memory=not a.no_memory)
    summary = {"queries": rep["queries"], "seconds": round(rep["seconds"], 1),
               "backoff_nll": rep["backoff_nll"], "fixed": rep["fixed"],
               "memory_in_mixture": rep["memory_in_mixture"]}
    keep = ("val_nll_before", "val_nll_after", "val_nll_best_fixed", "val_reward_before",
            "val_reward_after", "best_step")
    summary.update({part: {k: rep[part][k] for k in keep if k in rep[part]}
                    for part in ("reranker", "policy") if part in rep})
    if "skip" in rep.get("policy", {}):
        summary["policy"]["skip"] = {k: rep["policy"]["skip"][k] for k in (
            "budget", "val_retrieval_rate", "val_gain_kept_share")}
    print(json.dumps(summary, indent=2))
    return 0


def cmd_info(a: argparse.Namespace) -> int:
    from .learn.tuning import summary

    eng = _load_engine(a, verify=a.verify)
    info = eng.info()
    print(json.dumps(info, indent=2, default=str))
    # on stderr: stdout stays one JSON document (the report itself: build_stats.tuning)
    print("\n".join(summary(info.get("build_stats", {}).get("tuning"))), file=sys.stderr)
    if a.verify:
        n = len(eng.manifest.get("files", {}))
        print(f"verified: {n} files, sha256 of each and of the manifest", file=sys.stderr)
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    """Build a model on the bundled sample corpus and generate with traces."""
    from . import RETGENConfig, RetgenEngine

    out = Path(a.out) if a.out else Path(tempfile.mkdtemp(prefix="retgen-demo-")) / "model"
    t = time.perf_counter()
    eng = RetgenEngine.sample(config=RETGENConfig(), out=out, overwrite=True, progress=True)
    print(f"built {out} in {time.perf_counter() - t:.1f}s: {eng.info()['num_patterns']} patterns, "
          f"index {eng.index.spec}")
    eng = RetgenEngine.load(out)
    for prompt in a.prompts or ["The game was", "The tower was built in"]:
        res = eng.generate(prompt, max_new_tokens=a.max_new_tokens, seed=a.seed)
        print(f"\n>>> {prompt}{res.text}")
        for tok in res.tokens[:8]:
            print(f"  {tok.text!r:18} p={math.exp(tok.logprob):.3f}")
            _print_trace(tok)
    return 0


def _encoder_flags(sp, building: bool) -> None:
    what = ("how the encoder runs for this build (recorded in the model's config)" if building
            else "how the encoder runs for this command (the model's vectors do not change)")
    sp.add_argument("--encoder-backend", choices=BACKENDS,
                    help=f"{what}: torch, onnx (ONNX Runtime) or auto (picked for this CPU) "
                         "(default: the config's value)")
    sp.add_argument("--encoder-dtype", choices=DTYPES,
                    help="encoder precision: bfloat16 needs torch, int8 needs onnx "
                         "(default: the config's value)")


def _retrieval_flags(sp) -> None:
    dflt = " (default: the model's config)"
    sp.add_argument("--k", type=int, help="patterns retrieved per step" + dflt)
    sp.add_argument("--tau", type=float, help="retrieval softmax temperature" + dflt)
    sp.add_argument("--lam", type=float, help="retrieval mixing weight in [0, 1)" + dflt)
    sp.add_argument("--nprobe", type=int, help="IVF lists probed per search" + dflt)
    sp.add_argument("--budget", type=float, help="share of tokens that retrieve, in (0, 1] "
                    "(the learned policy's skip stage)" + dflt)
    for name, text in (("window", " window (tokens)"), ("unigram", " unigram weight"),
                       ("bigram", " bigram weight"), ("trigram", " trigram weight"),
                       ("decay", " unigram decay in tokens (0: none)"),
                       ("kappa", ": bigram/trigram weights scale by n / (n + kappa)")):
        sp.add_argument(f"--cache-{name}", type=int if name == "window" else float,
                        help="context cache" + text + dflt)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="retgen", description=DESCRIPTION, formatter_class=_Help)
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND",
                           help="build, eval, generate, train, info, demo or memory")

    def cmd(name: str, text: str, func=None, model: bool = False, under=sub):
        sp = under.add_parser(name, help=text, description=text + ".", formatter_class=_Help)
        if model:
            sp.add_argument("--model", required=True, help="the model directory (required)")
        if func is not None:  # "memory" has none: its action's parser sets it
            sp.set_defaults(func=func)
        return sp

    b = cmd("build", "build a model directory from a corpus", cmd_build)
    b.add_argument("--corpus", nargs="*", default=[], metavar="PATH",
                   help="text files (.tokens: word level; others: raw text)")
    b.add_argument("--dataset", help="a Hugging Face dataset: saved directory or hub name "
                   "(default: none)")
    b.add_argument("--split", default="train", help="the dataset split to read")
    b.add_argument("--text-column", default="text", help="the dataset column holding the text")
    b.add_argument("--paragraphs", action="store_true",
                   help="raw text files hold blank-line separated documents")
    b.add_argument("--encoding-errors", default="strict", choices=["strict", "replace", "ignore"],
                   help="what to do with bytes that are not UTF-8")
    b.add_argument("--out", required=True, help="the model directory to write (required)")
    b.add_argument("--config", help="a RETGENConfig JSON file (default: the built-in config)")
    b.add_argument("--overwrite", action="store_true", help="replace an existing model at --out")
    b.add_argument("--no-tune", action="store_true",
                   help="skip fitting the mixture's weights (cache, patterns, memory) on a "
                        "held-out slice of the corpus and keep the config's values (default: "
                        "tune; the slice is set by the config's tuning section)")
    b.add_argument("--memory-uri", metavar="URI",
                   help="keep the memory's passages in Milvus: a Milvus Lite file ending in .db "
                        "or a server address such as http://localhost:19530 (default: the "
                        "model directory's own store)")
    b.add_argument("--memory-collection", metavar="NAME",
                   help="the Milvus collection, with --memory-uri (default: retgen_memory)")
    b.add_argument("--memory-token", metavar="TOKEN",
                   help="the Milvus server's token (user:password or an API key), with "
                        "--memory-uri (default: none)")
    _encoder_flags(b, building=True)
    b.add_argument("--quiet", action="store_true", help="no progress bars")

    e = cmd("eval", "perplexity of a model on a file", cmd_eval, model=True)
    e.add_argument("--data", required=True, help="the text file to score (required)")
    e.add_argument("--json", action="store_true", help="print the full report as JSON")
    e.add_argument("--quiet", action="store_true", help="no progress bars")
    _encoder_flags(e, building=False)
    _retrieval_flags(e)

    g = cmd("generate", "generate text, optionally with each token's sources", cmd_generate,
            model=True)
    g.add_argument("--prompt", required=True, help="the text to continue (required)")
    from .config import GenerationConfig

    gd = GenerationConfig()

    def dflt(name: str) -> str:  # a saved model keeps the values it was built with
        return f" (default: the model's config; built-in {getattr(gd, name)})"

    g.add_argument("--max-new-tokens", type=int, help="tokens to generate" + dflt("max_new_tokens"))
    g.add_argument("--temperature", type=float,
                   help="sampling temperature >= 0 (0: greedy)" + dflt("temperature"))
    g.add_argument("--top-k", type=int,
                   help="sample among the k likeliest tokens (0: all)" + dflt("top_k"))
    g.add_argument("--top-p", type=float,
                   help="nucleus sampling mass in (0, 1] (1: all)" + dflt("top_p"))
    g.add_argument("--typical-p", type=float,
                   help="locally typical sampling mass in (0, 1] (1: all)" + dflt("typical_p"))
    g.add_argument("--min-p", type=float,
                   help="keep tokens with at least this share of the likeliest one's "
                        "probability, in [0, 1] (0: all)" + dflt("min_p"))
    g.add_argument("--repetition-penalty", type=float,
                   help="multiplies the log-probability of tokens already in the text, > 0 "
                        "(1: none)" + dflt("repetition_penalty"))
    g.add_argument("--stop", action="append", help="stop string, repeatable (default: none)")
    g.add_argument("--seed", type=int, help="random seed (default: fresh randomness)")
    g.add_argument("--stream", action="store_true", help="print tokens as they are generated")
    g.add_argument("--trace", action="store_true",
                   help="after the text, show each token's sources in the corpus")
    _encoder_flags(g, building=False)
    _retrieval_flags(g)

    t = cmd("train", "train the energy reranker and retrieval policy", cmd_train, model=True)
    pick = t.add_mutually_exclusive_group()
    pick.add_argument("--reranker-only", action="store_true", help="train only the reranker")
    pick.add_argument("--policy-only", action="store_true", help="train only the policy")
    t.add_argument("--seed", type=int, default=0, help="random seed")
    t.add_argument("--no-memory", action="store_true",
                   help="train on the mixture without the document memory (default: with it, "
                        "mixed last as the model does, where the model's memory is on)")
    t.add_argument("--queries", type=int, default=20000, help="held-out training queries")
    t.add_argument("--fraction", type=float, default=0.02,
                   help="share of the training corpus held out for them")
    t.add_argument("--policy-method", choices=("exact", "reinforce"), default="exact",
                   help="policy gradient: exact expectation over the actions, or REINFORCE")
    t.add_argument("--retrieval-cost", type=float, default=0.002,
                   help="reward cost (nats) of one retrieval, scaled by 1 + k/k_max")
    t.add_argument("--retrieval-budget", type=float, default=0.7,
                   help="share of tokens the policy's skip stage lets retrieve, in (0, 1]; "
                        "callers can choose another per call (--budget)")
    t.add_argument("--quiet", action="store_true", help="no progress bars")

    i = cmd("info", "describe a model directory", cmd_info, model=True)
    i.add_argument("--verify", action="store_true",
                   help="check the sha256 of every file and of the manifest")
    _encoder_flags(i, building=False)

    d = cmd("demo", "build on the bundled sample corpus and generate with traces", cmd_demo)
    d.add_argument("--out", help="where to write the model (default: a temporary directory)")
    d.add_argument("--prompts", nargs="*", help="prompts to continue (default: two examples)")
    d.add_argument("--max-new-tokens", type=int, default=30, help="tokens per prompt")
    d.add_argument("--seed", type=int, default=0, help="random seed")

    cli_memory.register(cmd, _load_engine)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from pydantic import ValidationError

    try:
        return args.func(args)
    except ValidationError as e:  # a config value: name the field, one line
        err = e.errors()[0]
        where = ".".join(str(x) for x in err.get("loc", ())) or "config"
        _fail(f"{where}: {err.get('msg')} (got {err.get('input')!r})")
        return 2
    except (ValueError, TypeError, OSError) as e:  # ModelFormatError, ArgumentError included
        _fail(str(e) or type(e).__name__)
        return 2
    except KeyboardInterrupt:
        print("retgen: interrupted; the model on disk is the last complete version",
              file=sys.stderr)
        return 130


_API_TO_CLI = [  # engine messages name Python arguments; the CLI names its flags
    (re.compile(r"\bmemory_(uri|collection|token)="), lambda m: f"--memory-{m.group(1)} "),
    (re.compile(r"\bmemory_uri\b"), "--memory-uri"),
    (re.compile(r"overwrite=True(?: \(--overwrite\))?"), "--overwrite"),
    (re.compile(r"encoding_errors='replace' \(CLI: --encoding-errors replace\)"),
     "--encoding-errors replace"),
]


def _fail(msg: str) -> None:
    for pat, flag in _API_TO_CLI:
        msg = pat.sub(flag, msg)
    print(f"retgen: error: {' '.join(msg.split())}", file=sys.stderr)  # one line


if __name__ == "__main__":
    sys.exit(main())
