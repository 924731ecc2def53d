#!/usr/bin/python3
"""Writes test/fixtures/crop/*.json: torchvision's and torch's own crops, which test/crop.test.js
holds sp.cropResize to.

    /usr/bin/python3 tools/make_crop_fixtures.py     # Debian's python3-torch 1.13, python3-torchvision 0.14

align 'pixels' is torchvision.ops.roi_align(aligned=True, sampling_ratio=1) on the box converted
to continuous coordinates [x1, x2 + 1) x [y1, y2 + 1) (include/sppnet/crop.h): one sample per bin
at its centre, i.e. bilinear sampling at pixel centres. roi_align clamps a sample within a pixel
outside the image to the border, where sp.cropResize reads zeros outside; so each case holds
  ref:      roi_align on the image as it is,
  padded:   roi_align on the image zero-padded by 2 pixels on each side (boxes shifted by 2): the
            zero rule exactly, up to the rounding of the shifted coordinates,
  interior: 1 where the element's four neighbours all lie inside the image (then sp.cropResize
            computes roi_align's expression on roi_align's coordinates: equal to ref bit for bit).
With context p, each window is first enlarged by out / (out - 2p) about its centre, in float64 as
crop.h does, and the result rounded to float32 before roi_align.
align 'corners' is F.interpolate(crop, size, mode='bilinear', align_corners=True) on the integer
crop inside the image (ref; compared within a tolerance: torch's upsampling rounds differently).

Each file: {"torch", "torchvision", "cases": [{name, align, context, size [outH, outW], channels,
images: [{h, w, data (C*h*w, flat)}], boxes (K*5 flat), ref, padded?, interior?}]}; floats in
their shortest float32 round-trip form. Images are uniform in [-1, 1] from a fixed seed.
"""
import json
import os

import numpy as np
import torch
import torch.nn.functional as F
import torchvision

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'test', 'fixtures', 'crop')
PAD = 2
rng = np.random.default_rng(20261126)


def f32(values):
    return [float(str(np.float32(v))) for v in np.asarray(values, np.float32).ravel()]


def enlarge(a1, a2, out, p):
    lo, hi = float(a1), float(a2) + 1.0
    if p > 0:
        half = (hi - lo) * 0.5 * out / (out - 2 * p)
        c = (lo + hi) * 0.5
        lo, hi = c - half, c + half
    return np.float32(lo), np.float32(hi)


def interior_axis(lo, hi, out, n):
    """Per output index: whether roi_align's sample has both neighbours inside [0, n)."""
    start = np.float32(lo) - np.float32(0.5)
    end = np.float32(hi) - np.float32(0.5)
    bin_ = np.float32(end - start) / np.float32(out)
    ok = []
    for o in range(out):
        s = np.float32(np.float32(start + np.float32(o) * bin_) + np.float32(np.float32(0.5) * bin_))
        ok.append(bool(s >= 1e-3 and np.floor(s) + 1 <= n - 1 and s <= n - 1 - 1e-3))
    return np.array(ok)


def case(name, images, boxes, size, context=0, align='pixels'):
    C = images[0].shape[0]
    oh, ow = size
    boxes = np.asarray(boxes, np.float32).reshape(-1, 5)
    ref, padded, interior = [], [], []
    for b in boxes:
        img = torch.tensor(images[int(b[0])])[None]
        H, W = img.shape[2], img.shape[3]
        ylo, yhi = enlarge(b[2], b[4], oh, context)
        xlo, xhi = enlarge(b[1], b[3], ow, context)
        if align == 'pixels':
            roi = torch.tensor([[0, xlo, ylo, xhi, yhi]], dtype=torch.float32)
            ref.append(torchvision.ops.roi_align(img, roi, (oh, ow), 1.0, 1, True)[0].numpy())
            pimg = F.pad(img, (PAD, PAD, PAD, PAD))
            proi = torch.tensor([[0, xlo + PAD, ylo + PAD, xhi + PAD, yhi + PAD]], dtype=torch.float32)
            padded.append(torchvision.ops.roi_align(pimg, proi, (oh, ow), 1.0, 1, True)[0].numpy())
            iy, ix = interior_axis(ylo, yhi, oh, H), interior_axis(xlo, xhi, ow, W)
            interior.append(np.broadcast_to((iy[:, None] & ix[None, :])[None], (C, oh, ow)).astype(np.int8))
        else:
            x1, y1, x2, y2 = (int(v) for v in b[1:])
            assert context == 0 and 0 <= x1 <= x2 < W and 0 <= y1 <= y2 < H and all(float(v).is_integer() for v in b)
            ref.append(F.interpolate(img[:, :, y1:y2 + 1, x1:x2 + 1], size=(oh, ow), mode='bilinear', align_corners=True)[0].numpy())
    c = {'name': name, 'align': align, 'context': context, 'size': [oh, ow], 'channels': C,
         'images': [{'h': im.shape[1], 'w': im.shape[2], 'data': f32(im)} for im in images],
         'boxes': f32(boxes), 'ref': f32(np.stack(ref))}
    if align == 'pixels':
        c['padded'] = f32(np.stack(padded))
        c['interior'] = [int(v) for v in np.stack(interior).ravel()]
    return c


def image(C, H, W):
    return rng.uniform(-1, 1, (C, H, W)).astype(np.float32)


def random_boxes(sizes, k, outside, fractional):
    out = []
    for _ in range(k):
        m = int(rng.integers(len(sizes)))
        H, W = sizes[m]
        lo = -4 if outside else 0
        x1, y1 = int(rng.integers(lo, W)), int(rng.integers(lo, H))
        x2 = int(rng.integers(x1, W + (4 if outside else 0)))
        y2 = int(rng.integers(y1, H + (4 if outside else 0)))
        b = [m, x1, y1, x2, y2]
        if fractional:
            b = [m, x1 + rng.uniform(-0.5, 0.5), y1 + rng.uniform(-0.5, 0.5), x2 + rng.uniform(0.5, 1.5), y2 + rng.uniform(0.5, 1.5)]
        out.append(b)
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    one = [image(3, 13, 17)]
    two = [image(2, 11, 19), image(2, 23, 9), image(2, 1, 1)]
    cases = {
        'inside': [case('integer boxes inside a 13x17 image, to 7x9', one, random_boxes([(13, 17)], 12, False, False), (7, 9))],
        'outside': [case('boxes partly and wholly outside, ragged images 11x19, 23x9, 1x1, to 6x5', two,
                         random_boxes([(11, 19), (23, 9), (1, 1)], 16, True, False) + [[0, 30, 2, 35, 5], [1, -9, -9, -4, -2]], (6, 5)),
                    case('fractional boxes, ragged, to 5x8', two, random_boxes([(11, 19), (23, 9), (1, 1)], 12, True, True), (5, 8))],
        'degenerate': [case('1-pixel boxes to 8x8', one, [[0, 0, 0, 0, 0], [0, 16, 12, 16, 12], [0, 5, 7, 5, 7], [0, 3, 2, 3, 9], [0, 2, 4, 11, 4]], (8, 8)),
                       case('to 1x1', one, [[0, 0, 0, 16, 12], [0, 3, 4, 5, 9]], (1, 1))],
        'scale': [case('big upsampling: 3x4 windows to 40x50', [image(1, 13, 17)], [[0, 2, 3, 5, 5], [0, 13, 10, 16, 12], [0, 0, 0, 1, 1]], (40, 50)),
                  case('big downsampling: a 45x57 image to 5x6', [image(2, 45, 57)], [[0, 0, 0, 56, 44], [0, 3, 1, 50, 40]], (5, 6))],
        'context': [case('context 2 at 12x12', two, random_boxes([(11, 19), (23, 9), (1, 1)], 10, False, False), (12, 12), context=2),
                    case('context 3 at 9x14, boxes partly outside', two, random_boxes([(11, 19), (23, 9)], 8, True, False), (9, 14), context=3)],
        'corners': [case('align corners: integer boxes inside, to 6x7 (F.interpolate align_corners=True)', two,
                         random_boxes([(11, 19), (23, 9), (1, 1)], 12, False, False), (6, 7), align='corners'),
                    case('align corners: to 1x4 and upsampled', one, [[0, 0, 0, 16, 12], [0, 4, 4, 6, 5]], (1, 4), align='corners'),
                    case('align corners: upsampled to 21x23', one, [[0, 0, 0, 16, 12], [0, 4, 4, 6, 5]], (21, 23), align='corners')],
    }
    for name, cs in cases.items():
        with open(os.path.join(OUT, name + '.json'), 'w') as f:
            json.dump({'torch': torch.__version__, 'torchvision': torchvision.__version__, 'cases': cs}, f, separators=(',', ':'))
        print(name, len(cs), 'cases')


if __name__ == '__main__':
    main()
