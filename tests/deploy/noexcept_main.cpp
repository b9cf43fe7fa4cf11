// Compiled by test_codegen.cpp with a host compiler and -fno-exceptions -fno-rtti: the inference
// header (deploy.hpp: the fixed-size and quantised models) must build (and run) without exceptions
// and RTTI. Not part of test_deploy.
#include <tapir/deploy/deploy.hpp>

namespace {
tapir::deploy::Mlp<float, 3, 4, 2> net;
tapir::deploy::Mlp<double, 3, 4, 2> net_d;
tapir::deploy::Int8Mlp<3, 4, 2> q;
tapir::deploy::FixedMlp<tapir::deploy::FixedPoint<16, 6>, 3, 4, 2> fx;
// Zero weights: the convolution gives its bias (0.5), the dense layer 0.5 x 4 = 2.
tapir::deploy::ModelT<float, tapir::deploy::Conv1dT<float, 1, 6, 2, 3>, tapir::deploy::MaxPool1dT<float, 2, 4, 2>,
                      tapir::deploy::FlattenT<float, 4>, tapir::deploy::DenseT<float, 4, 1>>
    cnn;
tapir::deploy::QuantizedT<tapir::deploy::Int8, decltype(cnn)> cnn8;
tapir::deploy::QuantizedT<tapir::deploy::FixedPoint<16, 6>, decltype(cnn)> cnn16;
tapir::deploy::LstmT<float, 3, 4> lstm;  // zero weights: every gate 1/2, g = 0, so h and c stay 0
tapir::deploy::GruT<float, 3, 4> gru;    // zero weights: n = 0, z = 1/2, h halves
// Zero weights: h = 0 after every step, so the masked sequence gives the head's bias.
tapir::deploy::ModelT<float, tapir::deploy::GruT<float, 1, 2, 3>, tapir::deploy::DenseT<float, 2, 1>> gru_seq;
// Zero weights: each group gives its bias; the padded max pool never takes the padding.
tapir::deploy::ModelT<float, tapir::deploy::GroupedConv1dT<float, 2, 2, 4, 2, 1>, tapir::deploy::MaxPool1dT<float, 2, 4, 2, 2, 1>> grouped;
// Zero weights: phi gives 0, rho its bias.
tapir::deploy::EnergyFlowT<float, 4, tapir::deploy::Mlp<float, 2, 3>, tapir::deploy::Mlp<float, 3, 1>> efn;
// Two taps 3 apart (dilation 3): y[i] = x[i] + 10 x[i + 3].
tapir::deploy::Conv1dT<float, 1, 6, 1, 2, 1, 0, 0, 3> dilated;
} // namespace

int main() {
    const float w0[12] = {0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f};
    const float b0[4] = {0.25f, 0.25f, 0.25f, 0.25f};
    const float w1[8] = {-1.0f, -1.0f, -1.0f, -1.0f, -1.0f, -1.0f, -1.0f, -1.0f};
    tapir::deploy::LayerView<float> v[2];
    v[0] = {w0, b0, 3, 4, tapir::Activation::relu, 0.0f};
    v[1] = {w1, nullptr, 4, 2, tapir::Activation::none, 0.0f};
    const float ranges[2] = {4.0f, 16.0f};
    if (net.load(v, 2) != tapir::deploy::Status::ok || q.load(v, 2, ranges) != tapir::deploy::Status::ok ||
        fx.load(v, 2) != tapir::deploy::Status::ok)
        return 1;
    const float x[3] = {1.0f, 2.0f, 3.0f};
    const double xd[3] = {1.0, 2.0, 3.0};
    float y[2], yq[2], yf[2];
    double yd[2];
    net.forward(x, y);
    net_d.forward(xd, yd);
    q.forward(x, yq);
    fx.forward(x, yf);
    // relu(0.5 * 6 + 0.25) = 3.25 in 4 units, then -13; int8 and ap_fixed<16,6> hit it closely.
    if (y[0] != -13.0f || y[1] != -13.0f) return 2;
    if (yq[0] < -13.2f || yq[0] > -12.8f || yf[0] != -13.0f) return 3;
    if (yd[0] != 0.0) return 4;
    cnn.layer<0>().bias[0] = cnn.layer<0>().bias[1] = 0.5f;
    const float wd[4] = {1.0f, 1.0f, 1.0f, 1.0f};
    tapir::deploy::LayerView<float> vd{wd, nullptr, 4, 1, tapir::Activation::none, 0.0f};
    if (cnn.layer<3>().dense.set(vd) != tapir::deploy::Status::ok) return 5;
    const float s[6] = {1, 2, 3, 4, 5, 6};
    float yc = 0.0f;
    cnn.forward(s, &yc);
    if (yc != 2.0f) return 6;
    // Quantised: ap_fixed<16,6> holds 0.5 and 2 exactly; int8 rounds the bias (0.5 in units of 6 / 127).
    if (tapir::deploy::quantize_model(cnn8, cnn, s, 1) != tapir::deploy::Status::ok ||
        tapir::deploy::quantize_model(cnn16, cnn, nullptr, 0) != tapir::deploy::Status::ok)
        return 8;
    float y8 = 0.0f, y16 = 0.0f;
    cnn8.forward(s, &y8);
    cnn16.forward(s, &y16);
    if (y16 != 2.0f || y8 < 1.9f || y8 > 2.2f) return 9;
    const float bias1[1] = {0.75f}, w21[2] = {0.0f, 0.0f}, w31[3] = {0.0f, 0.0f, 0.0f};
    tapir::deploy::LayerView<float> vh{w21, bias1, 2, 1, tapir::Activation::none, 0.0f};
    tapir::deploy::LayerView<float> vr{w31, bias1, 3, 1, tapir::Activation::none, 0.0f};
    if (gru_seq.layer<1>().dense.set(vh) != tapir::deploy::Status::ok || efn.rho.load(&vr, 1) != tapir::deploy::Status::ok) return 10;
    const float seq[3] = {1, 2, 3}, seq_mask[3] = {1, 0, 1};
    const float set[12] = {0.5f, 1, 2, 0.5f, 3, 4, 0, 5, 6, 0, 7, 8}, set_mask[4] = {1, 1, 0, 0};
    float ys = 0.0f, ye = 0.0f;
    gru_seq.forward(seq, seq_mask, &ys);
    efn.forward(set, set_mask, &ye);
    if (ys != 0.75f || ye != 0.75f) return 11;
    grouped.layer<0>().group[0].bias[0] = -1.0f;
    grouped.layer<0>().group[1].bias[0] = 2.0f;
    float yg[6] = {0, 0, 0, 0, 0, 0};
    grouped.forward(set, yg);
    if (yg[0] != -1.0f || yg[2] != -1.0f || yg[3] != 2.0f || yg[5] != 2.0f) return 12;
    dilated.weight[0][0] = 1.0f;
    dilated.weight[0][1] = 10.0f;
    float yd3[3] = {0, 0, 0};
    dilated.forward(tapir::simd::detected_isa(), s, yd3, nullptr);
    if (yd3[0] != 41.0f || yd3[1] != 52.0f || yd3[2] != 63.0f) return 13;
    float st[8] = {0, 0, 0, 0, 0, 0, 0, 0}, sg[4] = {1, 1, 1, 1};
    lstm.step(x, st);
    gru.step(x, sg);
    return st[0] == 0.0f && st[4] == 0.0f && sg[0] == 0.5f ? 0 : 7;
}
