"""Decoding: greedy, sampling (temperature, top-k, top-p, min-p, repetition penalty, entropy-adaptive
temperature), stop tokens and beam search with length normalization, batched over the KV cache.

Prompts of different lengths share one batch exactly: they are left-padded and the padding is masked
out of attention (``key_mask``); rotary scores depend only on relative positions, so a row's tokens
equal those it gets alone (up to float rounding).

Conventions, everywhere in this module (and so in the CLI and the Triton generate model):

- the returned tokens are the *new* tokens only; the token that ended a row (``eos_id`` or one of
  ``stop_token_ids``) is **not** included;
- the repetition penalty counts every token the row has seen, prompt included (as Hugging Face does);
- seeded sampling is reproducible for the same prompts, batch composition and parameters; with one seed
  per row (``seeds``) each row draws from its own generator, so its tokens equal those it gets alone with
  that seed, whatever else is in the batch (up to float rounding of the logits);
- beam search scores a finished hypothesis as ``sum(log p) / length ** length_penalty`` where the
  length counts its new tokens including the stop token; it returns the best hypothesis per prompt.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from model.network import KVCache, Transformer


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 64
    temperature: float = 1.0  # 0.0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    # entropy-adaptive ("dynamic") temperature: T = lo + (hi - lo) * (H / H_max) ** exponent with
    # lo, hi = temperature -/+ adaptive_range: confident steps sample colder, uncertain ones hotter.
    adaptive_temperature: bool = False
    adaptive_range: float = 0.5
    adaptive_exponent: float = 1.0
    stop_token_ids: tuple[int, ...] = ()
    seed: int | None = None
    num_beams: int = 1  # > 1 = beam search with length normalization
    length_penalty: float = 1.0

    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""
        checks: list[tuple[bool, str]] = [
            (isinstance(self.max_new_tokens, int) and self.max_new_tokens >= 1, "max_new_tokens must be an integer >= 1"),
            (math.isfinite(self.temperature) and self.temperature >= 0, "temperature must be >= 0 (0 = greedy)"),
            (isinstance(self.top_k, int) and self.top_k >= 0, "top_k must be an integer >= 0 (0 = off)"),
            (0 < self.top_p <= 1, "top_p must be in (0, 1]"),
            (0 <= self.min_p <= 1, "min_p must be in [0, 1]"),
            (math.isfinite(self.repetition_penalty) and self.repetition_penalty > 0, "repetition_penalty must be > 0"),
            (not self.adaptive_temperature or self.temperature > 0,
             "adaptive_temperature needs temperature > 0 (it varies the temperature around that value)"),
            (math.isfinite(self.adaptive_range) and self.adaptive_range >= 0, "adaptive_range must be >= 0"),
            (math.isfinite(self.adaptive_exponent) and self.adaptive_exponent > 0, "adaptive_exponent must be > 0"),
            (all(isinstance(t, int) and t >= 0 for t in self.stop_token_ids),
             "stop_token_ids must be non-negative integers"),
            (self.seed is None or (isinstance(self.seed, int) and self.seed >= 0), "seed must be None or an integer >= 0"),
            (isinstance(self.num_beams, int) and self.num_beams >= 1, "num_beams must be an integer >= 1"),
            (math.isfinite(self.length_penalty), "length_penalty must be finite"),
        ]
        if self.num_beams > 1:
            checks.append((not (self.top_k or self.top_p < 1 or self.min_p or self.adaptive_temperature),
                           "num_beams > 1 (beam search) cannot be combined with top_k, top_p, min_p or "
                           "adaptive_temperature: beam search does not sample"))
            checks.append((self.temperature in (0.0, 1.0),
                           "temperature must be 0 or 1 with num_beams > 1: beam search scores with the model's "
                           "log-probabilities"))
        for ok, message in checks:
            if not ok:
                raise ValueError(f"invalid sampling parameters: {message}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


# --- logits processors ----------------------------------------------------------------------------


def _repetition_penalty(logits: torch.Tensor, generated: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's penalty on every token seen in the row (``generated`` (B, L); negative ids are ignored)."""
    vocab = logits.shape[-1]
    ids = torch.where(generated < 0, vocab, generated).long()
    seen = torch.zeros(logits.shape[0], vocab + 1, dtype=torch.bool, device=logits.device)
    seen.scatter_(1, ids, True)
    penalized = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen[:, :vocab], penalized, logits)


def adaptive_temperatures(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Per-row temperature (B, 1) from the normalized entropy of the row's distribution."""
    logp = torch.log_softmax(logits, dim=-1)
    entropy = -(logp.exp() * logp.nan_to_num(neginf=0.0)).sum(-1, keepdim=True)
    support = torch.isfinite(logits).sum(-1, keepdim=True).clamp(min=2).float()
    ratio = (entropy / support.log()).clamp(0.0, 1.0) ** params.adaptive_exponent
    lo, hi = max(params.temperature - params.adaptive_range, 0.0), params.temperature + params.adaptive_range
    return (lo + (hi - lo) * ratio).clamp(min=1e-4)


def top_p_mask(logits: torch.Tensor, top_p: float, candidates: int = 1024) -> torch.Tensor:
    """True for tokens outside the smallest set (by descending probability) whose mass reaches ``top_p``.

    Sorting a large vocabulary for every row and step is most of a sampling step's cost, so the ``candidates``
    most probable tokens are ranked first; in a row where they reach ``top_p``, every token after them has
    at least that mass before it and is dropped, exactly as a full sort decides; the other rows are sorted
    in full."""
    probs = torch.softmax(logits, dim=-1)
    ranked, order = probs.topk(min(candidates, probs.shape[-1]), dim=-1)
    drop = torch.ones_like(probs, dtype=torch.bool).scatter(1, order, _outside_nucleus(ranked, top_p))
    short = ranked.cumsum(-1)[:, -1] < top_p
    if ranked.shape[-1] < probs.shape[-1] and bool(short.any()):
        rows = short.nonzero()[:, 0]
        ranked, order = probs[rows].sort(dim=-1, descending=True)
        drop[rows] = torch.zeros_like(ranked, dtype=torch.bool).scatter(1, order, _outside_nucleus(ranked, top_p))
    return drop


def _outside_nucleus(ranked: torch.Tensor, top_p: float) -> torch.Tensor:
    """For probabilities sorted in descending order: True where the mass before a token reaches ``top_p``."""
    drop = ranked.cumsum(-1) - ranked >= top_p
    drop[:, 0] = False
    return drop


def process_logits(logits: torch.Tensor, generated: torch.Tensor, params: SamplingParams,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """All logits processors in their fixed order: repetition penalty, temperature (fixed or adaptive),
    top-k, top-p, min-p. Returns float logits (B, V) with removed tokens at -inf; for greedy decoding only
    the repetition penalty applies (the filters cannot change the arg-max).

    ``generated`` (B, L) holds the tokens each row has seen (prompt included; negative = padding).
    ``generator`` is accepted so that callers pass one object to every step; the processors themselves
    are deterministic and draw nothing (see :func:`sample_next`).
    """
    del generator  # deterministic processors; the draw happens in sample_next
    out = logits.float()
    if params.repetition_penalty != 1.0 and generated.numel():
        out = _repetition_penalty(out, generated, params.repetition_penalty)
    if params.greedy:
        return out
    temperature = adaptive_temperatures(out, params) if params.adaptive_temperature else params.temperature
    out = out / temperature
    if params.top_k and params.top_k < out.shape[-1]:
        kth = out.topk(params.top_k, dim=-1).values[:, -1:]
        out = out.masked_fill(out < kth, -math.inf)
    if params.top_p < 1.0:
        out = out.masked_fill(top_p_mask(out, params.top_p), -math.inf)
    if params.min_p > 0.0:
        probs = torch.softmax(out, dim=-1)
        out = out.masked_fill(probs < params.min_p * probs.max(-1, keepdim=True).values, -math.inf)
    return out


Generators = torch.Generator | Sequence[torch.Generator] | None


def sample_next(logits: torch.Tensor, generated: torch.Tensor, params: SamplingParams,
                generator: Generators) -> torch.Tensor:
    """Next token per row (B,): arg-max when greedy, else a draw from the processed distribution, from one
    generator for the batch or from each row's own (a sequence of B generators)."""
    processed = process_logits(logits, generated, params)
    if params.greedy:
        return processed.argmax(-1)
    probs = torch.softmax(processed, dim=-1)
    if generator is None or isinstance(generator, torch.Generator):
        return torch.multinomial(probs, 1, generator=generator).squeeze(1)
    return torch.cat([torch.multinomial(probs[i : i + 1], 1, generator=g)[0] for i, g in enumerate(generator)])


def make_generator(params: SamplingParams, device: torch.device) -> torch.Generator | None:
    if params.greedy:
        return None
    generator = torch.Generator(device=device)
    if params.seed is None:
        generator.seed()
    else:
        generator.manual_seed(params.seed)
    return generator


def _generators(params: SamplingParams, seeds: Sequence[int] | None, rows: int, device: torch.device
                ) -> Generators:
    """One generator for the batch (``params.seed``), or one per row seeded from ``seeds``."""
    if seeds is None or params.greedy:
        return make_generator(params, device)
    if len(seeds) != rows or any(not isinstance(s, int) or s < 0 for s in seeds):
        raise ValueError(f"seeds must hold one integer >= 0 per prompt ({rows}), got {len(seeds)}")
    return [torch.Generator(device=device).manual_seed(seed) for seed in seeds]


def last_logits(model: Transformer, ids: torch.Tensor, *, cache: KVCache, start_pos: int = 0,
                key_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Logits (B, V) of the last position only: a prompt's other positions need no output head."""
    return model.output(model.hidden_states(ids, cache=cache, start_pos=start_pos, key_mask=key_mask)[:, -1])


# --- batched decoding over the KV cache -----------------------------------------------------------


def _check_prompts(model: Transformer, prompts: list[list[int]], params: SamplingParams) -> None:
    params.validate()
    if not prompts:
        raise ValueError("no prompts given")
    vocab, context = model.config.vocab_size, model.config.context
    for i, prompt in enumerate(prompts):
        if not prompt:
            raise ValueError(f"prompt {i} is empty; give at least one token (e.g. BOS)")
        if min(prompt) < 0 or max(prompt) >= vocab:
            raise ValueError(f"prompt {i} has token ids outside the vocabulary [0, {vocab})")
        if len(prompt) + params.max_new_tokens > context:
            raise ValueError(f"prompt {i} has {len(prompt)} tokens; with max_new_tokens {params.max_new_tokens} "
                             f"that exceeds the context length {context}: shorten the prompt or ask fewer tokens")
    if any(t >= vocab for t in params.stop_token_ids):
        raise ValueError(f"stop_token_ids must be below the vocabulary size {vocab}")


def left_pad(prompts: list[list[int]], pad_id: int, extra: int, device: torch.device
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids (B, P) left-padded, key mask (B, P + extra): True on real tokens and on the ``extra`` slots)."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    valid = torch.ones(len(prompts), width + extra, dtype=torch.bool)
    for i, prompt in enumerate(prompts):
        ids[i, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
        valid[i, : width - len(prompt)] = False
    return ids.to(device), valid.to(device)


def _stop_tensor(params: SamplingParams, eos_id: int | None, device: torch.device) -> torch.Tensor:
    stops = set(params.stop_token_ids) | ({eos_id} if eos_id is not None else set())
    return torch.tensor(sorted(stops), dtype=torch.long, device=device)


def stream_generate(model: Transformer, prompts: list[list[int]], params: SamplingParams, *,
                    eos_id: int | None, pad_id: int, seeds: Sequence[int] | None = None
                    ) -> Iterator[list[int | None]]:
    """Yield, per decoding step, the next token of every row (None once the row has finished, including
    at the step where it produced its stop token). Ends when every row has stopped or after
    ``max_new_tokens`` steps. Sampling only: beam search needs the whole search (use :func:`generate`).
    ``seeds`` (one per prompt) gives every row its own generator in place of ``params.seed``."""
    if params.num_beams > 1:
        raise ValueError("stream_generate does not do beam search (num_beams > 1); use generate")
    _check_prompts(model, prompts, params)
    device = model.tok_embeddings.weight.device
    ids, valid = left_pad(prompts, pad_id, params.max_new_tokens, device)
    batch, width = ids.shape
    steps = params.max_new_tokens
    cache = KVCache(model.config, batch, width + steps, device, model.tok_embeddings.weight.dtype)
    history = torch.full((batch, width + steps), -1, dtype=torch.long, device=device)
    history[:, :width] = torch.where(valid[:, :width], ids, -1)
    stops, generator = _stop_tensor(params, eos_id, device), _generators(params, seeds, batch, device)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    with torch.inference_mode():
        logits = last_logits(model, ids, cache=cache, start_pos=0, key_mask=valid[:, :width])
    for step in range(steps):
        with torch.inference_mode():
            token = sample_next(logits, history[:, : width + step], params, generator)
            stopped = torch.isin(token, stops)
            emitted = ~(done | stopped)
            done |= stopped
            history[:, width + step] = torch.where(done, -1, token)
        yield [int(t) if e else None for t, e in zip(token.tolist(), emitted.tolist(), strict=True)]
        if bool(done.all()) or step == steps - 1:
            return
        with torch.inference_mode():
            feed = torch.where(done, pad_id, token)[:, None]
            logits = model(feed, cache=cache, start_pos=width + step, key_mask=valid[:, : width + step + 1])[:, -1]


def generate(model: Transformer, prompts: list[list[int]], params: SamplingParams, *,
             eos_id: int | None, pad_id: int, seeds: Sequence[int] | None = None) -> list[list[int]]:
    """New tokens per prompt (the stop token that ended a row is not included); ``seeds`` as in
    :func:`stream_generate`."""
    if params.num_beams > 1:
        _check_prompts(model, prompts, params)
        return [beam_search(model, prompt, params, eos_id=eos_id) for prompt in prompts]
    out: list[list[int]] = [[] for _ in prompts]
    for step in stream_generate(model, prompts, params, eos_id=eos_id, pad_id=pad_id, seeds=seeds):
        for row, token in zip(out, step, strict=True):
            if token is not None:
                row.append(token)
    return out


# --- beam search ------------------------------------------------------------------------------------


@dataclass
class _Hypotheses:
    """Finished hypotheses of one prompt: (normalized score, tokens), best first."""

    size: int
    length_penalty: float
    items: list[tuple[float, list[int]]]

    def add(self, sum_logprob: float, tokens: list[int], length: int) -> None:
        if math.isfinite(sum_logprob):
            self.items.append((sum_logprob / length**self.length_penalty, tokens))
            self.items.sort(key=lambda item: -item[0])
            del self.items[self.size:]

    def closed(self, best_live: float, length: int, max_length: int) -> bool:
        """No live beam can still beat the worst kept hypothesis (log-probs only decrease)."""
        if len(self.items) < self.size:
            return False
        bound_length = max_length if self.length_penalty > 0 else length
        return self.items[-1][0] >= best_live / bound_length**self.length_penalty


def beam_search(model: Transformer, prompt: list[int], params: SamplingParams, *, eos_id: int | None) -> list[int]:
    """The best hypothesis of a beam search over ``prompt`` (beams batched over one KV cache)."""
    beams, steps = params.num_beams, params.max_new_tokens
    device = model.tok_embeddings.weight.device
    stops = _stop_tensor(params, eos_id, device)
    width = len(prompt)
    cache = KVCache(model.config, beams, width + steps, device, model.tok_embeddings.weight.dtype)
    ids = torch.tensor([prompt] * beams, dtype=torch.long, device=device)
    scores = torch.full((beams,), -math.inf, device=device)
    scores[0] = 0.0  # identical beams at the start: only one may expand
    done = _Hypotheses(beams, params.length_penalty, [])
    with torch.inference_mode():
        logits = last_logits(model, ids, cache=cache, start_pos=0)
        for step in range(steps):
            logp = torch.log_softmax(process_logits(logits, ids, params), dim=-1)
            flat = (scores[:, None] + logp).view(-1)
            top, index = flat.topk(min(2 * beams, flat.numel()))
            origin, token = index // logp.shape[-1], index % logp.shape[-1]
            keep = _select(top, origin, token, stops, ids[:, width:], done, step, steps, beams)
            if keep is None or done.closed(float(keep[1].max()), step + 1, steps):
                break
            pick, scores = keep
            chosen = token[pick]
            ids = torch.cat([ids[origin[pick]], chosen[:, None]], dim=1)
            for layer in cache.layers:
                layer.k, layer.v = layer.k[origin[pick]], layer.v[origin[pick]]
            logits = model(chosen[:, None], cache=cache, start_pos=width + step)[:, -1]
    return done.items[0][1] if done.items else []


def _select(top: torch.Tensor, origin: torch.Tensor, token: torch.Tensor, stops: torch.Tensor,
            new_tokens: torch.Tensor, done: _Hypotheses, step: int, steps: int, beams: int
            ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Route the ranked candidates: stop tokens ranked within the beam width finish a hypothesis, the
    rest fill the live beams (at the last step, those finish too). Returns (candidate indexes, scores)
    of the next live beams, or None when nothing is left alive."""
    live: list[int] = []
    is_stop = torch.isin(token, stops).tolist()
    for rank, (score, beam, stop) in enumerate(zip(top.tolist(), origin.tolist(), is_stop, strict=True)):
        prefix = new_tokens[beam].tolist()
        if stop:
            if rank < beams:
                done.add(score, prefix, step + 1)
        elif step == steps - 1:
            done.add(score, [*prefix, int(token[rank])], step + 1)
        elif len(live) < beams and math.isfinite(score):
            live.append(rank)
    if not live or step == steps - 1:
        return None
    real = len(live)
    live += [live[0]] * (beams - real)  # too few live candidates: padding beams that can never win
    pick = torch.tensor(live, device=top.device)
    scores = top[pick].clone()
    scores[real:] = -math.inf
    return pick, scores
