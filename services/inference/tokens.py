"""Text <-> token ids for the engine: the tokenizer, its stop tokens and chat template."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol, cast


class HFTokenizer(Protocol):
    """The part of a Hugging Face tokenizer the engine uses."""

    eos_token_id: int | None
    pad_token_id: int | None
    chat_template: str | None

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = ...) -> str: ...

    def apply_chat_template(
        self, conversation: list[dict[str, str]], *, tokenize: bool, add_generation_prompt: bool
    ) -> str: ...


def as_hf_tokenizer(tokenizer: object) -> HFTokenizer:
    """A loaded Hugging Face tokenizer, seen through `HFTokenizer`. Their signatures are
    wider than the protocol (unions of list and tensor inputs and outputs) so the
    checker cannot match them structurally; the engine only uses the str/list[int] forms."""
    return cast(HFTokenizer, tokenizer)


class TextCodec:
    """Encode prompts, decode outputs, know which tokens end a response."""

    def __init__(self, tokenizer: HFTokenizer, *, extra_eos: Iterable[int] = ()) -> None:
        self.tokenizer = tokenizer
        eos = {int(t) for t in extra_eos}
        if tokenizer.eos_token_id is not None:
            eos.add(int(tokenizer.eos_token_id))
        self.eos_ids = frozenset(eos)
        pad = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        )
        self.pad_id = int(pad) if pad is not None else 0

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text))

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        """The model's chat template applied to `messages`, ending where the assistant's
        turn begins; a plain `role: content` transcript when the model has no template."""
        if self.tokenizer.chat_template:
            return str(
                self.tokenizer.apply_chat_template(
                    messages, tokenize=False, add_generation_prompt=True
                )
            )
        lines = [f"{m['role']}: {m['content']}" for m in messages]
        return "\n".join([*lines, "assistant:"])
