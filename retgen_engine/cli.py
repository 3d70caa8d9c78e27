"""The ``retgen`` command line: build, train, eval, generate, info, demo."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional, Sequence



def _load_dataset(name: str, split: str):
    try:
        import datasets
    except ImportError:
        raise ValueError("--dataset needs the 'datasets' package: pip install 'retgen[datasets]'") from None
    if Path(name).is_dir():
        ds = datasets.load_from_disk(name)
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise ValueError(f"dataset {name!r} has no split {split!r}; splits: {list(ds)}")
            ds = ds[split]
        return ds
    return datasets.load_dataset(name, split=split)


def _apply_cache(eng, a: argparse.Namespace) -> None:
    eng.set_cache(a.cache_window, a.cache_unigram, a.cache_bigram, a.cache_trigram, a.cache_decay,
                  a.cache_kappa)


def _retrieval_overrides(a: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in (("k", a.k), ("temperature", a.tau), ("lam", a.lam),
                               ("nprobe", a.nprobe), ("budget", a.budget)) if v is not None}


def cmd_build(a: argparse.Namespace) -> int:
    from . import RETGENConfig, RetgenEngine

    config = RETGENConfig.load(a.config) if a.config else RETGENConfig()
    dataset = _load_dataset(a.dataset, a.split) if a.dataset else None
    t = time.perf_counter()
    eng = RetgenEngine.build(a.corpus, out=a.out, config=config, dataset=dataset,
                             text_column=a.text_column, split_paragraphs=a.paragraphs,
                             encoding_errors=a.encoding_errors, overwrite=a.overwrite,
                             progress=not a.quiet)
    s = eng.manifest.get("build_stats", {})
    print(f"built {a.out}: {s.get('corpus_tokens')} tokens, {s.get('num_patterns')} patterns, "
          f"index {s.get('index_spec')}, {time.perf_counter() - t:.1f}s")
    return 0


def cmd_eval(a: argparse.Namespace) -> int:
    from . import RetgenEngine

    eng = RetgenEngine.load(a.model)
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
    for e in tok.trace:
        print(f"    {e.weight:6.1%} {e.kind:7s} {e.document}@{e.offset}: ...{e.snippet}")


def cmd_generate(a: argparse.Namespace) -> int:
    from . import RetgenEngine

    eng = RetgenEngine.load(a.model)
    _apply_cache(eng, a)
    kw = dict(max_new_tokens=a.max_new_tokens, temperature=a.temperature, top_k=a.top_k,
              top_p=a.top_p, repetition_penalty=a.repetition_penalty, stop=a.stop or None,
              seed=a.seed, trace=a.trace, **_retrieval_overrides(a))
    if a.stream and not a.trace:
        sys.stdout.write(a.prompt)
        for tok in eng.stream(a.prompt, **kw):
            sys.stdout.write(tok.text)
            sys.stdout.flush()
        sys.stdout.write("\n")
        return 0
    if a.trace:
        it = eng.stream(a.prompt, **kw) if a.stream else eng.generate(a.prompt, **kw).tokens
        print(a.prompt)
        for tok in it:
            print(f"{tok.text!r:24} p={2.718281828 ** tok.logprob:.3f}")
            _print_trace(tok)
        return 0
    res = eng.generate(a.prompt, **kw)
    print(a.prompt + res.text)
    return 0


def cmd_train(a: argparse.Namespace) -> int:
    from . import RetgenEngine
    from .learn.training import train

    eng = RetgenEngine.load(a.model)
    rep = train(eng, reranker=not a.policy_only, policy=not a.reranker_only, seed=a.seed,
                max_queries=a.queries, fraction=a.fraction, progress=not a.quiet,
                policy_method=a.policy_method, cost=a.retrieval_cost,
                skip_budget=a.retrieval_budget)
    summary = {"queries": rep["queries"], "seconds": round(rep["seconds"], 1),
               "backoff_nll": rep["backoff_nll"], "fixed": rep["fixed"]}
    for part in ("reranker", "policy"):
        if part in rep:
            summary[part] = {k: rep[part][k] for k in (
                "val_nll_before", "val_nll_after", "val_nll_best_fixed", "val_reward_before",
                "val_reward_after", "best_step") if k in rep[part]}
    if "skip" in rep.get("policy", {}):
        summary["policy"]["skip"] = {k: rep["policy"]["skip"][k] for k in (
            "budget", "val_retrieval_rate", "val_gain_kept_share")}
    print(json.dumps(summary, indent=2))
    return 0


def cmd_info(a: argparse.Namespace) -> int:
    from . import RetgenEngine

    eng = RetgenEngine.load(a.model, verify=a.verify)
    print(json.dumps(eng.info(), indent=2, default=str))
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
        res = eng.generate(prompt, max_new_tokens=a.max_new_tokens, seed=a.seed, top_p=0.9)
        print(f"\n>>> {prompt}{res.text}")
        for tok in res.tokens[:8]:
            print(f"  {tok.text!r:18} p={2.718281828 ** tok.logprob:.3f}")
            _print_trace(tok)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="retgen", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = p.add_subparsers(dest="cmd", required=True)

    b = sub.add_parser("build", help="build a model directory from a corpus")
    b.add_argument("--corpus", nargs="*", default=[], metavar="PATH",
                   help="text files (.tokens: word level; others: raw text)")
    b.add_argument("--dataset", help="a Hugging Face dataset: saved directory or hub name")
    b.add_argument("--split", default="train")
    b.add_argument("--text-column", default="text")
    b.add_argument("--paragraphs", action="store_true",
                   help="raw text files hold blank-line separated documents")
    b.add_argument("--encoding-errors", default="strict", choices=["strict", "replace", "ignore"])
    b.add_argument("--out", required=True)
    b.add_argument("--config", help="RETGENConfig JSON file")
    b.add_argument("--overwrite", action="store_true")
    b.add_argument("--quiet", action="store_true")
    b.set_defaults(func=cmd_build)

    def retrieval_flags(sp):
        sp.add_argument("--k", type=int, help="patterns retrieved per step")
        sp.add_argument("--tau", type=float, help="retrieval softmax temperature")
        sp.add_argument("--lam", type=float, help="retrieval mixing weight in [0, 1)")
        sp.add_argument("--nprobe", type=int, help="IVF lists probed per search")
        sp.add_argument("--budget", type=float,
                        help="share of tokens that retrieve, in (0, 1] (the policy's skip stage)")
        sp.add_argument("--cache-window", type=int, help="context cache window (tokens)")
        sp.add_argument("--cache-unigram", type=float, help="context cache unigram weight")
        sp.add_argument("--cache-bigram", type=float, help="context cache bigram weight")
        sp.add_argument("--cache-trigram", type=float, help="context cache trigram weight")
        sp.add_argument("--cache-decay", type=float,
                        help="context cache unigram decay in tokens (0: none)")
        sp.add_argument("--cache-kappa", type=float,
                        help="context cache: bigram/trigram weights scale by n / (n + kappa)")

    e = sub.add_parser("eval", help="perplexity of a model on a file")
    e.add_argument("--model", required=True)
    e.add_argument("--data", required=True)
    e.add_argument("--json", action="store_true")
    e.add_argument("--quiet", action="store_true")
    retrieval_flags(e)
    e.set_defaults(func=cmd_eval)

    g = sub.add_parser("generate", help="generate text, optionally with traces")
    g.add_argument("--model", required=True)
    g.add_argument("--prompt", required=True)
    g.add_argument("--max-new-tokens", type=int)
    g.add_argument("--temperature", type=float)
    g.add_argument("--top-k", type=int)
    g.add_argument("--top-p", type=float)
    g.add_argument("--repetition-penalty", type=float)
    g.add_argument("--stop", action="append", help="stop string (repeatable)")
    g.add_argument("--seed", type=int)
    g.add_argument("--stream", action="store_true")
    g.add_argument("--trace", action="store_true", help="show each token's sources")
    retrieval_flags(g)
    g.set_defaults(func=cmd_generate)

    t = sub.add_parser("train", help="train the energy reranker and retrieval policy")
    t.add_argument("--model", required=True)
    pick = t.add_mutually_exclusive_group()
    pick.add_argument("--reranker-only", action="store_true")
    pick.add_argument("--policy-only", action="store_true")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--queries", type=int, default=20000, help="held-out training queries")
    t.add_argument("--fraction", type=float, default=0.02,
                   help="share of the training corpus held out for them")
    t.add_argument("--policy-method", choices=("exact", "reinforce"), default="exact",
                   help="policy gradient: exact expectation over the actions, or REINFORCE")
    t.add_argument("--retrieval-cost", type=float, default=0.002,
                   help="reward cost (nats) of one retrieval, scaled by 1 + k/k_max")
    t.add_argument("--retrieval-budget", type=float, default=0.7,
                   help="default share of tokens the policy's skip stage lets retrieve, in "
                        "(0, 1]; callers can choose another per call (--budget)")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=cmd_train)

    i = sub.add_parser("info", help="describe a model directory")
    i.add_argument("--model", required=True)
    i.add_argument("--verify", action="store_true", help="check every file's sha256")
    i.set_defaults(func=cmd_info)

    d = sub.add_parser("demo", help="build on the bundled sample corpus and generate with traces")
    d.add_argument("--out")
    d.add_argument("--prompts", nargs="*")
    d.add_argument("--max-new-tokens", type=int, default=30)
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=cmd_demo)
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


def _fail(msg: str) -> None:
    print(f"retgen: error: {' '.join(msg.split())}", file=sys.stderr)  # one line


if __name__ == "__main__":
    sys.exit(main())
