"""Attacks on the anonymization: can someone still tell who is in a clip?

- `identity_probe`: the attacker has clips of known people and trains a classifier to name the
  person in held-out clips of the same people. Run it on original clips (it must beat chance,
  or it proves nothing), on anonymized clips, and on their public view (what MaskDP's public
  branch reads, `VideoClipCollator.public_batch`): there, accuracy near chance is the goal.
- `face_check`: BlazeFace (mediapipe, full range) on input and output frames: faces found per
  frame, and whether a face found in the output lies on sensitive (real or inpainted) pixels.

Accuracies come with a Clopper-Pearson interval and a one-sided binomial test against chance.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class ProbeResult:
    """Identity accuracy on held-out clips, with its statistics (see `binomial_summary`)."""

    view: str
    probe: str
    correct: int
    total: int
    num_identities: int
    chance: float
    accuracy: float
    ci_low: float
    ci_high: float
    p_value: float  # one-sided: P(>= correct | the probe guesses independently of the identity)

    def to_dict(self) -> dict:
        return asdict(self)


def binomial_summary(correct: int, total: int, chance: float, confidence: float = 0.95) -> dict:
    """Accuracy, its two-sided Clopper-Pearson interval, and the p-value of "no better than chance"."""
    from scipy.stats import beta, binomtest

    if total < 1 or not 0 <= correct <= total:
        raise ValueError(f"need 0 <= correct <= total and total >= 1, got {correct}/{total}")
    tail = (1 - confidence) / 2
    low = 0.0 if correct == 0 else float(beta.ppf(tail, correct, total - correct + 1))
    high = 1.0 if correct == total else float(beta.ppf(1 - tail, correct + 1, total - correct))
    p_value = float(binomtest(correct, total, chance, alternative="greater").pvalue)
    return {"accuracy": correct / total, "ci_low": low, "ci_high": high, "p_value": p_value}


def chance_accuracy(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
    """Expected accuracy of guesses made independently of the true identity, with the same
    frequencies as the probe's guesses (Cohen's chance agreement; 1/K for uniform classes).
    A probe that learned nothing (e.g. always the commonest training identity) scores this."""
    guessed = np.bincount(predictions, minlength=num_classes) / len(predictions)
    actual = np.bincount(labels, minlength=num_classes) / len(labels)
    return float(guessed @ actual)


# ----------------------------------------------------------------------------- features and probes


def colour_features(pixel_values: torch.Tensor, bins: int = 6, grid: int = 4) -> torch.Tensor:
    """(B, T, 3, H, W) clips in [-1, 1] (VideoMAE normalization) -> (B, F) appearance features.

    A joint colour histogram over all pixels and frames (what people wear, their skin and hair,
    wherever they stand) and the mean colour of a `grid` x `grid` layout (where colours are).
    """
    x = pixel_values.float().clamp(-1, 1)
    b = x.shape[0]
    levels = ((x + 1) / 2 * bins).long().clamp(max=bins - 1)  # (B, T, 3, H, W)
    codes = (levels[:, :, 0] * bins + levels[:, :, 1]) * bins + levels[:, :, 2]
    codes = codes.reshape(b, -1)
    histogram = torch.zeros(b, bins**3).scatter_add_(1, codes, torch.ones(codes.shape)) / codes.shape[1]
    layout = F.adaptive_avg_pool2d(x.mean(1), grid).reshape(b, -1)
    return torch.cat([histogram.sqrt(), layout], dim=1)  # sqrt: the Hellinger embedding of a histogram


class LinearProbe(torch.nn.Module):
    """Multinomial logistic regression on standardized `colour_features`."""

    def __init__(self, num_features: int, num_classes: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(num_features))
        self.register_buffer("std", torch.ones(num_features))
        self.linear = torch.nn.Linear(num_features, num_classes)

    def forward(self, pixel_values):
        features = colour_features(pixel_values)
        return self.linear((features - self.mean) / self.std)

    def fit(self, pixel_values, labels, weight_decay: float = 1e-3, steps: int = 200):
        features = colour_features(pixel_values)
        self.mean, self.std = features.mean(0), features.std(0) + 1e-3
        z = (features - self.mean) / self.std
        optimizer = torch.optim.LBFGS(self.linear.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

        def closure():
            optimizer.zero_grad()
            loss = F.cross_entropy(self.linear(z), labels) + weight_decay * self.linear.weight.square().sum()
            loss.backward()
            return loss

        optimizer.step(closure)
        return self


class TinyVideoCNN(torch.nn.Module):
    """Three 3D conv blocks, global average pooling and a linear head (trained with horizontal flips)."""

    def __init__(self, num_classes: int, width: int = 16):
        super().__init__()
        layers, channels = [], 3
        for out, stride in ((width, (1, 2, 2)), (2 * width, 1), (4 * width, 1)):  # the first halves H, W: cheaper
            layers += [
                torch.nn.Conv3d(channels, out, 3, stride=stride, padding=1),
                torch.nn.BatchNorm3d(out),
                torch.nn.ReLU(),
                torch.nn.MaxPool3d((1, 2, 2)),
            ]
            channels = out
        self.features = torch.nn.Sequential(*layers)
        self.head = torch.nn.Linear(channels, num_classes)

    def forward(self, pixel_values):  # (B, T, 3, H, W)
        return self.head(self.features(pixel_values.transpose(1, 2)).mean((2, 3, 4)))

    def fit(self, pixel_values, labels, epochs: int = 30, batch_size: int = 16, lr: float = 3e-3, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        optimizer = torch.optim.AdamW(self.parameters(), lr=lr, weight_decay=1e-2)
        self.train()
        for _ in range(epochs):
            for batch in torch.randperm(len(labels), generator=generator).split(batch_size):
                x = pixel_values[batch]
                x = torch.where(torch.rand(len(batch), 1, 1, 1, 1, generator=generator) < 0.5, x, x.flip(-1))
                loss = F.cross_entropy(self(x), labels[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        self.eval()
        return self


PROBES = ("linear", "cnn")


def identity_probe(
    train_pixels: torch.Tensor,
    train_identities,
    test_pixels: torch.Tensor,
    test_identities,
    probe: str = "linear",
    view: str = "",
    seed: int = 0,
) -> ProbeResult:
    """Train an identity classifier on `train_pixels` (B, T, 3, H, W) and score it on `test_pixels`.

    The test clips show the same people in other clips (other actions, scenes, cameras).
    """
    if probe not in PROBES:
        raise ValueError(f"probe={probe!r}: choose one of {PROBES}")
    train_ids = torch.as_tensor(np.asarray(train_identities), dtype=torch.long)
    test_ids = np.asarray(test_identities, dtype=np.int64)
    if len(train_ids) != len(train_pixels) or len(test_ids) != len(test_pixels):
        raise ValueError("each clip needs exactly one identity: pixels and identities differ in length")
    num_classes = int(max(train_ids.max().item(), test_ids.max())) + 1
    torch.manual_seed(seed)
    if probe == "linear":
        model = LinearProbe(colour_features(train_pixels[:1]).shape[1], num_classes).fit(train_pixels, train_ids)
    else:
        model = TinyVideoCNN(num_classes).fit(train_pixels, train_ids, seed=seed)
    with torch.no_grad():
        predictions = torch.cat([model(x).argmax(1) for x in test_pixels.split(32)]).numpy()
    correct = int((predictions == test_ids).sum())
    chance = chance_accuracy(predictions, test_ids, num_classes)
    return ProbeResult(
        view, probe, correct, len(test_ids), num_classes, chance, **binomial_summary(correct, len(test_ids), chance)
    )


def clip_pixels(rows, collator, public_view: bool = False, batch_size: int = 16) -> torch.Tensor:
    """`pixel_values` (B, T, 3, H, W) of dataset rows: full clips, or the public view MaskDP's
    public branch sees (sensitive pixels replaced before any resampling)."""
    collate = collator.public_batch if public_view else collator
    rows = list(rows)
    return torch.cat([collate(rows[i : i + batch_size])["pixel_values"] for i in range(0, len(rows), batch_size)])


# ----------------------------------------------------------------------------- faces


@dataclass
class FaceCheck:
    input_faces: list[int]  # faces found per input frame
    output_faces: list[int]  # faces found per output frame
    output_faces_on_sensitive: list[int]  # output faces whose box is mostly sensitive (real) pixels

    @property
    def leaked(self) -> bool:
        return any(self.output_faces_on_sensitive)


def face_boxes(detector, frame: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Pixel boxes (x0, y0, x1, y1) of the faces a mediapipe FaceDetection finds in an RGB frame."""
    height, width = frame.shape[:2]
    boxes = []
    for detection in detector.process(np.ascontiguousarray(frame)).detections or []:
        box = detection.location_data.relative_bounding_box
        x0, y0 = max(0, int(box.xmin * width)), max(0, int(box.ymin * height))
        x1, y1 = min(width, int((box.xmin + box.width) * width)), min(height, int((box.ymin + box.height) * height))
        if x1 > x0 and y1 > y0:
            boxes.append((x0, y0, x1, y1))
    return boxes


def face_check(input_frames, output_frames, sensitive_mask, max_public_share: float = 0.5) -> FaceCheck:
    """Run BlazeFace full range (`model_selection=1`) on every input and output frame.

    An output face "lies on sensitive pixels" when at most `max_public_share` of its box is
    public (avatar) pixels: a face there was not drawn by the avatar renderer.
    """
    from hf_maskdp.anonymize.pose import import_mediapipe, quiet_mediapipe_logs

    mp = import_mediapipe()
    found_in, found_out, on_sensitive = [], [], []
    with quiet_mediapipe_logs(), mp.solutions.face_detection.FaceDetection(model_selection=1) as detector:
        for before, after, mask in zip(input_frames, output_frames, sensitive_mask):
            found_in.append(len(face_boxes(detector, before)))
            boxes = face_boxes(detector, after)
            found_out.append(len(boxes))
            on_sensitive.append(sum((~mask[y0:y1, x0:x1]).mean() <= max_public_share for x0, y0, x1, y1 in boxes))
    return FaceCheck(found_in, found_out, on_sensitive)
