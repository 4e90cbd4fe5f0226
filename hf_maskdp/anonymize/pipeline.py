"""`AvatarAnonymizer`: replace every person in a clip by a rendered avatar, as a `datasets` map function.

    decode -> pose (every person) -> link people over frames, fill gaps, smooth -> fit body + camera
    (camera smoothed over time) -> render all people together -> check fit -> erase region (each person's
    pose region; with `attach_segments`, plus the person segmentation attached to it) -> inpaint -> [refine,
    optional] -> composite -> encode

Output columns: the anonymized clip replaces the input's video column (`video_column`, "video"
by default), with `avatar_layer`, `sensitive_mask` and `storage_format` as
`hf_maskdp.encode_anonymized_clip` writes them (lossy H.264 at `crf`, `layer_crf`, `preset`, the
mask rounded out to `mask_block` tiles; read them back with `hf_maskdp.read_anonymized_clip`),
plus `avatar_mask` (`hf_maskdp.video.encode_mask`, rounded out to 16x16 tiles,
`storage.AVATAR_MASK_BLOCK`: it only vouches for the mask), `anonymization` (status), `num_people` and `provenance` (package
version, this config and the invariant `public ⊆ avatar` it guarantees, which the loader and the
trainer check: `hf_maskdp.privacy.mask_checks`); the input's other columns pass through.
`sensitive_mask` is False only on pixels fully covered by an avatar,
whose colour comes from the render alone (see `composite.py`).

Failure policy (`errors`): a clip where a person may still be visible (nobody found, a person
without a pose in some frames after gap filling, a person who could not be fitted or whose avatar
does not cover them, undecodable input) is never published as anonymized. Before a clip is `ok`,
an independent check (`residual.py`: person segmentation, faces, hands, on every output frame)
looks for real people outside the avatars, such as someone the pose model never found or the legs
of a found person below a misplaced avatar; evidence makes the clip `residual_person: ...`. A
person that neither the pose model nor the check sees (too small, too unusual) still stays in an
`ok` clip, marked sensitive like every non-avatar pixel (docs/privacy.md, Sharp edges). "withhold"
(default) writes `video=None` and empty masks with a status saying why; "keep" keeps the
processed clip with an all-sensitive mask (a valid MaskDP record: nothing public);
"raise" stops the map at the first such clip.

Refinement (`refiner="<diffusers model id or path>"`, see `refine.py`) redraws the avatars with a
diffusion model. With `refiner_options={"context": "render"}` (default) it reads public inputs
only and the mask is unchanged; with `"real"` it reads real pixels, so every avatar pixel it
touches is marked sensitive (`sensitive |= refiner.sensitive_pixels(render)`).
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections import Counter
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from hf_maskdp.anonymize.errors import ClipError
from hf_maskdp.constants import STATUS_ERROR, STATUS_NO_PERSON, STATUS_OK, STATUS_PARTIAL
from hf_maskdp.privacy.mask_checks import PROVENANCE_COLUMN, anonymizer_provenance
from hf_maskdp.storage import (
    AVATAR_MASK_BLOCK,
    DEFAULT_CRF,
    DEFAULT_LAYER_CRF,
    DEFAULT_MASK_BLOCK,
    DEFAULT_PRESET,
    FORMAT_COLUMN,
    LAYER_COLUMN,
    STORAGE_FORMAT,
    check_quality,
    cover_blocks,
    encode_anonymized_clip,
    storage_features,
)
from hf_maskdp.video import encode_mask, load_video_frames, mask_feature, video_fps

ERROR_POLICIES = ("withhold", "keep", "raise")
_models_pid: int | None = None  # the process that built mediapipe / EGL models (see _check_not_forked)


class AnonymizationError(ValueError):
    """A clip could not be fully anonymized and `errors="raise"` was set (the CLI prints it as one line)."""


@dataclass
class AnonymizerConfig:
    """How `AvatarAnonymizer` works. Every field has a safe default; see the module docstring."""

    body_model: str = "mannequin"  # a name in hf_maskdp.anonymize.body.BODY_MODELS
    pose_source: str = (
        "mediapipe"  # or "given": poses from `pose_column` (trusted: the fit check needs their person_mask)
    )
    pose_column: str = "pose"
    video_column: str = "video"
    inpainter: str = "temporal"  # temporal background model with OpenCV fallback; or "opencv"
    seed: int = 0  # avatar looks: seed + person index + the (public) pose of that person
    max_people: int = 4  # people searched for per frame (mediapipe finds one per search)
    # render samples per pixel side (antialiased edges); 2 saves ~20 % of render CPU but tips a real photo
    # (the Space's astronaut example) into `residual_person` (docs/benchmarks.md, "Real footage")
    supersample: int = 3
    errors: str = "withhold"  # "withhold" | "keep" | "raise" (see the module docstring)
    max_gap: int = 5  # frames without a detection filled from their neighbours
    smoothing_sigma: float = 1.0  # temporal smoothing of landmarks, in frames; 0 = off
    camera_smoothing_sigma: float = 2.0  # temporal smoothing of each avatar's camera pose (PnP), in frames
    min_fit_coverage: float = 0.35  # each avatar must cover this fraction of its person's segmentation (see _status)
    region_dilation: float = 0.02  # erase the person region grown by this fraction of the frame diagonal
    # also erase each blob of person segmentation (the residual check's model, on the real frames) with at least
    # this share of its pixels in the people's region (hair, a limb the pose misplaced), and never copy segmented
    # pixels into the erased region. Off by default: it also made clips `ok` that show real people the residual
    # check then missed (docs/benchmarks.md, "Real footage")
    attach_segments: float | None = None
    min_detection_confidence: float = 0.5
    residual_check: bool = True  # independent detectors look for real people left outside the avatars (residual.py)
    focal_length: float | None = None  # pixels; default max(H, W) (~53 degrees across)
    max_frames: int | None = None  # read at most this many frames per clip
    max_resolution: int | None = 1920  # longest side accepted (a 4K clip is refused unless downscale)
    downscale: bool = False  # shrink larger clips to max_resolution instead of refusing them
    fps: float | None = None  # output frame rate; default the input's (25 for frame arrays)
    smplh_model_path: str | None = None  # body_model="smplh": the user's SMPL-H .npz (or SMPLH_MODEL_PATH)
    refiner: str | None = None  # a diffusers img2img model id or path; None = no refinement
    refiner_options: dict | str | None = field(default_factory=dict)  # RefinerConfig fields (a JSON string is fine)
    crf: int = DEFAULT_CRF  # H.264 quality of the stored composite, what people watch (lower = better, larger)
    layer_crf: int = DEFAULT_LAYER_CRF  # H.264 quality of the avatar layer, where public pixels are read from
    preset: str = DEFAULT_PRESET  # x264 preset of both: slower presets give smaller files for the same quality
    mask_block: int = DEFAULT_MASK_BLOCK  # sensitive_mask stored rounded out to blocks this big (1: exact)

    def __post_init__(self):
        from hf_maskdp.anonymize.body import BODY_MODELS

        if self.errors not in ERROR_POLICIES:
            raise ValueError(f"errors={self.errors!r}: choose one of {ERROR_POLICIES}")
        if self.body_model not in BODY_MODELS:
            raise ValueError(f"body_model={self.body_model!r}: choose one of {sorted(BODY_MODELS)}")
        if self.pose_source not in ("mediapipe", "given"):
            raise ValueError(f"pose_source={self.pose_source!r}: choose 'mediapipe' or 'given'")
        if self.inpainter not in ("temporal", "opencv"):
            raise ValueError(f"inpainter={self.inpainter!r}: choose 'temporal' or 'opencv'")
        if min(self.max_gap, self.smoothing_sigma, self.camera_smoothing_sigma, self.region_dilation) < 0:
            raise ValueError("max_gap, smoothing_sigma, camera_smoothing_sigma and region_dilation must be >= 0")
        if self.downscale and self.pose_source == "given":
            raise ValueError(
                "downscale=True shrinks the frames but not the given poses (the avatar would miss "
                "the person); scale the pose column yourself or use pose_source='mediapipe'"
            )
        if self.supersample < 1:
            raise ValueError(f"supersample={self.supersample}: render at least 1 sample per pixel")
        if self.max_people < 1:
            raise ValueError(f"max_people={self.max_people}: search for at least 1 person per frame")
        if self.attach_segments is not None and not 0 < self.attach_segments <= 1:
            raise ValueError(f"attach_segments={self.attach_segments}: a fraction in (0, 1], or None (off)")
        if not 0 <= self.min_fit_coverage <= 1:
            raise ValueError(f"min_fit_coverage={self.min_fit_coverage}: a fraction in [0, 1]")
        if self.max_resolution is not None and self.max_resolution < 16:
            raise ValueError(f"max_resolution={self.max_resolution} is too small; use >= 16 or None")
        check_quality(self.crf, self.preset, self.layer_crf, self.mask_block)
        self._check_smplh()
        self._check_refiner()

    def _check_smplh(self) -> None:
        """Fail here, not on every clip, when the SMPL-H files are missing or malformed."""
        if self.body_model != "smplh":
            if self.smplh_model_path is not None:
                raise ValueError(f"smplh_model_path is only read with body_model='smplh' (got {self.body_model!r})")
            return
        from hf_maskdp.anonymize.smplh import check_model_file, resolve_model_path

        check_model_file(resolve_model_path(self.smplh_model_path))

    def _check_refiner(self) -> None:
        from hf_maskdp.anonymize.refine import RefinerConfig

        if isinstance(self.refiner_options, str):  # from a command line
            try:
                self.refiner_options = json.loads(self.refiner_options)
            except json.JSONDecodeError as error:
                raise ValueError(f"refiner_options={self.refiner_options!r} is not JSON ({error})") from error
        options = self.refiner_options or {}
        if not isinstance(options, dict):
            raise ValueError(f"refiner_options={options!r}: pass a dict of RefinerConfig fields")
        if self.refiner is None:
            if options:
                raise ValueError(f"refiner_options={options} given without refiner=<diffusers model id or path>")
            return
        fields = sorted(set(RefinerConfig.__dataclass_fields__) - {"model_id"})
        unknown = sorted(set(options) - set(fields))
        if unknown:
            raise ValueError(f"refiner_options: unknown {unknown}; choose from {fields}")
        config = RefinerConfig(model_id=self.refiner, **options)  # validates the values
        if config.context == "real":
            warnings.warn(
                "refiner context='real' reads real pixels: every refined avatar pixel is marked "
                "sensitive, so the clips keep no public pixels",
                stacklevel=3,
            )
        self.refiner_options = dict(options)

    def refiner_config(self):
        """The `RefinerConfig` of this run, or None without a refiner."""
        from hf_maskdp.anonymize.refine import RefinerConfig

        return None if self.refiner is None else RefinerConfig(model_id=self.refiner, **self.refiner_options)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class AnonymizedClip:
    """The result for one clip. `frames`/masks are None when nothing could be decoded."""

    status: str
    frames: np.ndarray | None = None  # uint8 (T, H, W, 3)
    sensitive_mask: np.ndarray | None = None  # bool (T, H, W)
    avatar_mask: np.ndarray | None = None  # bool (T, H, W)
    erased_mask: np.ndarray | None = None  # bool (T, H, W): painted over from the background (never written to rows)
    num_people: int = 0
    identities: list = field(default_factory=list)  # each person's avatar seed
    fps: float = 25.0
    timings: dict = field(default_factory=dict)  # seconds per stage
    refiner: str | None = None  # the refiner that redrew the avatars ("model (context=...)"), if any

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK


class AvatarAnonymizer:
    """Map function: `dataset.map(AvatarAnonymizer(config), batched=True, batch_size=2)`.

    Works with `batched=True/False`, `num_proc=N` (each worker builds its own models lazily;
    they are never pickled) and `with_rank=True` (the rank is accepted; all models run on CPU).
    """

    def __init__(self, config: AnonymizerConfig | None = None, **overrides):
        if config is None:
            config = AnonymizerConfig(**overrides)
        elif overrides:
            config = AnonymizerConfig(**{**config.to_dict(), **overrides})
        self.config = config
        self._pose = self._inpaint = self._refine = self._residual = None
        self._renderers: dict = {}

    def __getstate__(self):  # models are per process: never pickled, rebuilt lazily
        return {
            "config": self.config,
            "_pose": None,
            "_inpaint": None,
            "_refine": None,
            "_residual": None,
            "_renderers": {},
        }

    def __repr__(self):
        return f"AvatarAnonymizer({self.config!r})"

    # ------------------------------------------------------------------ map function

    def __call__(self, example: dict, rank: int | None = None) -> dict:
        from datasets.formatting.formatting import LazyBatch

        column = self.config.video_column
        if column not in example:
            raise ValueError(f"no {column!r} column in {list(example)}; set AnonymizerConfig(video_column=...)")
        if not isinstance(example, LazyBatch) and not _looks_batched(example[column]):
            return {key: values[0] for key, values in self._batch({k: [v] for k, v in example.items()}).items()}
        return self._batch(example)

    def _batch(self, batch: dict) -> dict:
        column = self.config.video_column
        out = {
            "video": [],
            LAYER_COLUMN: [],
            "sensitive_mask": [],
            FORMAT_COLUMN: [],
            "avatar_mask": [],
            "anonymization": [],
            "num_people": [],
            PROVENANCE_COLUMN: [],
        }
        for i, video in enumerate(batch[column]):
            row = {key: values[i] for key, values in batch.items()}
            result = self.anonymize_clip(video, row)
            if not result.ok and self.config.errors == "raise":
                raise AnonymizationError(f"{_clip_name(video)}: {result.status}")
            for key, value in self._row(result).items():
                out[key].append(value)
        # The anonymized clip replaces the input's video column: the real clip must not ride along.
        out[column] = out.pop("video")
        return out

    def _row(self, result: AnonymizedClip) -> dict:
        keep = result.ok or (self.config.errors == "keep" and result.frames is not None)
        if not keep:
            shape = (0, 0) if result.frames is None else result.frames.shape[1:3]
            empty = encode_mask(np.zeros((0, *shape), bool))
            return {
                "video": None,
                LAYER_COLUMN: None,
                "sensitive_mask": empty,
                FORMAT_COLUMN: STORAGE_FORMAT,
                "avatar_mask": empty,
                "anonymization": result.status,
                "num_people": result.num_people,
                PROVENANCE_COLUMN: self._provenance(),
            }
        sensitive = result.sensitive_mask if result.ok else np.ones(result.frames.shape[:3], bool)
        return {
            **encode_anonymized_clip(
                result.frames,
                sensitive,
                fps=result.fps,
                crf=self.config.crf,
                layer_crf=self.config.layer_crf,
                preset=self.config.preset,
                mask_block=self.config.mask_block,
            ),
            "avatar_mask": encode_mask(cover_blocks(result.avatar_mask, AVATAR_MASK_BLOCK), block=AVATAR_MASK_BLOCK),
            "anonymization": result.status,
            "num_people": result.num_people,
            PROVENANCE_COLUMN: self._provenance(),
        }

    def _provenance(self) -> str:
        """Who made this row and what it guarantees: every kept row has `public ⊆ avatar`."""
        return anonymizer_provenance(self.config.to_dict())

    def features(self, input_features=None):
        """The output `datasets.Features` (pass as `map(features=...)` when the input's video
        column is not a `datasets.Video` feature)."""
        from datasets import Features, Value

        features = dict(input_features or {})
        stored = storage_features()
        features[self.config.video_column] = stored.pop("video")  # the anonymized clip, in place of the real one
        features.update(stored, avatar_mask=mask_feature(), anonymization=Value("string"), num_people=Value("int32"))
        features[PROVENANCE_COLUMN] = Value("string")
        return Features(features)

    # ------------------------------------------------------------------ one clip

    def anonymize_clip(self, video: Any, row: dict | None = None) -> AnonymizedClip:
        """Anonymize one clip; a bad clip (`ClipError`: unreadable video, too large, bad given poses) never
        raises here, its status says what happened. Any other exception is a bug and propagates."""
        self._refiner()  # a wrong refiner id or path is the run's error, not every clip's
        try:
            return self._anonymize(video, row or {})
        except ClipError as err:
            return AnonymizedClip(status=f"{STATUS_ERROR}: {_clip_name(video)}: {err}")

    def _anonymize(self, video: Any, row: dict) -> AnonymizedClip:
        from hf_maskdp.anonymize.body import Appearance
        from hf_maskdp.anonymize.composite import composite
        from hf_maskdp.anonymize.fit import default_intrinsics
        from hf_maskdp.anonymize.tracking import fill_gaps, identity_seed, smooth

        cfg = self.config
        timings: Counter = Counter()
        _check_not_forked()
        with _timed(timings, "decode"):
            frames = self._frames(video)
            fps = cfg.fps or video_fps(video)
        shape = frames.shape[:3]
        with _timed(timings, "pose"):
            tracks = self._pose_source()(frames, row)
        with _timed(timings, "tracking"):
            tracks = [smooth(fill_gaps(track, cfg.max_gap), cfg.smoothing_sigma) for track in tracks]
        if not tracks:
            nobody = np.zeros(shape, bool)
            with _timed(timings, "residual_check"):  # someone the pose model never found: say so
                status = self._residual_status(frames, nobody) or STATUS_NO_PERSON
            return AnonymizedClip(status, frames, avatar_mask=nobody, fps=fps, timings=dict(timings))
        K = default_intrinsics(shape[2], shape[1], cfg.focal_length)
        identities = [identity_seed(cfg.seed, i, track) for i, track in enumerate(tracks)]
        appearances = [Appearance.sample(np.random.default_rng(identity)) for identity in identities]
        with _timed(timings, "fit"):
            meshes, people, fitted = self._fit_people(tracks, appearances, K, shape)
        with _timed(timings, "render"):
            renders = self._render(meshes, K, shape)
        with _timed(timings, "erase_region"):
            pose_region, erased, segmented = self._erase_region(frames, tracks)
        with _timed(timings, "inpaint"):
            background = self._inpainter()(frames, erased, never_copy=segmented)
        refiner = self._refiner()
        if refiner is not None:
            with _timed(timings, "refine"):  # mesh i of frame t is person people[t][i]
                renders = [
                    None
                    if render is None
                    else refiner.refine(
                        render,
                        [appearances[p] for p in people[t]],
                        [identities[p] for p in people[t]],
                        frame=background[t],
                    )
                    for t, render in enumerate(renders)
                ]
        with _timed(timings, "composite"):
            output, sensitive, avatar = frames.copy(), np.ones(shape, bool), np.zeros(shape, bool)
            for t, render in enumerate(renders):
                if render is not None:
                    output[t], sensitive[t], avatar[t] = composite(background[t], render)
                    if refiner is not None:  # "real" context: refined pixels carry real pixels
                        sensitive[t] |= refiner.sensitive_pixels(render)

        status = _status(tracks, fitted, avatar, cfg.min_fit_coverage)
        if status == STATUS_OK:
            with _timed(timings, "residual_check"):
                # the check counts the pose region as covered (its smears are no person), but not the attached
                # segments: they are judged like real pixels, so they make a clip `ok` only if no person is left there
                painted = pose_region & np.array([render is not None for render in renders])[:, None, None]
                status = self._residual_status(output, avatar, painted, frames) or STATUS_OK
        refined_by = None if refiner is None else f"{cfg.refiner} (context={refiner.config.context})"
        return AnonymizedClip(
            status, output, sensitive, avatar, erased, len(tracks), identities, fps, dict(timings), refined_by
        )

    def _frames(self, video: Any) -> np.ndarray:
        import cv2

        try:
            frames = load_video_frames(video, max_frames=self.config.max_frames)
        except (ValueError, OSError) as err:  # missing, empty, corrupt or not a video: this clip's failure
            raise ClipError(str(err)) from err
        height, width = frames.shape[1:3]
        limit = self.config.max_resolution
        if limit is not None and max(height, width) > limit:
            if not self.config.downscale:
                raise ClipError(
                    f"frames are {width}x{height}, larger than max_resolution={limit}; pass "
                    f"AnonymizerConfig(downscale=True) to shrink them or max_resolution=None to accept them"
                )
            scale = limit / max(height, width)
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            frames = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])
        return frames

    def _fit_people(self, tracks, appearances, K, shape) -> tuple[list[list], list[list], list[np.ndarray]]:
        """Per frame, the posed avatars in camera coordinates (one seeded look per person) and the
        person each mesh belongs to; per person, the (T,) bool frames where the fit succeeded.
        Each person's camera (PnP) is smoothed over time so the avatar does not jitter."""
        from hf_maskdp.anonymize.body import Mesh, make_body_model
        from hf_maskdp.anonymize.fit import fit_frame, smooth_cameras

        num_frames, height, width = shape
        meshes: list[list] = [[] for _ in range(num_frames)]
        people: list[list] = [[] for _ in range(num_frames)]
        options = {"model_path": self.config.smplh_model_path} if self.config.body_model == "smplh" else {}
        fitted_frames = []
        for person, (track, appearance) in enumerate(zip(tracks, appearances)):
            body = make_body_model(self.config.body_model, appearance, **options)
            fits = {}
            for t in np.flatnonzero(track.valid):
                try:
                    fit = fit_frame(
                        body, track.keypoints_3d[t], track.keypoints_2d[t], track.visibility[t], K, width, height
                    )
                except (ValueError, np.linalg.LinAlgError):  # a degenerate pose (e.g. all landmarks at one point)
                    continue  # reported by the status as a failed fit, never rendered
                if fit.is_finite():
                    fits[t] = fit
            fits = smooth_cameras(fits, num_frames, self.config.camera_smoothing_sigma)
            for t, fit in fits.items():
                R, tvec = fit.camera.R.astype(np.float32), fit.camera.t.astype(np.float32)
                meshes[t].append(Mesh(fit.mesh.vertices @ R.T + tvec, fit.mesh.faces, fit.mesh.vertex_colors))
                people[t].append(person)
            fitted_frames.append(np.isin(np.arange(num_frames), list(fits)))
        return meshes, people, fitted_frames

    def _render(self, meshes: list[list], K, shape) -> list:
        """Render all people of a frame together with one camera, so depth resolves overlaps."""
        from hf_maskdp.anonymize.render import Camera, MeshRenderer

        height, width = shape[1:]
        if (width, height) not in self._renderers:
            self._renderers[(width, height)] = MeshRenderer(width, height, self.config.supersample)
        camera = Camera(K=K, R=np.eye(3), t=np.zeros(3), width=width, height=height)
        return [self._renderers[(width, height)].render(people, camera) if people else None for people in meshes]

    def _erase_region(self, frames: np.ndarray, tracks) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(the people's pose region, the region to erase, the person segmentation of the real frames or None).

        With `attach_segments`, the residual check's segmentation model runs on the real frames: the region to
        erase adds its blobs attached to the people (`inpaint.attached_segments`), and the inpainter never copies
        a segmented pixel into the region (a real person left real in one frame would be painted into the others,
        static, and pass the check's motion test: `TemporalBackgroundInpainter`)."""
        from hf_maskdp.anonymize.inpaint import attached_segments, person_region

        cfg = self.config
        region = np.zeros(frames.shape[:3], bool)
        for track in tracks:
            region |= person_region(track, frames.shape[:3], cfg.region_dilation)
        if cfg.attach_segments is None:
            return region, region, None
        checker = self._checker()
        segmented = checker.segmentation(frames) > checker.segmentation_threshold
        attached = attached_segments(segmented, region, cfg.attach_segments, cfg.region_dilation)
        return region, region | attached, segmented

    def _residual_status(
        self,
        frames: np.ndarray,
        avatar: np.ndarray,
        erased: np.ndarray | None = None,
        real_frames: np.ndarray | None = None,
    ) -> str | None:
        """`residual_person: ...` when the independent detectors see a real person outside the avatars (in
        `frames`, the output; `real_frames`, the input, shows where the found people's bodies are)."""
        if not self.config.residual_check:
            return None
        return self._checker().check(frames, avatar, erased, real_frames)

    def _checker(self):
        """The residual check (its segmentation model also finds what `_erase_region` attaches), once per process."""
        if self._residual is None:
            from hf_maskdp.anonymize.residual import ResidualPersonCheck

            self._residual = ResidualPersonCheck()
        return self._residual

    def _pose_source(self):
        if self._pose is None:
            from hf_maskdp.anonymize.pose import make_pose_source

            cfg = self.config
            self._pose = make_pose_source(
                cfg.pose_source, cfg.pose_column, cfg.min_detection_confidence, cfg.max_people
            )
        return self._pose

    def _inpainter(self):
        if self._inpaint is None:
            from hf_maskdp.anonymize.inpaint import make_inpainter

            self._inpaint = make_inpainter(self.config.inpainter)
        return self._inpaint

    def _refiner(self):
        """The diffusion refiner, loaded once per process (None without `refiner=`)."""
        if self._refine is None and self.config.refiner is not None:
            from hf_maskdp.anonymize.refine import Refiner

            refiner = Refiner(self.config.refiner_config())
            try:
                refiner.pipeline()  # load now: a wrong id or path fails before any clip
            except OSError as error:
                raise FileNotFoundError(
                    f"refiner={self.config.refiner!r} is not a diffusers pipeline that loads here ({error}); pass a "
                    "folder saved with save_pretrained or a Hub id such as stable-diffusion-v1-5/stable-diffusion-v1-5"
                ) from error
            self._refine = refiner
        return self._refine


def _status(tracks, fitted: list[np.ndarray], avatar: np.ndarray, min_coverage: float) -> str:
    """`ok`, or `partial: ...` naming the first reason the clip may still show a real person:
    a person without a pose in some frames (lost beyond the gap filler, or not yet/no longer
    found), a pose that could not be fitted, or an avatar covering too little of its person's
    segmentation (a poor fit). `min_fit_coverage=0.35` separates, on astronaut clips (a bulky
    spacesuit around a slim avatar), 0.47-0.86 for correct fits from 0.26-0.32 with the person 90 px
    (40 % of the frame) away from the avatar; on the real clips of tests/data, 0.50-0.80 (pedestrians)
    and 0.41-0.61 (a close-up) for correct fits from 0.00-0.19 with the avatar moved by one body width
    (docs/benchmarks.md, "Real footage")."""
    num_frames = len(avatar)
    missing = ~np.all([track.valid for track in tracks], axis=0)
    if missing.any():
        first = np.flatnonzero(missing)[0]
        return f"{STATUS_PARTIAL}: {missing.sum()} of {num_frames} frames have a person without a tracked pose (first: frame {first})"
    for i, ok in enumerate(fitted):
        if not ok.all():
            return f"{STATUS_PARTIAL}: person {i} could not be fitted in {(~ok).sum()} of {num_frames} frames"
    for i, track in enumerate(tracks):
        for t in np.flatnonzero(track.detected):
            person = track.person_mask[t] > 0.5 if track.person_mask is not None else None
            if person is None or person.sum() < 50:  # no segmentation to check against
                continue
            coverage = (avatar[t] & person).sum() / person.sum()
            if coverage < min_coverage:
                return f"{STATUS_PARTIAL}: poor fit: the avatar of person {i} covers {coverage:.0%} of them in frame {t} (min {min_coverage:.0%})"
    return STATUS_OK


@contextmanager
def _timed(timings: Counter, stage: str):
    start = time.perf_counter()
    yield
    timings[stage] += time.perf_counter() - start


def _check_not_forked() -> None:
    """mediapipe crashes and EGL hangs in a process forked from one that already used them, as
    `map(num_proc=N)` workers are; fail clearly instead."""
    global _models_pid
    if _models_pid is not None and _models_pid != os.getpid():
        raise RuntimeError(
            "AvatarAnonymizer: this worker was forked from a process that already ran the anonymizer; "
            "mediapipe and EGL cannot start again after such a fork. Call map(num_proc=N) before any "
            "single-process use in this process, or run `multiprocess.set_start_method('spawn', force=True)` first."
        )
    _models_pid = os.getpid()


def _looks_batched(value: Any) -> bool:
    """For plain dicts (not from `datasets`): a list of clips rather than one clip's frames."""
    if not isinstance(value, (list, tuple)) or not value:
        return False
    return all(isinstance(v, (str, bytes, dict, os.PathLike)) or getattr(v, "ndim", 0) == 4 for v in value)


def _clip_name(video: Any) -> str:
    if isinstance(video, dict):
        video = video.get("path") or "<video bytes>"
    if isinstance(video, (str, os.PathLike)):
        return f"clip {os.path.basename(str(video))!r}"
    if isinstance(video, (bytes, bytearray)):
        return "clip <video bytes>"
    return "clip <frames>"
