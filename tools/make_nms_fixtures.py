#!/usr/bin/python3
"""Writes test/fixtures/nms/*.json: torchvision's own NMS results, which test/nms.test.js holds
sp.nms and sp.batchedNms to (every index, in order).

    /usr/bin/python3 tools/make_nms_fixtures.py     # Debian's python3-torch 1.13, python3-torchvision 0.14

Each file is {"torch", "torchvision", "cases": [{name, iou, boxes (N x 4, flat), scores, classes?,
keep}]}; numbers are float32 values written in their shortest round-trip form, NaN as null and
infinities as the strings "Infinity" and "-Infinity".
keep: torchvision.ops.nms(boxes, scores, iou) for plain cases; for batched cases (classes
present) torchvision.ops.boxes._batched_nms_vanilla (NMS per class, merged by score: what
torchvision.ops.batched_nms runs above 1000 boxes on the CPU), and `coordinate_trick_agrees` says
whether torchvision.ops.batched_nms's other path (all classes in one nms, shifted apart) gave the
same indices.

The cases: random boxes (sizes 0, 1, 2, 100, 2000) spread out and in clusters; scores with many
exact ties (nms sorts stably: tied boxes in index order; batched NMS's final sort by score is
torch's default, std::sort, whose order of ties above 16 kept boxes is introsort's); IoUs exactly at the threshold (0.5 with integer coordinates, kept:
the test is strict) and 1/3, whose float IoU rounds above the double threshold 1/3 (suppressed:
torchvision compares the float IoU with the double threshold); degenerate boxes (x2 < x1, zero
width or height), identical boxes, NaN and infinite coordinates; NaN scores (torch sorts NaN first, so a NaN-scored box is
taken before every other); per-class cases.
"""
import json
import os

import numpy as np
import torch
import torchvision
from torchvision.ops import boxes as box_ops

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'test', 'fixtures', 'nms')


def f32(values):
    return [None if np.isnan(v) else float(str(np.float32(v))) if np.isfinite(v) else ('Infinity' if v > 0 else '-Infinity')
            for v in np.asarray(values, np.float32).ravel()]


def case(name, boxes, scores, iou, classes=None):
    b = torch.tensor(np.asarray(boxes, np.float32).reshape(-1, 4))
    s = torch.tensor(np.asarray(scores, np.float32))
    c = {'name': name, 'iou': iou, 'boxes': f32(b.numpy()), 'scores': f32(s.numpy())}
    if classes is None:
        c['keep'] = torchvision.ops.nms(b, s, iou).tolist()
    else:
        idx = torch.tensor(np.asarray(classes, np.int64))
        c['classes'] = [int(v) for v in classes]
        keep = box_ops._batched_nms_vanilla(b, s, idx, iou) if len(classes) else torch.empty(0, dtype=torch.int64)
        c['keep'] = keep.tolist()
        c['coordinate_trick_agrees'] = box_ops._batched_nms_coordinate_trick(b, s, idx, iou).tolist() == c['keep']
    return c


def spread(g, n, size=100.0):
    xy = g.random((n, 2)) * size
    wh = g.random((n, 2)) * size
    return np.concatenate([xy, xy + wh], 1)


def clusters(g, n, k, jitter=8.0, size=(10.0, 40.0)):
    centres = g.random((max(k, 1), 2)) * 400
    at = centres[g.integers(0, max(k, 1), n)] + g.normal(0, jitter, (n, 2))
    wh = size[0] + g.random((n, 2)) * (size[1] - size[0])
    return np.concatenate([at, at + wh], 1)


def write(fname, cases):
    os.makedirs(OUT, exist_ok=True)
    doc = {'torch': torch.__version__, 'torchvision': torchvision.__version__, 'cases': cases}
    with open(os.path.join(OUT, fname), 'w') as f:
        json.dump(doc, f, separators=(',', ':'))
        f.write('\n')
    print(f'{fname}: {len(cases)} cases, {os.path.getsize(os.path.join(OUT, fname))} bytes')


def main():
    g = np.random.default_rng(15)
    rnd = []
    for n in (0, 1, 2, 100, 2000):
        rnd.append(case(f'spread n={n} iou 0.5', spread(g, n), g.random(n), 0.5))
    for n, iou in ((100, 0.3), (2000, 0.5), (2000, 0.7)):
        rnd.append(case(f'clusters n={n} iou {iou}', clusters(g, n, n // 15), g.random(n), iou))
    rnd.append(case('clusters n=100 iou 0', clusters(g, 100, 8), g.random(100), 0.0))
    rnd.append(case('clusters n=100 iou 1', clusters(g, 100, 8), g.random(100), 1.0))
    write('random.json', rnd)

    ties = []
    for n in (2, 16, 17, 100, 2000):
        scores = g.integers(0, 4, n) / 4.0
        ties.append(case(f'tied scores n={n}', clusters(g, n, max(1, n // 10)), scores, 0.5))
    ties.append(case('all scores equal n=100', clusters(g, 100, 5), np.full(100, 0.25), 0.5))
    ties.append(case('all scores equal, -0 and 0, n=40', clusters(g, 40, 3), np.where(np.arange(40) % 2, 0.0, -0.0), 0.4))
    write('ties.json', ties)

    thr = []
    # [0,0,4,1] and [0,0,2,1]: intersection 2, union 4, IoU exactly 0.5: kept at iou 0.5, suppressed below.
    half = [[0, 0, 4, 1], [0, 0, 2, 1], [10, 10, 14, 12], [12, 10, 16, 12], [20, 20, 22, 22], [21, 20, 23, 22]]
    for iou in (0.5, 0.49999997, 0.5000001):
        thr.append(case(f'IoU exactly 0.5 at iou {iou}', half, [0.9, 0.8, 0.7, 0.6, 0.5, 0.4], iou))
    # [0,0,3,1] and [0,0,1,1]: IoU 1/3, whose float (0.33333334) is above the double 1/3.
    third = [[0, 0, 3, 1], [0, 0, 1, 1], [5, 5, 8, 6], [7, 5, 8, 6]]
    thr.append(case('IoU 1/3 (float rounds up) at iou 1/3', third, [0.9, 0.8, 0.7, 0.6], 1 / 3))
    thr.append(case('IoU 1/3 at iou 0.33333334 (the float itself)', third, [0.9, 0.8, 0.7, 0.6], float(np.float32(1 / 3))))
    # Integer boxes on a small grid: many IoUs are exact fractions, some equal to the threshold.
    grid = g.integers(0, 8, (300, 2))
    wh = g.integers(1, 5, (300, 2))
    for iou in (0.5, 0.25, 1 / 3, 0.6):
        thr.append(case(f'integer grid boxes n=300 iou {iou:.6g}', np.concatenate([grid, grid + wh], 1), g.random(300), iou))
    write('threshold.json', thr)

    deg = []
    b = clusters(g, 100, 6)
    b[::7, 2] = b[::7, 0] - 3        # x2 < x1
    b[3::11, 3] = b[3::11, 1]        # zero height
    b[5::13] = b[4::13][: len(b[5::13])]  # identical to the box before
    deg.append(case('degenerate and identical n=100', b, g.random(100), 0.5))
    same = np.tile([[1.5, 2.5, 7.25, 9.0]], (20, 1))
    deg.append(case('20 identical boxes, tied scores', same, np.full(20, 0.5), 0.5))
    deg.append(case('20 identical boxes at iou 1', same, g.random(20), 1.0))
    deg.append(case('all degenerate n=30', np.concatenate([clusters(g, 30, 2)[:, 2:], clusters(g, 30, 2)[:, :2] - 50], 1), g.random(30), 0.0))
    b = clusters(g, 60, 4)
    b[g.random((60, 4)) < 0.04] = np.nan
    b[g.random((60, 4)) < 0.04] = np.inf
    b[g.random((60, 4)) < 0.04] = -np.inf
    deg.append(case('NaN and infinite coordinates n=60', b, g.random(60), 0.3))
    write('degenerate.json', deg)

    nan = []
    for n in (5, 100, 2000):
        s = g.random(n)
        s[g.random(n) < 0.1] = np.nan
        s[g.random(n) < 0.1] = 0.5
        nan.append(case(f'NaN scores n={n}', clusters(g, n, max(1, n // 10)), s, 0.5))
    write('nan.json', nan)

    bat = []
    for n, k in ((0, 1), (1, 3), (2, 1), (2, 2), (100, 4), (2000, 10)):
        bx = clusters(g, n, max(1, n // 20))
        s = g.random(n)
        if n >= 100:
            s[g.random(n) < 0.3] = 0.75  # ties across and within classes
            s[g.random(n) < 0.02] = np.nan
        bat.append(case(f'batched n={n} {k} classes', bx, s, 0.5, g.integers(0, k, n).tolist()))
    bat.append(case('batched, class ids -3, 0, 7, 100000', clusters(g, 100, 4), g.random(100), 0.6, g.choice([-3, 0, 7, 100000], 100).tolist()))
    write('batched.json', bat)


if __name__ == '__main__':
    main()
