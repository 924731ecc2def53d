#!/usr/bin/python3
"""One training step through batch norm and an Inception block, by PyTorch, for test/torchvision.test.js.

torchvision's own BasicConv2d and Inception (0.14) in a tiny network (conv1: 3 -> 4 channels;
an Inception block 4 -> 9; adaptive average pool; fc 9 -> 3), weights from the formula of
tools/make_torchvision_fixtures.py, a dense batch of 2 images 9x11 (PyTorch has no ragged batch),
train() mode, softmax cross-entropy, one SGD step (lr 0.1, no momentum, no weight decay). Writes
the loss, the state_dict after the step (running statistics and num_batches_tracked included) and
the eval() logits after it, with the spec sppnet builds the same network from, to
test/fixtures/torchvision/bn-train.json.
"""
import json
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.googlenet import BasicConv2d, Inception

from make_torchvision_fixtures import ROOT, image, weight_values


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = BasicConv2d(3, 4, kernel_size=3, padding=1)
        self.inc = Inception(4, 2, 2, 3, 2, 2, 2)
        self.fc = nn.Linear(9, 3)

    def forward(self, x):
        x = self.inc(self.conv1(x))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def basic(name, out, kernel, padding=0):
    return [{'type': 'conv', 'name': f'{name}.conv', 'out': out, 'kernel': kernel, 'padding': padding, 'relu': False, 'bias': False},
            {'type': 'batchnorm', 'name': f'{name}.bn', 'eps': 1e-3, 'relu': True}]


SPEC = {'name': 'tiny-inception', 'inChannels': 3, 'layers': [
    *basic('conv1', 4, 3, 1),
    {'type': 'concat', 'branches': [
        basic('inc.branch1', 2, 1),
        basic('inc.branch2.0', 2, 1) + basic('inc.branch2.1', 3, 3, 1),
        basic('inc.branch3.0', 2, 1) + basic('inc.branch3.1', 2, 3, 1),
        [{'type': 'maxpool', 'kernel': 3, 'stride': 1, 'padding': 1, 'ceilMode': True}] + basic('inc.branch4.1', 2, 1)]},
    {'type': 'spp', 'levels': [1], 'pool': 'avg', 'bins': 'adaptive'},
    {'type': 'fc', 'name': 'fc', 'out': 3}]}


def main():
    m = Tiny()
    sd = m.state_dict()
    m.load_state_dict({k: torch.from_numpy(weight_values(p, k, tuple(v.shape))).to(v.dtype) for p, (k, v) in enumerate(sd.items())})
    tensors = [[k, list(v.shape)] for k, v in sd.items()]
    x = torch.stack([torch.from_numpy(image(k, 9, 11)) for k in range(2)])
    y = torch.tensor([2, 0])
    m.train()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    loss = F.cross_entropy(m(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    m.eval()
    with torch.no_grad():
        logits = m(x)
    after = {k: v.double().flatten().tolist() for k, v in m.state_dict().items()}
    out = {'spec': SPEC, 'tensors': tensors, 'images': [{'seed': k, 'shape': [3, 9, 11]} for k in range(2)], 'labels': y.tolist(),
           'lr': 0.1, 'loss': loss.item(), 'after': after, 'evalLogits': logits.double().tolist()}
    with open(os.path.join(ROOT, 'test', 'fixtures', 'torchvision', 'bn-train.json'), 'w') as f:
        json.dump(out, f, indent=0)
        f.write('\n')
    print('loss', loss.item())


if __name__ == '__main__':
    main()
