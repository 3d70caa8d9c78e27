"""The RETGEN language model: the retrieval distribution mixed with the base distribution
(the Kneser-Ney back-off, itself mixed with the context cache, see :mod:`retgen_engine.ngram.cache`).

log p(w) = logsumexp(log(1 - lam) + log p_base(w), log(lam) + log p_ret(w))

With a learned reranker that has a gate, lam is shifted per query by what the search found
(:func:`gated_lam`). A learned policy may choose k, tau and lam per query, and its skip stage
may decide, before anything is encoded, that a query does not retrieve at all (lam = 0).

Both parts are normalized over the whole vocabulary and p_base(w) > 0 for every w, so the
mixture is a proper distribution with p(w) > 0 everywhere. Where retrieval finds nothing
(lam is then 0) the base answers alone.

The document memory (:mod:`retgen_engine.memory`) is mixed last, the same way (its learned
gate reads the back-off's features); its added documents also enter the back-off's counts
(:meth:`RetgenLM.backoff_for`). The vocabulary grows when the memory reads new words: the
back-off and the patterns read them as ``<unk>``, whose back-off probability is shared equally
by ``<unk>`` and every new word (:meth:`RetgenLM.grow`), so every distribution still sums to 1
with every token > 0; the cache and the memory count the new words themselves.
"""
from __future__ import annotations

import contextlib
from typing import Optional, Sequence

import numpy as np

from ..checks import ArgumentError, float_arg, int_arg, optional
from ..config import MemoryConfig
from ..ngram.kneser_ney import KneserNeyLM
from ..ngram.cache import ContextCache
from ..ngram.features import backoff_features, right_aligned, skip_features
from ..search.retrieval import PatternRetriever, Retrieved
from ..memory.mixture import MemoryParams
from . import beside
from .live_backoff import LiveBackoff
from .logmix import gated_lam, mix_logprobs  # noqa: F401  (the mixture's own, re-exported)
from .params import Lookup, RetrievalParams, StepInfo  # noqa: F401  (re-exported)


class RetgenLM:
    def __init__(self, backoff: KneserNeyLM, retriever: Optional[PatternRetriever],
                 policy=None, cache: Optional[ContextCache] = None, gate=None,
                 defaults: RetrievalParams = RetrievalParams(), memory=None, vocab=None):
        self.backoff = backoff
        self.memory = memory  # a PassageMemory (or None)
        self.vocab = vocab    # the (growing) vocabulary; None: the back-off's
        self.retriever = retriever
        self.policy = policy
        self.gate = gate  # a learned EnergyReranker with a gate (or None: lam as given)
        self.cache = cache or ContextCache(unigram=0.0, bigram=0.0, trigram=0.0)
        self.defaults = defaults  # k, temperature, lam and nprobe when a call gives none
        # the back-off with the memory's added documents counted (.live_backoff)
        self._live = LiveBackoff(backoff, retriever.stream) if retriever is not None else None

    def backoff_for(self, params: RetrievalParams) -> KneserNeyLM:
        """The back-off a call reads: with the memory read and its ``update_backoff``, the
        build's re-estimated with the memory's added documents (:mod:`.live_backoff`)."""
        m = self.memory
        on = params.memory is not None and m is not None and m.config.update_backoff
        return self._live.current(m) if on and self._live is not None else self.backoff

    @property
    def V(self) -> int:
        """The vocabulary size now (the training vocabulary plus words the memory added)."""
        return len(self.vocab) if self.vocab is not None else self.backoff.V

    def base_ids(self, seq: np.ndarray) -> np.ndarray:
        """``seq`` with words outside the training vocabulary read as ``<unk>``."""
        seq = np.asarray(seq, dtype=np.int64)
        return np.where(seq >= self.backoff.V, 0, seq) if len(seq) and seq.max() >= self.backoff.V else seq

    def grow(self, p: np.ndarray) -> np.ndarray:
        """A distribution over the training vocabulary extended to the grown one: ``<unk>``'s
        probability shared equally by ``<unk>`` and each new word."""
        extra = self.V - len(p)
        if extra <= 0:
            return p
        share = p[0] / (extra + 1)
        out = np.concatenate([p, np.full(extra, share)])
        out[0] = share
        return out

    def memory_params(self, memory: Optional[bool] = None, k: Optional[int] = None,
                      refresh: Optional[int] = None, keys: Optional[str] = None,
                      temperature: Optional[float] = None) -> Optional[MemoryParams]:
        """The memory's per-call parameters (None: not read). ``memory=None`` reads it when the
        model has one; unset values are the memory's config."""
        if memory is not None and not isinstance(memory, (bool, np.bool_)):
            raise ArgumentError(f"memory={memory!r}: must be True, False or None")
        if memory and self.memory is None:
            raise ValueError("memory=True but this model has no document memory (add one with "
                             "engine.memory.add(...) or `retgen memory add`)")
        mp = MemoryParams.from_config(self.memory.config if self.memory is not None else
                                      MemoryConfig(), k, refresh, keys, temperature)
        return mp if self.memory is not None and memory is not False else None

    def params(self, k: Optional[int] = None, temperature: Optional[float] = None,
               lam: Optional[float] = None, nprobe: Optional[int] = None,
               policy: Optional[bool] = None, budget: Optional[float] = None,
               memory: Optional[bool] = None, memory_k: Optional[int] = None,
               memory_refresh: Optional[int] = None, memory_keys: Optional[str] = None,
               memory_temperature: Optional[float] = None) -> RetrievalParams:
        """Per-call parameters. With a trained policy and no explicit k/temperature/lam, the
        policy chooses them per query (``policy=False`` turns it off) and its skip stage lets
        only a ``budget`` share of the tokens encode and search (None: the trained default;
        1: all); unset values are :attr:`defaults`. ``memory`` and ``memory_*``: see
        :meth:`memory_params`."""
        mp = self.memory_params(memory, memory_k, memory_refresh, memory_keys, memory_temperature)
        k = optional(int_arg, "k", k, 1)
        temperature = optional(float_arg, "temperature", temperature, 0.0, lo_open=True)
        lam = optional(float_arg, "lam", lam, 0.0, 1.0, hi_open=True)
        nprobe = optional(int_arg, "nprobe", nprobe, 1)
        budget = optional(float_arg, "budget", budget, 0.0, 1.0, lo_open=True)
        if policy is not None and not isinstance(policy, (bool, np.bool_)):
            raise ArgumentError(f"policy={policy!r}: must be True, False or None")
        d = self.defaults
        nlist = self.retriever.index.nlist if self.retriever is not None else None
        nprobe = nprobe if nprobe is not None else d.nprobe
        if nlist and nprobe is not None and not 1 <= nprobe <= nlist:
            raise ValueError(f"nprobe={nprobe} is outside [1, nlist={nlist}]")
        if policy and self.policy is None:
            raise ValueError("policy=True but this model has no trained policy (run `retgen train`)")
        explicit = k is not None or temperature is not None or lam is not None
        use_policy = self.policy is not None and (policy if policy is not None else not explicit)
        if budget is None and use_policy and self.policy.skip_ready:
            budget = d.budget  # the config's (None: the policy's trained default)
        elif budget is not None and not (use_policy and self.policy.skip_ready):
            raise ValueError(f"budget={budget} needs the learned policy with a trained skip stage "
                             "(run `retgen train`; do not pass k, temperature or lam, or "
                             "policy=False)")
        return RetrievalParams(k=d.k if k is None else k,
                               temperature=d.temperature if temperature is None else temperature,
                               lam=d.lam if lam is None else lam,
                               nprobe=nprobe if nlist else None, use_policy=use_policy,
                               budget=budget, memory=mp)

    def _decide(self, params: RetrievalParams, vecs: np.ndarray, kf: Optional[np.ndarray]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(k, tau, lam) per query: the policy's choice from the embeddings and the back-off
        features ``kf``, or the fixed parameters."""
        n = len(vecs)
        if params.use_policy:
            if self.policy is None:
                raise ValueError("use_policy=True but this model has no trained policy "
                                 "(run `retgen train`)")
            return self.policy.act(np.concatenate([vecs, kf], axis=1))
        return (np.full(n, params.k), np.full(n, params.temperature), np.full(n, params.lam))

    def _skips(self, params: RetrievalParams) -> bool:
        """Whether the policy's skip stage decides, before any encoding, who retrieves."""
        pol = self.policy
        return (params.use_policy and pol is not None and pol.skip_ready
                and pol.skip_threshold(params.budget) > -np.inf)

    def _needs_kf(self, params: RetrievalParams) -> bool:
        """Whether the policy or the gate reads the back-off features."""
        return params.use_policy or self.gate is not None

    def _weights_and_shift(self, r: Retrieved, tau, kf: Optional[np.ndarray]
                           ) -> tuple[np.ndarray, np.ndarray]:
        """(energy weights [n, k], the gate's logit shift of lam [n]; 0 without a gate) for
        retrieved ``r`` and the queries' back-off features ``kf`` (read by the gate only).
        Candidate features are computed once, and only when the energy or the gate reads them."""
        ret = self.retriever
        gate = self.gate is not None and r.Q is not None
        feats = ret.features(r) if gate or (r.Q is not None and ret.energy.uses_features) else None
        w = ret.weights(r, tau, feats=feats)
        if not gate:
            return w, np.zeros(len(w))
        return w, self.gate.lam_shift(w, r.D, r.valid, feats["exact"], feats["length"], kf)

    def retrieval_terms(self, r: Retrieved, targets: np.ndarray, tau, seq: np.ndarray,
                        positions: np.ndarray, kf: Optional[np.ndarray] = None
                        ) -> tuple[np.ndarray, np.ndarray]:
        """(p_ret of each target [n], the gate's logit shift of lam [n]) for retrieved ``r``, n
        queries predicting seq[positions] (``kf``: their back-off features, if computed); for
        grids over k and tau on one search pass."""
        if kf is None and self.gate is not None:
            kf = backoff_features(self.backoff, seq, positions)
        w, shift = self._weights_and_shift(r, tau, kf)
        return self.retriever.target_probs(r, targets, tau, weights=w), shift

    def _wants_retrieval(self, params: RetrievalParams) -> bool:
        return self.retriever is not None and (params.use_policy or params.lam > 0)

    def lookup(self, seq: np.ndarray, pos: np.ndarray, params: RetrievalParams,
               retrieved: Optional[Retrieved] = None, query_vectors: Optional[np.ndarray] = None,
               progress: bool = False, kn: Optional[KneserNeyLM] = None) -> Lookup:
        """Retrieval for predicting seq[i] at each position i of ``pos`` (past tokens only):
        the skip stage, encoding, the per-query choice of k, tau and lam, search, energy
        weights and the gate. One path for the stream scorer and the single step.

        ``retrieved`` (fixed parameters only) reuses one search pass at k >= params.k;
        ``query_vectors`` reuses the embeddings of the positions' contexts; ``kn``: the
        back-off the call reads (:meth:`backoff_for`), if the caller has it."""
        ret = self.retriever
        n = len(pos)
        # back-off features of every position, once, if the policy or the gate reads them
        kn = kn if kn is not None else self.backoff_for(params)
        kf = backoff_features(kn, seq, pos) if self._needs_kf(params) else None
        if retrieved is not None and not params.use_policy:
            r = retrieved.top(params.k)
            k = np.full(n, params.k)
            tau, lam = np.full(n, params.temperature), np.full(n, params.lam)
            sel = np.ones(n, bool)
        else:
            gi = np.arange(n)
            if self._skips(params):  # the policy's skip stage, before any encoding
                z = skip_features(kf, self.cache.window, seq, pos)
                gi = np.flatnonzero(self.policy.retrieve_mask(z, params.budget))
            texts = ret.stream_texts(seq, pos[gi]) if query_vectors is None or retrieved is None else None
            if query_vectors is not None:
                vecs = query_vectors[gi]
            elif not any(texts):  # nothing to embed (skipped, or empty contexts): no retrieval
                gi, texts = gi[:0], []
                vecs = np.zeros((0, ret.encoder.dim), np.float32)
            else:
                vecs = ret.encode(texts, progress=progress)
            k, tau, lam = np.full(n, params.k), np.full(n, params.temperature), np.zeros(n)
            if len(gi):
                k[gi], tau[gi], lam[gi] = self._decide(params, vecs, None if kf is None else kf[gi])
            sel = lam > 0
            if retrieved is not None:  # one search pass at the largest k serves every choice
                r = retrieved.rows(sel)
            else:
                row = np.full(n, -1)
                row[gi] = np.arange(len(gi))
                sel[gi] &= np.array([bool(t) for t in texts], dtype=bool)
                r = ret.search_vectors(vecs[row[sel]], int(k[sel].max()) if sel.any() else 1,
                                       nprobe=params.nprobe, progress=progress,
                                       Q=right_aligned(seq, pos[sel], ret.max_length))
        r = r.limit(k[sel])
        w, shift = np.zeros((0, r.I.shape[1])), np.zeros(0)
        if sel.any():
            w, shift = self._weights_and_shift(r, tau[sel], None if kf is None else kf[sel])
        any_ = np.zeros(n, bool)
        any_[sel] = r.valid.any(axis=1)
        g = np.zeros(n)
        g[sel] = shift
        lam_eff = np.where(any_, gated_lam(lam, g), 0.0)
        return Lookup(k, tau, lam, sel, r, w, lam_eff, any_)

    def score_stream(self, seq: np.ndarray, params: RetrievalParams, start: int = 1,
                     retrieved: Optional[Retrieved] = None, progress: bool = False,
                     query_vectors: Optional[np.ndarray] = None,
                     memory_found: Optional[tuple] = None) -> dict:
        """Per-position log-probs of seq[i] given seq[:i], i >= start, with their parts
        (``retrieved``/``memory_found``: one pattern search / memory search of this stream,
        reused, as a benchmark's grid does)."""
        with self._memory_lock(params):
            return self._score_stream(seq, params, start, retrieved, progress, query_vectors,
                                      memory_found)

    def _memory_lock(self, params: RetrievalParams):
        """The memory held still while it is read (``PassageMemory.frozen``)."""
        if self.memory is None or params.memory is None:
            return contextlib.nullcontext()
        return self.memory.frozen()

    def _memory_context(self, kn, bseq: np.ndarray, pos: np.ndarray) -> Optional[np.ndarray]:
        """The back-off features the memory's learned gate reads (None: it has no gate)."""
        return backoff_features(kn, bseq, pos) if self.memory.config.gate else None

    def _score_stream(self, seq, params, start, retrieved, progress, query_vectors, memory_found):
        if self.memory is not None:
            self.memory.sync()  # first: reading new documents may grow the vocabulary
        seq = np.asarray(seq, dtype=np.int64)
        bseq = self.base_ids(seq)  # what the back-off and the patterns read
        kn = self.backoff_for(params)
        log_kn = kn.stream_logprobs(bseq, start=start)
        if self.V > self.backoff.V:  # <unk>'s share, for <unk> and each new word
            log_kn = log_kn - np.where(bseq[start:] == 0, np.log(self.V - self.backoff.V + 1), 0.0)
        log_base = self.cache.mix_stream(log_kn, seq, self.V, start=start)
        targets = seq[start:]
        n = len(targets)
        p_ret = np.zeros(n)
        out = {"logp": log_base, "log_kn": log_kn, "log_base": log_base, "p_ret": p_ret,
               "lam": np.zeros(n), "retrieved_any": np.zeros(n, bool)}
        if self._wants_retrieval(params):
            lk = self.lookup(bseq, np.arange(start, len(seq)), params, retrieved, query_vectors,
                             progress)
            if lk.sel.any():
                p_ret[lk.sel] = self.retriever.target_probs(lk.r, bseq[start:][lk.sel],
                                                            lk.tau[lk.sel], weights=lk.w)
                p_ret[targets >= self.backoff.V] = 0.0  # a pattern never continues with a new word
            out.update(logp=mix_logprobs(log_base, p_ret, lk.lam_eff), lam=lk.lam_eff,
                       retrieved_any=lk.found)
        out["p_mem"], out["lam_mem"] = np.zeros(n), np.zeros(n)
        if params.memory is not None and self.memory is not None:
            pos = np.arange(start, len(seq))
            p_mem, lam_mem = self.memory.stream_terms(seq, pos, params.memory, memory_found,
                                                      progress=progress,
                                                      context=self._memory_context(kn, bseq, pos))
            out.update(logp_before_memory=out["logp"], p_mem=p_mem, lam_mem=lam_mem,
                       logp=mix_logprobs(out["logp"], p_mem, lam_mem))
        return out

    def next_token_logprobs(self, history: Sequence[int], params: RetrievalParams
                            ) -> tuple[np.ndarray, StepInfo]:
        """log p(. | history) over the whole vocabulary: the stream scorer's parts at one
        position, with every token a candidate."""
        with self._memory_lock(params):
            return self._next_token_logprobs(history, params)

    def _next_token_logprobs(self, history: Sequence[int], params: RetrievalParams
                             ) -> tuple[np.ndarray, StepInfo]:
        if self.memory is not None:
            self.memory.sync()  # first: reading new documents may grow the vocabulary
        history = [int(t) for t in history]
        V, Vb = self.V, self.backoff.V
        bhist = [t if t < Vb else 0 for t in history]  # what the back-off and the patterns read
        kn = self.backoff_for(params)
        r = Retrieved(np.zeros((1, 0), np.float32), np.zeros((1, 0), np.int64))
        w, p_ret, lam, used = np.zeros((1, 0)), np.zeros(V), 0.0, params
        mem_on = params.memory is not None and self.memory is not None
        want = self._wants_retrieval(params)
        if want:
            ret = self.retriever
            span = max(self.backoff.order, ret.max_length, ret.query_length, self.cache.window + 1)
            seq = np.array(bhist[-span:] + [0], dtype=np.int64)  # all the lookup reads
            pos = np.array([len(seq) - 1])
            texts = None if self._skips(params) else ret.stream_texts(seq, pos)
            # with the memory on, the query's encoding runs beside the back-off, the cache and
            # the memory's lookup (.beside; with the memory off it measured no faster)
            run = beside.submit if mem_on else beside.inline
            vecs = run(ret.encode, texts) if texts and any(texts) else None
        p_kn = self.grow(kn.distribution(bhist))
        p_base, cache_mu = self.cache.dense(history, p_kn)
        lam_mem, step = 0.0, None
        if mem_on:
            tail = bhist[-(self.backoff.order - 1):] if self.backoff.order > 1 else []
            ctx = self._memory_context(kn, np.array(tail + [0], np.int64), np.array([len(tail)]))
            p_mem, lam_mem, step = self.memory.step_terms(history, params.memory, V, ctx)
        if want:
            lk = self.lookup(seq, pos, params, query_vectors=None if vecs is None else vecs.result(),
                             kn=kn)
            used = RetrievalParams(int(lk.k[0]), float(lk.tau[0]), float(lk.lam[0]),
                                   params.nprobe, params.use_policy, params.budget, params.memory)
            if lk.found[0]:
                r, w, lam = lk.r, lk.w, float(lk.lam_eff[0])
                p_ret = np.zeros(V)
                p_ret[:Vb] = self.retriever.dense(r, float(lk.tau[0]), weights=w)
        logp = mix_logprobs(np.log(p_base), p_ret, lam)
        if mem_on:
            logp = mix_logprobs(logp, p_mem, lam_mem)
        return logp, StepInfo(history, r, w, lam, used, p_kn, p_ret, cache_mu, lam_mem, step, p_base)
