# Regenerates tests/fuzz/corpus/onnx: /usr/bin/python3 tests/support/make_onnx_corpus.py tests/fuzz/corpus/onnx torch
# Seeds for fuzz_onnx: small valid models (hand-built with onnx.helper, one from torch.onnx.export)
# and a few broken ones.
import sys, os
import numpy as np
import onnx
from onnx import helper, numpy_helper, TensorProto as TP
out = sys.argv[1]
rng = np.random.default_rng(0)
def init(name, *shape, dtype=np.float32):
    return numpy_helper.from_array(rng.standard_normal(shape).astype(dtype), name)
def save(name, nodes, inits, x_shape, y_shape, opset=13):
    g = helper.make_graph(nodes, 'g', [helper.make_tensor_value_info('x', TP.FLOAT, x_shape)],
                          [helper.make_tensor_value_info('y', TP.FLOAT, y_shape)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid('', opset)], producer_name='seed')
    m.ir_version = 7
    onnx.checker.check_model(m)
    open(os.path.join(out, name), 'wb').write(m.SerializeToString())
    return m.SerializeToString()
mlp = save('mlp.onnx', [helper.make_node('Gemm', ['x', 'w', 'b'], ['h'], transB=1, name='fc'),
                        helper.make_node('LeakyRelu', ['h'], ['h2'], alpha=0.2),
                        helper.make_node('BatchNormalization', ['h2', 's', 'bb', 'm', 'v'], ['y'], epsilon=1e-3)],
           [init('w', 4, 3), init('b', 4), init('s', 4), init('bb', 4), init('m', 4),
            numpy_helper.from_array(np.ones(4, np.float32), 'v')], ['N', 3], ['N', 4])
save('cnn.onnx', [helper.make_node('Conv', ['x', 'w', 'b'], ['c'], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1], group=1),
                  helper.make_node('Relu', ['c'], ['r']),
                  helper.make_node('MaxPool', ['r'], ['p'], kernel_shape=[2, 2], strides=[2, 2]),
                  helper.make_node('AveragePool', ['p'], ['a'], kernel_shape=[2, 2], strides=[1, 1], pads=[1, 1, 1, 1], count_include_pad=1),
                  helper.make_node('GlobalAveragePool', ['a'], ['gp']),
                  helper.make_node('Flatten', ['gp'], ['y'], axis=1)],
     [init('w', 2, 1, 3, 3), init('b', 2)], ['N', 1, 6, 6], ['N', 2])
H = 3
save('lstm.onnx', [helper.make_node('Transpose', ['x'], ['xt'], perm=[1, 0, 2]),
                   helper.make_node('LSTM', ['xt', 'W', 'R', 'B'], ['Y', 'Yh'], hidden_size=H),
                   helper.make_node('Squeeze', ['Yh', 'ax'], ['h']),
                   helper.make_node('Gemm', ['h', 'w2'], ['y'])],
     [init('W', 1, 4 * H, 2), init('R', 1, 4 * H, H), init('B', 1, 8 * H), numpy_helper.from_array(np.array([0], np.int64), 'ax'),
      init('w2', H, 1)], ['N', 5, 2], ['N', 1])
save('gru_seq.onnx', [helper.make_node('Transpose', ['x'], ['xt'], perm=[1, 0, 2]),
                      helper.make_node('GRU', ['xt', 'W', 'R', 'B'], ['Y', 'Yh'], hidden_size=H, linear_before_reset=1),
                      helper.make_node('Squeeze', ['Y', 'ax'], ['s']),
                      helper.make_node('Transpose', ['s'], ['st'], perm=[1, 0, 2]),
                      helper.make_node('Gather', ['st', 'i'], ['g'], axis=1),
                      helper.make_node('Slice', ['g', 'st0', 'en0', 'ax1'], ['sl']),
                      helper.make_node('Unsqueeze', ['sl', 'ax1'], ['u']),
                      helper.make_node('Reshape', ['u', 'shp'], ['r']),
                      helper.make_node('Concat', ['r', 'r'], ['cc'], axis=-1),
                      helper.make_node('ReduceSum', ['cc', 'ax1'], ['y'], keepdims=1)],
     [init('W', 1, 3 * H, 2), init('R', 1, 3 * H, H), init('B', 1, 6 * H), numpy_helper.from_array(np.array([1], np.int64), 'ax'),
      numpy_helper.from_array(np.array(-1, np.int64), 'i'), numpy_helper.from_array(np.array([0], np.int64), 'st0'),
      numpy_helper.from_array(np.array([2], np.int64), 'en0'), numpy_helper.from_array(np.array([1], np.int64), 'ax1'),
      numpy_helper.from_array(np.array([0, -1], np.int64), 'shp')], ['N', 5, 2], ['N', 1])
# broken ones
open(os.path.join(out, 'truncated.onnx'), 'wb').write(mlp[:len(mlp) // 2])
m = onnx.load_from_string(mlp); m.graph.node[1].op_type = 'Einsum'
open(os.path.join(out, 'unsupported_op.onnx'), 'wb').write(m.SerializeToString())
m = onnx.load_from_string(mlp); m.graph.node[0].input[0] = 'y'
open(os.path.join(out, 'cyclic.onnx'), 'wb').write(m.SerializeToString())
m = onnx.load_from_string(mlp); m.graph.initializer[0].dims[0] = 1 << 40
open(os.path.join(out, 'oversized_dims.onnx'), 'wb').write(m.SerializeToString())
m = onnx.load_from_string(mlp); m.graph.initializer[0].data_type = TP.INT64
open(os.path.join(out, 'wrong_dtype.onnx'), 'wb').write(m.SerializeToString())
if len(sys.argv) > 2:  # torch
    import torch
    torch.manual_seed(0)
    t = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2), torch.nn.Sigmoid())
    torch.onnx.export(t, (torch.zeros(1, 3),), os.path.join(out, 'torch_mlp.onnx'), opset_version=13)
