"""StyleCode: the per-class style S = E_s(x, M_x) (paper §3.2) and the edits of §4.

A code holds one row of L*D numbers per semantic class, so editing a face part is editing rows:
swapping rows with another code (reference-based part transfer), replacing rows by the style of an
all-zero image ("random" style, §4.4: the model learned it as the reference-free condition because
half the training references were zeroed), or a convex mix of two codes (style interpolation).
Every edit returns a new code; none mutates its inputs.

Batches broadcast like tensors: two codes (or a code and a per-sample alpha) combine when their
batch sizes are equal or one of them is 1, so a single reference edits a whole batch.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from scadm.errors import InputError
from scadm.models.style_encoder import StyleEncoder, present_classes


@dataclass(frozen=True, eq=False)
class StyleCode:
    """Per-class style of a batch of references.

    tokens:  (B, C, L*D) the style the UNet is conditioned on, tanh-bounded.
    present: (B, C) bool, whether class j had pixels in the mask that row j was encoded with
             (an absent class's row is the constant tanh(bias), not a style).
    blank:   (B, C, L*D) E_s(0, M): the style of an all-zero image with this code's layout. Row j
             depends only on mask channel j, and it is what training fed for a dropped reference.

    Example:
        >>> enc = StyleEncoder(num_classes=5, num_feat=1, num_downsample=3, num_upsample=2, style_dim=8)
        >>> labels = torch.randint(0, 5, (2, 32, 32))
        >>> mask = torch.nn.functional.one_hot(labels, 5).permute(0, 3, 1, 2).float()
        >>> source = StyleCode.encode(enc, torch.zeros(2, 3, 32, 32), mask)
        >>> reference = StyleCode.encode(enc, torch.rand(1, 3, 32, 32) * 2 - 1, mask[:1])
        >>> edited = source.swap(reference, parts=[1, 3]).randomize(parts=[4])
        >>> edited.tokens.shape
        torch.Size([2, 5, 16])
    """

    tokens: torch.Tensor
    present: torch.Tensor
    blank: torch.Tensor

    def __post_init__(self):
        if self.tokens.ndim != 3:
            raise InputError(f"tokens: expected shape (B, C, L*D), got {tuple(self.tokens.shape)}")
        if self.blank.shape != self.tokens.shape:
            raise InputError(f"blank: expected shape {tuple(self.tokens.shape)}, got {tuple(self.blank.shape)}")
        if self.present.dtype != torch.bool or self.present.shape != self.tokens.shape[:2]:
            raise InputError(
                f"present: expected a bool tensor of shape {tuple(self.tokens.shape[:2])}, "
                f"got {self.present.dtype} {tuple(self.present.shape)}"
            )

    # ---- construction -------------------------------------------------------------------------

    @classmethod
    def encode(cls, encoder: StyleEncoder, image: torch.Tensor, mask: torch.Tensor) -> StyleCode:
        """Style of reference `image` (B, 3, H, W) in [-1, 1] with one-hot `mask` (B, C, H, W).

        Runs the encoder twice (image, then zeros) so that `blank` is exactly E_s(0, M).
        """
        tokens = encoder(image, mask)
        blank = encoder(torch.zeros_like(image), mask)
        return cls(tokens=tokens, present=present_classes(mask), blank=blank)

    @classmethod
    def blank_for(
        cls, encoder: StyleEncoder, mask: torch.Tensor, image_shape: Sequence[int] | None = None
    ) -> StyleCode:
        """Reference-free ("noise-based", §4.4) code for `mask`: every row is the blank row.

        `image_shape` (B, 3, H, W) defaults to the mask's batch and size with the encoder's channels.
        """
        if image_shape is None:
            image_shape = (mask.shape[0], encoder.config.in_channels, *mask.shape[-2:])
        zeros = torch.zeros(tuple(image_shape), device=mask.device, dtype=encoder.dtype)
        blank = encoder(zeros, mask)
        return cls(tokens=blank, present=present_classes(mask), blank=blank)

    # ---- edits --------------------------------------------------------------------------------

    def swap(self, other: StyleCode, parts: Iterable[int]) -> StyleCode:
        """Rows `parts` (class indices) from `other`, the rest from self: part-wise style transfer.

        `present` follows the rows; `blank` stays self's, since the layout is still self's.
        """
        rows = self._rows(parts)
        self._check_other(other)
        batch = self._broadcast_batch("other", other)
        return StyleCode(
            tokens=torch.where(rows[:, None], other.tokens, self.tokens),
            present=torch.where(rows, other.present, self.present),
            blank=self.blank.expand(batch, -1, -1),
        )

    def randomize(self, parts: Iterable[int]) -> StyleCode:
        """Rows `parts` replaced by the blank rows: the reference kept, those parts generated.

        `present` is kept: the blank rows belong to the same layout.
        """
        rows = self._rows(parts)
        return StyleCode(
            tokens=torch.where(rows[:, None], self.blank, self.tokens),
            present=self.present,
            blank=self.blank,
        )

    def interpolate(
        self, other: StyleCode, alpha: float | torch.Tensor, parts: Iterable[int] | None = None
    ) -> StyleCode:
        """(1 - alpha) * self + alpha * other on rows `parts` (all rows if None); others from self.

        `alpha` is a float or a (N,) tensor in [0, 1], one per sample; N broadcasts against the
        batch like a code, so two single codes and N alphas give an N-step interpolation strip.
        `present` is self's at alpha 0, other's at alpha 1, and either's in between.
        """
        rows = torch.ones(self.num_classes, dtype=torch.bool, device=self.device)
        if parts is not None:
            rows = self._rows(parts)
        self._check_other(other)
        alpha = self._alpha(alpha)  # (N,)
        batch = self._broadcast_batch("other", other)
        batch = _broadcast(batch, alpha.shape[0], "alpha")
        a = alpha[:, None, None].to(self.tokens.dtype)
        mixed = (1 - a) * self.tokens + a * other.tokens
        either = self.present | other.present
        at = alpha[:, None]
        present = torch.where(at == 0, self.present, torch.where(at == 1, other.present, either))
        return StyleCode(
            tokens=torch.where(rows[:, None], mixed, self.tokens.expand(batch, -1, -1)),
            present=torch.where(rows, present, self.present.expand(batch, -1)),
            blank=self.blank.expand(batch, -1, -1),
        )

    # ---- batches ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self.tokens.shape[0]

    @property
    def num_classes(self) -> int:
        return self.tokens.shape[1]

    @property
    def device(self) -> torch.device:
        return self.tokens.device

    @property
    def dtype(self) -> torch.dtype:
        return self.tokens.dtype

    def index(self, i: int) -> StyleCode:
        """Sample `i` as a batch-1 code."""
        if not -len(self) <= i < len(self):
            raise InputError(f"i: sample index {i} is out of range for a batch of {len(self)}")
        i %= len(self)
        return self._map(lambda t: t[i : i + 1])

    def repeat(self, n: int) -> StyleCode:
        """Each sample `n` times in a row (B -> B*n), e.g. several seeds per reference."""
        if n < 1:
            raise InputError(f"n: must be at least 1, got {n}")
        return self._map(lambda t: t.repeat_interleave(n, dim=0))

    @staticmethod
    def cat(codes: Sequence[StyleCode]) -> StyleCode:
        """Concatenate codes along the batch (they must share classes, width, device and dtype)."""
        if len(codes) == 0:
            raise InputError("codes: need at least one StyleCode to concatenate")
        return StyleCode(
            tokens=torch.cat([c.tokens for c in codes]),
            present=torch.cat([c.present for c in codes]),
            blank=torch.cat([c.blank for c in codes]),
        )

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> StyleCode:
        """Move to `device`; `dtype` applies to tokens and blank (present stays bool)."""
        return StyleCode(
            tokens=self.tokens.to(device=device, dtype=dtype),
            present=self.present.to(device=device),
            blank=self.blank.to(device=device, dtype=dtype),
        )

    # ---- validation ---------------------------------------------------------------------------

    def _map(self, fn) -> StyleCode:
        return StyleCode(tokens=fn(self.tokens), present=fn(self.present), blank=fn(self.blank))

    def _rows(self, parts: Iterable[int]) -> torch.Tensor:
        """Class indices -> (C,) bool row selector, rejecting non-integers and out-of-range."""
        if isinstance(parts, (str, bytes)) or not isinstance(parts, Iterable):
            raise InputError(f"parts: expected a sequence of class indices, got {parts!r}")
        rows = torch.zeros(self.num_classes, dtype=torch.bool)
        for part in parts:
            if isinstance(part, bool):
                raise InputError(f"parts: expected class indices, got the bool {part}")
            try:
                j = operator.index(part)
            except TypeError:
                raise InputError(f"parts: expected integer class indices, got {part!r}") from None
            if not 0 <= j < self.num_classes:
                raise InputError(f"parts: class index {j} is out of range [0, {self.num_classes})")
            rows[j] = True
        return rows.to(self.device)

    def _alpha(self, alpha: float | torch.Tensor) -> torch.Tensor:
        if not isinstance(alpha, torch.Tensor):
            try:
                alpha = torch.as_tensor(alpha, dtype=torch.float64)
            except (TypeError, ValueError, RuntimeError):
                raise InputError(f"alpha: expected a float or a (N,) tensor, got {alpha!r}") from None
        alpha = alpha.to(self.device)
        if alpha.ndim > 1 or alpha.numel() == 0 or alpha.is_complex() or alpha.dtype == torch.bool:
            raise InputError(f"alpha: expected a float or a (N,) tensor, got {tuple(alpha.shape)} {alpha.dtype}")
        alpha = alpha.reshape(-1).to(torch.float64)
        if not bool(((alpha >= 0) & (alpha <= 1)).all()):
            raise InputError(f"alpha: must be in [0, 1], got {alpha.tolist()}")
        return alpha

    def _check_other(self, other: StyleCode) -> None:
        if not isinstance(other, StyleCode):
            raise InputError(f"other: expected a StyleCode, got {type(other).__name__}")
        if other.tokens.shape[1:] != self.tokens.shape[1:]:
            raise InputError(
                f"other: rows of shape {tuple(other.tokens.shape[1:])} do not match {tuple(self.tokens.shape[1:])}"
            )

    def _broadcast_batch(self, name: str, other: StyleCode) -> int:
        return _broadcast(len(self), len(other), name)


def _broadcast(a: int, b: int, name: str) -> int:
    """Batch size of a combination: equal sizes, or one of them 1."""
    if a != b and 1 not in (a, b):
        raise InputError(f"{name}: batch size {b} does not broadcast against {a}")
    return max(a, b)
