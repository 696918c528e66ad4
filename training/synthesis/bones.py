"""Spine, ribs with costal cartilage, and sternum (cortical rim ~850 HU, cancellous core ~320 HU).

Ribs are drawn in a ring just outside the thoracic cavity; each rib descends by about 4 cm from the
spine to the front, as real ribs do, so an axial slice cuts several ribs at different angles.
"""

from __future__ import annotations

import numpy as np

from covseg.training.synthesis import config as c
from covseg.training.synthesis.anatomy import VERTEBRA_AXES, VERTEBRA_CENTRE, AnatomyParams
from covseg.training.synthesis.frame import HEIGHT, Frame

RIB_COUNT = 12
RIB_PERIOD = 23.0  # reference mm between ribs along z (posteriorly)
RIB_DROP = 80.0  # how much lower a rib's front end is than its back end
CARTILAGE_HU = 130.0
POSTERIOR_ELEMENTS_HU = 550.0


def _spine_plane(frame: Frame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ny, nx) masks: vertebral body, its cortical rim, and the posterior arch (processes, lamina)."""
    Y, X = frame.plane()
    cx, cy = VERTEBRA_CENTRE
    body_e = ((X - cx) / VERTEBRA_AXES[0]) ** 2 + ((Y - cy) / VERTEBRA_AXES[1]) ** 2
    body = body_e < 1.0
    rim = body & (body_e > 0.8)
    canal_r = np.hypot(X - cx, Y - (cy + 25.0))
    lamina = (canal_r > 8.0) & (canal_r < 13.0) & (cy + 22.0 < Y)
    spinous = (np.abs(X - cx) < 3.5) & (cy + 30.0 < Y) & (cy + 48.0 > Y)
    transverse = (np.abs(Y - (cy + 25.0)) < 4.0) & (np.abs(X - cx) > 8.0) & (np.abs(X - cx) < 24.0)
    pedicles = (np.abs(X - cx) > 7.0) & (np.abs(X - cx) < 12.0) & (cy + 10.0 < Y) & (cy + 25.0 > Y)
    return body, rim, lamina | spinous | transverse | pedicles


def _add_spine(frame: Frame, hu: np.ndarray) -> None:
    body, rim, arch = _spine_plane(frame)
    disc = ((frame.z + 8.0) % 26.0) < 5.0  # intervertebral discs, every 26 mm
    body_hu = np.where(rim, c.CORTICAL_BONE_HU, c.CANCELLOUS_BONE_HU).astype(np.float32)
    for k in range(frame.shape[0]):
        plane = hu[k]
        plane[body] = c.DISC_HU if disc[k] else body_hu[body]
        plane[arch] = POSTERIOR_ELEMENTS_HU


def _ribs(frame: Frame, p: AnatomyParams, hu: np.ndarray) -> None:
    Y, X = frame.plane()
    a_c, b_c = p.cavity_axes
    dx, dy = np.broadcast_arrays(X, Y - p.body_yc)
    rho = np.hypot(dx, dy)
    rn = np.sqrt((dx / a_c) ** 2 + (dy / b_c) ** 2)
    outward = (rn - 1.0) * rho / np.maximum(rn, 1e-6)  # approximate distance outside the cavity
    ring = (outward > -1.0) & (outward < 14.0) & (np.abs(X) > 20.0)
    j, i = np.nonzero(ring)
    phi = np.arccos(np.clip(dy[j, i] / np.maximum(rho[j, i], 1e-6), -1.0, 1.0))  # 0 back, pi front
    radial = outward[j, i] - 6.0
    drop = RIB_DROP * phi / np.pi
    z0 = p.apex + 5.0 - (RIB_COUNT - 1) * RIB_PERIOD  # the lowest rib's back end
    for k in range(frame.shape[0]):
        u = (frame.z[k] + drop - z0) / RIB_PERIOD
        number = np.rint(u)
        dz = (u - number) * RIB_PERIOD
        e = (dz / 5.0) ** 2 + (radial / 3.5) ** 2
        # Ribs 1-7 (high numbers here) reach the sternum through cartilage; 8-10 end earlier; 11-12 float.
        bone_end = np.where(number >= 5, 2.55, np.where(number >= 2, 2.3, 1.7))
        cartilage_end = np.where(number >= 5, 3.0, np.where(number >= 2, 2.75, 0.0))
        valid = (number >= 0) & (number < RIB_COUNT) & (e < 1.0)
        bone = valid & (phi < bone_end)
        cartilage = valid & (phi >= bone_end) & (phi < cartilage_end)
        plane = hu[k]
        plane[j[bone], i[bone]] = np.where(e[bone] < 0.4, c.CANCELLOUS_BONE_HU, c.CORTICAL_BONE_HU)
        plane[j[cartilage], i[cartilage]] = CARTILAGE_HU


def _sternum(frame: Frame, p: AnatomyParams, hu: np.ndarray) -> None:
    Y, X = frame.plane()
    _, b_c = p.cavity_axes
    cy = p.body_yc - b_c - 6.0
    e = (X / 15.0) ** 2 + ((Y - cy) / 6.0) ** 2
    section = np.where(e < 0.45, c.CANCELLOUS_BONE_HU, c.CORTICAL_BONE_HU).astype(np.float32)
    inside = e < 1.0
    for k in np.flatnonzero((frame.z > 0.42 * HEIGHT) & (frame.z < 0.88 * HEIGHT)):
        hu[k][inside] = section[inside]


def add_bones(frame: Frame, p: AnatomyParams, hu: np.ndarray) -> None:
    """Draw spine, ribs and sternum into `hu` (in place)."""
    _add_spine(frame, hu)
    _ribs(frame, p, hu)
    _sternum(frame, p, hu)
