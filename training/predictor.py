"""A PyTorch `Predictor` for the engine's sliding window, and whole-case prediction for the
evaluation code (training.experiment) built on the engine's sliding window and `Undo`."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from covseg.engine.geometry import Geometry
from covseg.engine.package import AIR_HU, Normalization
from covseg.engine.volume import Volume
from covseg.labels import DEFAULT_CONSOLIDATION_THRESHOLD_HU, Label
from covseg.training.config import Config


class TorchPredictor:
    """float32 (N, C, z, y, x) numpy -> float32 (N, K, z, y, x) logits, eval mode, no grad.

    `head` picks a multi-lesion decoder; AMP (bfloat16-free float16 autocast) only on CUDA.
    """

    def __init__(self, model: nn.Module, device: str | torch.device = "cpu", *, amp: bool = False,
                 head: str | None = None) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.amp = amp and self.device.type == "cuda"
        self.head = head
        self.provider = "torch-cuda" if self.device.type == "cuda" else "torch-cpu"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        kwargs: dict[str, Any] = {} if self.head is None else {"head": self.head}
        with torch.inference_mode(), torch.autocast(self.device.type, enabled=self.amp):
            out = self.model(x, **kwargs)
        if isinstance(out, list | tuple):
            out = out[0]
        return out.float().cpu().numpy()


def predict_array(model: nn.Module, image: np.ndarray, config: Config, *, device: str = "cpu",
                  head: str | None = None, pad_value: float = 0.0) -> np.ndarray:
    """Softmax probabilities (K, z, y, x) of a normalised (C, z, y, x) image (engine sliding window)."""
    from covseg.engine.sliding_window import sliding_window

    was_training = model.training
    predictor = TorchPredictor(model, device, amp=config.run.amp, head=head)
    try:
        return sliding_window(image, predictor, patch=config.schedule.patch_zyx, overlap=config.evaluation.overlap,
                              batch_size=config.schedule.batch_size, pad_value=pad_value)
    finally:
        model.train(was_training)


def predict_case(result: Any, config: Config, image: Volume) -> Volume:
    """A covseg label map on `image`'s grid from a FitResult (its model and normalisation).

    Training classes map back to covseg labels; the "infection" group splits into ground glass
    and consolidation at the default HU threshold, as the engine's postprocessing does.
    """
    import SimpleITK as sitk

    from covseg.engine.preprocess import Undo, _resample_to
    from covseg.training.data import _oriented, class_values

    normalization: Normalization = result.normalization
    oriented = _oriented(image)
    spacing = config.data.spacing_zyx_mm
    resampled = _resample_to(oriented, tuple(oriented.GetSpacing()) if spacing is None else tuple(spacing[::-1]))
    array = normalization.apply(sitk.GetArrayFromImage(resampled))[None]
    probabilities = predict_array(result.model, array, config, device=getattr(result, "device", "cpu"),
                                  pad_value=normalization.value_of(AIR_HU))
    full = (slice(0, image.array.shape[0]), slice(0, image.array.shape[1]), slice(0, image.array.shape[2]))
    undo = Undo(image.geometry, full, Geometry.from_sitk(resampled), ((0, 0), (0, 0), (0, 0)))
    classes = undo.labels_on_input(probabilities)
    labels = np.zeros(classes.shape, dtype=np.uint8)
    for index, name in enumerate(config.data.classes):
        if index == 0:
            continue
        values = class_values(name)
        labels[classes == index] = values[0]
        if name == "infection":
            solid = (classes == index) & (image.array >= DEFAULT_CONSOLIDATION_THRESHOLD_HU)
            labels[solid] = int(Label.INFECTION_CONSOLIDATION)
            labels[(classes == index) & ~solid] = int(Label.INFECTION_GROUND_GLASS)
    return image.with_array(labels)
