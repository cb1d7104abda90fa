"""Instruction encoders for TinyVLA: the built-in byte-level one, or a Hugging Face text model from a local path.

Both turn a batch of strings into token ids + mask (a tokenizer) and the ids into one vector per instruction (an
encoder). A Hugging Face encoder is loaded with ``local_files_only=True`` (nothing is downloaded); its config and
tokenizer files are copied into every checkpoint, its weights into the checkpoint's safetensors, so a checkpoint is
self-contained.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from srpo.runtime.processing import BYTE_VOCAB, PAD
from srpo.runtime.processing import ByteTokenizer as _NumpyByteTokenizer


class TextEncoderError(ValueError):
    """A text encoder or tokenizer that cannot be loaded from the given path."""


class ByteTokenizer(_NumpyByteTokenizer):
    """The runtime's byte tokenizer (UTF-8 bytes + BOS/EOS, no vocabulary file), returning torch tensors."""

    def __call__(self, texts: list[str], device=None) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = self.encode(list(texts))
        return torch.as_tensor(ids, device=device), torch.as_tensor(mask, device=device)


class HFTokenizer:
    """A Hugging Face tokenizer from a local directory."""

    def __init__(self, path: str | Path, max_len: int) -> None:
        from transformers import AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError, TypeError) as exc:
            raise TextEncoderError(f"cannot load a tokenizer from {path}: {exc}") from exc
        self.max_len = max_len

    def max_bytes(self) -> int:
        return 4 * self.max_len  # a generous bound; the tokenizer truncates to max_len tokens

    def __call__(self, texts: list[str], device=None) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_len, return_tensors="pt")
        return enc["input_ids"].to(device), enc["attention_mask"].to(device).bool()

    def save(self, directory: Path) -> None:
        self.tokenizer.save_pretrained(str(directory))


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    w = mask.unsqueeze(-1).to(x.dtype)
    return (x * w).sum(1) / w.sum(1).clamp_min(1.0)


class BuiltinTextEncoder(nn.Module):
    """Byte embeddings + a small transformer, mean-pooled over real tokens."""

    def __init__(self, d_model: int, n_heads: int, n_layers: int, ff: int, max_len: int, dropout: float) -> None:
        super().__init__()
        self.embed = nn.Embedding(BYTE_VOCAB, d_model, padding_idx=PAD)
        self.pos = nn.Parameter(torch.randn(1, max_len, d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(d_model, n_heads, ff, dropout, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.encoder(self.embed(ids) + self.pos[:, : ids.shape[1]], src_key_padding_mask=~mask)
        return _masked_mean(x, mask)


class HFTextEncoder(nn.Module):
    """A Hugging Face encoder (BERT-like) + a linear projection; frozen unless ``trainable``."""

    def __init__(self, path: str | Path, d_model: int, trainable: bool = False, weights: bool = True) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModel

        try:
            if weights:
                self.model = AutoModel.from_pretrained(str(path), local_files_only=True)
            else:  # weights come from the srpo checkpoint's safetensors
                self.model = AutoModel.from_config(AutoConfig.from_pretrained(str(path), local_files_only=True))
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise TextEncoderError(f"cannot load a Hugging Face text encoder from {path}: {exc}") from exc
        self.trainable = trainable
        self.model.requires_grad_(trainable)
        self.proj = nn.Linear(self.model.config.hidden_size, d_model)
        self.train(False)

    def train(self, mode: bool = True) -> "HFTextEncoder":
        super().train(mode)
        if not self.trainable:  # a frozen encoder never uses dropout
            self.model.eval()
        return self

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        with torch.set_grad_enabled(self.trainable and torch.is_grad_enabled()):
            hidden = self.model(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        return self.proj(_masked_mean(hidden, mask))

    def save_files(self, directory: Path) -> None:
        self.model.config.save_pretrained(str(directory))
