# An independent evaluator for the ONNX files tapir writes: checks a file with
# onnx.checker.check_model, then rebuilds its graph in PyTorch (float64) from the weights that
# onnx.numpy_helper decodes, following the operator definitions of https://onnx.ai/onnx/operators/
# (not tapir's code). Covers the operators tapir exports. onnx 1.12 has no reference evaluator
# and onnxruntime is not installed, hence this file.
#
#     from onnx_eval import run_onnx
#     y = run_onnx("model.onnx", [x])       # x a torch tensor; returns the first graph output
#     y = run_onnx("set.onnx", [x, mask])   # several inputs in the graph's input order
import onnx
import onnx.numpy_helper
import torch
import torch.nn.functional as F


def _attrs(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _rnn(op, a, x, w, r, b):
    # x (T, B, F), w (1, G H, F), r (1, G H, H), b (1, 2 G H); ONNX gate orders:
    # LSTM i o f c, GRU z r h (linear_before_reset = 1), RNN one block.
    H = a['hidden_size']
    T, B = x.shape[0], x.shape[1]
    G = {'LSTM': 4, 'GRU': 3, 'RNN': 1}[op]
    if b is None:
        b = torch.zeros(1, 2 * G * H, dtype=x.dtype)
    W, R, Wb, Rb = w[0], r[0], b[0, :G * H], b[0, G * H:]
    h = torch.zeros(B, H, dtype=x.dtype)
    c = torch.zeros(B, H, dtype=x.dtype)
    ys = []
    for t in range(T):
        xw = x[t] @ W.T + Wb
        hr = h @ R.T + Rb
        if op == 'LSTM':
            i = torch.sigmoid(xw[:, 0:H] + hr[:, 0:H])
            o = torch.sigmoid(xw[:, H:2 * H] + hr[:, H:2 * H])
            f = torch.sigmoid(xw[:, 2 * H:3 * H] + hr[:, 2 * H:3 * H])
            g = torch.tanh(xw[:, 3 * H:] + hr[:, 3 * H:])
            c = f * c + i * g
            h = o * torch.tanh(c)
        elif op == 'GRU':
            assert a.get('linear_before_reset', 0) == 1
            z = torch.sigmoid(xw[:, 0:H] + hr[:, 0:H])
            rr = torch.sigmoid(xw[:, H:2 * H] + hr[:, H:2 * H])
            n = torch.tanh(xw[:, 2 * H:] + rr * hr[:, 2 * H:])
            h = (1 - z) * n + z * h
        else:
            h = torch.tanh(xw + hr)
        ys.append(h)
    y = torch.stack(ys, 0).unsqueeze(1)  # (T, 1, B, H)
    return [y, h.unsqueeze(0)]


def _pads2(p, dims):
    # ONNX pads (begins..., ends...) -> F.pad order (last axis first: left, right, top, bottom)
    out = []
    for i in reversed(range(dims)):
        out += [p[i], p[i + dims]]
    return out


def _eval(node, a, ins):
    op = node.op_type
    x = ins[0] if ins else None
    if op == 'Gemm':
        A = x.T if a.get('transA', 0) else x
        Bm = ins[1].T if a.get('transB', 0) else ins[1]
        y = a.get('alpha', 1.0) * (A @ Bm)
        if len(ins) > 2 and ins[2] is not None:
            y = y + a.get('beta', 1.0) * ins[2]
        return [y]
    if op == 'MatMul':
        return [x @ ins[1]]
    if op == 'Add':
        return [x + ins[1]]
    if op == 'Sub':
        return [x - ins[1]]
    if op == 'Mul':
        return [x * ins[1]]
    if op == 'Div':
        return [x / ins[1]]
    if op == 'Max':
        y = x
        for v in ins[1:]:
            y = torch.maximum(y, v)
        return [y]
    if op == 'Concat':
        return [torch.cat(ins, a['axis'])]
    if op == 'Reshape':
        shape = [int(v) for v in ins[1].tolist()]
        shape = [x.shape[i] if v == 0 else v for i, v in enumerate(shape)]
        return [x.reshape(shape)]
    if op == 'Unsqueeze':
        axes = [int(v) for v in ins[1].tolist()] if len(ins) > 1 else a.get('axes')
        r = x.dim() + len(axes)
        for ax in sorted(v % r for v in axes):
            x = x.unsqueeze(ax)
        return [x]
    if op == 'Slice':
        starts, ends = ins[1].tolist(), ins[2].tolist()
        axes = ins[3].tolist() if len(ins) > 3 else list(range(len(starts)))
        steps = ins[4].tolist() if len(ins) > 4 else [1] * len(starts)
        idx = [slice(None)] * x.dim()
        for s0, e0, ax, st in zip(starts, ends, axes, steps):
            idx[int(ax) % x.dim()] = slice(int(s0), int(e0), int(st))
        return [x[tuple(idx)]]
    if op == 'ReduceSum':
        axes = [int(v) for v in ins[1].tolist()] if len(ins) > 1 else list(range(x.dim()))
        return [x.sum(dim=tuple(axes), keepdim=bool(a.get('keepdims', 1)))]
    if op == 'Relu':
        return [torch.relu(x)]
    if op == 'Sigmoid':
        return [torch.sigmoid(x)]
    if op == 'Tanh':
        return [torch.tanh(x)]
    if op == 'Softplus':
        return [torch.log1p(torch.exp(x))]
    if op == 'LeakyRelu':
        al = a.get('alpha', 0.01)
        return [torch.where(x >= 0, x, al * x)]
    if op == 'Elu':
        al = a.get('alpha', 1.0)
        return [torch.where(x > 0, x, al * (torch.exp(x) - 1))]
    if op == 'Softmax':
        return [torch.softmax(x, a.get('axis', -1))]
    if op == 'Identity':
        return [x]
    if op == 'Flatten':
        ax = a.get('axis', 1)
        lead = 1
        for d in x.shape[:ax]:
            lead *= d
        return [x.reshape(lead, -1)]
    if op == 'BatchNormalization':
        sc, bb, mean, var = ins[1:5]
        shp = [1, -1] + [1] * (x.dim() - 2)
        eps = a.get('epsilon', 1e-5)
        return [(x - mean.reshape(shp)) / torch.sqrt(var.reshape(shp) + eps) * sc.reshape(shp) + bb.reshape(shp)]
    if op == 'Conv':
        w = ins[1]
        bias = ins[2] if len(ins) > 2 else None
        dims = w.dim() - 2
        p = a.get('pads', [0] * (2 * dims))
        xp = F.pad(x, _pads2(p, dims))
        conv = F.conv2d if dims == 2 else F.conv1d
        return [conv(xp, w, bias, stride=a.get('strides', [1] * dims), dilation=a.get('dilations', [1] * dims),
                     groups=a.get('group', 1))]
    if op == 'ConvTranspose':
        w = ins[1]
        bias = ins[2] if len(ins) > 2 else None
        p = a.get('pads', [0, 0, 0, 0])
        assert p[0] == p[2] and p[1] == p[3]
        return [F.conv_transpose2d(x, w, bias, stride=a.get('strides', [1, 1]), padding=p[:2],
                                   output_padding=a.get('output_padding', [0, 0]), groups=a.get('group', 1),
                                   dilation=a.get('dilations', [1, 1]))]
    if op in ('MaxPool', 'AveragePool'):
        k = a['kernel_shape']
        dims = len(k)
        p = a.get('pads', [0] * (2 * dims))
        s = a.get('strides', [1] * dims)
        if op == 'MaxPool':
            xp = F.pad(x, _pads2(p, dims), value=float('-inf'))
            pool = F.max_pool2d if dims == 2 else F.max_pool1d
            return [pool(xp, k, s)]
        assert a.get('count_include_pad', 0) == 1 or not any(p)
        xp = F.pad(x, _pads2(p, dims), value=0.0)
        pool = F.avg_pool2d if dims == 2 else F.avg_pool1d
        return [pool(xp, k, s)]
    if op == 'GlobalAveragePool':
        return [x.mean(dim=tuple(range(2, x.dim())), keepdim=True)]
    if op == 'GlobalMaxPool':
        return [x.amax(dim=tuple(range(2, x.dim())), keepdim=True)]
    if op == 'Transpose':
        perm = a.get('perm', list(reversed(range(x.dim()))))
        return [x.permute(*perm)]
    if op == 'Squeeze':
        axes = [int(v) for v in ins[1].tolist()] if len(ins) > 1 else a.get('axes')
        for ax in sorted([v % x.dim() for v in axes], reverse=True):
            x = x.squeeze(ax)
        return [x]
    if op in ('LSTM', 'GRU', 'RNN'):
        b = ins[3] if len(ins) > 3 else None
        return _rnn(op, a, x, ins[1], ins[2], b)
    raise NotImplementedError('onnx_eval: operator ' + op)


def run_onnx(path, inputs):
    model = onnx.load(path)
    onnx.checker.check_model(model)
    g = model.graph
    env = {t.name: torch.from_numpy(onnx.numpy_helper.to_array(t).copy()) for t in g.initializer}
    for t in list(env):
        if env[t].is_floating_point():
            env[t] = env[t].to(torch.float64)
    real_inputs = [i for i in g.input if i.name not in env]
    assert len(real_inputs) == len(inputs), 'onnx_eval: input count'
    for vi, x in zip(real_inputs, inputs):
        env[vi.name] = x.to(torch.float64)
    for node in g.node:  # the checker has verified the topological order
        ins = [env[n] if n else None for n in node.input]
        outs = _eval(node, _attrs(node), ins)
        for name, v in zip(node.output, outs):
            if name:
                env[name] = v
    return env[g.output[0].name]
