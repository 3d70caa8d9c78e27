"""Autoregressive generation with per-token traces back to the corpus."""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Iterator, Optional, Sequence

import numpy as np

from .mixture import RetgenLM, RetrievalParams, StepInfo
from .sampling import SamplingParams, sample
from ..text.tokenizer import Tokenizer, glue_classes

log = logging.getLogger(__name__)


def cache_mass(info: StepInfo, token: int) -> Optional[float]:
    """The probability the context cache gave ``token`` inside a step's base distribution,
    p_base - (1 - mu) p_kn (what its trace reports, without computing the cache again; None
    when the step did not keep p_base)."""
    if info.p_base is None:
        return None
    return max(float(info.p_base[token] - (1 - info.cache_mu.total) * info.p_kn[token]), 0.0)


@dataclass
class TraceEntry:
    """One source that carried part of a token's probability."""

    kind: str          # "pattern" (retrieved), "ngram" (exact back-off match), "context"
    #                    (the context cache: an earlier position of the prompt/output text) or
    #                    "passage" (a passage of the document memory)
    weight: float      # share of the token's final probability
    document: str
    offset: int        # token offset within the document where the matched text ends
    snippet: str       # the source text ending with the token
    context: str       # the pattern's context, or the matched n-gram's history
    pattern_id: int = -1
    order: int = 0     # n-gram order matched (ngram) or context length (pattern)
    passage: str = ""  # the memory record (passage) id


@dataclass
class GeneratedToken:
    token: str
    token_id: int
    text: str          # the new text this token added to the output (may be "")
    logprob: float
    trace: list[TraceEntry] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class GenerationResult:
    text: str
    tokens: list[GeneratedToken]
    finish_reason: str            # "length" or "stop"
    prompt_tokens: int
    completion_tokens: int
    unknown_prompt_words: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


class SourceText:
    """The training stream with document boundaries, to turn positions into citations."""

    def __init__(self, stream: np.ndarray, doc_offsets: np.ndarray, doc_names: list[str],
                 tokenizer: Tokenizer, snippet_tokens: int = 12):
        self.stream = stream
        self.doc_offsets = doc_offsets
        self.doc_names = doc_names
        self.tokenizer = tokenizer
        self.snippet_tokens = snippet_tokens

    def locate(self, pos: int) -> tuple[str, int]:
        d = int(np.searchsorted(self.doc_offsets, pos, side="right")) - 1
        d = min(max(d, 0), len(self.doc_names) - 1)
        return self.doc_names[d], int(pos - self.doc_offsets[d])

    def snippet(self, end: int) -> str:
        d = int(np.searchsorted(self.doc_offsets, end, side="right")) - 1
        start = max(int(self.doc_offsets[max(d, 0)]), end - self.snippet_tokens + 1)
        itos = self.tokenizer.vocab.itos
        return self.tokenizer.detokenize([itos[t] for t in self.stream[start:end + 1]]).strip()


def _stop_holdback(text: str, stops: Sequence[str]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of a stop string."""
    best = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:n]):
                best = n
                break
    return best


class Generator:
    def __init__(self, lm: RetgenLM, tokenizer: Tokenizer, sources: SourceText,
                 trace_top: int = 3):
        self.lm = lm
        self.tokenizer = tokenizer
        self.sources = sources
        self.trace_top = trace_top
        self._glue: Optional[tuple[np.ndarray, np.ndarray]] = None

    def _no_glue(self, logp: np.ndarray, prev: int) -> np.ndarray:
        """Raw-text mode: forbid a next token that would glue onto the previous one.

        Spacing lives in the tokens (``" and"`` vs ``"and"``); ``"and"`` without its space
        follows a line break, a digit or a bracket in the corpus, but the back-off's lower
        orders and retrieved patterns (whose contexts embed without their line breaks) also
        offer it after a word, and plain concatenation then glues words ("copyrightC"). Such a
        pair is never a tokenization of any text, so it is masked and the rest renormalized."""
        if self.tokenizer.mode != "text":
            return logp
        if self._glue is None or len(self._glue[0]) != len(logp):
            start, end = glue_classes(self.tokenizer.vocab.itos)
            self._glue = np.asarray(start, np.int8), np.asarray(end, np.int8)
        start, end = self._glue
        c = end[prev]
        if c <= 0:
            return logp
        bad = start == c
        if not bad.any() or np.all(bad | ~np.isfinite(logp)):
            return logp
        out = np.where(bad, -np.inf, logp)
        m = out[np.isfinite(out)].max()
        return out - (m + np.log(np.exp(out - m).sum()))

    def prompt_ids(self, prompt: str) -> tuple[list[int], list[str]]:
        if not isinstance(prompt, str):
            raise TypeError(f"prompt is {type(prompt).__name__}, expected str")
        if self.lm.memory is not None:
            self.lm.memory.sync()  # words that only a newly added document has are known now
        toks = self.tokenizer.split(prompt)
        vocab = self.tokenizer.vocab
        unknown = [t for t in toks if t not in vocab]
        if unknown:
            log.info("prompt words not in the vocabulary (read as <unk>): %s", unknown[:20])
        # Generation starts after a line break, as evaluation does; an empty prompt is allowed.
        return [vocab.eos_id] + vocab.ids(toks), unknown

    def trace(self, info: StepInfo, token: int, p_final: float) -> list[TraceEntry]:
        entries: list[TraceEntry] = []
        if self.trace_top == 0 or p_final <= 0:
            return entries
        itos = self.tokenizer.vocab.itos
        kn = self.lm.backoff
        keep = 1.0 - info.lam_mem  # the share the parts before the memory keep
        if info.lam_mem > 0 and self.lm.memory is not None:
            for c in self.lm.memory.contributions(info.history, info.memory, token, self.trace_top):
                entries.append(TraceEntry("passage", c["share"] / p_final, c["doc_id"],
                                          c["offset"], c["snippet"], "", -1, 0, c["record"]))
        if info.lam > 0 and self.lm.retriever is not None and token < kn.V:
            ret = self.lm.retriever
            for pid, share in ret.contributions(info.retrieved, info.params.temperature, token,
                                                weights=info.weights)[: self.trace_top]:
                ctx = ret.patterns.context_ids(pid, self.sources.stream).tolist()
                order, pos = kn.longest_match(ctx, token)
                if order != len(ctx) + 1:  # continuation beyond the back-off's order
                    pos = int(ret.patterns.first[pid])
                doc, off = self.sources.locate(pos)
                entries.append(TraceEntry("pattern", keep * info.lam * share / p_final, doc, off,
                                          self.sources.snippet(pos),
                                          self.tokenizer.context_text([itos[t] for t in ctx]),
                                          pid, len(ctx)))
        w_kn = keep * (1 - info.lam) * (1 - info.cache_mu.total) * info.p_kn[token] / p_final
        order, pos = (kn.longest_match([t if t < kn.V else 0 for t in info.history], token)
                      if token < kn.V else (0, -1))  # a word the memory added: not in the back-off
        if pos >= 0:
            doc, off = self.sources.locate(pos)
            hist = [itos[t] for t in info.history[len(info.history) - order + 1:]] if order > 1 else []
            entries.append(TraceEntry("ngram", float(w_kn), doc, off, self.sources.snippet(pos),
                                      self.tokenizer.context_text(hist), -1, order))
        if info.cache_mu.total:
            share, at = self.lm.cache.share(info.history, token, info.cache_mu,
                                            cache_mass(info, token))
            if share > 0 and at >= 0:
                lo = max(0, at - self.sources.snippet_tokens + 1)
                entries.append(TraceEntry(
                    "context", keep * (1 - info.lam) * share / p_final, "<context>", at - 1,
                    self.tokenizer.detokenize([itos[t] for t in info.history[lo:at + 1]]).strip(),
                    "", -1, 0))
        entries.sort(key=lambda e: -e.weight)
        return entries[: self.trace_top]

    def stream(self, prompt: str, max_new_tokens: int = 50,
               sampling: SamplingParams = SamplingParams(),
               retrieval: RetrievalParams = RetrievalParams(),
               stop: Optional[Sequence[str]] = None, seed: Optional[int] = None,
               trace: bool = True, _result: Optional[dict] = None) -> Iterator[GeneratedToken]:
        if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 0:
            raise ValueError(f"max_new_tokens={max_new_tokens!r}: must be an int >= 0")
        stops = [s for s in (stop or []) if s]
        history, unknown = self.prompt_ids(prompt)
        vocab = self.tokenizer.vocab
        rng = np.random.default_rng(seed)
        itos = vocab.itos
        base_tokens = [itos[t] for t in history[1:]]
        base_text = self.tokenizer.detokenize(base_tokens)
        gen_tokens: list[str] = []
        emitted = 0
        finish = "length"
        seen = list(history[1:])
        if _result is not None:
            _result.update(prompt_tokens=len(history) - 1, unknown=unknown)
        for step in range(max_new_tokens):
            logp, info = self.lm.next_token_logprobs(history, retrieval)
            raw, logp = logp, self._no_glue(logp, history[-1])
            tok = sample(logp, sampling, rng, seen=seen, unk_id=vocab.unk_id)
            history.append(tok)
            seen.append(tok)
            gen_tokens.append(itos[tok])
            full = self.tokenizer.detokenize(base_tokens + gen_tokens)[len(base_text):]
            cut = min((full.find(s) for s in stops if s in full), default=-1)
            if cut >= 0:
                full, finish = full[:cut], "stop"
                safe = len(full)
            elif step == max_new_tokens - 1:  # last token: nothing more can complete a stop
                safe = len(full)
            else:
                safe = len(full) - _stop_holdback(full, stops)
            piece = full[emitted:safe] if safe > emitted else ""
            emitted = max(emitted, safe)
            lp = float(logp[tok])
            yield GeneratedToken(itos[tok], tok, piece, lp,
                                 self.trace(info, tok, float(np.exp(raw[tok]))) if trace else [])
            if finish == "stop":
                break
        if _result is not None:
            _result["finish_reason"] = finish
            _result["emitted"] = emitted

    def generate(self, prompt: str, **kw) -> GenerationResult:
        meta: dict = {}
        toks = list(self.stream(prompt, _result=meta, **kw))
        text = "".join(t.text for t in toks)
        return GenerationResult(text, toks, meta.get("finish_reason", "length"),
                                meta.get("prompt_tokens", 0), len(toks), meta.get("unknown", []))
