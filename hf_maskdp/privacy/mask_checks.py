"""Which masks MaskDP may rely on: the anonymizer's provenance and the invariant it guarantees.

MaskDP protects what the mask marks sensitive and nothing else: a real pixel marked public
(`m = 0`) reaches the public branch without noise (docs/privacy.md, Sharp edges). So the loader
(`hf_maskdp.hub.load_anonymized_dataset`) and the trainer (`privacy_mode` "maskdp" and
"public_only") accept a row's mask only when

1. the row carries the anonymizer's **provenance** (`PROVENANCE_COLUMN`: package, version,
   anonymizer config and the invariant below), written by `AvatarAnonymizer` on every row;
2. the row keeps that **invariant**, `public ⊆ avatar`: no pixel outside `avatar_mask` is public,
   i.e. `~sensitive_mask & ~avatar_mask` is empty. Checked on the packed bits (`packbits+zlib`,
   `hf_maskdp.video.encode_mask`; masks packed per tile are expanded to pixels first) without
   decoding any video;
3. the mask has its clip's shape (the container header, `hf_maskdp.video.video_shape`).

`trust_masks=True` is the user's word that masks made some other way are right: it skips (1) and,
on rows without an `avatar_mask`, (2); a row whose own `avatar_mask` contradicts its
`sensitive_mask` is refused even then. The trainer records the override and the model card
states it. None of this is a signature: whoever writes a dataset can write its provenance too.
It catches hand-made, damaged and edited masks, and masks made by other tools, before they
are used as a privacy claim.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

PROVENANCE_COLUMN = "provenance"
INVARIANT = "public ⊆ avatar"  # ~sensitive_mask & ~avatar_mask is empty
PRODUCER = "hf_maskdp.AvatarAnonymizer"
_SHOWN_ROWS = 10  # rows named in an error; the count says how many more


def anonymizer_provenance(config: dict | None = None) -> str:
    """The `provenance` value the anonymizer writes on every row (JSON: producer, version, config, invariant)."""
    from hf_maskdp import __version__

    return json.dumps(
        {"producer": PRODUCER, "version": __version__, "invariant": INVARIANT, "config": dict(config or {})},
        sort_keys=True,
        default=str,
    )


def vouched(provenance: Any) -> bool:
    """Whether a `provenance` value says the anonymizer made the row and guarantees `INVARIANT`."""
    if not isinstance(provenance, str):
        return False
    try:
        record = json.loads(provenance)
    except json.JSONDecodeError:
        return False
    return isinstance(record, dict) and record.get("producer") == PRODUCER and record.get("invariant") == INVARIANT


@dataclass
class MaskCheck:
    """What `check_masks` found: rows checked, and the rows without any sensitive pixel."""

    rows: int = 0
    fully_public: list[int] = field(default_factory=list)  # they only feed the public branch


def check_masks(
    dataset,
    where: str = "dataset",
    *,
    trust_masks: bool = False,
    vouch: bool = True,
    check_shapes: bool = True,
    mask_column: str = "sensitive_mask",
    avatar_column: str = "avatar_mask",
    video_column: str = "video",
) -> MaskCheck:
    """Check every row with a video in one pass; a ValueError names the rows and the fix.

    `vouch`: the masks are used as a privacy claim, so (1) provenance (unless `trust_masks`) and
    (2) `public ⊆ avatar` are required. With `vouch=False` only the format and (3) the shapes are
    checked (a mask the collator will read must fit its clip). `check_shapes=False` skips (3)
    (the caller checked it). Rows without a video (withheld by the anonymizer) are skipped.
    `dataset` is a `datasets.Dataset` (read raw, without its transform) or a sequence of row dicts.
    """
    from hf_maskdp.video import video_shape

    problems: dict[str, list[int]] = {}
    result = MaskCheck()
    from hf_maskdp.storage import FORMAT_COLUMN, LAYER_COLUMN, stored_shape_problem

    columns = (video_column, mask_column, avatar_column, PROVENANCE_COLUMN, LAYER_COLUMN, FORMAT_COLUMN)
    for index, row in _rows(dataset, columns):
        if row.get(video_column) is None or (not vouch and row.get(mask_column) is None):
            continue  # withheld by the anonymizer / a mask nobody reads
        result.rows += 1
        try:
            sensitive = _bits(row.get(mask_column), mask_column)
            avatar = None if row.get(avatar_column) is None else _bits(row[avatar_column], avatar_column)
        except ValueError as err:
            raise ValueError(f"{where}: row {index}: {err}; re-run the anonymizer on it or drop the row") from None
        shape, bits = sensitive
        if check_shapes:  # the container headers: no decoding
            problem = stored_shape_problem(row, shape, video_shape, video_column)
            if problem:
                problems.setdefault(f"a '{mask_column}' whose shape is not their clip's (first: {problem})", []).append(
                    index
                )
        if not _valid_bits(bits, shape).any():  # no sensitive pixel at all
            result.fully_public.append(index)
        if not vouch:
            continue
        if not trust_masks and not vouched(row.get(PROVENANCE_COLUMN)):
            problems.setdefault(
                f"no anonymizer provenance (a '{PROVENANCE_COLUMN}' value written by {PRODUCER})", []
            ).append(index)
        if avatar is None:
            if not trust_masks and _public_anywhere(bits, shape):
                problems.setdefault(f"public pixels but no '{avatar_column}' to vouch for them", []).append(index)
        elif avatar[0] != shape:
            problems.setdefault(f"an '{avatar_column}' of another shape than '{mask_column}'", []).append(index)
        elif _public_outside(bits, avatar[1], shape):
            problems.setdefault(
                f"public pixels outside '{avatar_column}' ({INVARIANT} is broken: a forged, edited or damaged mask)", []
            ).append(index)
    if problems:
        raise ValueError(_refusal(where, problems, result.rows, trust_masks, vouch))
    return result


def _refusal(where: str, problems: dict[str, list[int]], rows: int, trust_masks: bool, vouch: bool) -> str:
    parts = []
    for problem, indices in problems.items():
        shown = ", ".join(map(str, indices[:_SHOWN_ROWS])) + (", ..." if len(indices) > _SHOWN_ROWS else "")
        parts.append(f"{len(indices)} of {rows} rows (rows {shown}) have {problem}")
    fix = "re-run the anonymizer (hf-maskdp anonymize / AvatarAnonymizer) on these clips or drop these rows"
    if vouch and not trust_masks and any("provenance" in p for p in problems):
        fix += (
            "; for masks made another way that you vouch for yourself, pass trust_masks=True "
            "(hf-maskdp train --trust-masks), which the model card then states"
        )
    return f"{where}: refusing masks that cannot be vouched for: " + "; ".join(parts) + f". Fix: {fix}"


def _rows(dataset, columns: tuple[str, ...]):
    """(index, row) with the raw stored values (packed masks), from a `Dataset` or a sequence of dicts."""
    if hasattr(dataset, "column_names") and hasattr(dataset, "iter"):
        present = [c for c in columns if c in dataset.column_names]
        raw = dataset.with_format(None).select_columns(present)  # no transform: masks stay packed
        index = 0
        for batch in raw.iter(batch_size=64):
            for i in range(len(batch[present[0]]) if present else 0):
                yield index, {c: batch[c][i] for c in present}
                index += 1
        return
    for index in range(len(dataset)):
        yield index, dataset[index]


def _bits(value: Any, column: str) -> tuple[tuple[int, ...], np.ndarray]:
    """`(shape, packed bits as uint8)` of a mask value: the stored bytes, or packed from an array."""
    from hf_maskdp.video import decode_mask

    if value is None:
        raise ValueError(f"no '{column}'")
    if isinstance(value, dict) and "packed" in value and "shape" in value and value.get("block") in (None, 1):
        shape = tuple(int(s) for s in value["shape"])
        try:
            bits = np.frombuffer(zlib.decompress(value["packed"]), dtype=np.uint8)
        except (zlib.error, TypeError) as err:
            raise ValueError(f"malformed '{column}' ({err})") from None
        if len(shape) != 3 or min(shape) < 0 or bits.size != (int(np.prod(shape)) + 7) // 8:
            raise ValueError(f"malformed '{column}': {bits.size} packed bytes do not fit shape {list(shape)}")
        return shape, bits
    try:
        mask = decode_mask(value)  # packed per tile, or an array (decoded masks, or rows built by hand)
    except ValueError as err:
        raise ValueError(f"malformed '{column}' ({err})") from None
    return mask.shape, np.packbits(mask, axis=None)


def _valid_bits(bits: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """`bits` with the padding of the last byte cleared (np.packbits pads with zeros at the end)."""
    pad = 8 * bits.size - int(np.prod(shape))
    if pad:
        bits = bits.copy()
        bits[-1] &= (0xFF << pad) & 0xFF
    return bits


def _public_anywhere(sensitive: np.ndarray, shape: tuple[int, ...]) -> bool:
    return bool(_valid_bits(np.invert(sensitive), shape).any())


def _public_outside(sensitive: np.ndarray, avatar: np.ndarray, shape: tuple[int, ...]) -> bool:
    """Whether some pixel is neither sensitive nor avatar: `~s & ~a = ~(s | a)`, on whole bytes."""
    return bool(_valid_bits(np.invert(sensitive | avatar), shape).any())
