// Convolutional layers: PyTorch's layout and init, output shapes and summary, gradcheck and
// gradgradcheck through functional_call, PyTorch's outputs from copied weights, and a CNN training
// step with Adam that allocates nothing in steady state.
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>
#include <tapir/autodiff/backward.hpp>
#include <tapir/autodiff/gradcheck.hpp>
#include <tapir/nn/conv.hpp>
#include <tapir/nn/layers.hpp>
#include <tapir/nn/sequential.hpp>
#include <tapir/optim/adam.hpp>
#include <tapir/random.hpp>

#include "support/alloc_counter.hpp"
#include "support/gradcheck.hpp"
#include "support/torch_ref.hpp"

using namespace tapir;
using namespace tapir::nn;
using namespace tapir_test;

namespace {
/// gradcheck and gradgradcheck of a module with respect to its input and all its parameters.
void check_layer(Module<double>& m, const Td& x) {
    std::vector<Td> inputs{x};
    for (auto* p : m.parameters()) inputs.push_back(p->value);
    const GradcheckFn f = [&m](Tape<double>&, const Vs& v) { return tanh(functional_call(m, v[0], Vs(v.begin() + 1, v.end()))); };
    INFO(m.describe());
    check_both(f, inputs);
}

ConvOptions same_padding() {
    ConvOptions o;
    o.same = true;
    return o;
}

/// The notes' jet-image CNN (Keras padding='same'): conv 8@4x4 twice, max-pool 2, twice again, dense 64, 1.
template <class T>
Sequential<T> jet_cnn(Rng& rng, std::size_t side = 40) {
    Sequential<T> m;
    m.template add<Conv2d<T>>(1, 8, 4, rng, same_padding()).template add<ReLU<T>>();
    m.template add<Conv2d<T>>(8, 8, 4, rng, same_padding()).template add<ReLU<T>>().template add<MaxPool2d<T>>(2);
    m.template add<Conv2d<T>>(8, 8, 4, rng, same_padding()).template add<ReLU<T>>();
    m.template add<Conv2d<T>>(8, 8, 4, rng, same_padding()).template add<ReLU<T>>().template add<MaxPool2d<T>>(2);
    m.template add<Flatten<T>>().template add<Dense<T>>(8 * (side / 4) * (side / 4), 64, rng, Activation::relu).template add<Dense<T>>(64, 1, rng);
    return m;
}
} // namespace

TEST_CASE("conv layers: PyTorch's parameter layout and default init range") {
    Rng rng(3);
    ConvOptions g2;
    g2.groups = 2;
    Conv2d<double> c(4, 6, Size2(3, 2), rng, g2);
    CHECK(c.weight.shape() == Shape{6, 2, 3, 2});
    CHECK(c.bias.shape() == Shape{6});
    const double bound = 1.0 / std::sqrt(2.0 * 3 * 2);
    double lo = 1, hi = -1;
    for (double v : c.weight.value) lo = std::fmin(lo, v), hi = std::fmax(hi, v);
    CHECK(lo >= -bound);
    CHECK(hi <= bound);
    CHECK(hi - lo > bound);  // spread over the range, not constant
    for (double v : c.bias.value) CHECK(std::fabs(v) <= bound);
    Conv1d<double> c1(4, 6, 5, rng);
    CHECK(c1.weight.shape() == Shape{6, 4, 5});
    ConvTranspose2d<double> ct(4, 6, 3, rng, g2);
    CHECK(ct.weight.shape() == Shape{4, 3, 3, 3});
    for (double v : ct.weight.value) CHECK(std::fabs(v) <= 1.0 / std::sqrt(3.0 * 9));
    ConvOptions nb;
    nb.bias = false;
    CHECK(Conv2d<double>(2, 3, 3, rng, nb).parameters().size() == 1);
    CHECK_THROWS_WITH_AS(Conv2d<double>(3, 4, 3, rng, g2), "Conv2d: 3 input and 4 output channels must both be divisible by groups = 2",
                         value_error);
}

TEST_CASE("conv layers: output shapes, describe(), summary of the jet-image CNN, clone()") {
    Rng rng(5);
    Sequential<float> m = jet_cnn<float>(rng);
    CHECK(m.output_shape(Shape{16, 1, 40, 40}) == Shape{16, 1});
    const std::string s = m.summary(Shape{16, 1, 40, 40});
    INFO(s);
    CHECK(s.find("0 (Conv2d(1->8, 4x4, same))") != std::string::npos);
    CHECK(s.find("(16, 8, 40, 40)") != std::string::npos);
    CHECK(s.find("4 (MaxPool2d(2x2))") != std::string::npos);
    CHECK(s.find("(16, 8, 20, 20)") != std::string::npos);
    CHECK(s.find("10 (Flatten)") != std::string::npos);
    CHECK(s.find("(16, 800)") != std::string::npos);
    // 136 + 1032 + 1032 + 1032 + (800 * 64 + 64) + 65
    CHECK(m.num_parameters() == 136 + 3 * 1032 + 51264 + 65);
    CHECK(s.find("Total params: 54561") != std::string::npos);

    ConvOptions o;
    o.stride = 2;
    o.padding = 1;
    CHECK(Conv2d<float>(3, 5, 3, rng, o).output_shape(Shape{2, 3, 9, 8}) == Shape{2, 5, 5, 4});
    CHECK(Conv2d<float>(3, 5, 3, rng, o).describe() == "Conv2d(3->5, 3x3, stride 2x2, pad 1x1)");
    CHECK(Conv1d<float>(3, 5, 3, rng, o).output_shape(Shape{2, 3, 9}) == Shape{2, 5, 5});
    ConvOptions t;
    t.stride = 2;
    t.padding = 1;
    t.output_padding = 1;
    CHECK(ConvTranspose2d<float>(3, 5, 3, rng, t).output_shape(Shape{2, 3, 4, 5}) == Shape{2, 5, 8, 10});
    CHECK(MaxPool1d<float>(3, 2, 1).output_shape(Shape{2, 3, 9}) == Shape{2, 3, 5});
    CHECK(AvgPool2d<float>(Size2(3, 2), Size2(2, 1), Size2(1, 1)).output_shape(Shape{2, 3, 9, 8}) == Shape{2, 3, 5, 9});
    CHECK(AvgPool2d<float>(Size2(3, 2), Size2(2, 1), Size2(1, 1)).describe() == "AvgPool2d(3x2, stride 2x1, pad 1x1)");
    CHECK(GlobalMaxPool<float>().output_shape(Shape{2, 3, 9}) == Shape{2, 3});
    CHECK(Upsample<float>(Size2(2, 3)).output_shape(Shape{2, 3, 4, 5}) == Shape{2, 3, 8, 15});

    Tape<float> tape;
    const Tensor<float> x(Shape{2, 1, 40, 40}, 0.5f);
    Sequential<float> copy = m;
    copy.at(0).parameters()[0]->value[0] += 1.0f;  // a deep copy: the original keeps its weight
    CHECK(copy.at(0).parameters()[0]->value[0] != m.at(0).parameters()[0]->value[0]);
    CHECK(m(tape.view(x)).shape() == Shape{2, 1});

    CHECK_THROWS_WITH_AS(m.output_shape(Shape{16, 2, 40, 40}),
                         "Sequential layer 0 (Conv2d(1->8, 4x4, same)): Conv2d(1->8, 4x4, same): expected input of shape (N, 1, H, W), got (16, 2, 40, 40)",
                         shape_error);
    Conv2d<float> c(1, 8, 4, rng);
    CHECK_THROWS_WITH_AS(c(tape.view(Tensor<float>(Shape{2, 40, 40}))),
                         "Conv2d(1->8, 4x4): expected input of shape (N, 1, H, W), got (2, 40, 40)", shape_error);
}

TEST_CASE("Reshape: a Dense output as feature maps, values in row-major order, checked shapes") {
    Rng rng(3);
    Reshape<double> r(Shape{2, 3, 2});
    CHECK(r.output_shape(Shape{4, 12}) == Shape{4, 2, 3, 2});
    CHECK(r.output_shape(Shape{0, 12}) == Shape{0, 2, 3, 2});
    CHECK(r.describe() == "Reshape(2, 3, 2)");
    CHECK(r.target() == Shape{2, 3, 2});
    Tape<double> tape;
    Tensor<double> x(Shape{2, 12});
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<double>(i);
    const Var<double> y = r(tape.view(x));
    REQUIRE(y.shape() == Shape{2, 2, 3, 2});
    for (std::size_t i = 0; i < x.size(); ++i) CHECK(y.value()[i] == static_cast<double>(i));
    // Dense -> Reshape -> Conv2d, the autoencoder decoder's pattern: first and second order.
    Sequential<double> dec;
    dec.add<Dense<double>>(3, 8, rng).add<Reshape<double>>(Shape{2, 2, 2}).add<Conv2d<double>>(2, 1, 2, rng);
    CHECK(dec.output_shape(Shape{5, 3}) == Shape{5, 1, 1, 1});
    check_layer(dec, rnd(Shape{2, 3}, 11));

    CHECK_THROWS_WITH_AS(r.output_shape(Shape{4, 10}), "Reshape(2, 3, 2): input (4, 10) does not hold 12 values per row", shape_error);
    CHECK_THROWS_WITH_AS(Reshape<float>(Shape{}), "Reshape: the target shape (without the batch axis) must have rank 1 to 3, got ()", value_error);
}

TEST_CASE("conv layers: gradcheck and gradgradcheck with respect to input and parameters") {
    Rng rng(7);
    ConvOptions o;
    o.stride = Size2(2, 1);
    o.padding = Pad2d(1, 0);
    o.dilation = Size2(1, 2);
    o.groups = 2;
    Conv2d<double> c2(4, 2, Size2(2, 2), rng, o);
    check_layer(c2, rnd(Shape{2, 4, 5, 5}, 1));
    Conv2d<double> cs(2, 3, 4, rng, same_padding());
    check_layer(cs, rnd(Shape{1, 2, 4, 5}, 2));
    ConvOptions o1;
    o1.stride = 2;
    o1.padding = 1;
    Conv1d<double> c1(2, 3, 3, rng, o1);
    check_layer(c1, rnd(Shape{2, 2, 7}, 3));
    ConvOptions ot;
    ot.stride = 2;
    ot.padding = 1;
    ot.output_padding = 1;
    ConvTranspose2d<double> ct(2, 3, 3, rng, ot);
    check_layer(ct, rnd(Shape{2, 2, 3, 2}, 4));
    MaxPool2d<double> mp(2);
    check_layer(mp, rnd_away(Shape{2, 2, 4, 4}, 5));
    AvgPool1d<double> ap(3, 2, 1);
    check_layer(ap, rnd(Shape{2, 2, 7}, 6));
    GlobalAvgPool<double> ga;
    check_layer(ga, rnd(Shape{2, 3, 3, 2}, 7));
    Upsample<double> up(2);
    check_layer(up, rnd(Shape{1, 2, 2, 3}, 8));
    // Conv2d + Tanh fused by Sequential into one node: the activation's rule inside the conv's.
    Sequential<double> fused;
    fused.add<Conv2d<double>>(2, 3, 3, rng, o1).add<Tanh<double>>();
    check_layer(fused, rnd(Shape{2, 2, 5, 4}, 9));
}

TEST_CASE("Sequential fuses Conv2d + activation into one node with the unfused values and gradients") {
    Rng rng(9);
    Sequential<double> m;
    m.add<Conv2d<double>>(2, 3, 3, rng, same_padding()).add<LeakyReLU<double>>(0.1).add<Conv2d<double>>(3, 2, 2, rng).add<ReLU<double>>();
    const Td x = rnd(Shape{2, 2, 6, 5}, 10);
    Tape<double> t;
    const V yf = m(t.constant(x));
    const std::size_t nodes_fused = t.size();
    backward(sum(yf));
    std::vector<Td> gf;
    for (auto* p : m.parameters()) gf.push_back(p->grad), p->zero_grad();
    m.set_fusion(false);
    Tape<double> u;
    const V yu = m(u.constant(x));
    CHECK(u.size() == nodes_fused + 2);  // two activation nodes more
    CHECK(max_abs_diff(yf.value(), yu.value()) < 1e-14);
    backward(sum(yu));
    const auto ps = m.parameters();
    for (std::size_t i = 0; i < ps.size(); ++i) CHECK(max_abs_diff(ps[i]->grad, gf[i]) < 1e-13);
}

TEST_CASE("the jet-image CNN with PyTorch-layout weights gives PyTorch's output (float64)") {
    Rng rng(11);
    Sequential<double> m = jet_cnn<double>(rng, 12);
    const Td x = rnd(Shape{3, 1, 12, 12}, 12);
    TorchTensors in{{"x", x}};
    for (auto& p : m.named_parameters()) in.emplace("p" + p.first, p.second->value);
    auto r = torch_eval(in,
                        "nn = torch.nn\n"
                        "m = nn.Sequential(nn.Conv2d(1, 8, 4, padding='same'), nn.ReLU(), nn.Conv2d(8, 8, 4, padding='same'), nn.ReLU(),\n"
                        "    nn.MaxPool2d(2), nn.Conv2d(8, 8, 4, padding='same'), nn.ReLU(), nn.Conv2d(8, 8, 4, padding='same'), nn.ReLU(),\n"
                        "    nn.MaxPool2d(2), nn.Flatten(), nn.Linear(72, 64), nn.ReLU(), nn.Linear(64, 1))\n"
                        "sd = {}\n"
                        "for k in ['0', '2', '5', '7']:\n"
                        "    sd[k + '.weight'] = inp['p' + k + '.weight']; sd[k + '.bias'] = inp['p' + k + '.bias']\n"
                        "sd['11.weight'] = inp['p11.weight'].t(); sd['11.bias'] = inp['p11.bias']\n"  // Keras layout (in, out) -> torch (out, in)
                        "sd['13.weight'] = inp['p12.weight'].t(); sd['13.bias'] = inp['p12.bias']\n"
                        "m.load_state_dict(sd)\n"
                        "out['y'] = m(x)\n");
    if (!r.ran) return;
    Tape<double> t;
    CHECK(max_abs_diff(m(t.constant(x)).value(), r["y"]) < 1e-10);
}

TEST_CASE("a CNN training step with Adam makes no heap allocation in steady state") {
    Rng rng(13);
    Sequential<float> m = jet_cnn<float>(rng);
    optim::Adam<float> opt(m.parameters(), 1e-3f);
    Tensor<float> x(Shape{4, 1, 40, 40}), y(Shape{4, 1});
    for (auto& v : x) v = static_cast<float>(rng.uniform());
    for (std::size_t i = 0; i < 4; ++i) y[i] = static_cast<float>(i % 2);
    Tape<float> tape;
    const auto step = [&] {
        tape.clear();
        const Var<float> l = bce_with_logits(m(tape.view(x)), tape.view(y));
        backward(l);
        opt.step();
        opt.zero_grad();
        return l.item();
    };
    const float first = step();
    step();
    AllocationScope scope;
    float last = 0;
    for (int i = 0; i < 10; ++i) last = step();
    CHECK(scope.count() == 0);
    CHECK(std::isfinite(last));
    CHECK(last < first);  // it learns the four labels
}
