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
# deploy-shaped ones (tests/fuzz/fuzz_onnx.cpp's ModelTs) and the operators added for functional
# models (Mul, Div, Max, ReduceSum of a masked set), ConvTranspose and a BatchNormalization on (N, C, H, W).
def i64(name, v):
    return numpy_helper.from_array(np.array(v, np.int64), name)
save('deploy_cnn.onnx', [helper.make_node('Conv', ['x', 'w', 'b'], ['c'], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
                         helper.make_node('BatchNormalization', ['c', 's', 'bb', 'm', 'v'], ['n']),
                         helper.make_node('Relu', ['n'], ['r']),
                         helper.make_node('MaxPool', ['r'], ['p'], kernel_shape=[2, 2], strides=[2, 2]),
                         helper.make_node('GlobalAveragePool', ['p'], ['gp']),
                         helper.make_node('Flatten', ['gp'], ['f'], axis=1),
                         helper.make_node('Tanh', ['f'], ['y'])],
     [init('w', 2, 1, 3, 3), init('b', 2), init('s', 2), init('bb', 2), init('m', 2),
      numpy_helper.from_array(np.ones(2, np.float32), 'v')], ['N', 1, 6, 6], ['N', 2])
save('deploy_conv1d.onnx', [helper.make_node('Conv', ['x', 'w', 'b'], ['c'], kernel_shape=[3]),
                            helper.make_node('MaxPool', ['c'], ['p'], kernel_shape=[2], strides=[2]),
                            helper.make_node('Flatten', ['p'], ['f'], axis=1),
                            helper.make_node('MatMul', ['f', 'w2'], ['mm']),
                            helper.make_node('Add', ['mm', 'b2'], ['y'])],
     [init('w', 3, 2, 3), init('b', 3), init('w2', 9, 1), init('b2', 1)], ['N', 2, 8], ['N', 1])
save('deploy_mlp_bn.onnx', [helper.make_node('Gemm', ['x', 'w', 'b'], ['h'], transB=1),
                            helper.make_node('Tanh', ['h'], ['t']),
                            helper.make_node('BatchNormalization', ['t', 's', 'bb', 'm', 'v'], ['n'], epsilon=1e-3),
                            helper.make_node('Dropout', ['n'], ['d']),
                            helper.make_node('Gemm', ['d', 'w2'], ['y'])],
     [init('w', 4, 3), init('b', 4), init('s', 4), init('bb', 4), init('m', 4),
      numpy_helper.from_array(np.ones(4, np.float32), 'v'), init('w2', 4, 2)], ['N', 3], ['N', 2])
save('deploy_gru_seq.onnx', [helper.make_node('Transpose', ['x'], ['xt'], perm=[1, 0, 2]),
                             helper.make_node('Shape', ['x'], ['sh']),
                             helper.make_node('Gather', ['sh', 'zero'], ['bs'], axis=0),
                             helper.make_node('Unsqueeze', ['bs', 'ax0'], ['bs1']),
                             helper.make_node('Concat', ['one', 'bs1', 'hid'], ['h0s'], axis=0),
                             helper.make_node('ConstantOfShape', ['h0s'], ['h0']),
                             helper.make_node('GRU', ['xt', 'W', 'R', 'B', '', 'h0'], ['Y'], hidden_size=H, linear_before_reset=1),
                             helper.make_node('Squeeze', ['Y', 'ax1'], ['s']),
                             helper.make_node('Transpose', ['s'], ['st'], perm=[1, 0, 2]),
                             helper.make_node('Flatten', ['st'], ['f'], axis=1),
                             helper.make_node('Gemm', ['f', 'w2'], ['y'])],
     [init('W', 1, 3 * H, 2), init('R', 1, 3 * H, H), init('B', 1, 6 * H), i64('zero', 0), i64('ax0', [0]), i64('ax1', [1]),
      i64('one', [1]), i64('hid', [H]), init('w2', 5 * H, 1)], ['N', 5, 2], ['N', 1])
save('conv_transpose_bn.onnx', [helper.make_node('ConvTranspose', ['x', 'w', 'b'], ['c'], kernel_shape=[3, 2], strides=[2, 1],
                                                 pads=[1, 0, 1, 0], output_padding=[1, 0]),
                                helper.make_node('BatchNormalization', ['c', 's', 'bb', 'm', 'v'], ['y'])],
     [init('w', 2, 3, 3, 2), init('b', 3), init('s', 3), init('bb', 3), init('m', 3),
      numpy_helper.from_array(np.ones(3, np.float32), 'v')], ['N', 2, 4, 4], ['N', 3, 8, 5])
# A masked mean over a set, as nn::to_onnx writes a DeepSet(mean) called on (x, mask).
g = helper.make_graph([helper.make_node('Reshape', ['x', 'rows'], ['xr']),
                       helper.make_node('Gemm', ['xr', 'w'], ['h']),
                       helper.make_node('Relu', ['h'], ['hr']),
                       helper.make_node('Reshape', ['hr', 'sets'], ['h3']),
                       helper.make_node('Unsqueeze', ['mask', 'ax2'], ['m3']),
                       helper.make_node('Mul', ['h3', 'm3'], ['hm']),
                       helper.make_node('ReduceSum', ['hm', 'ax1'], ['sum'], keepdims=0),
                       helper.make_node('ReduceSum', ['mask', 'ax1'], ['count'], keepdims=1),
                       helper.make_node('Max', ['count', 'one'], ['c1']),
                       helper.make_node('Div', ['sum', 'c1'], ['mean']),
                       helper.make_node('Sub', ['mean', 'one'], ['d']),
                       helper.make_node('Gemm', ['d', 'w2'], ['y'])], 'g',
                      [helper.make_tensor_value_info('x', TP.FLOAT, ['N', 4, 3]), helper.make_tensor_value_info('mask', TP.FLOAT, ['N', 4])],
                      [helper.make_tensor_value_info('y', TP.FLOAT, ['N', 1])],
                      [i64('rows', [-1, 3]), init('w', 3, 5), i64('sets', [-1, 4, 5]), i64('ax2', [2]), i64('ax1', [1]),
                       numpy_helper.from_array(np.ones(1, np.float32), 'one'), init('w2', 5, 1)])
m = helper.make_model(g, opset_imports=[helper.make_opsetid('', 13)], producer_name='seed')
m.ir_version = 7
onnx.checker.check_model(m)
open(os.path.join(out, 'deepset_mean.onnx'), 'wb').write(m.SerializeToString())
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
