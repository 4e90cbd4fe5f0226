"""Hub round trips: anonymized datasets and private models, with cards that state the privacy facts.

Anonymized datasets keep real backgrounds (only the people are replaced), so everything here is
**private by default**: a public push needs `private=False` given explicitly and logs a warning.
Pushing into an existing public repo with `private=True` is refused rather than silently
publishing. Masks are validated before anything leaves the machine and again when loading,
because MaskDP's guarantee rests on them (see docs/privacy.md).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hf_maskdp.constants import PRIVACY_RECORD_FILE
from hf_maskdp.privacy.record import PrivacyRecord
from hf_maskdp.storage import FORMAT_COLUMN, LAYER_COLUMN, LOSSLESS_FORMAT, MP4_LAYER_FORMAT, stored_shape_problem
from hf_maskdp.video import decode_mask, video_shape

logger = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"
DATASET_CARD_TEMPLATE = TEMPLATES / "dataset_card.md"
MODEL_CARD_TEMPLATE = TEMPLATES / "model_card.md"
SENSITIVE_MASK = "sensitive_mask"
MASK_COLUMNS = (SENSITIVE_MASK, "avatar_mask")
PUBLIC_WARNING = (
    "Pushing %s as a PUBLIC repo: anonymized clips keep the REAL backgrounds (rooms, objects, "
    "other identifying context); only the people were replaced. Keep it private unless that is intended."
)
# Known body models: what their licenses mean for renders and datasets derived from them.
BODY_MODEL_LICENSES = {
    "mannequin": "mannequin-x is Apache-2.0 and needs no licensed files: no extra restriction on the renders.",
    "anny": "Anny is Apache-2.0 (MakeHuman-based assets shipped with it): check its asset notices before redistribution.",
    "smpl": (
        "SMPL / SMPL-H / SMPL-X model files are licensed by the Max Planck Institute for non-commercial "
        "scientific research only. Renders and datasets derived from them may fall under that license: "
        "read https://smpl.is.tue.mpg.de/modellicense.html and https://mano.is.tue.mpg.de/license.html "
        "before any commercial use or redistribution."
    ),
}
# Card rows of the anonymization stages, and the anonymizer_info keys that may hold each (AnonymizerConfig names first).
STAGE_KEYS = {
    "pose_estimator": ("pose_source", "pose_estimator"),
    "body_model": ("body_model",),
    "inpainter": ("inpainter",),
    "refiner": ("refiner",),
    "seed": ("seed",),
}
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}")


# --------------------------------------------------------------------------- checks and errors


def validate_repo_id(repo_id: Any) -> str:
    """Return `repo_id` if it is `"user/name"`; otherwise a ValueError that says so."""
    if not isinstance(repo_id, str) or not _REPO_ID.fullmatch(repo_id) or ".." in repo_id or "--" in repo_id:
        raise ValueError(
            f"repo id {repo_id!r} is not of the form 'user/name' (letters, digits, '-', '_', '.'): "
            "pass e.g. 'your-username/my-anonymized-clips'"
        )
    return repo_id


def _resolve_token(token: str | None) -> str:
    from huggingface_hub import get_token

    token = token or get_token()
    if not token:
        raise ValueError(
            "no Hugging Face token: pass token=..., set HF_TOKEN, or run `hf auth login` with a write token "
            "(https://huggingface.co/settings/tokens)"
        )
    return token


@contextmanager
def hub_errors(repo_id: str, action: str):
    """Turn the Hub's HTTP errors into one-line ValueErrors that name the fix."""
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    try:
        yield
    except RepositoryNotFoundError as err:
        raise ValueError(
            f"cannot {action} {repo_id}: repository not found, or it is private and this token cannot read it; "
            "check the name and pass token= of an account with access"
        ) from err
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else None
        if status == 401:
            raise ValueError(
                f"cannot {action} {repo_id}: the Hub rejected the token (wrong or expired); pass a valid write "
                "token with token=... or run `hf auth login --force`"
            ) from err
        if status == 403:
            raise ValueError(
                f"cannot {action} {repo_id}: this token has no write access to the namespace "
                f"{repo_id.split('/')[0]!r}; use a write token of that user or organization"
            ) from err
        raise


def _check_token(token: str, repo_id: str) -> str:
    """Ask the Hub who owns `token` (a wrong token fails here, before any upload)."""
    from huggingface_hub import HfApi

    with hub_errors(repo_id, "push to"):
        return HfApi().whoami(token=token, cache=True)["name"]


def _create_private_aware_repo(repo_id: str, repo_type: str, private: bool, token: str) -> str:
    """Create the repo with the requested visibility; refuse to push private data into a public repo."""
    from huggingface_hub import HfApi

    if not isinstance(private, bool):
        raise ValueError(f"private must be True or False, got {private!r}")
    if not private:
        logger.warning(PUBLIC_WARNING, repo_id)
    api = HfApi(token=token)
    with hub_errors(repo_id, "push to"):
        url = api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
        existing = api.repo_info(repo_id, repo_type=repo_type)
    if private and not existing.private:
        raise ValueError(
            f"{repo_type} repo {repo_id} already exists and is PUBLIC: pushing to it would publish the data. "
            f"Make it private first (HfApi().update_repo_settings({repo_id!r}, private=True, "
            f"repo_type={repo_type!r})) or pass private=False if publishing is intended"
        )
    return str(url)


# --------------------------------------------------------------------------- mask columns


def check_mask_columns(dataset, where: str = "dataset", verify_rows: bool = True) -> None:
    """Refuse a dataset whose mask columns are missing or malformed (ValueError naming column and fix).

    Checks the schema, that every row with a video has a decodable `sensitive_mask` (all rows when
    `verify_rows`, else the first) whose shape matches its clip's frames.
    """
    columns = dataset.column_names
    if SENSITIVE_MASK not in columns:
        raise ValueError(
            f"{where} has no '{SENSITIVE_MASK}' column (columns: {columns}); MaskDP needs it to know which "
            "pixels are real. Anonymize the clips first with `hf-maskdp anonymize` / hf_maskdp.AvatarAnonymizer, "
            "which writes it"
        )
    for column in (c for c in MASK_COLUMNS if c in columns):
        feature = dataset.features[column]
        if isinstance(feature, dict) and not {"shape", "packed"} <= set(feature):
            raise ValueError(
                f"{where}: column '{column}' has fields {sorted(feature)}, expected 'shape' and 'packed' "
                "(written by hf_maskdp.video.encode_mask); re-encode the masks with encode_mask"
            )
    rows = dataset.select_columns([c for c in ("video", LAYER_COLUMN, FORMAT_COLUMN, *MASK_COLUMNS) if c in columns])
    n_rows = len(rows) if verify_rows else min(1, len(rows))
    for index in range(n_rows):
        row = rows[index]
        for column in (c for c in MASK_COLUMNS if c in row):
            if row[column] is None and row.get("video") is None:
                continue  # a withheld row: no clip, nothing to mask
            try:
                mask = decode_mask(row[column])
            except ValueError as err:
                raise ValueError(
                    f"{where}: row {index} has a malformed '{column}' ({err}); re-run the anonymizer on it "
                    "or drop the row"
                ) from None
            if column == SENSITIVE_MASK and row.get("video") is not None:
                try:  # shapes from the container headers: no decoding
                    problem = stored_shape_problem(row, mask.shape, video_shape)
                except ValueError as err:  # an unknown storage format
                    problem = str(err)
                if problem:
                    raise ValueError(f"{where}: row {index} {problem}")


class DecodeMasks:
    """`with_transform` function: mask columns come out as bool arrays `(T, H, W)`, the rest unchanged."""

    def __init__(self, columns: tuple[str, ...] = MASK_COLUMNS):
        self.columns = columns

    def __call__(self, batch: dict) -> dict:
        for column in self.columns:
            if column in batch:
                batch[column] = [None if v is None else decode_mask(v) for v in batch[column]]
        return batch


def summarize_dataset(dataset) -> dict:
    """Counts for the card and the CLI: clips, frames kept, people found, clips by anonymization status
    and by storage format (`hf_maskdp.storage`)."""
    splits = dict(dataset) if hasattr(dataset, "keys") else {"train": dataset}
    clips, frames, people, statuses, formats = 0, 0, None, Counter(), Counter()
    for split in splits.values():
        clips += len(split)
        for shape in split.select_columns([SENSITIVE_MASK]).flatten()[f"{SENSITIVE_MASK}.shape"]:
            frames += int(shape[0]) if shape else 0
        if "num_people" in split.column_names:
            people = (people or 0) + sum(split["num_people"])
        if "anonymization" in split.column_names:
            statuses.update(str(s).split(":")[0] for s in split["anonymization"])
        versions = split[FORMAT_COLUMN] if FORMAT_COLUMN in split.column_names else [LOSSLESS_FORMAT] * len(split)
        formats.update(LOSSLESS_FORMAT if v is None else int(v) for v in versions)
    summary = {
        "clips": clips,
        "frames": frames,
        "splits": {name: len(s) for name, s in splits.items()},
        "storage_formats": dict(sorted(formats.items())),
    }
    if people is not None:
        summary["people"] = people
    if statuses:
        summary["status_counts"] = dict(sorted(statuses.items()))
    return summary


# --------------------------------------------------------------------------- datasets


def push_anonymized_dataset(
    dataset,
    repo_id: str,
    *,
    private: bool = True,
    token: str | None = None,
    anonymizer_info: dict | None = None,
    summary: dict | None = None,
    commit_message: str = "Upload anonymized dataset (hf_maskdp)",
) -> str:
    """Validate the masks, push a `Dataset`/`DatasetDict` with `push_to_hub`, and write its card.

    Private unless `private=False` is given explicitly. `anonymizer_info` describes how the clips
    were made (pose_estimator, body_model, inpainter, refiner, seed, ...; a config dataclass is
    fine); `summary` adds or overrides counts (e.g. `{"people": 12}`). Returns the repo URL.
    """
    from huggingface_hub import DatasetCard

    repo_id = validate_repo_id(repo_id)
    splits = dict(dataset) if hasattr(dataset, "keys") else {"train": dataset}
    for name, split in splits.items():
        check_mask_columns(split, where=f"split '{name}'")
    token = _resolve_token(token)
    _check_token(token, repo_id)
    url = _create_private_aware_repo(repo_id, "dataset", private, token)
    with hub_errors(repo_id, "push to"):
        dataset.push_to_hub(repo_id, private=private, token=token, commit_message=commit_message)
        card = dataset_card(
            repo_id,
            anonymizer_info,
            {**summarize_dataset(dataset), **(summary or {})},
            existing=DatasetCard.load(repo_id, repo_type="dataset", token=token),
        )
        card.push_to_hub(repo_id, token=token, repo_type="dataset", commit_message="Add hf_maskdp dataset card")
    return url


def dataset_card(repo_id: str, anonymizer_info: dict | None, summary: dict, existing=None):
    """A `DatasetCard` from model_cards/dataset_card.md; keeps `existing` metadata (datasets' configs)."""
    from huggingface_hub import DatasetCard, DatasetCardData

    info = _as_dict(anonymizer_info)
    data = DatasetCardData(**(existing.data.to_dict() if existing is not None else {}))
    data.tags = sorted(set((data.get("tags") or []) + ["maskdp", "anonymized", "privacy", "video"]))
    data.task_categories = data.task_categories or ["video-classification"]
    data.pretty_name = data.pretty_name or f"{repo_id.split('/')[1]} (anonymized)"
    stages = {stage: next((info[k] for k in keys if k in info), "not recorded") for stage, keys in STAGE_KEYS.items()}
    used = {k for keys in STAGE_KEYS.values() for k in keys}
    return DatasetCard.from_template(
        data,
        template_path=str(DATASET_CARD_TEMPLATE),
        repo_id=repo_id,
        stages=stages,
        other_settings={k: v for k, v in info.items() if k not in used},
        summary=summary,
        storage=_storage_description(summary.get("storage_formats") or {}, info),
        body_model_license=_body_model_license(str(stages["body_model"])),
    )


def _storage_description(formats: dict, info: dict) -> str:
    """The card's sentence on how clips are stored (format and quality; see hf_maskdp/storage.py)."""
    from hf_maskdp.storage import DEFAULT_CRF, DEFAULT_LAYER_CRF, DEFAULT_PRESET

    lines = []
    for version, count in sorted(formats.items()):
        clips = f"{count} clip{'s' if count != 1 else ''}"
        if int(version) == LOSSLESS_FORMAT:
            lines.append(
                f"- Storage format 1 ({clips}): `video` is lossless RGB H.264 (crf 0); public pixels "
                "are read from it and decode exactly as rendered."
            )
        else:
            crf, layer_crf = info.get("crf", DEFAULT_CRF), info.get("layer_crf", DEFAULT_LAYER_CRF)
            preset = info.get("preset", DEFAULT_PRESET)
            block = int(info.get("mask_block", 0))  # 0: not recorded (exact before mask_block existed)
            rounded = f" `sensitive_mask` is rounded out to {block}x{block}-pixel tiles (more sensitive, never less)."
            layer = "in mp4" if int(version) == MP4_LAYER_FORMAT else "as a raw H.264 stream (binary)"
            lines.append(
                f"- Storage format {version} ({clips}): `video` (the composite) is H.264 yuv420p in mp4 at crf {crf} "
                f"and `avatar_layer` at crf {layer_crf} {layer}, preset {preset} (lossy). The layer is the same frames "
                "with every sensitive pixel replaced (from public pixels only) *before* encoding, so its encoder never "
                "saw a real pixel; readers take public pixels from the layer and sensitive ones from `video` "
                "(`hf_maskdp.read_anonymized_clip`)." + (rounded if block > 1 else "")
            )
    return "\n".join(lines) or "- Storage format: not recorded."


def _body_model_license(body_model: str) -> str:
    name = body_model.lower()
    for key, text in BODY_MODEL_LICENSES.items():
        if key in name:
            return text
    return f"Check the license of the body model {body_model!r}: renders made with it may inherit its terms."


def _as_dict(value) -> dict:
    if value is None:
        return {}
    if isinstance(value, str):  # a dataset named by its Hub id, as Trainer.push_to_hub(dataset=...) gives it
        return {"name": value}
    if dataclasses.is_dataclass(value):
        value = dataclasses.asdict(value)
    return {str(k): v for k, v in dict(value).items()}


def load_anonymized_dataset(
    repo_id_or_path: str, split: str | None = None, *, verify_masks: bool = True, trust_masks: bool = False, **kwargs
):
    """Load an anonymized dataset from the Hub, a `save_to_disk` folder, a data folder, or the OUTPUT
    of a sharded run (`hf-maskdp anonymize --tasks N`: its shards as one dataset, refused unfinished).

    Refuses (ValueError) a dataset whose `sensitive_mask` is missing or malformed, and rows whose
    masks cannot be vouched for (`hf_maskdp.privacy.mask_checks`): no anonymizer provenance, or a
    public pixel outside `avatar_mask` (a forged or damaged mask); the error names the rows.
    `trust_masks=True` accepts masks made another way on your word (no provenance needed; see
    docs/privacy.md); the trainer must then be told too (`MaskDPConfig(trust_masks=True)`).
    `verify_masks` also checks every row's mask shape against its clip's container header (set
    False to skip that). The returned dataset decodes masks to bool arrays `(T, H, W)` on access;
    `video` stays `{"path", "bytes"}`. Extra keyword arguments go to `datasets.load_dataset`
    (e.g. `token`, `revision`, `cache_dir`).
    """
    import datasets

    from hf_maskdp.privacy.mask_checks import check_masks

    if kwargs.get("streaming"):
        raise ValueError("streaming=True is not supported: the masks are verified when loading; drop streaming=")
    path = Path(str(repo_id_or_path))
    if path.is_dir() and (path / ".hf_maskdp" / "plan.json").is_file():  # a sharded run: its parquet shards
        from hf_maskdp.anonymize.sharded import load_shards

        loaded = load_shards(path, split)
    elif path.is_dir() and ((path / "state.json").exists() or (path / "dataset_dict.json").exists()):
        loaded = datasets.load_from_disk(str(path))
        if split is not None:
            loaded = loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
    elif path.is_dir():
        loaded = datasets.load_dataset(str(path), split=split, **kwargs)
    elif path.exists():
        raise ValueError(
            f"{path} is a file: pass the folder written by save_to_disk, a folder of data files, "
            "or a Hub dataset id 'user/name'"
        )
    else:
        if not _REPO_ID.fullmatch(str(repo_id_or_path)):
            raise FileNotFoundError(
                f"{repo_id_or_path} does not exist: no such local folder (and it is not a Hub "
                "dataset id 'user/name'); check the path"
            )
        repo_id = validate_repo_id(str(repo_id_or_path))
        try:
            with hub_errors(repo_id, "load"):
                loaded = datasets.load_dataset(repo_id, split=split, **kwargs)
        except datasets.exceptions.DatasetNotFoundError as err:
            raise ValueError(
                f"cannot load {repo_id}: not a local folder, and not on the Hub or private to another account; "
                "check the name and pass token= of an account with access"
            ) from err
    splits = dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {split or "dataset": loaded}
    if trust_masks:
        logger.warning(
            "trust_masks=True: %s is used without checking that its masks come from the anonymizer; "
            "MaskDP protects only what YOUR masks mark sensitive",
            repo_id_or_path,
        )
    for name, part in splits.items():
        where = f"{repo_id_or_path} [{name}]"
        check_mask_columns(part, where=where, verify_rows=verify_masks)
        check_masks(part, where, trust_masks=trust_masks, check_shapes=False)  # shapes: check_mask_columns
        formats = set(part[FORMAT_COLUMN]) - {None} if FORMAT_COLUMN in part.column_names else {LOSSLESS_FORMAT}
        if LOSSLESS_FORMAT in formats:
            logger.info(
                "%s [%s]: storage format 1 (lossless video, 4-20x larger than format 3); it loads and "
                "trains as before; re-anonymize to store it lossy",
                repo_id_or_path,
                name,
            )
        if MP4_LAYER_FORMAT in formats:
            logger.info(
                "%s [%s]: storage format 2 (the layer in mp4, masks per pixel: the same pixels as format 3 in "
                "4-12 %% more bytes); it loads and trains as before",
                repo_id_or_path,
                name,
            )
    return loaded.with_transform(DecodeMasks())


# --------------------------------------------------------------------------- models


def read_privacy_record(output_dir: str | Path) -> dict:
    """The saved `maskdp_privacy.json` of a model folder, checked (`check_privacy_record`)."""
    path = Path(output_dir) / PRIVACY_RECORD_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: it is written by MaskDPTrainer.save_model; pass privacy_record= explicitly "
            "or save the trained model with the trainer first"
        )
    return check_privacy_record(json.loads(path.read_text()))


def check_privacy_record(record: dict) -> dict:
    """The record as `PrivacyRecord` checks it (`PrivacyRecord.from_dict`), as a dict for the card template."""
    return PrivacyRecord.from_dict(record).to_dict()


def write_model_card(
    output_dir: str | Path,
    privacy_record: dict | None = None,
    model_name: str | None = None,
    dataset_info: dict | None = None,
    eval_results: dict | None = None,
):
    """Write `README.md` (a `ModelCard` from model_cards/model_card.md) into `output_dir` and return it.

    `privacy_record` defaults to `output_dir/maskdp_privacy.json`. `dataset_info` may hold `name`
    (Hub id), `split`, `anonymizer` (dict) and `summary` (counts); `eval_results` maps metric names
    to values (`{"accuracy": 0.81}`; a `eval_` prefix is dropped).
    """
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    output_dir = Path(output_dir)
    record = check_privacy_record(privacy_record if privacy_record is not None else read_privacy_record(output_dir))
    dataset_info = _as_dict(dataset_info)
    model_name = model_name or output_dir.resolve().name
    dataset_name = dataset_info.get("name")
    metrics = {
        k.removeprefix("eval_"): v
        for k, v in (eval_results or {}).items()
        if isinstance(v, (int, float))
        and k.removeprefix("eval_") not in ("runtime", "samples_per_second", "steps_per_second", "epoch")
    }
    results = [
        EvalResult(
            task_type="video-classification",
            task_name="Video classification",
            dataset_type=dataset_name or "unknown",
            dataset_name=dataset_name or "evaluation clips",
            dataset_split=dataset_info.get("eval_split"),
            metric_type=metric,
            metric_value=float(value),
        )
        for metric, value in metrics.items()
    ]
    tags = ["video-classification", "maskdp", "hf_maskdp"]
    tags += ["not-private"] if record["privacy_mode"] == "none" else ["differential-privacy", record["privacy_mode"]]
    data = ModelCardData(
        model_name=model_name,
        library_name="transformers",
        pipeline_tag="video-classification",
        tags=tags,
        datasets=[dataset_name] if dataset_name else None,
        eval_results=results or None,
    )
    card = ModelCard.from_template(
        data,
        template_path=str(MODEL_CARD_TEMPLATE),
        model_name=model_name,
        record=record,
        private=record["privacy_mode"] != "none",
        facts=_privacy_facts(record),
        dataset=dataset_info,
        anonymizer=_as_dict(dataset_info.get("anonymizer")),
        metrics=metrics,
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    card.save(output_dir / "README.md")
    return card


def _privacy_facts(record: dict) -> list[tuple[str, Any]]:
    """Rows of the card's privacy table; `none` gets a plain "not private", never an ε."""
    mode = record["privacy_mode"]
    if mode == "none":
        budget = [("ε spent", 'none: not private (no guarantee; this is not "ε = 0")')]
    else:
        unused = "not used (no private branch)"
        budget = [("ε spent", record["epsilon"]), ("δ", record["delta"])] + [
            (label, unused if record[key] is None else record[key])
            for label, key in (
                ("Accountant", "accountant"),
                ("Noise multiplier σ", "noise_multiplier"),
                ("Per-sample clip norm C", "per_sample_clip_norm"),
                ("Sampling rate q (Poisson)", "sample_rate"),
            )
        ]
    rest = [
        ("Optimizer steps", "steps"),
        ("Epochs", "epochs"),
        ("Public view", "public_view"),
        ("Mask column", "mask_column"),
        ("Training rows (all; the public branch draws from them)", "training_rows"),
        ("Private records N (with sensitive content; q = private batch / N)", "private_records"),
        ("Processes (world size)", "world_size"),
    ]
    facts = [
        ("Privacy mode", f"`{mode}`"),
        *budget,
        *((label, "n/a" if record[key] is None else record[key]) for label, key in rest),
    ]
    if record.get("trust_masks") is not None:  # records written before provenance checks lack it
        facts.append(
            (
                "Masks verified",
                "**NO: trust_masks=True**, the masks were taken on the trainer's word"
                if record["trust_masks"]
                else "yes: anonymizer provenance and public ⊆ avatar on every row",
            )
        )
    if record.get("fully_public_records") is not None:
        facts.append(("Records with no sensitive pixel (public only)", record["fully_public_records"]))
    return facts


def push_private_model(
    output_dir: str | Path,
    repo_id: str,
    *,
    private: bool = True,
    token: str | None = None,
    commit_message: str = "Upload MaskDP model (hf_maskdp)",
) -> str:
    """Upload a saved model folder (with its privacy record and card) to a repo, private by default."""
    from huggingface_hub import HfApi

    output_dir = Path(output_dir)
    repo_id = validate_repo_id(repo_id)
    if not (output_dir / "config.json").is_file():
        raise FileNotFoundError(f"{output_dir}/config.json not found: save the model with save_pretrained first")
    record = read_privacy_record(output_dir)
    if not (output_dir / "README.md").is_file():
        write_model_card(output_dir, record)
    token = _resolve_token(token)
    _check_token(token, repo_id)
    url = _create_private_aware_repo(repo_id, "model", private, token)
    with hub_errors(repo_id, "push to"):
        HfApi(token=token).upload_folder(
            repo_id=repo_id,
            folder_path=str(output_dir),
            commit_message=commit_message,
            ignore_patterns=["checkpoint-*", "runs/*", "*.pt"],
        )
    return url
