"""Word-level tokenizer for the tiny model and the prompt grammar shared by every config.

Prompt layout (video first, the default):
    <video> [t_0] <img>*P <st> [t_1] <img>*P <st> ... <q> {task} {caption} <a>
Answer: `from <s> to <e> <eos>` or `none <eos>`; times are tokens like `2.5` (one decimal).
A single image (REC) is `<image> <img>*P <st_img> <q> ...` and answers `from 0.0 to 0.0`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

PAD, UNK, EOS = "<pad>", "<unk>", "<eos>"
IMG, ST, ST_IMG = "<img>", "<st>", "<st_img>"
VIDEO, IMAGE, QUESTION, ANSWER = "<video>", "<image>", "<q>", "<a>"
SPECIAL_TOKENS = [PAD, UNK, EOS, IMG, ST, ST_IMG, VIDEO, IMAGE, QUESTION, ANSWER]

# The words of synthetic-scene spec v1 and of the task phrasings; anything else maps to <unk>.
WORDS = (
    "find when where is does the a an small large red green blue yellow white "
    "circle square triangle moving standing still left right up down from to none "
    "object person car in on with and of it"
).split()

TASK_PREFIX = {"stvg": "find", "vtg": "when is", "rec": "where is"}


def time_token(seconds: float) -> str:
    """A time in seconds as the one-decimal token the LLM reads and writes."""
    return f"{max(0.0, seconds):.1f}"


def time_tokens(max_time_s: float) -> list[str]:
    return [f"{i / 10:.1f}" for i in range(int(round(max_time_s * 10)) + 1)]


def train_tokenizer(max_time_s: float) -> Tokenizer:
    """Train a word-level tokenizer on the prompt grammar (deterministic: one pass over a fixed corpus)."""
    tok = Tokenizer(models.WordLevel(unk_token=UNK))
    tok.normalizer = normalizers.Sequence(
        [
            normalizers.Lowercase(),
            normalizers.Replace(Regex(r"[^a-z0-9.<>_\s]"), " "),  # punctuation becomes a space
            normalizers.Replace(Regex(r"\.(\s|$)"), " "),  # a full stop, not a decimal point
        ]
    )
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    corpus = [" ".join(WORDS), " ".join(time_tokens(max_time_s))]
    trainer = trainers.WordLevelTrainer(special_tokens=SPECIAL_TOKENS, min_frequency=1, show_progress=False)
    tok.train_from_iterator(corpus, trainer=trainer)
    return tok


@dataclass(frozen=True)
class PromptVocab:
    """Token ids the model and the constrained decoder need, read from a tokenizer."""

    pad: int
    eos: int
    img: int
    st: int
    st_img: int
    video: int
    image: int
    question: int
    answer: int
    none: int
    from_: int
    to: int
    time_ids: tuple[int, ...]  # time_ids[k] is the token of k / 10 seconds

    def time_id(self, seconds: float) -> int:
        """The token of `seconds` at one decimal (as `time_token` writes it), clamped to the vocabulary."""
        return self.time_ids[min(int(round(float(time_token(seconds)) * 10)), len(self.time_ids) - 1)]

    @classmethod
    def from_tokenizer(cls, tok: Tokenizer, max_time_s: float) -> "PromptVocab":
        def tid(token: str) -> int:
            i = tok.token_to_id(token)
            if i is None:
                raise ValueError(f"tokenizer lacks the token {token!r}")
            return i

        return cls(
            pad=tid(PAD), eos=tid(EOS), img=tid(IMG), st=tid(ST), st_img=tid(ST_IMG), video=tid(VIDEO),
            image=tid(IMAGE), question=tid(QUESTION), answer=tid(ANSWER), none=tid("none"),
            from_=tid("from"), to=tid("to"), time_ids=tuple(tid(t) for t in time_tokens(max_time_s)),
        )


def load_tokenizer(path: str | Path) -> Tokenizer:
    return Tokenizer.from_file(str(path))
