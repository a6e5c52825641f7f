"""MTCNN batched over frames and boxes: facenet-pytorch's trained P-, R- and O-Nets and its
algorithm (min face 20 px, pyramid factor 0.709, thresholds 0.6 / 0.7 / 0.7, NMS 0.5 per image
and scale then 0.7 per image (IoU), R-Net NMS 0.7, final NMS 0.7 over the smaller box ("Min")),
run so that on a GPU the host waits a fixed number of times per call, whatever the number of
frames and boxes: every host wait goes through ``_select``, ``_nms`` or ``_to_host`` (the
fake-CUDA test counts them there):

- P-Net: ``_select`` (cells over the threshold, all scales and frames at once), ``_nms`` per
  image and scale, ``_nms`` per image: 3;
- R-Net: ``_select`` (score over the threshold), ``_nms`` per image: 2;
- O-Net: ``_to_host``, one copy of every box's outputs; the threshold, landmarks, regression and
  the Min NMS run on the host on those few rows: 1.

Six per call (fewer when a stage leaves no box: counts are known after each wait). torchvision's
CUDA ``nms`` is one round trip (its overlap mask comes to the host, the kept indices go back).

Where this differs from facenet-pytorch's ``detect_face``: the R-/O-Net crops. facenet cuts
each box (truncated to integers, clipped to the frame) and resizes it with ``interpolate(mode=
"area")`` in a Python loop over boxes; here all boxes of all frames are averaged in one gather
from an integer summed-area table of the frames, over the same adaptive-average-pool cells, so
a crop equals facenet's up to float rounding. A box wholly outside the frame (facenet skips it
and misaligns its lists) gets a 1-pixel crop at the border. On a GPU, NMS groups are separated
by coordinate offsets in float64 (torchvision's: float32, or a loop over groups); on the CPU it is
torchvision's ``batched_nms``, as facenet's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import batched_nms, nms

from .transfer import to_device

MIN_FACE, THRESHOLDS, FACTOR = 20, (0.6, 0.7, 0.7), 0.709
NET_CHUNK = 512  # boxes per R-/O-Net call (with their crops), as facenet: bounds memory, waits for nothing


@dataclass
class Detections:
    """One frame's faces, most confident first (facenet's final NMS order)."""

    boxes_K4: np.ndarray  # float32 x0, y0, x1, y1
    probs_K: np.ndarray  # float32
    points_K52: np.ndarray  # float32 (x, y): eye, eye, nose, mouth corners


def _empty(n: int) -> list[Detections]:
    z = np.zeros
    return [Detections(z((0, 4), np.float32), z((0,), np.float32), z((0, 5, 2), np.float32)) for _ in range(n)]


# ---------------------------------------------------------------- the host waits (one each)
def _select(keep_N: torch.Tensor) -> torch.Tensor:
    """(K,) indices of the true entries: the host waits for K."""
    return keep_N.nonzero().squeeze(1)


def _nms(boxes_N4: torch.Tensor, scores_N: torch.Tensor, groups_N: torch.Tensor, iou: float) -> torch.Tensor:
    """(K,) kept indices, greedy IoU NMS within each group, by decreasing score. On a GPU the
    groups are separated by coordinate offsets and one ``nms`` runs (torchvision's per-group loop
    would wait once per group); on the CPU torchvision chooses (its loop is faster there)."""
    if boxes_N4.device.type == "cpu":
        return batched_nms(boxes_N4, scores_N, groups_N, iou)
    shifted_N4 = (boxes_N4 - boxes_N4.min()).double()
    span = shifted_N4.max() + 1
    return nms(shifted_N4 + (groups_N.double() * span)[:, None], scores_N, iou)


def _to_host(rows_NF: torch.Tensor) -> np.ndarray:
    """One device-to-host copy: the host waits for all the work before it."""
    return rows_NF.cpu().numpy()


# ---------------------------------------------------------------- box arithmetic (facenet's)
def pyramid(h: int, w: int, min_face: int = MIN_FACE, factor: float = FACTOR) -> list[float]:
    """P-Net's scales for an h x w frame (facenet's loop, same floats)."""
    m = 12.0 / min_face
    minl, scale, scales = min(h, w) * m, m, []
    while minl >= 12:
        scales.append(scale)
        scale, minl = scale * factor, minl * factor
    return scales


def square(boxes_N4: torch.Tensor) -> torch.Tensor:
    """Each box grown to the square of its longer side about its centre (facenet's ``rerec``)."""
    x0, y0, x1, y1 = boxes_N4.unbind(1)
    w, h = x1 - x0, y1 - y0
    side = torch.maximum(w, h)
    nx0, ny0 = x0 + w * 0.5 - side * 0.5, y0 + h * 0.5 - side * 0.5
    return torch.stack([nx0, ny0, nx0 + side, ny0 + side], 1)


def regress(boxes_N4: torch.Tensor, reg_N4: torch.Tensor) -> torch.Tensor:
    """R-/O-Net box regression (facenet's ``bbreg``: widths with +1)."""
    w = boxes_N4[:, 2] - boxes_N4[:, 0] + 1
    h = boxes_N4[:, 3] - boxes_N4[:, 1] + 1
    return boxes_N4 + reg_N4 * torch.stack([w, h, w, h], 1)


def _candidates(idx_K: torch.Tensor, maps: list[tuple[torch.Tensor, float]]) -> torch.Tensor:
    """P-Net cells picked by flat index into the concatenated score maps -> rows (K, 11): box
    x0 y0 x1 y1 (facenet's ``generateBoundingBox``), score (filled by the caller), reg x4, image,
    group (image * scales + scale). ``maps``: per scale its regression (B, 4, h, w) and scale.
    The scale of each cell is found by comparisons with host constants: no table is uploaded."""
    dt = maps[0][0].dtype
    rows = torch.zeros(len(idx_K), 11, device=idx_K.device, dtype=dt)
    off = 0
    for s, (reg_B4hw, scale) in enumerate(maps):
        B, _, h, w = reg_B4hw.shape
        here = ((idx_K >= off) & (idx_K < off + B * h * w))[:, None]
        loc = (idx_K - off).clamp(0, B * h * w - 1)
        b, rem = loc // (h * w), loc % (h * w)
        xy = torch.stack([rem % w, rem // w], 1).to(dt)
        reg_K4 = reg_B4hw.reshape(B, 4, h * w)[b, :, rem]
        img = b.to(dt)[:, None]
        row = torch.cat([((2 * xy + 1) / scale).floor(), ((2 * xy + 12) / scale).floor(), rows[:, 4:5], reg_K4, img, img * len(maps) + s], 1)
        rows = torch.where(here, row, rows)
        off += B * h * w
    return rows


# ---------------------------------------------------------------- crops from a summed-area table
def integral(frames_BHWC: torch.Tensor) -> torch.Tensor:
    """(B, H+1, W+1, C) integer sums of the uint8 frames above-left of each corner."""
    B, H, W, C = frames_BHWC.shape
    dt = torch.int32 if 255 * H * W < 2**31 else torch.int64
    table = torch.zeros(B, H + 1, W + 1, C, dtype=dt, device=frames_BHWC.device)
    table[:, 1:, 1:] = frames_BHWC.to(dt).cumsum(1, dtype=dt).cumsum(2, dtype=dt)
    return table


def _cuts(start_N: torch.Tensor, length_N: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Adaptive-average-pool cell edges [lo, hi) of ``size`` cells over each span: (N, size) x 2."""
    a = torch.arange(size, device=start_N.device)
    n = length_N[:, None]
    return start_N[:, None] + a * n // size, start_N[:, None] + ((a + 1) * n + size - 1) // size


def crops(table: torch.Tensor, boxes_N4: torch.Tensor, image_N: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, size, size) float: each box (truncated, clipped to the frame as facenet's ``pad``)
    area-resized from its frame, all boxes in one gather of four corners."""
    B, H1, W1, C = table.shape
    H, W = H1 - 1, W1 - 1
    b = boxes_N4.trunc().long()
    c0 = (b[:, 0].clamp(min=1) - 1).clamp(max=W - 1)
    r0 = (b[:, 1].clamp(min=1) - 1).clamp(max=H - 1)
    c1 = torch.maximum(b[:, 2].clamp(max=W), c0 + 1)
    r1 = torch.maximum(b[:, 3].clamp(max=H), r0 + 1)
    rlo, rhi = _cuts(r0, r1 - r0, size)
    clo, chi = _cuts(c0, c1 - c0, size)
    flat = table.reshape(-1, C)
    base = (image_N.long() * H1 * W1)[:, None, None]

    def at(r_Ns: torch.Tensor, c_Ns: torch.Tensor) -> torch.Tensor:
        return flat[(base + r_Ns[:, :, None] * W1 + c_Ns[:, None, :]).reshape(-1)]

    sums = at(rhi, chi) - at(rlo, chi) - at(rhi, clo) + at(rlo, clo)
    area = ((rhi - rlo)[:, :, None] * (chi - clo)[:, None, :]).reshape(-1, 1)
    return (sums.float() / area.float()).reshape(-1, size, size, C).permute(0, 3, 1, 2)


def _run(net: torch.nn.Module, table: torch.Tensor, boxes_N4: torch.Tensor, image_N: torch.Tensor, size: int) -> list[torch.Tensor]:
    """The net's outputs on every box's crop, NET_CHUNK boxes at a time, concatenated."""
    outs = []
    for i in range(0, len(boxes_N4), NET_CHUNK):
        x = crops(table, boxes_N4[i : i + NET_CHUNK], image_N[i : i + NET_CHUNK], size)
        outs.append(net((x - 127.5) * 0.0078125))
    return [torch.cat(parts) for parts in zip(*outs)]


def min_nms(boxes_K4: np.ndarray, scores_K: np.ndarray, thr: float) -> np.ndarray:
    """Greedy NMS on the host, overlap = intersection / smaller area (+1 pixel sizes, as
    facenet's final pass); kept indices by decreasing score."""
    x0, y0, x1, y1 = boxes_K4.T
    area = (x1 - x0 + 1) * (y1 - y0 + 1)
    order, keep = np.argsort(-scores_K, kind="stable"), []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        iw = np.maximum(0.0, np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]) + 1)
        ih = np.maximum(0.0, np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]) + 1)
        order = rest[iw * ih / np.minimum(area[i], area[rest]) <= thr]
    return np.asarray(keep, dtype=np.int64)


def _finish(rows_N20: np.ndarray, n_frames: int, thr: float) -> list[Detections]:
    """Host side of O-Net: rows of box x4, image, reg x4, landmarks x10, score -> per frame."""
    r = torch.from_numpy(rows_N20[rows_N20[:, 19] > thr])  # float32 CPU arithmetic, as facenet's
    box, img, reg, pts, score = r[:, :4], r[:, 4].long(), r[:, 5:9], r[:, 9:19], r[:, 19]
    wh = box[:, 2:4] - box[:, :2] + 1
    points = torch.stack([wh[:, None, 0] * pts[:, :5] + box[:, None, 0] - 1, wh[:, None, 1] * pts[:, 5:] + box[:, None, 1] - 1], 2)
    box, img, score, points = regress(box, reg).numpy(), img.numpy(), score.numpy(), points.numpy()
    out = []
    for b in range(n_frames):
        mine = np.flatnonzero(img == b)
        keep = mine[min_nms(box[mine], score[mine], 0.7)]
        out.append(Detections(box[keep], score[keep], points[keep]))
    return out


class BatchedMTCNN:
    """``detect(frames_BHWC)`` -> per frame ``Detections``; the nets are facenet-pytorch's (any
    device; frames are moved to theirs)."""

    def __init__(
        self,
        pnet: torch.nn.Module,
        rnet: torch.nn.Module,
        onet: torch.nn.Module,
        min_face: int = MIN_FACE,
        thresholds: tuple[float, float, float] = THRESHOLDS,
        factor: float = FACTOR,
    ) -> None:
        self.pnet, self.rnet, self.onet = pnet.eval(), rnet.eval(), onet.eval()
        self.min_face, self.thresholds, self.factor = min_face, tuple(thresholds), factor
        self.device = next(pnet.parameters()).device

    @classmethod
    def from_facenet(cls, mtcnn) -> "BatchedMTCNN":
        return cls(mtcnn.pnet, mtcnn.rnet, mtcnn.onet, mtcnn.min_face_size, mtcnn.thresholds, mtcnn.factor)

    def _upload(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        if isinstance(frames, torch.Tensor):
            t = frames
        else:
            a = np.ascontiguousarray(frames)
            t = torch.from_numpy(a if a.flags.writeable else a.copy())  # torch warns on read-only arrays
        return to_device(t, self.device)  # on a GPU one non-blocking copy per call

    @torch.no_grad()
    def detect(self, frames: np.ndarray | torch.Tensor) -> list[Detections]:
        """(B, H, W, 3) uint8 RGB (numpy, or a tensor on any device) -> per frame Detections."""
        frames_BHWC = self._upload(frames)
        B, H, W, _ = frames_BHWC.shape
        boxes_N4, image_N = self._pnet(frames_BHWC.permute(0, 3, 1, 2).float())
        if not len(boxes_N4):
            return _empty(B)
        table = integral(frames_BHWC)
        out_N4, prob_N2 = _run(self.rnet, table, boxes_N4, image_N, 24)
        keep = _select(prob_N2[:, 1] > self.thresholds[1])
        if not len(keep):
            return _empty(B)
        boxes_N4, image_N, score_N, reg_N4 = boxes_N4[keep], image_N[keep], prob_N2[keep, 1], out_N4[keep]
        pick = _nms(boxes_N4, score_N, image_N, 0.7)
        boxes_N4, image_N = square(regress(boxes_N4[pick], reg_N4[pick])), image_N[pick]
        reg_N4, pts_N10, prob_N2 = _run(self.onet, table, boxes_N4, image_N, 48)
        rows = torch.cat([boxes_N4, image_N[:, None].float(), reg_N4, pts_N10, prob_N2[:, 1:]], 1)
        return _finish(_to_host(rows), B, self.thresholds[2])

    def _pnet(self, frames_BCHW: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """P-Net over the pyramid: (N, 4) squared, regressed boxes and (N,) their frame indices."""
        h, w = frames_BCHW.shape[2:]
        scales = pyramid(h, w, self.min_face, self.factor)
        maps, probs = [], []
        for scale in scales:
            im = F.interpolate(frames_BCHW, size=(int(h * scale + 1), int(w * scale + 1)), mode="area")
            reg_B4hw, prob_B2hw = self.pnet((im - 127.5) * 0.0078125)
            maps.append((reg_B4hw, scale))
            probs.append(prob_B2hw[:, 1].reshape(-1))
        prob_M = torch.cat(probs) if probs else frames_BCHW.new_zeros(0)
        idx_K = _select(prob_M >= self.thresholds[0])
        if not len(idx_K):
            return frames_BCHW.new_zeros(0, 4), idx_K
        cand = _candidates(idx_K, maps)
        cand[:, 4] = prob_M[idx_K]
        cand = cand[_nms(cand[:, :4], cand[:, 4], cand[:, 10], 0.5)]
        cand = cand[_nms(cand[:, :4], cand[:, 4], cand[:, 9], 0.7)]
        wh = cand[:, 2:4] - cand[:, :2]  # P-Net regresses without the +1
        boxes = cand[:, :4] + cand[:, 5:9] * torch.cat([wh, wh], 1)
        return square(boxes), cand[:, 9].long()
