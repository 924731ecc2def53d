#!/usr/bin/python3
"""Makes the PyTorch checkpoint fixtures of test/pth.test.js, with Debian's python3-torch (1.13).

    /usr/bin/python3 tools/make_pth_fixtures.py     # writes test/fixtures/pth/

- views.pth: a state_dict (torch.save(OrderedDict)) of float32, float16, bfloat16, float64 and
  int64 tensors, a transposed view, a view with a storage offset (two tensors sharing a storage),
  a 0-d tensor and an nn.Parameter; views.expected.json: every tensor as float32 values, shape.
- tiny-spp.pth: the weights of test/fixtures/tiny-spp.safetensors, saved as a state_dict by
  PyTorch (read here with a few lines of Python, no safetensors package).
- checkpoint.pth: {'epoch': 3, 'state_dict': the tiny-spp state_dict} (a training checkpoint).
- huge.pth, many.pth: stride-0 views too large for a tensor, and for one file together.
- model.pth: a whole pickled nn.Module (torch.save(model)); must be refused.
- legacy.pth: the legacy (non-zip) format; must be refused with how to re-save it.
- evil.pth: a zip laid out as PyTorch's whose data.pkl calls os.system; must be refused, unrun.
"""
import collections
import io
import json
import os
import pickle
import struct
import zipfile

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, '..', 'test', 'fixtures')
OUT = os.path.join(FIX, 'pth')
os.makedirs(OUT, exist_ok=True)
torch.manual_seed(13)


def read_safetensors(path):
    with open(path, 'rb') as f:
        n = struct.unpack('<Q', f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = collections.OrderedDict()
    for name, e in header.items():
        if name == '__metadata__':
            continue
        assert e['dtype'] == 'F32'
        b, end = e['data_offsets']
        t = torch.frombuffer(bytearray(data[b:end]), dtype=torch.float32).reshape(e['shape']).clone()
        out[name] = t
    return out


def values(t):
    return {'shape': list(t.shape), 'data': t.detach().to(torch.float32).reshape(-1).tolist()}


# views.pth
base = torch.randn(4, 6)
sd = collections.OrderedDict()
sd['f32'] = torch.randn(2, 3)
sd['f16'] = torch.randn(5).to(torch.float16)
sd['bf16'] = torch.randn(3, 2).to(torch.bfloat16)
sd['f64'] = torch.randn(2, 2, dtype=torch.float64)
sd['i64'] = torch.tensor(12345, dtype=torch.int64)  # as batch norm's num_batches_tracked
sd['transposed'] = torch.randn(3, 5).t()  # strides (1, 5)
sd['rows'] = base[1:3]  # storage offset 6, shares base's storage
sd['cols'] = base[:, 2:5]  # offset 2, strides (6, 1)
sd['base'] = base
sd['scalar'] = torch.tensor(2.5)
sd['param'] = torch.nn.Parameter(torch.randn(2, 2))
sd._metadata = collections.OrderedDict([('', {'version': 1})])  # as Module.state_dict() sets it
torch.save(sd, os.path.join(OUT, 'views.pth'))
with open(os.path.join(OUT, 'views.expected.json'), 'w') as f:
    json.dump({k: values(v) for k, v in sd.items()}, f)

# tiny-spp.pth, checkpoint.pth
tiny = read_safetensors(os.path.join(FIX, 'tiny-spp.safetensors'))
torch.save(tiny, os.path.join(OUT, 'tiny-spp.pth'))
torch.save({'epoch': 3, 'state_dict': tiny}, os.path.join(OUT, 'checkpoint.pth'))

# huge.pth: a stride-0 view of one element as 3 * 2^30 elements (more than a tensor may hold);
# many.pth: three views of 2^29 elements each (more than 2^30 floats together)
torch.save(collections.OrderedDict(w=torch.zeros(1).expand(3 * 2**30)), os.path.join(OUT, 'huge.pth'))
torch.save(collections.OrderedDict((f'w{i}', torch.zeros(1).expand(2**29)) for i in range(3)), os.path.join(OUT, 'many.pth'))

# model.pth: the whole module pickled
torch.save(torch.nn.Sequential(torch.nn.Linear(3, 2)), os.path.join(OUT, 'model.pth'))

# legacy.pth
torch.save(collections.OrderedDict(w=torch.ones(2)), os.path.join(OUT, 'legacy.pth'), _use_new_zipfile_serialization=False)


# evil.pth: what a hostile file would hold
class Evil:
    def __reduce__(self):
        return (os.system, ('touch /tmp/sppnet-pth-was-run',))


buf = io.BytesIO()
pickle.dump(collections.OrderedDict(w=Evil()), buf, protocol=2)
with zipfile.ZipFile(os.path.join(OUT, 'evil.pth'), 'w', zipfile.ZIP_STORED) as z:
    z.writestr('evil/data.pkl', buf.getvalue())
    z.writestr('evil/version', '3\n')

print('wrote', sorted(os.listdir(OUT)))
