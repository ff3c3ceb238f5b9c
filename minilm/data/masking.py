"""Masking for self-supervised pretraining: which tokens a masked LM must predict, and what it sees there.

Design choices:
- Pure tensor code over the whole batch (B, T): no Python loop over rows or tokens, so the
  same function masks a batch on the CPU in a data loader or on the GPU right before the
  step. Every tensor is created on the device of the inputs.
- Every random draw goes through one `torch.Generator`, so one seed reproduces one batch bit
  for bit (on a given device: CPU and CUDA generators give different streams). A generator
  on another device than the inputs still works: draws are made where the generator lives
  and moved.
- Two stages. A *strategy* chooses which positions are predicted (`choose_tokens`,
  `choose_whole_words`, `choose_spans`, `choose_sequence`); `replace` then decides what the
  model sees at each chosen position. Strategies share one signature
  `(maskable, word_ids, config, generator) -> (selected, unit)`: `unit` groups positions
  that share one replacement decision (a SpanBERT span), or is None for one decision per
  token (BERT, whole-word BERT, MASS).
- The replacement split is a split of the *chosen* positions, not of the row:
  mask_frac + random_frac + keep_frac = 1. BERT's "80/10/10" means 80% of the chosen
  positions become [MASK], 10% become a random token, 10% stay as they are; so the
  "10% random" is half of the 20% that are not [MASK] (not 10% of the 20%, and not 10% of
  the row). A random token is drawn from `replacement_ids`, which the caller builds
  without special tokens (`minilm.data.collate.replacement_ids`).
- Count modes. `bernoulli`: each unit (token, word or span) is chosen independently with
  probability mask_prob, as in BERT's reference code; the count varies from row to row.
  `exact`: a fixed count per row, target = round(mask_prob * n) with n the row's maskable
  tokens and round half up (floor(x + 0.5)); static counts give less noisy gradients (the
  Cramming recipe). For `token` and `sequence` the count is exactly the target. For words
  and spans, which must not be split, units are taken in a uniformly random order while the
  middle of the unit's token range (in that order) lies below the target: the count is the
  closest to the target that a prefix of the random order allows, within half a unit
  (half the longest word or span) of it.
- Never masked: positions where `maskable` is False (special tokens, padding). For the word
  strategies a position also needs a word id >= 0 (-1 = special / no word). A word is a run
  of consecutive positions sharing one word id, so any numbering works (per row, per
  document, or restarting).
- A row with no maskable position (an all-padding row, say) comes back unchanged with all
  labels -100; so does a whole batch without one: there is nothing to predict, and minilm's
  MaskedLM gives such a batch a loss of 0. Checking for it would cost a GPU synchronisation
  on every batch (the host waiting for the device), so it is documented instead of raised.
- Nothing here synchronises with the device: no `.item()`, no data-dependent shapes.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

STRATEGIES = ("token", "whole_word", "span", "sequence")
COUNTS = ("bernoulli", "exact")
# The masking rate a strategy gets when `mask_prob` is not given: BERT's 15%, MASS's half.
DEFAULT_MASK_PROB = {"token": 0.15, "whole_word": 0.15, "span": 0.15, "sequence": 0.5}
IGNORE = -100  # the label of a position that is not predicted (cross-entropy's ignore_index)


@dataclass(frozen=True)
class MaskingConfig:
    """How a batch is masked. Validated at construction; see the module docstring for the rules.

    strategy:    "token" | "whole_word" | "span" | "sequence"
    mask_prob:   fraction of maskable tokens to predict; None = 0.15 (0.5 for "sequence")
    mask_frac:   of the chosen positions, the fraction replaced by [MASK]
    random_frac: of the chosen positions, the fraction replaced by a random non-special token
                 (BERT's "10% random" is 10% of the chosen positions: half of the 20% not [MASK])
    keep_frac:   of the chosen positions, the fraction left unchanged (still predicted)
    count:       "bernoulli" (independent draws) | "exact" (fixed count per row)
    span_p:      parameter of SpanBERT's geometric span-length law (in words)
    max_span:    longest span, in words (the law is truncated there and renormalised)
    """

    strategy: str = "token"
    mask_prob: float | None = None
    mask_frac: float = 0.8
    random_frac: float = 0.1
    keep_frac: float = 0.1
    count: str = "bernoulli"
    span_p: float = 0.2
    max_span: int = 10

    def __post_init__(self):
        def need(ok: bool, field: str, accepted: str):
            if not ok:
                raise ValueError(f"MaskingConfig.{field}={getattr(self, field)!r} is invalid: expected {accepted}")

        need(self.strategy in STRATEGIES, "strategy", f"one of {STRATEGIES}")
        need(self.count in COUNTS, "count", f"one of {COUNTS}")
        if self.mask_prob is None:
            object.__setattr__(self, "mask_prob", DEFAULT_MASK_PROB[self.strategy])
        for field in ("mask_prob", "mask_frac", "random_frac", "keep_frac"):
            value = getattr(self, field)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value <= 1.0
            need(ok, field, "a probability in [0, 1]")
        total = self.mask_frac + self.random_frac + self.keep_frac
        if abs(total - 1.0) > 1e-6:
            raise ValueError(
                f"MaskingConfig.mask_frac + random_frac + keep_frac = {self.mask_frac} + {self.random_frac} + "
                f"{self.keep_frac} = {total:g}: the three split the chosen positions, so they must sum to 1 "
                "(BERT: 0.8, 0.1, 0.1)"
            )
        ok = isinstance(self.span_p, (int, float)) and not isinstance(self.span_p, bool) and 0.0 < self.span_p <= 1.0
        need(ok, "span_p", "a probability in (0, 1]")
        need(isinstance(self.max_span, int) and not isinstance(self.max_span, bool) and self.max_span >= 1,
             "max_span", "an integer >= 1")

    @property
    def needs_word_ids(self) -> bool:
        return self.strategy in ("whole_word", "span")


# --------------------------------------------------------------------------- random draws


def _uniform(shape, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """U[0, 1) float32 draws, made on the generator's device and moved to `device`."""
    where = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=where).to(device)


def _randint(high: int, shape, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    where = generator.device if generator is not None else device
    return torch.randint(high, shape, generator=generator, device=where).to(device)


def target_count(n: torch.Tensor, prob: float) -> torch.Tensor:
    """round(prob * n), half up, computed in float64 so it equals Python's floor(prob * n + 0.5)."""
    return torch.floor(n.double() * prob + 0.5).long()


# --------------------------------------------------------------------------- shared pieces


def word_index(maskable: torch.Tensor, word_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Number the words of each row 0, 1, 2, ... from left to right.

    A word is a maximal run of consecutive positions that are maskable and share one word
    id >= 0. Returns `index` (B, T) long (0 where there is no word) and `valid` (B, T) bool,
    True at positions that belong to a word.
    """
    valid = maskable & (word_ids >= 0)  # (B, T)
    prev_id = F.pad(word_ids[:, :-1], (1, 0), value=-1)  # (B, T) word id one position to the left
    prev_valid = F.pad(valid[:, :-1], (1, 0), value=False)  # (B, T)
    starts = valid & (~prev_valid | (word_ids != prev_id))  # (B, T) first token of each word
    index = (starts.long().cumsum(1) - 1).clamp(min=0).masked_fill(~valid, 0)  # (B, T)
    return index, valid


def choose_units(unit: torch.Tensor, valid: torch.Tensor, prob: float, count: str,
                 generator: torch.Generator | None) -> torch.Tensor:
    """Choose whole units (words, spans) to mask; returns `selected` (B, T) bool.

    unit (B, T) long in [0, T): positions of a row with the same unit id are chosen together.
    valid (B, T) bool: only valid positions are ever selected, and only they count.
    bernoulli: each unit independently with probability `prob` (expected count prob * n).
    exact: target = round(prob * n) per row (n = valid positions). The units are put in a
    uniformly random order and a unit is taken iff the middle of its token range in that
    order lies below the target, i.e. start + end < 2 * target: this takes the prefix of the
    order whose token count is closest to the target (ties round down).
    """
    # BEGIN SOLUTION masking
    B, T = unit.shape
    size = torch.zeros(B, T, dtype=torch.long, device=unit.device).scatter_add_(1, unit, valid.long())  # (B, T)
    key = _uniform((B, T), generator, unit.device)  # (B, T) one random key per unit id
    if count == "bernoulli":
        chosen = key < prob  # (B, T) per unit id
    else:
        target = target_count(valid.sum(1), prob)  # (B,)
        order = key.masked_fill(size == 0, 2.0).argsort(dim=1, stable=True)  # (B, T) empty units last
        size_in_order = size.gather(1, order)  # (B, T)
        end = size_in_order.cumsum(1)  # (B, T) tokens taken once this unit is in
        take = (2 * end - size_in_order < 2 * target[:, None]) & (size_in_order > 0)  # (B, T)
        chosen = torch.zeros_like(take).scatter_(1, order, take)  # (B, T) back to unit ids
    return chosen.gather(1, unit) & valid  # (B, T)
    # END SOLUTION masking


def span_lengths(shape, p: float, max_len: int, generator: torch.Generator | None,
                 device: torch.device) -> torch.Tensor:
    """Span lengths in words from SpanBERT's law: Geometric(p) on {1, 2, ...} truncated at max_len.

    P(L = k) = p (1 - p)^(k - 1) / (1 - (1 - p)^max_len) for k = 1..max_len (renormalised, which
    is what SpanBERT's "clipped at 10" means: its mean is 3.8 words for p = 0.2). Drawn by
    inverting the CDF F(k) = (1 - q^k) / (1 - q^max_len), q = 1 - p: L = 1 + #{k < max_len : F(k) <= u}
    for u ~ U[0, 1). Returns long `shape`.
    """
    # BEGIN SOLUTION masking
    u = _uniform(shape, generator, device)
    q = 1.0 - p
    lengths = torch.ones(shape, dtype=torch.long, device=device)
    for k in range(1, max_len):  # max_len is small (10): one comparison per possible length
        lengths += u >= (1.0 - q**k) / (1.0 - q**max_len)
    return lengths
    # END SOLUTION masking


# --------------------------------------------------------------------------- the four strategies


def choose_tokens(maskable: torch.Tensor, word_ids: torch.Tensor | None, config: MaskingConfig,
                  generator: torch.Generator | None) -> tuple[torch.Tensor, None]:
    """BERT: every maskable position on its own (word_ids is ignored).

    bernoulli: each maskable position with probability mask_prob.
    exact: exactly round(mask_prob * n) positions per row (n = maskable positions), every such
    set equally likely. Returns (selected (B, T) bool, None): one replacement decision per token.
    """
    # BEGIN SOLUTION masking
    key = _uniform(maskable.shape, generator, maskable.device)  # (B, T)
    if config.count == "bernoulli":
        return (key < config.mask_prob) & maskable, None
    target = target_count(maskable.sum(1), config.mask_prob)  # (B,)
    order = key.masked_fill(~maskable, 2.0).argsort(dim=1, stable=True)  # (B, T) positions, smallest key first
    first = torch.arange(order.shape[1], device=order.device).expand_as(order) < target[:, None]  # (B, T)
    return torch.zeros_like(maskable).scatter_(1, order, first) & maskable, None
    # END SOLUTION masking


def choose_whole_words(maskable: torch.Tensor, word_ids: torch.Tensor | None, config: MaskingConfig,
                       generator: torch.Generator | None) -> tuple[torch.Tensor, None]:
    """Whole-word masking (BERT's later release): all sub-tokens of a word are chosen or none are.

    bernoulli: each word with probability mask_prob, so the expected fraction of masked tokens
    is mask_prob. exact: words in a random order, count within half the longest word of
    round(mask_prob * n) (see `choose_units`). Returns (selected (B, T) bool, None): as in BERT,
    each token of a chosen word gets its own replacement decision.
    """
    word, valid = word_index(maskable, word_ids)  # (B, T), (B, T)
    return choose_units(word, valid, config.mask_prob, config.count, generator), None


def choose_spans(maskable: torch.Tensor, word_ids: torch.Tensor | None, config: MaskingConfig,
                 generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """SpanBERT: spans of whole words whose lengths follow the truncated geometric law.

    The words of each row are cut, left to right, into consecutive spans with lengths drawn
    from `span_lengths` (the last span of a row is cut short by the row's end). Spans are then
    chosen as units (`choose_units`): bernoulli picks each span with probability mask_prob, so
    a word is masked with probability mask_prob and the chosen spans keep the length law;
    exact takes spans in a random order until the count is within half a span of
    round(mask_prob * n). Two chosen spans may sit side by side, as in SpanBERT.
    Returns (selected (B, T) bool, span (B, T) long): one replacement decision per span.
    """
    word, valid = word_index(maskable, word_ids)  # (B, T), (B, T)
    B, T = word.shape
    # T spans of >= 1 word always cover the at most T words of a row.
    length = span_lengths((B, T), config.span_p, config.max_span, generator, word.device)  # (B, T)
    end = length.cumsum(1).clamp(max=T)  # (B, T) span s covers words [end[s] - length[s], end[s])
    # Mark the first word of every span after the first, then count marks up to each word.
    opens = torch.zeros(B, T + 1, dtype=torch.long, device=word.device).scatter_(1, end, 1)  # (B, T + 1)
    span_of_word = opens[:, :T].cumsum(1)  # (B, T) span index of word w
    span = span_of_word.gather(1, word)  # (B, T) the span each token's word falls in
    return choose_units(span, valid, config.mask_prob, config.count, generator), span


def choose_sequence(maskable: torch.Tensor, word_ids: torch.Tensor | None, config: MaskingConfig,
                    generator: torch.Generator | None) -> tuple[torch.Tensor, None]:
    """MASS: one contiguous fragment per row (word_ids is ignored).

    The fragment is a run of consecutive maskable positions (special tokens inside a packed
    row are skipped over, never masked), of length round(mask_prob * n) in exact mode or
    Binomial(n, mask_prob) in bernoulli mode (n = maskable positions), starting at a uniformly
    random place where it fits. MASS masks half the row: mask_prob defaults to 0.5 here.
    Returns (selected (B, T) bool, None): one replacement decision per token.
    """
    # BEGIN SOLUTION masking
    B, T = maskable.shape
    n = maskable.sum(1)  # (B,)
    if config.count == "bernoulli":
        length = ((_uniform((B, T), generator, maskable.device) < config.mask_prob) & maskable).sum(1)  # (B,)
    else:
        length = target_count(n, config.mask_prob)  # (B,)
    start = (_uniform((B,), generator, maskable.device) * (n - length + 1)).long()  # (B,) in [0, n - length]
    start = torch.minimum(start, n - length)  # float rounding could reach n - length + 1
    rank = maskable.long().cumsum(1) - 1  # (B, T) index of each position among the maskable ones
    return maskable & (rank >= start[:, None]) & (rank < (start + length)[:, None]), None
    # END SOLUTION masking


STRATEGY_FUNCTIONS = {
    "token": choose_tokens,
    "whole_word": choose_whole_words,
    "span": choose_spans,
    "sequence": choose_sequence,
}


# --------------------------------------------------------------------------- replacement and the entry point


def replace(input_ids: torch.Tensor, selected: torch.Tensor, config: MaskingConfig, *, mask_id: int,
            replacement_ids: torch.Tensor, unit: torch.Tensor | None = None,
            generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """What the model sees at the chosen positions, and what it must predict there.

    Each chosen position becomes `mask_id` with probability mask_frac, a token drawn uniformly
    from `replacement_ids` with probability random_frac, and stays itself with probability
    keep_frac (the three sum to 1). Positions with the same `unit` id (B, T) share one decision;
    unit=None decides per token. Returns (masked_input_ids (B, T), labels (B, T)): labels hold
    the original id at chosen positions and -100 everywhere else.
    """
    # BEGIN SOLUTION masking
    device = input_ids.device
    decision = _uniform(input_ids.shape, generator, device)  # (B, T)
    if unit is not None:
        decision = decision.gather(1, unit)  # (B, T) every position of a unit reads the unit's draw
    to_mask = selected & (decision < config.mask_frac)  # (B, T)
    masked = torch.where(to_mask, mask_id, input_ids)  # (B, T)
    if config.random_frac > 0:
        to_random = selected & ~to_mask & (decision < config.mask_frac + config.random_frac)  # (B, T)
        pick = _randint(replacement_ids.numel(), input_ids.shape, generator, device)  # (B, T)
        random_ids = replacement_ids.index_select(0, pick.flatten()).view_as(pick)  # (B, T)
        masked = torch.where(to_random, random_ids, masked)  # (B, T)
    labels = torch.where(selected, input_ids, IGNORE)  # (B, T)
    return masked, labels
    # END SOLUTION masking


def mask_tokens(input_ids: torch.Tensor, config: MaskingConfig, *, mask_id: int, maskable: torch.Tensor,
                replacement_ids: torch.Tensor, word_ids: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask a batch for masked-language-model training.

    input_ids (B, T) integer; maskable (B, T) bool, False at special tokens and padding;
    replacement_ids 1-D, the ids a random replacement may take (no special tokens); word_ids
    (B, T), -1 where there is no word, required by "whole_word" and "span"; generator drives
    every draw (None: torch's global one). Returns (masked_input_ids (B, T), labels (B, T)),
    on the device of input_ids: labels are the original ids at the masked positions and -100
    elsewhere, and a position that is not maskable is never masked.
    """
    if not (isinstance(input_ids, torch.Tensor) and input_ids.dim() == 2 and not input_ids.is_floating_point()):
        raise ValueError(f"input_ids must be a 2-D integer tensor (B, T); got {_describe(input_ids)}")
    if not (isinstance(maskable, torch.Tensor) and maskable.dtype == torch.bool and maskable.shape == input_ids.shape):
        raise ValueError(f"maskable must be a bool tensor of shape {tuple(input_ids.shape)} like input_ids; "
                         f"got {_describe(maskable)}")
    if config.needs_word_ids and word_ids is None:
        raise ValueError(f"MaskingConfig.strategy={config.strategy!r} masks whole words, so it needs word_ids "
                         "(B, T) from the tokenizer (-1 at special tokens); got None")
    if word_ids is not None and not (isinstance(word_ids, torch.Tensor) and word_ids.shape == input_ids.shape):
        raise ValueError(f"word_ids must be a tensor of shape {tuple(input_ids.shape)} like input_ids; "
                         f"got {_describe(word_ids)}")
    if config.random_frac > 0 and replacement_ids.numel() == 0:
        raise ValueError(f"MaskingConfig.random_frac={config.random_frac} needs at least one replacement id; "
                         "replacement_ids is empty")
    device = input_ids.device
    maskable = maskable.to(device)
    word_ids = word_ids.to(device) if word_ids is not None else None
    selected, unit = STRATEGY_FUNCTIONS[config.strategy](maskable, word_ids, config, generator)
    return replace(input_ids, selected, config, mask_id=mask_id, replacement_ids=replacement_ids.to(device),
                   unit=unit, generator=generator)


def _describe(x) -> str:
    if isinstance(x, torch.Tensor):
        return f"tensor of shape {tuple(x.shape)}, dtype {x.dtype}"
    return type(x).__name__
