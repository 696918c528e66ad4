"""Synthetic chest CT phantoms with exact ground truth (numpy + scipy only; no torch).

    from covseg.training.synthesis import PhantomConfig, make_phantom
    phantom = make_phantom(PhantomConfig(seed=1, lesions=("covid", "nodule", "effusion")))
    phantom.image   # Volume: float32 HU (integral values), (z, y, x), identity direction, LPS
    phantom.labels  # Volume: uint8 ground truth, values from covseg/labels.py

Label semantics are documented once, in `covseg.training.synthesis.phantom`; HU bands per label in
`config.LABEL_HU_BANDS`. Writers: `dicom_series.write_dicom_series` (CT Image Storage series),
`dicom_series.write_nifti`, and `study.write_study` (the folder `covseg sample` writes).

Modules: config (PhantomConfig, tissue HU), frame (reference frame), anatomy, bones, airways_vessels,
raster (tube drawing), sites (where lesions go), lesions (COVID-19 patterns, nodules), effusion,
contrast (portal venous phase: enhanced blood, liver, spleen, kidneys), dependent (the dependent density
band of normal lung), mosmed_shapes (real lesion shapes, CC BY-NC-ND, generation time only), imaging
(texture, blur, noise), phantom (make_phantom), dicom_series, study.
"""

from covseg.training.synthesis.config import LABEL_HU_BANDS, LESION_KINDS, PhantomConfig
from covseg.training.synthesis.phantom import Phantom, make_phantom

__all__ = ["LABEL_HU_BANDS", "LESION_KINDS", "Phantom", "PhantomConfig", "make_phantom"]
