"""SpaceVLLM composed: vision encoder + projector/pooling + STQ interleaving + Qwen2 + space decoder.

Two ways in:
* `forward(batch)`: teacher-forced training on full sequences (any prompt order).
* `encode_window(...)` once per window, then `ground(prefix, questions)` for any number of
  questions: the video prefix (visual tokens, STQ states, key/value cache) is shared.
  `ground_from_scratch(...)` recomputes everything per question (the reference and the
  question-first order).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from engine.model.config import DECODER_MAX_PAIRS, PromptOrder, ScoreMode, SpaceVLLMConfig
from engine.model.interleave import question_ids, splice, video_prefix_ids
from engine.model.llm import build_llm
from engine.model.match_head import MatchEvidence, MatchHead, colour_grid, gather_evidence
from engine.model.projector import Projector, pool_grid
from engine.model.space_decoder import SpaceDecoder, SpaceDecoderOutput, build_space_decoder
from engine.model.tokenizer import PromptVocab
from engine.model.vision import build_vision_encoder

# transformers >= 5.2x names the KV cache `cache` (argument and output) and warns (FutureWarning) on the old
# `past_key_values`; earlier 5.x releases only know `past_key_values`. Use whichever this install has.
def _cache_kwarg() -> str:
    import inspect

    from transformers import Qwen2ForCausalLM

    return "cache" if "cache" in inspect.signature(Qwen2ForCausalLM.forward).parameters else "past_key_values"


CACHE_KWARG = _cache_kwarg()


def _cache_of(out):
    """The KV cache of a model output, under either name."""
    return getattr(out, CACHE_KWARG)


@dataclass(frozen=True)
class SpaceVLLMOutput:
    logits: torch.Tensor  # (B, L, V)
    decoder: SpaceDecoderOutput  # boxes for every frame of the clip (teacher-forced)
    answer_presence_logits: torch.Tensor  # (B, F) training probe: the answer state's view of which frames hold the target


@dataclass(frozen=True)
class WindowPrefix:
    """What one window costs once, shared by every question on it."""

    visual_tokens: torch.Tensor  # (F, G, D) frame tokens for the space decoder (G = config.frame_tokens)
    stq_states: torch.Tensor  # (F, D)
    cache: object  # transformers Cache over the prefix, batch 1
    length: int  # prefix tokens
    timestamps_s: tuple[float, ...]  # relative to the window start
    colours: torch.Tensor | None = None  # (F, C, 3) the frames' mean colour per cell (`colour_grid`), for the match head


@dataclass(frozen=True)
class WindowBatchPrefix:
    """Several windows' prefixes computed as one batch (same frame count, so no padding inside the prefix)."""

    visual_tokens: torch.Tensor  # (W, F, G, D)
    stq_states: torch.Tensor  # (W, F, D)
    cache: object  # transformers Cache over the prefixes, batch W
    length: int  # prefix tokens (the same for every window of the batch)
    timestamps_s: tuple[tuple[float, ...], ...]  # per window, relative to its start
    colours: torch.Tensor | None = None  # (W, F, C, 3), for the match head


@dataclass(frozen=True)
class Grounding:
    """One question's answer on one window."""

    score: float  # the match score (config.score): 1 - P(none), or its geometric mean with the best frame presence
    span_s: tuple[float, float]  # best span (relative seconds), meaningful when the score is high
    frame_indices: tuple[int, ...]  # sampled frames inside the span
    boxes_cxcywh: tuple[tuple[float, float, float, float], ...]  # one per frame in frame_indices, normalised
    all_boxes_cxcywh: torch.Tensor  # (F, 4) decoder boxes; decoded only for frames in the span, zeros elsewhere
    presence: torch.Tensor  # (F,) decoder per-frame presence probability; frames in the span, zeros elsewhere
    answer_score: float  # 1 - P(none) at the first answer token
    evidence: dict[str, torch.Tensor] | None = None  # the match head's inputs (`MatchEvidence.row`), when asked for


@dataclass(frozen=True)
class ReadQuestions:
    """N questions the LLM has read, row i against window `row_window[i]` of a (batched) prefix: what decoding their
    answers (`none | from <s> to <e>`) and boxes needs."""

    first_logits: torch.Tensor  # (N, V) at each question's last token: they pick the first answer token
    cache: object  # transformers Cache over prefix + questions, batch N
    attention_mask: torch.Tensor  # (N, L) prefix + question tokens (question padding masked)
    next_position: torch.Tensor  # (N,) the position of each row's next token
    row_window: list[int]  # (N,) the window each row reads
    timestamps_s: tuple[tuple[float, ...], ...]  # per window, relative to its start
    stq_states: torch.Tensor  # (W, F, D)
    frame_tokens: torch.Tensor  # (W, F, G, D) the space decoder's tokens
    question_states: torch.Tensor  # (N, Lq, D) what the space decoder reads of each question
    question_mask: torch.Tensor  # (N, Lq)
    question_ids: torch.Tensor | None = None  # (N, Lq) the questions' token ids (what the match head reads)
    colours: torch.Tensor | None = None  # (W, F, C, 3) the frames' colour grids, for the match head


class SpaceVLLM(nn.Module):
    def __init__(self, config: SpaceVLLMConfig, tokenizer, vision: nn.Module, llm: nn.Module, decoder: SpaceDecoder) -> None:
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        self.vocab = PromptVocab.from_tokenizer(tokenizer, config.max_time_s)
        hidden = llm.config.hidden_size
        self.vision_tower = vision
        self.projector = Projector(vision.out_channels, hidden)
        self.language_model = llm
        self.stq = nn.Parameter(torch.randn(config.max_frames, hidden) * 0.02)  # one query per frame index
        self.stq_image = nn.Parameter(torch.randn(1, hidden) * 0.02)  # the extra query for single images
        # motion: each visual token also sees its change from the previous and to the next frame of the
        # window (zero-initialised, so it starts as a no-op); per-frame encoding and caching are unchanged
        self.motion = nn.Linear(2 * hidden, hidden)
        nn.init.zeros_(self.motion.weight)
        nn.init.zeros_(self.motion.bias)
        self.space_decoder = decoder
        # the question's words straight from the embedding table, past the LLM's attention: the answering
        # token (`<a>`, which decides `none` or a span) gets their mean added to its input, so its first
        # layer can already look for what the words say; the space decoder gets each word's embedding added
        # to that word's last-layer state. Zero-initialised: no-ops until trained, and checkpoints
        # without them load unchanged (`model_dir.ZERO_INIT_ADDITIONS`).
        self.answer_words = nn.Linear(hidden, hidden)
        self.decoder_words = nn.Linear(hidden, hidden)
        for layer in (self.answer_words, self.decoder_words):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        # training probe (no inference role): from the state that answers, which frames hold the target
        # (a bilinear score against each frame's STQ state); it teaches that state to find the target
        probe = max(16, hidden // 2)
        self.answer_probe_q = nn.Linear(hidden, probe)
        self.answer_probe_k = nn.Linear(hidden, probe)
        # the match decision (`config.score: match_head`); its own RNG stream on the host, so that adding it changed
        # no other module's initialisation and it starts the same on every device. Optional in checkpoints that
        # score otherwise (`model_dir.OPTIONAL_HEADS`)
        with torch.random.fork_rng(devices=[]), torch.device("cpu"):
            torch.manual_seed(0)
            head = MatchHead(hidden)
        self.match_head = head.to(self.stq.device)

    @property
    def device(self) -> torch.device:
        """Where the model's parameters are: every tensor built during inference is created there."""
        return self.stq.device

    # ---- vision -------------------------------------------------------------------------
    def encode_frames(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] -> projected frame tokens (N, G, D) on the `config.frame_grid` grid
        (what the frame cache holds and the space decoder reads; `split_tokens` pools them for the LLM)."""
        patches = self.vision_tower(pixels)  # (N, g*g, C)
        tokens = self.projector(patches)  # (N, g*g, D)
        return pool_grid(tokens, self.vision_tower.grid, self.config.frame_grid)  # (N, G, D)

    def split_tokens(self, frame_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, F, G, D) frame tokens -> (LLM tokens (B, F, P, D): pooled, motion mixed in; space-decoder
        tokens: the full grid with `decoder.full_grid`, else the LLM's own tokens)."""
        if self.config.frame_grid == self.config.pooled_grid:
            vis = self.add_motion(frame_tokens)
            return vis, vis
        b, f, g, d = frame_tokens.shape
        vis = pool_grid(frame_tokens.reshape(b * f, g, d), self.config.frame_grid, self.config.pooled_grid)
        return self.add_motion(vis.reshape(b, f, self.config.tokens_per_frame, d)), frame_tokens

    def add_motion(self, vis: torch.Tensor) -> torch.Tensor:
        """(B, F, P, D) per-frame tokens -> tokens with their temporal differences mixed in (same shape)."""
        prev = torch.cat([vis[:, :1], vis[:, :-1]], dim=1)  # (B, F, P, D), frame 0 is its own predecessor
        nxt = torch.cat([vis[:, 1:], vis[:, -1:]], dim=1)
        return vis + self.motion(torch.cat([vis - prev, nxt - vis], dim=-1))

    def _embed(self, input_ids: torch.Tensor, visual_tokens: torch.Tensor, frames: int) -> torch.Tensor:
        """Token embeddings with frames and STQs spliced in. visual_tokens: (B, F, P, D)."""
        emb = self.language_model.get_input_embeddings()(input_ids)  # (B, L, D)
        b = visual_tokens.shape[0]
        emb = splice(emb, input_ids, self.vocab.img, visual_tokens.reshape(-1, emb.shape[-1]), "frame tokens")
        if (input_ids == self.vocab.st_img).any():
            emb = splice(emb, input_ids, self.vocab.st_img, self.stq_image.expand(b, -1), "image query")
        else:
            if frames > self.config.max_frames:
                raise ValueError(f"{frames} frames exceed the model's max_frames={self.config.max_frames}")
            queries = self.stq[:frames].expand(b, -1, -1).reshape(b * frames, -1)  # (B*F, D)
            emb = splice(emb, input_ids, self.vocab.st, queries, "spatio-temporal queries")
        return emb

    def _with_answer_words(self, emb: torch.Tensor, q_pos: torch.Tensor, q_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """emb (B, L, D) input embeddings; q_pos (B, Lq) positions of the question tokens (the last real one
        is `<a>`), q_mask (B, Lq). Returns (emb with the mean question-word embedding, through
        `answer_words`, added at `<a>`; the question tokens' raw embeddings (B, Lq, D))."""
        b = emb.shape[0]
        words = torch.gather(emb, 1, q_pos[..., None].expand(-1, -1, emb.shape[-1]))  # (B, Lq, D)
        m = q_mask.to(words.dtype)[..., None]
        mean = (words * m).sum(1) / m.sum(1).clamp(min=1.0)  # (B, D)
        rows = torch.arange(b, device=emb.device)
        answer_at = q_pos[rows, q_mask.sum(1) - 1]  # (B,)
        return emb.index_put((rows, answer_at), emb[rows, answer_at] + self.answer_words(mean)), words

    def _decoder_question_states(self, q_states: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
        """Last-layer states of the question tokens (B, Lq, D) with their raw embeddings (through
        `decoder_words`) added: what the space decoder reads."""
        return q_states + self.decoder_words(words)

    def _stq_positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        return (input_ids == self.vocab.st) | (input_ids == self.vocab.st_img)

    # ---- training -----------------------------------------------------------------------
    def forward(
        self,
        pixels: torch.Tensor,  # (B, F, 3, H, W)
        input_ids: torch.Tensor,  # (B, L)
        attention_mask: torch.Tensor,  # (B, L)
        question_index: torch.Tensor,  # (B, Lq) positions of question tokens (padded with 0)
        question_mask: torch.Tensor,  # (B, Lq)
    ) -> SpaceVLLMOutput:
        b, f = pixels.shape[:2]
        frame_tokens = self.encode_frames(pixels.flatten(0, 1)).reshape(b, f, self.config.frame_tokens, -1)  # (B, F, G, D)
        vis, dec_vis = self.split_tokens(frame_tokens)  # (B, F, P, D), decoder tokens
        emb, words = self._with_answer_words(self._embed(input_ids, vis, f), question_index, question_mask)
        out = self.language_model(inputs_embeds=emb, attention_mask=attention_mask, output_hidden_states=True)
        last = out.hidden_states[-1]  # (B, L, D)
        stq_states = last[self._stq_positions(input_ids)].reshape(b, f, -1)  # (B, F, D)
        q_states = torch.gather(last, 1, question_index[..., None].expand(-1, -1, last.shape[-1]))  # (B, Lq, D)
        dec = self.space_decoder(stq_states, dec_vis, self._decoder_question_states(q_states, words), question_mask)
        last_q = question_mask.sum(1) - 1  # (B,) the last question token predicts the first answer token
        answer_state = q_states[torch.arange(b, device=q_states.device), last_q]  # (B, D)
        return SpaceVLLMOutput(logits=out.logits, decoder=dec, answer_presence_logits=self.answer_presence(answer_state, stq_states))

    def answer_presence(self, answer_state: torch.Tensor, stq_states: torch.Tensor) -> torch.Tensor:
        """(B, D) answer-position states, (B, F, D) STQ states -> (B, F) logits: the frame holds the target."""
        q = self.answer_probe_q(answer_state)  # (B, K)
        k = self.answer_probe_k(stq_states)  # (B, F, K)
        return (k @ q[..., None]).squeeze(-1) * q.shape[-1] ** -0.5

    # ---- inference ----------------------------------------------------------------------
    def prefix_ids(self, timestamps_s: list[float]) -> list[int]:
        return video_prefix_ids(self.vocab, self.tokenizer, list(timestamps_s), self.config.tokens_per_frame)

    def question_ids(self, question: str, task: str = "stvg") -> list[int]:
        ids = question_ids(self.vocab, self.tokenizer, task, question)
        return ids[: self.config.max_question_tokens - 1] + [ids[-1]] if len(ids) > self.config.max_question_tokens else ids

    @torch.no_grad()
    def encode_window(self, pixels: torch.Tensor, timestamps_s: list[float], visual_tokens: torch.Tensor | None = None,
                      colours: torch.Tensor | None = None) -> WindowPrefix:
        """Run the video prefix once. pixels: (F, 3, H, W); visual_tokens (F, G, D) and colours (F, C, 3) may come from
        a frame cache (colours: `colour_grid` of the pixels, what the match head reads)."""
        if colours is None and pixels is not None:
            colours = colour_grid(pixels)
        if visual_tokens is None:
            visual_tokens = self.encode_frames(pixels)  # (F, G, D)
        vis, dec_vis = self.split_tokens(visual_tokens[None])  # (1, F, P, D), decoder tokens
        f = visual_tokens.shape[0]
        ids = torch.tensor([self.prefix_ids(timestamps_s)], device=self.device)
        emb = self._embed(ids, vis, f)
        out = self.language_model(inputs_embeds=emb, use_cache=True, output_hidden_states=True)
        stq_states = out.hidden_states[-1][0][self._stq_positions(ids)[0]]  # (F, D)
        return WindowPrefix(dec_vis[0], stq_states, _cache_of(out), ids.shape[1], tuple(timestamps_s), colours)

    @torch.no_grad()
    def encode_window_batch(self, timestamps_s: list[list[float]], visual_tokens: torch.Tensor,
                            colours: torch.Tensor | None = None) -> WindowBatchPrefix:
        """The prefixes of W windows with the same frame count in one forward pass. visual_tokens: (W, F, G, D);
        colours (W, F, C, 3) for the match head."""
        w, f = visual_tokens.shape[:2]
        assert len(timestamps_s) == w and all(len(t) == f for t in timestamps_s), "one timestamp per frame per window"
        vis, dec_vis = self.split_tokens(visual_tokens)  # (W, F, P, D), decoder tokens
        ids = torch.tensor([self.prefix_ids(ts) for ts in timestamps_s], device=self.device)  # (W, L): same length (same frame count)
        emb = self._embed(ids, vis, f)
        out = self.language_model(inputs_embeds=emb, use_cache=True, output_hidden_states=True)
        stq_states = out.hidden_states[-1][self._stq_positions(ids)].reshape(w, f, -1)  # (W, F, D)
        return WindowBatchPrefix(dec_vis, stq_states, _cache_of(out), ids.shape[1], tuple(tuple(t) for t in timestamps_s), colours)

    @torch.no_grad()
    def ground_batch(self, prefix: WindowBatchPrefix, questions: list[list[str]], task: str = "stvg",
                     decoder=None, min_scores: list[list[float]] | None = None, with_evidence: bool = False) -> list[list[Grounding]]:
        """Every window's questions against its own prefix, all windows' questions as one batch of rows (question
        padding masked; each row attends to its own window's prefix and question only). `min_scores`: see `ground`."""
        if self.config.prompt_order is not PromptOrder.VIDEO_FIRST:
            raise ValueError("a shared prefix needs prompt_order=video_first; use ground_from_scratch")
        row_window = [k for k, qs in enumerate(questions) for _ in qs]
        flat = [q for qs in questions for q in qs]
        if not flat:
            return [[] for _ in questions]
        floors = [x for xs in min_scores for x in xs] if min_scores is not None else None
        rows = self._ground_rows(prefix.cache, prefix.length, row_window, flat, task, prefix.timestamps_s,
                                 prefix.stq_states, prefix.visual_tokens, decoder, floors, with_evidence, prefix.colours)
        out, at = [], 0
        for qs in questions:
            out.append(rows[at : at + len(qs)])
            at += len(qs)
        return out

    @torch.no_grad()
    def ground(self, prefix: WindowPrefix, questions: list[str], task: str = "stvg", decoder=None,
               min_scores: list[float] | None = None, with_evidence: bool = False) -> list[Grounding]:
        """Ground every question against one shared window prefix (video-first order).

        `decoder` replaces the PyTorch space decoder (a runtime backend: ONNX Runtime, TensorRT).
        `min_scores` (per question, e.g. its match threshold): a question whose score cannot reach it whatever
        the decoder says (score = sqrt(answer score x presence) <= sqrt(answer score)) skips the space decoder;
        its Grounding then has the upper bound as score, no boxes and zero presence. The other questions'
        results are exactly what they would be without it (the frame budget counts every question). (With the
        match head there is no such bound: every question is decoded.) `with_evidence`: each Grounding carries
        the match head's inputs (for training the head)."""
        if self.config.prompt_order is not PromptOrder.VIDEO_FIRST:
            raise ValueError("a shared prefix needs prompt_order=video_first; use ground_from_scratch")
        if not questions:
            return []
        return self._ground_rows(prefix.cache, prefix.length, [0] * len(questions), questions, task, (prefix.timestamps_s,),
                                 prefix.stq_states[None], prefix.visual_tokens[None], decoder, min_scores, with_evidence,
                                 None if prefix.colours is None else prefix.colours[None])

    def _ground_rows(self, prefix_cache, prefix_length: int, row_window: list[int], questions: list[str], task: str,
                     timestamps_s, stq_states, frame_tokens, decoder, min_scores: list[float] | None = None,
                     with_evidence: bool = False, colours: torch.Tensor | None = None) -> list[Grounding]:
        """One row per question; row r reads window `row_window[r]` of the (batched) prefix.
        stq_states (W, F, D), frame_tokens (W, F, G, D), timestamps_s: W tuples."""
        n = len(questions)
        dev = self.device
        q = [self.question_ids(text, task) for text in questions]
        lq = max(len(x) for x in q)
        ids = torch.full((n, lq), self.vocab.pad)
        qmask = torch.zeros(n, lq, dtype=torch.long)
        for i, x in enumerate(q):
            ids[i, : len(x)] = torch.tensor(x)
            qmask[i, : len(x)] = 1
        ids, qmask = ids.to(dev), qmask.to(dev)  # built on the host row by row, moved once
        cache = copy.deepcopy(prefix_cache)
        rw = torch.tensor(row_window, device=dev)
        if len(timestamps_s) == 1:
            cache.batch_repeat_interleave(n)
        else:
            cache.batch_select_indices(rw)  # (N, ...) each row's own window
        prefix = prefix_length
        attn = torch.cat([torch.ones(n, prefix, dtype=torch.long, device=dev), qmask], dim=1)
        pos = (prefix + torch.arange(lq, device=dev))[None].expand(n, -1)
        emb, words = self._with_answer_words(self.language_model.get_input_embeddings()(ids),
                                             torch.arange(lq, device=dev)[None].expand(n, -1), qmask)
        out = self.language_model(inputs_embeds=emb, attention_mask=attn, position_ids=pos,
                                  **{CACHE_KWARG: cache}, use_cache=True, output_hidden_states=True)
        lengths = qmask.sum(1)  # (N,)
        first = out.logits[torch.arange(n, device=dev), lengths - 1]  # (N, V)
        q_states = self._decoder_question_states(out.hidden_states[-1], words)  # (N, Lq, D)
        read = ReadQuestions(first, _cache_of(out), attn, prefix + lengths, row_window, timestamps_s, stq_states, frame_tokens,
                             q_states, qmask, ids, colours)
        return self._answer(read, decoder or self.space_decoder, min_scores, with_evidence)

    @torch.no_grad()
    def ground_from_scratch(self, pixels: torch.Tensor, timestamps_s: list[float], question: str, task: str = "stvg",
                            visual_tokens: torch.Tensor | None = None) -> Grounding:
        """Recompute the whole sequence for one question (either prompt order)."""
        if visual_tokens is None:
            visual_tokens = self.encode_frames(pixels)  # (F, G, D)
        vis, dec_vis = self.split_tokens(visual_tokens[None])  # (1, F, P, D), decoder tokens
        f = visual_tokens.shape[0]
        video = self.prefix_ids(list(timestamps_s))
        qids = self.question_ids(question, task)
        if self.config.prompt_order is PromptOrder.VIDEO_FIRST:
            seq, q_pos = video + qids, list(range(len(video), len(video) + len(qids)))
        else:  # question first: <q> words ... then the video, then <a>
            seq = qids[:-1] + video + qids[-1:]
            q_pos = list(range(len(qids) - 1)) + [len(seq) - 1]
        dev = self.device
        ids = torch.tensor([seq], device=dev)
        q_pos_t = torch.tensor([q_pos], device=dev)
        qmask = torch.ones(1, len(q_pos), dtype=torch.long, device=dev)
        emb, words = self._with_answer_words(self._embed(ids, vis, f), q_pos_t, qmask)
        out = self.language_model(inputs_embeds=emb, use_cache=True, output_hidden_states=True)
        last = out.hidden_states[-1]
        stq_states = last[0][self._stq_positions(ids)[0]][None]  # (1, F, D)
        q_states = self._decoder_question_states(last[:, q_pos_t[0]], words)
        attn = torch.ones(1, len(seq), dtype=torch.long, device=dev)
        read = ReadQuestions(out.logits[:, -1], _cache_of(out), attn, torch.tensor([len(seq)], device=dev), [0],
                             (tuple(timestamps_s),), stq_states, dec_vis, q_states, qmask, ids[:, q_pos_t[0]],
                             colour_grid(pixels)[None] if pixels is not None else None)
        return self._answer(read, self.space_decoder)[0]

    def _answer(self, read: ReadQuestions, decoder, min_scores: list[float] | None = None,
                with_evidence: bool = False) -> list[Grounding]:
        """Each read question's Grounding: its answer `none | from <s> to <e>` (`_decode_spans`), then the space
        decoder on the frames inside its span only (boxes are wanted there, and its presence there scores), then its
        score (`config.score`). `decoder`: the space decoder or a runtime backend's; `min_scores` and
        `with_evidence`: see `ground`."""
        row_window, timestamps_s = read.row_window, read.timestamps_s
        stq_states, frame_tokens, qmask = read.stq_states, read.frame_tokens, read.question_mask
        n = len(row_window)
        row_ts = [timestamps_s[w] for w in row_window]
        score, spans = self._decode_spans(read, row_ts)
        frames = [frames_in_span(row_ts[i], s, e) for i, (s, e) in enumerate(spans)]
        # the pair budget holds per window (a window's result does not depend on what it is batched with)
        strides = {w: frame_stride_for_budget([frames[i] for i in range(n) if row_window[i] == w], self.config.decoder_pair_budget)
                   for w in set(row_window)}
        keyframes = [keyframes_of(idx, strides[row_window[i]]) for i, idx in enumerate(frames)]
        # questions that cannot reach their floor whatever the decoder says skip it (decoded: the rest)
        mode = self.config.score
        bound = score.sqrt() if mode is ScoreMode.ANSWER_AND_PRESENCE else torch.ones_like(score) if mode is ScoreMode.MATCH_HEAD else score
        hopeless = [min_scores is not None and float(bound[i]) < min_scores[i] for i in range(n)]
        keyframes = [() if hopeless[i] else k for i, k in enumerate(keyframes)]
        boxes, presence = decode_in_spans(decoder, stq_states, frame_tokens, read.question_states, qmask, keyframes, row_window)  # (N, F, 4), (N, F)
        boxes, presence = boxes.cpu(), presence.cpu()  # one copy from the device; Grounding holds host float32 tensors
        for i in range(n):
            if strides[row_window[i]] > 1 and not hopeless[i]:
                fill_between_keyframes(row_ts[i], keyframes[i], frames[i], boxes[i], presence[i])
        answer_score = score
        if mode is ScoreMode.ANSWER_AND_PRESENCE:
            score = torch.where(torch.tensor(hopeless), bound, (answer_score * presence.amax(-1)).sqrt())
        evidence = None
        if mode is ScoreMode.MATCH_HEAD or with_evidence:
            if read.question_ids is None or read.colours is None:
                raise ValueError("the match head needs the question ids and the frames' colours (encode_window with pixels or colours)")
            evidence = gather_evidence(frame_tokens, stq_states, read.colours, row_window, [() if h else f for h, f in zip(hopeless, frames)],
                                       boxes, presence, timestamps_s, answer_score, read.question_ids, qmask)
        if mode is ScoreMode.MATCH_HEAD:
            score = self.match_logits(evidence).float().sigmoid().cpu()
        results = []
        for i in range(n):
            idx = () if hopeless[i] else frames[i]
            span_boxes = tuple(tuple(float(x) for x in boxes[i, k]) for k in idx)
            results.append(Grounding(float(score[i]), spans[i], idx, span_boxes, boxes[i], presence[i], float(answer_score[i]),
                                     evidence.row(i) if with_evidence else None))
        return results

    def _decode_spans(self, read: ReadQuestions, row_ts: list[tuple[float, ...]]) -> tuple[torch.Tensor, list[tuple[float, float]]]:
        """(answer scores (N,) on the host: 1 - P(none) at the first answer token; each row's span in seconds, its
        times limited to its window's), by two more model steps: feed `from`, read the start time; feed
        `<start> to`, read the end time (end >= start)."""
        v = self.vocab
        n = read.first_logits.shape[0]
        dev = read.first_logits.device
        score = 1.0 - read.first_logits.float().softmax(-1)[:, v.none]  # (N,) in float32 whatever the model's dtype
        time_ids = torch.tensor(v.time_ids, device=dev)
        limit = torch.tensor([self._max_time_index(ts) for ts in row_ts], device=dev)  # (N,) last allowed time index per row
        in_range = torch.arange(len(v.time_ids), device=dev)[None] <= limit[:, None]  # (N, T)
        # step 1: feed "from", read the start time
        ids = torch.full((n, 1), v.from_, device=dev)
        attn = torch.cat([read.attention_mask, torch.ones(n, 1, dtype=read.attention_mask.dtype, device=dev)], dim=1)
        out = self._step(ids, attn, read.next_position[:, None], read.cache)
        start = out.logits[:, -1][:, time_ids].masked_fill(~in_range, float("-inf")).argmax(-1)  # (N,) index in 0.1 s
        # step 2: feed "<start> to", read the end time (end >= start)
        ids = torch.stack([time_ids[start], torch.full((n,), v.to, device=dev)], dim=1)
        attn = torch.cat([attn, torch.ones(n, 2, dtype=attn.dtype, device=dev)], dim=1)
        out = self._step(ids, attn, read.next_position[:, None] + 1 + torch.arange(2, device=dev)[None], _cache_of(out))
        end_logits = out.logits[:, -1][:, time_ids]
        allowed = in_range & (torch.arange(len(v.time_ids), device=dev)[None] >= start[:, None])
        end = end_logits.masked_fill(~allowed, float("-inf")).argmax(-1)
        start, end, score = start.cpu(), end.cpu(), score.cpu()  # the rest is per-row bookkeeping on the host
        return score, [(start[i].item() / 10, end[i].item() / 10) for i in range(n)]

    def match_logits(self, evidence: MatchEvidence) -> torch.Tensor:
        """(N,) the match head's logits on N rows of evidence (in the head's dtype; each word read from the LLM's table)."""
        dt = self.match_head.log_temperature.dtype
        words = self.language_model.get_input_embeddings()(evidence.word_ids).to(dt)
        return self.match_head(evidence.appearance.to(dt), evidence.colour.to(dt), evidence.trajectory.to(dt),
                               evidence.scores.to(dt), words, evidence.word_ids, evidence.word_mask)

    def _step(self, ids, attn, pos, cache):
        emb = self.language_model.get_input_embeddings()(ids)
        return self.language_model(inputs_embeds=emb, attention_mask=attn, position_ids=pos, **{CACHE_KWARG: cache}, use_cache=True)

    def _max_time_index(self, timestamps_s) -> int:
        if len(timestamps_s) < 2:
            return 0
        step = (timestamps_s[-1] - timestamps_s[0]) / (len(timestamps_s) - 1)
        return min(len(self.vocab.time_ids) - 1, int(math.ceil((timestamps_s[-1] + step) * 10 - 1e-6)))


def decode_in_spans(decoder, stq_states, frame_tokens, q_states, qmask, frames: list[tuple[int, ...]],
                    row_window: list[int] | None = None):
    """Run the space decoder on each question's span frames only, as (question, frame) pairs.

    The decoder treats frames independently (each frame's tokens read the question; each STQ reads its
    own frame), so a pair is a batch item with one frame, and the cost follows the frames in spans, not
    questions x window. stq_states (W, F, D) and frame_tokens (W, F, G, D) hold W windows (or (F, D) and
    (F, G, D) for one); question i reads window row_window[i]. Returns boxes (N, F, 4) and presence
    probabilities (N, F), zeros off the spans."""
    if stq_states.dim() == 2:
        stq_states, frame_tokens = stq_states[None], frame_tokens[None]
    n, f = len(frames), stq_states.shape[1]
    dev = stq_states.device
    row_window = row_window or [0] * n
    boxes = torch.zeros(n, f, 4, device=dev)
    presence = torch.zeros(n, f, device=dev)
    pairs = [(i, k) for i, idx in enumerate(frames) for k in idx]
    for at in range(0, len(pairs), DECODER_MAX_PAIRS):
        chunk = pairs[at : at + DECODER_MAX_PAIRS]
        qi = torch.tensor([i for i, _ in chunk], device=dev)
        fk = torch.tensor([k for _, k in chunk], device=dev)
        wk = torch.tensor([row_window[i] for i, _ in chunk], device=dev)
        dec = decoder(stq_states[wk, fk][:, None], frame_tokens[wk, fk][:, None], q_states[qi], qmask[qi])  # batch of pairs, 1 frame
        boxes[qi, fk] = dec.boxes_cxcywh[:, 0].float().to(dev)  # (a backend may answer on another device)
        presence[qi, fk] = dec.presence_logits[:, 0].float().sigmoid().to(dev)
    return boxes, presence


def frame_stride_for_budget(frames: list[tuple[int, ...]], budget: int) -> int:
    """The smallest frame stride whose keyframes fit `budget` (question, frame) pairs (0: no limit);
    every span keeps at least its first and last frame, so the budget may be exceeded when it is tiny."""
    stride = 1
    longest = max((len(idx) for idx in frames), default=0)
    while budget and stride + 1 < longest and sum(len(keyframes_of(idx, stride)) for idx in frames) > budget:
        stride += 1
    return stride


def keyframes_of(frames: tuple[int, ...], stride: int) -> tuple[int, ...]:
    """Every `stride`-th of a span's frames, always with its first and last."""
    if stride <= 1 or len(frames) <= 2:
        return frames
    picked = frames[::stride]
    return picked if picked[-1] == frames[-1] else picked + (frames[-1],)


def fill_between_keyframes(timestamps_s, keyframes: tuple[int, ...], frames: tuple[int, ...],
                           boxes: torch.Tensor, presence: torch.Tensor) -> None:
    """In place: boxes (F, 4) and presence (F,) of `frames` that are not keyframes, linearly interpolated in
    time between the neighbouring keyframes (keyframes include the span's first and last frame)."""
    for k in frames:
        if k in keyframes:
            continue
        a = max(x for x in keyframes if x < k)
        b = min(x for x in keyframes if x > k)
        w = (timestamps_s[k] - timestamps_s[a]) / max(timestamps_s[b] - timestamps_s[a], 1e-9)
        boxes[k] = (1 - w) * boxes[a] + w * boxes[b]
        presence[k] = (1 - w) * presence[a] + w * presence[b]


def frames_in_span(timestamps_s, start_s: float, end_s: float) -> tuple[int, ...]:
    """Indices of sampled frames within [start, end] (0.05 s tolerance); the nearest frame if none."""
    idx = tuple(k for k, t in enumerate(timestamps_s) if start_s - 0.05 <= t <= end_s + 0.05)
    if idx or not timestamps_s:
        return idx
    mid = (start_s + end_s) / 2
    return (min(range(len(timestamps_s)), key=lambda k: abs(timestamps_s[k] - mid)),)


def build_spacevllm(config: SpaceVLLMConfig, tokenizer) -> SpaceVLLM:
    vocab_size = config.llm.vocab_size or tokenizer.get_vocab_size()
    vision = build_vision_encoder(config.vision)
    llm = build_llm(config.llm, vocab_size)
    decoder = build_space_decoder(config.llm.hidden_size, config.decoder, config.frame_grid)
    return SpaceVLLM(config, tokenizer, vision, llm, decoder)
