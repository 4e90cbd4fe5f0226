"""Diffusion refinement with tiny random-weight pipelines saved to disk and loaded by from_pretrained(path),
alone and inside AvatarAnonymizer (one tiny pipeline shared by every test of this file)."""

import numpy as np
import pytest

from hf_maskdp.anonymize.body import Appearance
from hf_maskdp.anonymize.composite import composite
from hf_maskdp.anonymize.pipeline import AnonymizerConfig, AvatarAnonymizer
from hf_maskdp.anonymize.refine import Refiner, RefinerConfig, describe
from hf_maskdp.anonymize.render import Camera, Mesh, MeshRenderer

pytest.importorskip("diffusers")
WIDTH, HEIGHT = 48, 40
TINY = dict(resolution=32, num_inference_steps=2, strength=0.5, guidance_scale=2.0)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from threads, and on a busy 2-core machine torch's threads
    oversubscribe it: one refine call measured 0.06 s with 1 thread, 0.7-1.5 s with 2."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_tokenizer():
    """A character-level CLIP tokenizer (transformers 5 ignores vocab_file=: pass vocab and merges)."""
    from transformers import CLIPTokenizer

    symbols = [chr(code) for code in range(33, 127)]  # printable ASCII: byte-level BPE keeps them as is
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for symbol in symbols + [s + "</w>" for s in symbols]:
        vocab[symbol] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def save_tiny_pipeline(path, controlnet_path=None):
    import torch
    from diffusers import (
        AutoencoderKL,
        ControlNetModel,
        DDIMScheduler,
        StableDiffusionImg2ImgPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    blocks = dict(
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        cross_attention_dim=16,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    )
    unet = UNet2DConditionModel(
        in_channels=4, out_channels=4, sample_size=16, up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), **blocks
    )
    vae = AutoencoderKL(
        block_out_channels=(8, 16),
        norm_num_groups=4,
        latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=16,
            intermediate_size=32,
            num_attention_heads=2,
            num_hidden_layers=2,
            vocab_size=520,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionImg2ImgPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tiny_tokenizer(),
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(path)
    if controlnet_path is not None:
        ControlNetModel(in_channels=4, conditioning_embedding_out_channels=(8, 16), **blocks).save_pretrained(
            controlnet_path
        )


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_sd")
    save_tiny_pipeline(root / "sd", root / "controlnet")
    return root / "sd", root / "controlnet"


@pytest.fixture(scope="module")
def public_refiner(model_dirs):
    return Refiner.from_pretrained(model_dirs[0], **TINY)


def box(x0, x1, y0, y1, depth, color):
    """A box facing the camera (a person stand-in) spanning x0..x1, y0..y1 metres."""
    corners = np.array([[x, y, z] for x in (x0, x1) for y in (y0, y1) for z in (depth, depth + 0.3)])
    faces = [
        [0, 1, 3],
        [0, 3, 2],
        [4, 6, 7],
        [4, 7, 5],
        [0, 4, 5],
        [0, 5, 1],
        [2, 3, 7],
        [2, 7, 6],
        [0, 2, 6],
        [0, 6, 4],
        [1, 5, 7],
        [1, 7, 3],
    ]
    return Mesh(corners, faces, np.tile(color, (8, 1)))


@pytest.fixture(scope="module")
def scene():
    """Two overlapping people (person 1 in front), their looks and identity seeds, and two real frames."""
    camera = Camera.look_at(eye=[0, 0, -3.0], target=[0, 0, 0], width=WIDTH, height=HEIGHT)
    meshes = [box(-0.9, -0.1, -0.8, 0.8, 0.0, (0.8, 0.1, 0.1)), box(-0.3, 0.6, -0.6, 0.7, -0.5, (0.1, 0.3, 0.8))]
    render = MeshRenderer(WIDTH, HEIGHT).render(meshes, camera)
    rng = np.random.default_rng(0)
    looks = [Appearance.sample(rng), Appearance.sample(rng)]
    frames = [rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8) for _ in range(2)]
    return render, looks, [11, 22], frames


def test_loads_with_from_pretrained_and_redraws_only_avatar_pixels(public_refiner, scene):
    render, looks, seeds, frames = scene
    refiner = public_refiner
    assert not refiner.reads_real_pixels
    refined = refiner.refine(render, looks, seeds, frame=frames[0])
    avatar = render.coverage > 0
    assert {0, 1} <= set(np.unique(render.person_index[avatar]))
    np.testing.assert_array_equal(refined.rgb[~avatar], render.rgb[~avatar])
    assert (refined.rgb[avatar] != render.rgb[avatar]).any(axis=1).mean() > 0.5
    for name in ("coverage", "depth", "person_index"):
        np.testing.assert_array_equal(getattr(refined, name), getattr(render, name))


@pytest.mark.parametrize("controlnet", [False, True], ids=["img2img", "controlnet-depth"])
def test_public_refiner_never_reads_real_pixels(model_dirs, scene, controlnet):
    render, looks, seeds, frames = scene
    config = dict(TINY, controlnet_id=str(model_dirs[1]) if controlnet else None)
    refiner = Refiner.from_pretrained(model_dirs[0], **config)
    first = refiner.refine(render, looks, seeds, frame=frames[0])
    second = refiner.refine(render, looks, seeds, frame=frames[1])  # a different real frame
    np.testing.assert_array_equal(first.rgb, second.rgb)
    assert not refiner.sensitive_pixels(render).any()
    # so the composited avatar pixels are public and identical whatever the real frame was
    out_a, sensitive_a, _ = composite(frames[0], first)
    out_b, sensitive_b, _ = composite(frames[1], second)
    np.testing.assert_array_equal(sensitive_a, sensitive_b)
    public = ~sensitive_a
    assert public.sum() > 100
    np.testing.assert_array_equal(out_a[public], out_b[public])


def test_real_context_reports_its_pixels_as_sensitive(model_dirs, scene):
    render, looks, seeds, frames = scene
    refiner = Refiner.from_pretrained(model_dirs[0], context="real", **TINY)
    assert refiner.reads_real_pixels
    first = refiner.refine(render, looks, seeds, frame=frames[0])
    second = refiner.refine(render, looks, seeds, frame=frames[1])
    assert (first.rgb != second.rgb).any()  # it really reads the frame ...
    mask = refiner.sensitive_pixels(render)
    np.testing.assert_array_equal(mask, render.coverage > 0)  # ... so every refined pixel is sensitive
    _, sensitive, _ = composite(frames[0], first)
    assert (sensitive | mask).all()  # the pipeline's rule: sensitive |= refiner.sensitive_pixels(render)
    with pytest.raises(ValueError, match="frame="):
        refiner.refine(render, looks, seeds)


def test_same_person_same_noise_every_frame(public_refiner, scene):
    render, looks, seeds, _ = scene
    refiner = public_refiner
    np.testing.assert_array_equal(refiner.refine(render, looks, seeds).rgb, refiner.refine(render, looks, seeds).rgb)
    assert (refiner.refine(render, looks, [12, 23]).rgb != refiner.refine(render, looks, seeds).rgb).any()


def test_prompt_describes_the_sampled_look():
    look = Appearance(skin=(0.33, 0.21, 0.14), shirt=(0.8, 0.1, 0.1), trousers=(0.1, 0.25, 0.7), long_sleeves=False)
    prompt = describe(look)
    assert "very dark skin" in prompt and "red short-sleeved shirt" in prompt and "blue trousers" in prompt


def test_bad_config_names_the_problem():
    with pytest.raises(ValueError, match="context='pixels'"):
        RefinerConfig(model_id="x", context="pixels")
    with pytest.raises(ValueError, match="multiple of 8"):
        RefinerConfig(model_id="x", resolution=30)
    with pytest.raises(ValueError, match="strength"):
        RefinerConfig(model_id="x", strength=0.0)


# ----------------------------------------------------------------------------- inside AvatarAnonymizer


@pytest.fixture(scope="module")
def astronaut_pose():
    """Three frames of the astronaut photo (a real person) and MediaPipe's pose of her: a public pose column."""
    pytest.importorskip("mediapipe")
    cv2 = pytest.importorskip("cv2")
    skimage_data = pytest.importorskip("skimage.data")
    frames = np.stack(
        [
            cv2.resize(skimage_data.astronaut()[10:450, 4 * t : 440 + 4 * t], (128, 128), interpolation=cv2.INTER_AREA)
            for t in range(3)
        ]
    )
    (track,) = AvatarAnonymizer()._pose_source()(frames)
    pose = {"keypoints_2d": track.keypoints_2d, "keypoints_3d": track.keypoints_3d, "visibility": track.visibility}
    other = np.stack(
        [cv2.resize(skimage_data.chelsea()[:, 20 + 4 * t : 320 + 4 * t], (128, 128)) for t in range(3)]
    )  # a cat
    return frames, other, pose


def anonymize(frames, pose, **options):
    # Given poses carry no segmentation: parts of the spacesuit stay real and the residual-person
    # check rightly withholds the clip (test_real_footage.py); what is tested here is the mask.
    anonymizer = AvatarAnonymizer(pose_source="given", seed=3, residual_check=False, **options)
    return anonymizer.anonymize_clip(frames, {"pose": pose})


def test_pipeline_render_refiner_keeps_the_mask_and_reads_no_real_pixel(model_dirs, astronaut_pose):
    frames, other, pose = astronaut_pose
    plain = anonymize(frames, pose)
    refine = dict(refiner=str(model_dirs[0]), refiner_options=TINY)
    a, b = anonymize(frames, pose, **refine), anonymize(other, pose, **refine)  # same poses, different real pixels
    assert plain.status == a.status == b.status == "ok"
    assert plain.refiner is None and a.refiner == f"{model_dirs[0]} (context=render)"
    np.testing.assert_array_equal(a.sensitive_mask, plain.sensitive_mask)  # the mask is the unrefined one
    np.testing.assert_array_equal(b.sensitive_mask, plain.sensitive_mask)
    public = ~a.sensitive_mask
    assert public.mean() > 0.05
    np.testing.assert_array_equal(a.frames[public], b.frames[public])  # bit-identical whatever the real frames
    assert (a.frames[public] != plain.frames[public]).any(axis=-1).mean() > 0.5  # and really redrawn
    assert (a.frames[~public] != b.frames[~public]).any()  # (the real pixels did differ)


def test_pipeline_real_context_marks_every_avatar_pixel_sensitive(model_dirs, astronaut_pose):
    frames, other, pose = astronaut_pose
    with pytest.warns(UserWarning, match="reads real pixels"):
        config = AnonymizerConfig(
            pose_source="given",
            seed=3,
            residual_check=False,  # given poses: no segmentation (see anonymize above)
            refiner=str(model_dirs[0]),
            refiner_options=dict(TINY, context="real"),
        )
    anonymizer = AvatarAnonymizer(config)
    a, b = anonymizer.anonymize_clip(frames, {"pose": pose}), anonymizer.anonymize_clip(other, {"pose": pose})
    assert a.status == "ok" and a.refiner.endswith("(context=real)")
    assert a.avatar_mask.mean() > 0.05 and a.sensitive_mask.all()  # no public pixel left
    assert (a.frames[a.avatar_mask] != b.frames[a.avatar_mask]).any()  # the refiner did read the real frames
    row = anonymizer({"video": frames, "pose": pose})
    from hf_maskdp.video import decode_mask

    assert decode_mask(row["sensitive_mask"]).all()


class RecordingRefiner(Refiner):
    """The real refiner, noting which people each call's meshes belong to (by seed)."""

    calls: list

    def refine(self, render, appearances, seeds, frame=None):
        self.calls.append(
            (sorted(np.unique(render.person_index[render.coverage > 0]).tolist()), list(seeds), appearances)
        )
        return super().refine(render, appearances, seeds, frame=frame)


def test_pipeline_gives_each_mesh_its_own_persons_look_and_seed(model_dirs, astronaut_pose):
    """Two people; person 0 is lost in frame 1, so there mesh 0 is person 1."""
    frames, _, pose = astronaut_pose
    pair = np.concatenate([frames, frames], axis=2)
    right = {key: value.copy() for key, value in pose.items()}
    right["keypoints_2d"][..., 0] += 128
    left = {key: value.copy() for key, value in pose.items()}
    left["keypoints_2d"][1] = np.nan
    anonymizer = AvatarAnonymizer(pose_source="given", max_gap=0, refiner=str(model_dirs[0]), refiner_options=TINY)
    anonymizer._refine = RecordingRefiner(anonymizer.config.refiner_config())
    anonymizer._refine.calls = []
    result = anonymizer.anonymize_clip(pair, {"pose": [left, right]})
    assert result.status.startswith("partial: 1 of 3 frames")  # (withheld: a person without a pose)
    identities = result.identities
    assert [seeds for _, seeds, _ in anonymizer._refine.calls] == [identities, [identities[1]], identities]
    assert [meshes for meshes, _, _ in anonymizer._refine.calls] == [[0, 1], [0], [0, 1]]
    looks = [Appearance.sample(np.random.default_rng(identity)) for identity in identities]
    assert anonymizer._refine.calls[1][2] == [looks[1]]


def test_pipeline_refiner_options_are_checked(model_dirs, tmp_path):
    with pytest.raises(ValueError, match="without refiner="):
        AnonymizerConfig(refiner_options={"context": "real"})
    with pytest.raises(ValueError, match=r"unknown \['strenght'\]; choose from .*'strength'"):
        AnonymizerConfig(refiner="x", refiner_options={"strenght": 0.3})
    with pytest.raises(ValueError, match="context='pixels'"):
        AnonymizerConfig(refiner="x", refiner_options='{"context": "pixels"}')  # JSON, as from a command line
    anonymizer = AvatarAnonymizer(refiner=str(tmp_path / "no-such-model"))
    with pytest.raises(
        FileNotFoundError, match="no-such-model' is not a diffusers pipeline"
    ):  # stops the run, not a clip status
        anonymizer.anonymize_clip(np.zeros((1, 32, 32, 3), np.uint8))


def test_cli_smplh_body_and_refiner_in_real_context(model_dirs, astronaut_pose, tmp_path, capsys):
    import json

    import datasets
    from test_smplh import write_synthetic_smplh

    from hf_maskdp.cli import main
    from hf_maskdp.video import decode_mask, encode_video

    frames, _, _ = astronaut_pose
    (tmp_path / "in" / "wave").mkdir(parents=True)
    (tmp_path / "in" / "wave" / "clip.mp4").write_bytes(encode_video(frames))
    smplh = write_synthetic_smplh(tmp_path / "SMPLH_NEUTRAL.npz")
    with pytest.warns(UserWarning, match="reads real pixels"):
        code = main(
            [
                "anonymize",
                str(tmp_path / "in"),
                str(tmp_path / "out"),
                "--body-model",
                "smplh",
                "--smplh-model-path",
                str(smplh),
                "--refiner",
                str(model_dirs[0]),
                "--refiner-context",
                "real",
                "--refiner-options",
                json.dumps(TINY),
            ]
        )
    assert code == 0, capsys.readouterr().err
    (row,) = datasets.load_from_disk(str(tmp_path / "out"))["train"]
    assert row["anonymization"] == "ok" and decode_mask(row["sensitive_mask"]).all()  # real context: nothing public
