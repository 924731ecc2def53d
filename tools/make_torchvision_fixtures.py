#!/usr/bin/python3
"""Reference logits of torchvision's networks for test/torchvision.test.js.

Each arch is torchvision's own class (torchvision 0.14, Debian's python3-torchvision) at its full
width, num_classes 10, in eval mode. Its weights come from a formula both this script and the
test compute bit for bit (so nothing large is committed): element i of the p-th state_dict tensor
is u = mix32((i + 1) * 0x9E3779B1 + (p + 1) * 0x85EBCA77) / 2^32, mapped per kind of tensor (see
weight_values; the test's twin is test/support/formula-weights.js). A few images of different
sizes, also from the formula, go through the network one at a time (torchvision has no ragged
batch); their logits are written to test/fixtures/torchvision/logits.json.

The SPP variant (alexnet with pool 'spp'): torchvision's AlexNet with its avgpool replaced by
torch.cat([adaptive_max_pool2d(x, n).flatten(1) for n in [6, 3, 2, 1]], 1) and classifier.1
built for 256 * 50 inputs.

Also writes, with --pth DIR, each arch's state_dict with torch.save (the zip format) for
tools/check_torchvision.js (large: not committed).

Usage: /usr/bin/python3 tools/make_torchvision_fixtures.py [--pth DIR]
"""
import json
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, 'test', 'fixtures', 'torchvision')
CLASSES = 10
# Image sizes (H, W) per arch: each its own size, none divisible by the total stride.
SIZES = {
    'alexnet': [(67, 90), (99, 70), (131, 131)],
    'vgg': [(35, 50), (61, 43), (70, 77)],
    'googlenet': [(37, 45), (64, 29), (83, 96)],
}
ARCHS = ['alexnet', 'vgg11', 'vgg11_bn', 'vgg13', 'vgg13_bn', 'vgg16', 'vgg16_bn', 'vgg19', 'vgg19_bn', 'googlenet']


def mix32(u):
    """murmur3's finaliser on uint64 arrays holding 32-bit values."""
    m = np.uint64(0xFFFFFFFF)
    u = u & m
    u ^= u >> np.uint64(16)
    u = (u * np.uint64(0x85EBCA6B)) & m
    u ^= u >> np.uint64(13)
    u = (u * np.uint64(0xC2B2AE35)) & m
    u ^= u >> np.uint64(16)
    return u


def uniform(p, n):
    """n values in [0, 1): exact multiples of 2^-32, float64."""
    i = np.arange(1, n + 1, dtype=np.uint64)
    u = mix32(i * np.uint64(0x9E3779B1) + np.uint64((p + 1) * 0x85EBCA77))
    return u.astype(np.float64) / 4294967296.0


def weight_values(p, name, shape):
    """The formula's values of tensor p (float32), by the kind of tensor its name says."""
    n = int(np.prod(shape)) if len(shape) else 1
    u = uniform(p, n)
    if name.endswith('num_batches_tracked'):
        v = np.floor(u * 1000)
    elif name.endswith('running_var'):
        v = 0.5 + u
    elif name.endswith('running_mean'):
        v = 0.2 * (2 * u - 1)
    elif name.endswith('.bias'):
        v = 0.1 * (2 * u - 1)
    elif len(shape) == 1:  # batch norm's weight (gamma)
        v = 0.75 + 0.5 * u
    else:
        fan_in = int(np.prod(shape[1:]))
        v = (2 * u - 1) * np.sqrt(6.0 / fan_in)
    return v.astype(np.float32).reshape(shape)


def image(seed, h, w):
    """An image [3, h, w] in about [-2, 2] (ImageNet-normalised scale)."""
    return (4 * uniform(1000 + seed, 3 * h * w) - 2).astype(np.float32).reshape(3, h, w)


def build(arch):
    m = torchvision.models
    if arch == 'googlenet':
        return m.googlenet(weights=None, num_classes=CLASSES, aux_logits=True, init_weights=False)
    return getattr(m, arch)(weights=None, num_classes=CLASSES)


class AlexNetSpp(nn.Module):
    def __init__(self, base, levels):
        super().__init__()
        self.features, self.levels = base.features, levels
        base.classifier[1] = nn.Linear(256 * sum(n * n for n in levels), 4096)
        self.classifier = base.classifier

    def forward(self, x):
        x = self.features(x)
        x = torch.cat([F.adaptive_max_pool2d(x, n).flatten(1) for n in self.levels], 1)
        return self.classifier(x)


def fill(model):
    sd = model.state_dict()
    new = {}
    for p, (name, t) in enumerate(sd.items()):
        v = torch.from_numpy(weight_values(p, name, tuple(t.shape)))
        new[name] = v.to(t.dtype)
    model.load_state_dict(new)
    return model


def main():
    pth = sys.argv[sys.argv.index('--pth') + 1] if '--pth' in sys.argv else None
    torch.manual_seed(0)
    os.makedirs(OUT, exist_ok=True)
    out = {'torch': torch.__version__, 'torchvision': torchvision.__version__, 'classes': CLASSES, 'cases': []}
    cases = [(a, a, {}) for a in ARCHS] + [('alexnet-spp', 'alexnet', {'pool': 'spp'}), ('googlenet-transform', 'googlenet', {'transformInput': True})]
    for case, arch, opts in cases:
        model = build(arch)
        if case == 'alexnet-spp':
            model = AlexNetSpp(model, [6, 3, 2, 1])
        if case == 'googlenet-transform':
            model.transform_input = True
        fill(model).eval()
        sizes = SIZES['vgg' if arch.startswith('vgg') else arch]
        images, logits = [], []
        with torch.no_grad():
            for k, (h, w) in enumerate(sizes):
                x = image(k, h, w)
                images.append({'seed': k, 'shape': [3, h, w]})
                logits.append(model(torch.from_numpy(x)[None]).numpy()[0].astype(float).tolist())
        out['cases'].append({'case': case, 'arch': arch, 'options': opts, 'images': images, 'logits': logits,
                             'tensors': [[k, list(v.shape)] for k, v in model.state_dict().items()]})
        print(case, 'logits[0][:3]', [round(v, 4) for v in logits[0][:3]], flush=True)
        if pth and case in ARCHS:
            os.makedirs(pth, exist_ok=True)
            torch.save(model.state_dict(), os.path.join(pth, f'{case}.pth'))
    with open(os.path.join(OUT, 'logits.json'), 'w') as f:
        json.dump(out, f, indent=0)
        f.write('\n')


if __name__ == '__main__':
    main()
