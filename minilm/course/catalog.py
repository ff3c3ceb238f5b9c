"""The course's assignments, as data: what each one asks, how it is graded, which lesson goes with it.

`minilm assignment` (minilm/course: markers, handout, grading, packaging) turns this table and the
solution markers in the library's source into handouts and grades them. What a student writes is not listed here:
it is found in the source, as the regions between `# BEGIN SOLUTION <name>` and
`# END SOLUTION <name>` comment lines inside function bodies, so the table cannot drift
from the code.

Design choices:
- Only the standard library is imported: the lesson harness and the test suite's hooks
  read this table (`unfinished_assignment`) without paying for torch or pytest.
- A graded test is a pytest selector (`path::test` or `path::test[param]`) with points: a row
  of the grading manifest. A selector without brackets covers every parametrisation of the
  test; the points are then split evenly over its cases, and a case that does not pass (a
  skipped one too) scores 0 of its share. Graded tests reach the student's code through
  `minilm.course.boundary.student`.
- `references` are what the graded tests compare with (the fast BPE engine, torch's
  attention): a test during which the student's own code calls one scores 0.
- `neighbours` are tests outside the graded set that use the assignment's functions. In a
  handout they skip, naming the assignment to finish first (minilm/course/testing.py), and the
  handout check runs them to prove that they skip rather than fail.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

# The message a hollowed region raises: `raise NotImplementedError("assignment NAME: implement ...")`.
# Under Triton's interpreter it arrives wrapped (InterpreterError("NotImplementedError('assignment ...')")),
# so it is searched for anywhere in an exception's text.
UNFINISHED = re.compile(r"assignment ([a-z][a-z0-9_-]*): implement ")


@dataclass(frozen=True)
class GradedTest:
    selector: str  # "tests/test_x.py::test_name" or "tests/test_x.py::test_name[param]"
    points: float
    checks: str  # what the test pins, in one line, for the handout


@dataclass(frozen=True)
class Assignment:
    name: str  # the marker name and the command-line name
    number: int  # its place in the course (lesson order)
    title: str
    lesson: str  # the lesson that goes with it, a path in the repository
    hours: str  # the time it should take a student, e.g. "4-6"
    goals: tuple[str, ...]
    tests: tuple[GradedTest, ...]
    neighbours: tuple[str, ...] = ()  # ungraded tests that need this assignment's functions
    notes: str = ""  # hints for the handout (Markdown)
    interpreter: bool = False  # grade with the GPU hidden, Triton kernels through the interpreter
    references: tuple[str, ...] = ()  # what the tests compare with: a test in which the student's code calls one scores 0
    references: tuple[str, ...] = ()  # what the tests compare with: a test in which the student's code calls one scores 0

    @property
    def points(self) -> float:
        return sum(t.points for t in self.tests)

    @property
    def test_files(self) -> list[str]:
        return sorted({t.selector.split("::")[0] for t in self.tests})


def matches(nodeid: str, selector: str) -> bool:
    """Whether a collected test id belongs to a selector: the same id, or one of its parametrisations."""
    return nodeid == selector or ("[" not in selector and nodeid.startswith(selector + "["))


def unfinished_assignment(exc: BaseException | None) -> str | None:
    """The name of the assignment whose hollowed region raised `exc` (or one of its causes), else None."""
    seen = set()
    todo = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        found = UNFINISHED.search(str(e))
        if found and isinstance(e, Exception):
            return found.group(1)
        todo += [e.__cause__, e.__context__, *getattr(e, "exceptions", ())]  # exception groups (hypothesis)
    return None


def T(selector: str, points: float, checks: str) -> GradedTest:
    return GradedTest(selector, points, checks)


ASSIGNMENTS: tuple[Assignment, ...] = (
    Assignment(
        name="backprop", number=1, title="Backpropagation by hand", lesson="lessons/01_neural_networks.py",
        hours="3-5",
        goals=(
            "derive the backward of a linear layer, a ReLU and softmax with cross-entropy from the chain rule",
            "see backpropagation as one loop: each layer's backward, in reverse order",
            "check hand-written gradients against autograd and against finite differences",
        ),
        tests=(
            T("tests/assignments/test_backprop.py::test_linear_backward_matches_autograd", 4,
              "dx, dW and db of Linear equal PyTorch autograd's, for random shapes (float64)"),
            T("tests/assignments/test_backprop.py::test_relu_backward_matches_autograd", 2,
              "ReLU's backward equals autograd's, zeros included"),
            T("tests/assignments/test_backprop.py::test_softmax_cross_entropy_matches_torch", 4,
              "loss and dlogits equal torch's cross_entropy and its gradient"),
            T("tests/assignments/test_backprop.py::test_softmax_cross_entropy_is_stable", 2,
              "huge logits (1e4) give a finite loss and gradient"),
            T("tests/assignments/test_backprop.py::test_mlp_gradients_match_autograd", 4,
              "every gradient of the whole MLP equals autograd's"),
            T("tests/assignments/test_backprop.py::test_gradients_agree_with_finite_differences", 2,
              "central differences on the loss agree with the backward"),
            T("tests/assignments/test_backprop.py::test_training_learns_a_separable_task", 2,
              "a few hundred SGD steps with your gradients fit a separable toy problem"),
        ),
        neighbours=("tests/test_lessons.py::test_lesson_smoke[01_neural_networks]",),
        notes="Work in float64 while you debug: `model.to_float64()` casts the weights. "
              "Write each backward from the shapes: dW must have W's shape, dx must have x's.",
        references=("torch.autograd.grad", "torch.autograd.backward", "torch.Tensor.backward"),
    ),
    Assignment(
        name="bpe", number=2, title="Byte-pair encoding: the merge loop and the encoder",
        lesson="lessons/02_tokenization.py", hours="3-5",
        goals=(
            "learn a byte-level BPE vocabulary from word counts, as GPT-2's tokenizer was learned",
            "encode a word with the learned merges, and see why the merge order matters",
            "test a simple algorithm against a fast engine built for the same contract",
        ),
        tests=(
            T("tests/assignments/test_bpe.py::test_count_pairs_weights_by_word_count", 3,
              "pairs are counted per occurrence, weighted by the word's count"),
            T("tests/assignments/test_bpe.py::test_merge_pair_is_left_to_right_without_overlap", 3,
              "a merge rewrites every occurrence, left to right, without overlaps, keeping the bytes"),
            T("tests/assignments/test_bpe.py::test_learn_merges_equals_the_fast_engine", 6,
              "your merges equal minilm.data.tokenizer.bpe_merges (the heap engine) on random tables with many ties"),
            T("tests/assignments/test_bpe.py::test_learn_merges_on_real_words", 2,
              "the same on words of real English text"),
            T("tests/assignments/test_bpe.py::test_encode_word_matches_the_tokenizer", 4,
              "encoding with your merges gives the tokens Tokenizer.encode (tiktoken) gives"),
            T("tests/assignments/test_bpe.py::test_encode_word_keeps_the_bytes", 2,
              "for any bytes, the tokens concatenate back to the word and are every merge applied in order"),
        ),
        neighbours=("tests/test_tokenizer.py::test_merges_equal_naive_reference",),
        notes="Keep it plain: recount every pair at every step. `minilm/data/tokenizer.py` has the "
              "fast, incremental version of the same loop; read it once yours works.",
        references=("minilm.data.tokenizer.bpe_merges",
                    "minilm.data.tokenizer.Tokenizer.encode",
                    "minilm.data.tokenizer.Tokenizer.train"),
    ),
    Assignment(
        name="attention", number=3, title="Attention, a Transformer block and rotary positions",
        lesson="lessons/03_attention.py", hours="6-8",
        goals=(
            "write scaled dot-product attention with causal and padding masks, and rows that see no key",
            "split a projection into heads, and see why each head is a slice of one matrix",
            "build BERT's post-norm and GPT-2's pre-norm blocks, and check them against Hugging Face's models",
            "rotate queries and keys (RoPE) so that their dot product depends only on their distance",
        ),
        tests=(
            T("tests/test_attention.py::test_reference_matches_the_definition", 4,
              "your attention equals a query-by-query loop over the definition, with every kind of mask"),
            T("tests/test_attention.py::test_sdpa_matches_reference_forward_and_backward", 2,
              "and equals torch's fused attention, values and gradients"),
            T("tests/test_attention.py::test_fully_masked_rows_are_zero_and_finite_in_every_backend", 2,
              "a query that sees no key outputs zeros, with finite gradients"),
            T("tests/assignments/test_transformer_block.py::test_project_gives_each_head_its_slice", 2,
              "project() gives head h the features h*Dh .. (h+1)*Dh-1 of q, k and v"),
            T("tests/assignments/test_transformer_block.py::test_rotate_equals_complex_rotation", 3,
              "rotate() equals RoPE written as complex multiplication"),
            T("tests/test_model.py::test_rotary_scores_depend_only_on_distance", 2,
              "rotated scores depend only on the distance between query and key, norms are kept"),
            T("tests/test_hf_parity.py::test_bert_model_body_gives_the_hidden_states[state_dict]", 3,
              "with BERT's weights, the encoder (post-norm blocks) gives BertModel's hidden states"),
            T("tests/test_hf_parity.py::test_gpt2_matches[state_dict]", 2,
              "with GPT-2's weights, the decoder (pre-norm blocks) gives GPT2LMHeadModel's logits"),
        ),
        neighbours=("tests/test_model.py::test_causality",
                    "tests/test_lessons.py::test_lesson_smoke[03_attention]"),
        notes="The attention functions are in `minilm/kernels/reference.py` (the one reference every backend is "
              "tested against; `minilm.nn.attention(backend=\"reference\")` calls it); `visible_keys` builds the "
              "causal and padding masks for you. `rotate` gets its cos and sin from `_rotary_table`, which you "
              "write too.",
        references=("torch.nn.functional.scaled_dot_product_attention",
                    "torch.nn.functional.multi_head_attention_forward"),
    ),
    Assignment(
        name="masking", number=4, title="Masking for masked-language models: BERT, whole words, spans, MASS",
        lesson="lessons/05_masked_lm.py", hours="6-8",
        goals=(
            "choose the positions a masked LM predicts with vectorised tensor code, driven by one generator",
            "implement BERT's 80/10/10 replacement as a split of the chosen positions",
            "mask whole words and SpanBERT's geometric spans without ever splitting a unit",
            "hit an exact masking count per row, and know what 'within half a unit' means",
        ),
        tests=(
            T("tests/test_masking.py::test_specials_padding_never_masked_and_labels_exact", 3,
              "special and padding tokens are never masked; labels are the original ids, -100 elsewhere"),
            T("tests/test_masking.py::test_bernoulli_rate_and_replacement_split", 4,
              "every strategy masks at mask_prob and splits [MASK]/random/keep as configured"),
            T("tests/test_masking.py::test_exact_masks_exactly_round_p_n", 2,
              "exact counts are round(p * n) per row for tokens and MASS fragments"),
            T("tests/test_masking.py::test_exact_whole_words_within_half_a_word", 2,
              "exact whole-word counts are within half the longest word of the target"),
            T("tests/test_masking.py::test_choose_units_takes_the_closest_prefix", 2,
              "choose_units takes the prefix of a random order closest to the target"),
            T("tests/test_masking.py::test_word_strategies_never_split_a_word", 2,
              "whole-word and span masking never split a word"),
            T("tests/test_masking.py::test_span_lengths_follow_the_truncated_geometric_law", 2,
              "span lengths follow SpanBERT's truncated geometric law (mean 3.8 words)"),
            T("tests/test_masking.py::test_one_replacement_decision_per_span", 1,
              "all tokens of a span share one replacement decision"),
            T("tests/test_masking.py::test_sequence_masks_one_contiguous_fragment", 1,
              "MASS masks one contiguous fragment of maskable positions"),
            T("tests/test_masking.py::test_exact_token_masking_is_uniform_over_positions", 1,
              "exact token masking picks every position equally often"),
        ),
        neighbours=("tests/test_masking.py::test_same_seed_same_batch",
                    "tests/test_masking.py::test_batch_without_maskable_token_is_left_alone",
                    "tests/test_lessons.py::test_lesson_smoke[05_masked_lm]"),
        notes="No Python loop over rows or tokens: sort random keys (`argsort`) to draw an order, "
              "`cumsum` to count, `scatter`/`gather` to move between units and positions. Draw every "
              "random number with `_uniform` / `_randint` so the generator drives everything.",
    ),
    Assignment(
        name="optim", number=5, title="AdamW, the warmup-and-cosine schedule, gradient accumulation",
        lesson="lessons/04_language_modelling.py", hours="4-6",
        goals=(
            "write AdamW's update: running moments, bias correction, weight decay applied to the weights",
            "write the learning-rate schedule as a pure function of the step: linear warmup, cosine decay",
            "split a batch into micro-batches and weight their losses so 4 x 8 rows give the gradient of 32",
        ),
        tests=(
            T("tests/test_trainer.py::test_adamw_update_equals_torch_adamw", 5,
              "an optimiser built on your update trains a model exactly as torch.optim.AdamW does"),
            T("tests/assignments/test_optim.py::test_adamw_update_matches_torch_on_any_settings", 3,
              "weights and both moments equal torch's, step by step, for random lr, betas, eps, decay"),
            T("tests/test_trainer.py::test_adamw_update_first_step_moves_by_lr_times_sign", 2,
              "bias correction: the first step moves every weight by lr, whatever the gradient's scale"),
            T("tests/test_trainer.py::test_schedule_warmup_then_decay_to_floor", 3,
              "warmup reaches the peak, cosine and linear decay to the floor, constant stays"),
            T("tests/assignments/test_optim.py::test_learning_rate_follows_its_contract", 3,
              "for any peak, warmup, length and floor: bounds, monotone decay, the floor held after the end"),
            T("tests/test_trainer.py::test_micro_batch_weights_give_the_global_mean", 2,
              "weighted micro-batch means give the mean over every labelled token; micro-batches in order"),
            T("tests/test_trainer.py::test_accumulation_4x8_equals_1x32", 2,
              "one training step with 4 micro-batches of 8 equals one with a batch of 32"),
        ),
        neighbours=("tests/test_trainer.py::test_resume_is_bit_exact",
                    "tests/test_lessons.py::test_lesson_smoke[04_language_modelling]"),
        notes="The trainer steps with `torch.optim.AdamW` (fast) and calls your `learning_rate`, "
              "`micro_batches` and `micro_batch_weights` on every step; `minilm.train.optim.AdamW` wraps your "
              "`adamw_update` as an optimiser, which is how the tests compare the two. Lesson 12 shows "
              "accumulation at work.",
        references=("torch.optim.AdamW.step", "torch.optim.adamw.adamw"),
    ),
    Assignment(
        name="peft", number=6, title="LoRA and adapters: fine-tuning a few parameters, and merging them away",
        lesson="lessons/08_peft.py", hours="3-5",
        goals=(
            "write LoRA's forward as the frozen layer plus a scaled low-rank update, never the dense matrix",
            "merge the update into the base weight for inference, and take it out again",
            "write Houlsby's bottleneck adapter, and see why zero-initialised halves start as the base model",
        ),
        tests=(
            T("tests/assignments/test_lora.py::test_lora_forward_is_base_plus_scaled_low_rank", 5,
              "LoRALinear(x) = x (W + scaling * B A)^T + b, and delta_weight() = scaling * B A"),
            T("tests/assignments/test_lora.py::test_lora_forward_never_builds_the_dense_update", 2,
              "the forward applies A then B to x: no (out, in) matrix is formed"),
            T("tests/assignments/test_lora.py::test_merge_folds_the_update_into_the_weight", 4,
              "merge puts B A into the weight exactly once, unmerge takes it out, outputs unchanged"),
            T("tests/assignments/test_lora.py::test_adapter_is_a_residual_bottleneck", 3,
              "adapter(h) = h + up(gelu(down(h))), the identity when fresh"),
            T("tests/test_peft.py::test_starts_as_the_base_model", 2,
              "a model with fresh LoRA or adapters gives exactly the base model's outputs"),
            T("tests/test_peft.py::test_merged_lora_equals_unmerged", 4,
              "a whole merged model equals the unmerged one, for any rank, scaling and targets"),
        ),
        neighbours=("tests/test_peft.py::test_adapter_file_round_trip_is_exact_and_small",
                    "tests/test_lessons.py::test_lesson_smoke[08_peft]"),
        notes="`F.linear(x, A)` computes x A^T. The update is scaled by `self.scaling`; dropout applies "
              "to the input of the update only. `merge()` adds `delta_weight()` into `base.weight` once "
              "(`merged` says whether it is in; a merged layer's forward is the base layer alone) and "
              "`unmerge()` takes it out again; both change the weight in place, under `torch.no_grad()` "
              "(already on the methods). `Adapter.forward(h)` is h + up(gelu(down(h))), the class's "
              "docstring says.",
    ),
    Assignment(
        name="flash", number=7, title="The online softmax and flash attention's forward, in Triton",
        lesson="lessons/11_flash_attention.py", hours="8-10",
        goals=(
            "fold a row into its softmax chunk by chunk with a running max and sum (the online softmax)",
            "write the same step as a Triton function, in base 2, safe for rows that see no key yet",
            "stream key blocks past a query block, rescaling the output accumulator: FlashAttention-2's forward",
            "test a GPU kernel on a laptop through Triton's interpreter",
        ),
        tests=(
            T("tests/test_softmax_kernel.py::test_online_softmax_update_folds_chunks_into_softmax", 4,
              "chunk by chunk, (m, s) give logsumexp and softmax; alpha and p rebuild softmax @ v"),
            T("tests/test_softmax_kernel.py::test_online_softmax_update_propagates_nan", 1,
              "a NaN logit makes the running sum NaN, as torch's softmax would"),
            T("tests/test_softmax_kernel.py::test_plain_and_scaled[online]", 2,
              "the long-row Triton softmax (your _online_update) equals the float64 reference"),
            T("tests/test_softmax_kernel.py::test_causal_with_mask_and_scale[online]", 1,
              "the same with a causal mask, a bool mask and a scale"),
            T("tests/test_softmax_kernel.py::test_fully_masked_rows_are_zero[online]", 2,
              "rows with every key masked give zeros, never NaN"),
            T("tests/test_flash_attention_kernel.py::test_matches_reference", 4,
              "flash attention equals the reference, forward and backward, causal or not, head dims 32-128"),
            T("tests/test_flash_attention_kernel.py::test_key_padding_mask", 2,
              "padded keys get no weight"),
            T("tests/test_flash_attention_kernel.py::test_fully_padded_rows_give_zeros", 2,
              "a query whose keys are all padding outputs zeros"),
            T("tests/test_flash_attention_kernel.py::test_tiny_sequences", 2,
              "sequences shorter than one block"),
        ),
        neighbours=("tests/test_attention.py::test_triton_matches_reference_forward_and_backward",
                    "tests/test_lessons.py::test_lesson_smoke[10_softmax_fusion]",
                    "tests/test_lessons.py::test_lesson_smoke[11_flash_attention]"),
        notes="Work in `online_softmax_update` first (PyTorch, printable), then port it to `_online_update` "
              "(exp2 instead of exp; `scale` turns raw scores into base-2 logits). In `_fwd_inner`, the "
              "new block's weights p and the rescale alpha come from `_online_update`; the accumulator is "
              "`acc * alpha + p @ v`. Tests run on the CPU through Triton's interpreter "
              "(`TRITON_INTERPRET=1`, which tests/conftest.py sets without a GPU).",
        interpreter=True,
        references=("minilm.kernels.reference.attention_reference",
                    "minilm.kernels.softmax_kernel.softmax_reference",
                    "torch.nn.functional.scaled_dot_product_attention"),
    ),
    Assignment(
        name="modern", number=8, title="The modern block: RMSNorm, SwiGLU, both rotary pairings, grouped-query attention",
        lesson="lessons/13_gpt2_to_llama.py", hours="4-6",
        goals=(
            "write RMSNorm, and see why it is computed in float32 whatever the activations' dtype",
            "write SwiGLU's gated hidden vector and size it so the MLP keeps GELU's weight count",
            "rotate adjacent channel pairs (RoFormer, Meta) and prove it is the split-halves rotation (Hugging Face) "
            "up to a permutation of channels",
            "share key/value heads between groups of query heads, and load a real Llama layout with the same logits",
        ),
        tests=(
            T("tests/assignments/test_modern.py::test_rms_norm_matches_the_definition", 3,
              "RMSNorm(x) = x / sqrt(mean(x^2) + eps) * weight, any shape and scale, equal to torch's rms_norm"),
            T("tests/assignments/test_modern.py::test_rms_norm_computes_in_float32_or_wider_and_returns_the_input_dtype",
              1, "a bf16 input is normalised in float32 and rounded once; float64 stays float64"),
            T("tests/assignments/test_modern.py::test_swiglu_is_a_silu_gate_on_the_up_projection", 3,
              "swiglu(x) = silu(gate(x)) * up(x), with or without biases, and the MLP is down(swiglu(x))"),
            T("tests/assignments/test_modern.py::test_rotate_interleaved_equals_complex_rotation_of_adjacent_pairs",
              3, "the interleaved rotation equals complex multiplication on channels (2i, 2i + 1), for any base theta"),
            T("tests/assignments/test_modern.py::test_the_two_pairings_are_one_rotation_up_to_a_permutation", 2,
              "interleaved = split halves on permuted channels; scores depend only on distance in both pairings"),
            T("tests/assignments/test_modern.py::test_repeat_kv_gives_each_query_head_its_group", 2,
              "query head h reads key/value head h // n_rep"),
            T("tests/test_attention.py::test_grouped_query_attention_equals_repeated_kv_heads[reference]", 1,
              "the reference attention on shared heads: values and gradients as with the heads repeated"),
            T("tests/test_hf_llama.py::test_llama_matches_transformers", 3,
              "with a LlamaForCausalLM's weights (GQA, MQA, tied, untied, biases) the model gives its logits"),
            T("tests/test_hf_llama.py::test_export_loads_in_transformers_with_the_same_logits", 2,
              "a minilm Llama, interleaved pairing included, loads in transformers with the same logits"),
        ),
        neighbours=("tests/test_modern_block.py::test_the_cache_holds_the_shared_heads_and_gives_the_full_forward",
                    "tests/test_hf_llama.py::test_greedy_generation_with_the_cache_matches_transformers",
                    "tests/test_lessons.py::test_lesson_smoke[13_gpt2_to_llama]"),
        notes="`RMSNorm.forward`, `FeedForward.swiglu` and the interleaved branch of `rotate` are in "
              "`minilm/nn/model.py`; `repeat_kv` is in `minilm/kernels/reference.py`, where the reference attention "
              "calls it when k and v have fewer heads than q. `rotate`'s split-halves branch and `_rotary_table` "
              "(assignment attention) are given: `_rotary_table(start, T, Dh // 2, theta, device, dtype)` returns "
              "the cos and sin you need, (T, Dh/2) each. `x[..., 0::2]` and `x[..., 1::2]` are the first and second "
              "channel of each adjacent pair; `torch.stack(..., dim=-1).flatten(3)` puts pairs back side by side. "
              "The Llama tests load transformers' `LlamaForCausalLM` (random weights, no download) into minilm.",
        references=("torch.nn.functional.rms_norm",),
    ),
)


def by_name() -> dict[str, Assignment]:
    return {a.name: a for a in ASSIGNMENTS}
