#!/usr/bin/python3
"""torchvision's vgg16 and googlenet, 1000 classes, as a .pth and an .onnx with the same weights,
for bench/torchvision.js (sppnet loads the .pth, onnxruntime-node the .onnx).

Each arch is torchvision's own class (torchvision 0.14, Debian's python3-torchvision; run with
/usr/bin/python3): vgg16(num_classes=1000, init_weights=False) and googlenet(num_classes=1000,
aux_logits=False, transform_input=False, init_weights=False), in eval mode. The weights are
seeded (torch.manual_seed(SEED)) and drawn so that activations keep their scale through the
network (so that the logits check in the benchmark compares more than the last layer's biases):
conv and fc weights normal with std sqrt(2 / fan_in), biases uniform in [-0.1, 0.1], batch norm
weight uniform [0.5, 1.5], bias uniform [-0.1, 0.1], running_mean normal std 0.1, running_var
uniform [0.5, 1.5]. The classifier's last layer uses std sqrt(1 / fan_in) (no ReLU after it).

Writes DIR/<arch>.pth (torch.save of the state_dict: the zip format sp.loadModel reads) and
DIR/<arch>.onnx (torch.onnx.export, opset 17, input "image" [batch, 3, 224, 224] with a dynamic
batch, output "logits" [batch, 1000]), then DIR/<arch>.ref.json, torchvision's logits of a seeded
[2, 3, 224, 224] input (torch.randn after torch.manual_seed(SEED + 1)), and that input as raw
little-endian float32 in DIR/<arch>.ref.f32: a third witness for the benchmark's logits check.
vgg16 is 528 MiB in each format: the files stay out of the repository.

Usage: /usr/bin/python3 tools/export_torchvision_onnx.py DIR [--archs vgg16,googlenet] [--seed 14]
"""
import argparse
import json
import math
import os
import time

import torch
import torch.nn as nn
import torchvision


def build(arch):
    if arch == 'googlenet':
        return torchvision.models.googlenet(weights=None, num_classes=1000, aux_logits=False, transform_input=False, init_weights=False)
    if arch.startswith('vgg') or arch == 'alexnet':
        kw = {} if arch == 'alexnet' else {'init_weights': False}
        return getattr(torchvision.models, arch)(weights=None, num_classes=1000, **kw)
    raise SystemExit(f'unknown arch {arch}')


@torch.no_grad()
def init(model):
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            m.weight.normal_(0, math.sqrt((1 if m is last else 2) / fan_in))
            if m.bias is not None:
                m.bias.uniform_(-0.1, 0.1)
        elif isinstance(m, nn.BatchNorm2d):
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-0.1, 0.1)
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('dir')
    ap.add_argument('--archs', default='vgg16,googlenet')
    ap.add_argument('--seed', type=int, default=14)
    ap.add_argument('--opset', type=int, default=17)
    a = ap.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    for arch in a.archs.split(','):
        t0 = time.time()
        torch.manual_seed(a.seed)
        model = build(arch)
        init(model)
        model.eval()
        pth = os.path.join(a.dir, f'{arch}.pth')
        torch.save(model.state_dict(), pth)
        onnx_path = os.path.join(a.dir, f'{arch}.onnx')
        x = torch.zeros(1, 3, 224, 224)
        torch.onnx.export(model, (x,), onnx_path, input_names=['image'], output_names=['logits'],
                          dynamic_axes={'image': {0: 'batch'}, 'logits': {0: 'batch'}},
                          opset_version=a.opset, do_constant_folding=True)
        torch.manual_seed(a.seed + 1)
        xr = torch.randn(2, 3, 224, 224)
        with torch.no_grad():
            y = model(xr)
        ref = {'arch': arch, 'seed': a.seed + 1, 'input': 'torch.randn(2, 3, 224, 224) after torch.manual_seed(seed)',
               'torch': torch.__version__, 'torchvision': torchvision.__version__, 'logits': y.tolist()}
        xr.numpy().astype('<f4').tofile(os.path.join(a.dir, f'{arch}.ref.f32'))
        with open(os.path.join(a.dir, f'{arch}.ref.json'), 'w') as f:
            json.dump(ref, f)
        print(f'{arch}: {pth} ({os.path.getsize(pth) / 2**20:.0f} MiB), {onnx_path} ({os.path.getsize(onnx_path) / 2**20:.0f} MiB, opset {a.opset}); '
              f'logits max |v| {y.abs().max().item():.3g}, std {y.std().item():.3g}; {time.time() - t0:.1f} s')


if __name__ == '__main__':
    main()
