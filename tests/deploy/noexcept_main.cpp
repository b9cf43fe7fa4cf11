// Compiled by test_codegen.cpp with a host compiler and -fno-exceptions -fno-rtti: the inference
// header (deploy.hpp: the fixed-size and quantised models) must build (and run) without exceptions
// and RTTI. Not part of test_deploy.
#include <tapir/deploy/deploy.hpp>

namespace {
tapir::deploy::Mlp<float, 3, 4, 2> net;
tapir::deploy::Mlp<double, 3, 4, 2> net_d;
tapir::deploy::Int8Mlp<3, 4, 2> q;
tapir::deploy::FixedMlp<tapir::deploy::FixedPoint<16, 6>, 3, 4, 2> fx;
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
    return yd[0] == 0.0 ? 0 : 4;
}
