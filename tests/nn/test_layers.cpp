// Layers: forward values, gradcheck/gradgradcheck in double (input and parameters, through
// functional_call), the fused Dense node, Sequential fusion, Dropout, BatchNorm, LayerNorm.
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <tapir/autodiff/backward.hpp>
#include <tapir/autodiff/gradcheck.hpp>
#include <tapir/autodiff/ops.hpp>
#include <tapir/data/random.hpp>
#include <tapir/nn/layers.hpp>
#include <tapir/nn/sequential.hpp>

#include "support/gradcheck.hpp"

using namespace tapir;
using namespace tapir::nn;
using namespace tapir_test;

namespace {
/// gradcheck (and gradgradcheck) of a module with respect to its input and all its parameters.
void check_module(Module<double>& m, const Td& x, bool second_order = true) {
    std::vector<Td> inputs{x};
    for (auto* p : m.parameters()) inputs.push_back(p->value);
    const GradcheckFn f = [&m](Tape<double>&, const Vs& v) { return functional_call(m, v[0], Vs(v.begin() + 1, v.end())); };
    const auto r1 = gradcheck(f, inputs);
    INFO(m.describe() << " first order: " << r1.message());
    CHECK(r1.passed);
    CHECK(r1.checked == [&] {
        std::size_t n = 0;
        for (const auto& t : inputs) n += t.size();
        return n;
    }());
    if (second_order) {
        const auto r2 = gradgradcheck(f, inputs);
        INFO(m.describe() << " second order: " << r2.message());
        CHECK(r2.passed);
    }
}

std::size_t count_ops(const Tape<double>& t, const OpDef<double>& op) {
    std::size_t n = 0;
    for (std::size_t i = 0; i < t.size(); ++i) n += t.node(static_cast<std::int32_t>(i)).op == &op ? 1 : 0;
    return n;
}
std::size_t count_non_leaf(const Tape<double>& t) {
    std::size_t n = 0;
    for (std::size_t i = 0; i < t.size(); ++i) {
        const OpDef<double>* op = t.node(static_cast<std::int32_t>(i)).op;
        n += (op != &op_leaf<double> && op != &op_param<double>) ? 1 : 0;
    }
    return n;
}

const Activation all_acts[] = {Activation::none, Activation::relu, Activation::leaky_relu, Activation::elu,
                               Activation::tanh, Activation::sigmoid, Activation::softplus};
} // namespace

TEST_CASE("Dense computes act(x W + b) with W of shape (in, out)") {
    Rng rng(1);
    Dense<double> d(2, 3, rng, Activation::relu);
    d.weight.value = Td(Shape{2, 3}, {1, -1, 2, 0.5, 1, -3});
    d.bias.value = Td(Shape{3}, {0.1, 0.2, -0.3});
    Tape<double> t;
    const Td x(Shape{2, 2}, {1, 2, -1, 1});
    const V y = d(t.view(x));
    REQUIRE(y.shape() == Shape{2, 3});
    // row 0: [1+1, -1+2, 2-6] + b = [2.1, 1.2, -4.3] -> relu
    // row 1: [-1+0.5, 1+1, -2-3] + b = [-0.4, 2.2, -5.3] -> relu
    const double expected[] = {2.1, 1.2, 0.0, 0.0, 2.2, 0.0};
    for (std::size_t i = 0; i < 6; ++i) CHECK(y[i] == doctest::Approx(expected[i]).epsilon(1e-14));

    // ONE dense node (plus the parameter leaves), no matmul/add/relu nodes.
    CHECK(count_ops(t, op_dense<double>) == 1);
    CHECK(count_non_leaf(t) == 1);
    CHECK(count_ops(t, op_param<double>) == 2);

    // Gradients reach Parameter::grad.
    d.zero_grad();
    backward(sum(y));
    // dL/db_j = number of rows where the unit is active.
    CHECK(d.bias.grad[0] == 1.0);
    CHECK(d.bias.grad[1] == 2.0);
    CHECK(d.bias.grad[2] == 0.0);
    CHECK(d.weight.grad(0, 0) == 1.0);  // x[0][0] from row 0 only
    CHECK(d.weight.grad(1, 1) == 3.0);  // x[0][1] + x[1][1]

    // Bad inputs name the layer and the shape.
    CHECK_THROWS_WITH_AS(d(t.view(Td(Shape{2, 3}))), "Dense(2 -> 3): expected input of shape (batch, 2), got (2, 3)", shape_error);
    CHECK_THROWS_AS(d(t.view(Td(Shape{2}))), shape_error);
    CHECK_THROWS_AS(Dense<double>(0, 3, rng), value_error);
}

TEST_CASE("Dense passes gradcheck and gradgradcheck for every activation, with and without bias") {
    const Td x = rnd(Shape{4, 3}, 2);
    for (const Activation act : all_acts) {
        Rng rng(3);
        Dense<double> d(3, 5, rng, act);
        init::uniform(d.bias.value, rng, -0.5, 0.5);
        check_module(d, x);
    }
    Rng rng(4);
    DenseOptions o;
    o.bias = false;
    o.activation = Activation::leaky_relu;
    o.alpha = 0.3;
    Dense<double> nb(3, 2, rng, o);
    CHECK(nb.parameters().size() == 1);
    CHECK(nb.alpha() == 0.3);
    check_module(nb, x);
}

TEST_CASE("the fused Dense node matches matmul + add + activation ops in value and gradients") {
    const Td x = rnd(Shape{6, 4}, 5);
    for (const Activation act : all_acts) {
        INFO(activation_name(act));
        Rng rng(6);
        Dense<double> d(4, 3, rng, act);
        init::uniform(d.bias.value, rng, -1.0, 1.0);
        const double alpha = d.alpha();
        Tape<double> t;
        const V xv = t.variable(x);
        const V fused = d(xv);
        const Td yf = fused.value();
        d.zero_grad();
        backward(sum(square(fused)));
        const Td gx_fused = xv.grad(), gw_fused = d.weight.grad, gb_fused = d.bias.grad;

        t.clear();
        d.zero_grad();
        const V xv2 = t.variable(x);
        V z = add(matmul(xv2, t.param(d.weight)), t.param(d.bias));
        switch (act) {
        case Activation::none: break;
        case Activation::relu: z = relu(z); break;
        case Activation::leaky_relu: z = leaky_relu(z, alpha); break;
        case Activation::elu: z = elu(z, alpha); break;
        case Activation::tanh: z = tanh(z); break;
        case Activation::sigmoid: z = sigmoid(z); break;
        case Activation::softplus: z = softplus(z); break;
        }
        for (std::size_t i = 0; i < z.size(); ++i) CHECK(z[i] == doctest::Approx(yf[i]).epsilon(1e-14));
        backward(sum(square(z)));
        const Td gx = xv2.grad();
        for (std::size_t i = 0; i < gx.size(); ++i) CHECK(gx[i] == doctest::Approx(gx_fused[i]).epsilon(1e-13));
        for (std::size_t i = 0; i < gw_fused.size(); ++i) CHECK(d.weight.grad[i] == doctest::Approx(gw_fused[i]).epsilon(1e-13));
        for (std::size_t i = 0; i < gb_fused.size(); ++i) CHECK(d.bias.grad[i] == doctest::Approx(gb_fused[i]).epsilon(1e-13));
    }
}

TEST_CASE("activation layers: values, gradcheck and gradgradcheck") {
    const Td x = rnd(Shape{3, 4}, 7);
    Tape<double> t;
    const V xv = t.view(x);
    ReLU<double> r;
    LeakyReLU<double> lr(0.2);
    ELU<double> e(0.7);
    Sigmoid<double> sg;
    Tanh<double> th;
    Softplus<double> sp;
    Identity<double> id;
    const V yr = r(xv), yl = lr(xv), ye = e(xv), ys = sg(xv), yt = th(xv), yp = sp(xv), yi = id(xv);
    for (std::size_t i = 0; i < x.size(); ++i) {
        const double v = x[i];
        CHECK(yr[i] == (v > 0 ? v : 0.0));
        CHECK(yl[i] == doctest::Approx(v > 0 ? v : 0.2 * v));
        CHECK(ye[i] == doctest::Approx(v > 0 ? v : 0.7 * std::expm1(v)));
        CHECK(ys[i] == doctest::Approx(1.0 / (1.0 + std::exp(-v))));
        CHECK(yt[i] == doctest::Approx(std::tanh(v)));
        CHECK(yp[i] == doctest::Approx(std::log1p(std::exp(v))));
        CHECK(yi[i] == v);
    }
    CHECK(lr.describe() == "LeakyReLU(0.2)");
    CHECK(e.describe() == "ELU(0.7)");
    CHECK(th.type_name() == "Tanh");
    for (Module<double>* m : std::vector<Module<double>*>{&r, &lr, &e, &sg, &th, &sp, &id}) check_module(*m, x);

    Softmax<double> sm;
    const V y = sm(xv);
    for (std::size_t i = 0; i < 3; ++i) {
        double s = 0;
        for (std::size_t j = 0; j < 4; ++j) s += y[i * 4 + j];
        CHECK(s == doctest::Approx(1.0).epsilon(1e-14));
    }
    check_module(sm, x);
    Softmax<double> sm0(0);
    check_module(sm0, x);
    CHECK_THROWS_AS(Softmax<double>(3).output_shape(Shape{2, 2}), shape_error);
}

TEST_CASE("Sequential fuses Dense followed by an activation into one dense node") {
    Rng rng(8);
    Sequential<double> m;
    m.add<Dense<double>>(5, 6, rng).add<ReLU<double>>();
    m.add<Dense<double>>(6, 4, rng).add<LeakyReLU<double>>(0.1);
    m.add<Dense<double>>(4, 4, rng).add<ELU<double>>(0.5);
    m.add<Dense<double>>(4, 3, rng).add<Tanh<double>>();
    m.add<Dense<double>>(3, 3, rng).add<Softplus<double>>();
    m.add<Dense<double>>(3, 2, rng, Activation::tanh).add<Sigmoid<double>>();  // already activated: not fused
    m.add<Softmax<double>>();
    for (auto* p : m.parameters())
        if (p->shape().rank() == 1) init::uniform(p->value, rng, -0.5, 0.5);
    const Td x = rnd(Shape{7, 5}, 9);

    Tape<double> t;
    m.zero_grad();
    const V yf = m(t.view(x));
    CHECK(count_ops(t, op_dense<double>) == 6);
    CHECK(count_ops(t, op_relu<double>) == 0);
    CHECK(count_ops(t, op_leaky_relu<double>) == 0);
    CHECK(count_ops(t, op_elu<double>) == 0);
    CHECK(count_ops(t, op_tanh<double>) == 0);
    CHECK(count_ops(t, op_softplus<double>) == 0);
    CHECK(count_ops(t, op_sigmoid<double>) == 1);  // the unfusable one
    CHECK(count_non_leaf(t) == 8);          // 6 dense + sigmoid + softmax
    const Td fused = yf.value();
    const Td r = rnd(yf.shape(), 10);
    backward(sum(mul(yf, t.view(r))));
    std::vector<Td> gfused;
    for (auto* p : m.parameters()) gfused.push_back(p->grad);

    // The same model unfused: every layer called on its own.
    t.clear();
    m.zero_grad();
    V h = t.view(x);
    for (auto* l : m.layers()) h = (*l)(h);
    CHECK(count_ops(t, op_dense<double>) == 6);
    CHECK(count_ops(t, op_relu<double>) == 1);
    CHECK(count_ops(t, op_softplus<double>) == 1);
    for (std::size_t i = 0; i < fused.size(); ++i) CHECK(h[i] == doctest::Approx(fused[i]).epsilon(1e-13));
    backward(sum(mul(h, t.view(r))));
    const auto ps = m.parameters();
    for (std::size_t k = 0; k < ps.size(); ++k)
        for (std::size_t j = 0; j < ps[k]->size(); ++j) CHECK(ps[k]->grad[j] == doctest::Approx(gfused[k][j]).epsilon(1e-12));

    // set_fusion(false) records the unfused graph.
    m.set_fusion(false);
    t.clear();
    const V yu = m(t.view(x));
    CHECK(count_ops(t, op_relu<double>) == 1);
    for (std::size_t i = 0; i < fused.size(); ++i) CHECK(yu[i] == doctest::Approx(fused[i]).epsilon(1e-13));
    m.set_fusion(true);

    // And the fused model passes gradcheck/gradgradcheck as a whole.
    check_module(m, x);
}

TEST_CASE("Dense with activation and the unfused chain agree in values and input gradients") {
    const Td x = rnd(Shape{6, 4}, 5);
    for (const Activation act : all_acts) {
        INFO(activation_name(act));
        Rng rng(6);
        Dense<double> fused(4, 3, rng, act);
        init::uniform(fused.bias.value, rng, -1.0, 1.0);
        DenseOptions o;
        Rng rng2(6);
        Dense<double> plain(4, 3, rng2, o);
        plain.weight.value = fused.weight.value;
        plain.bias.value = fused.bias.value;
        ActivationLayer<double> a(act, fused.alpha());

        Tape<double> t;
        const V xv = t.variable(x);
        const V yf = fused(xv);
        const V yu = a(plain(xv));
        REQUIRE(count_ops(t, op_dense<double>) == 2);
        for (std::size_t i = 0; i < yf.size(); ++i) CHECK(yf[i] == doctest::Approx(yu[i]).epsilon(1e-14));
        const V gf = grad(sum(square(yf)), xv);
        const V gu = grad(sum(square(yu)), xv);
        for (std::size_t i = 0; i < gf.size(); ++i) CHECK(gf[i] == doctest::Approx(gu[i]).epsilon(1e-13));
    }
}

TEST_CASE("Dropout: identity in eval, zeroes about p and scales by 1/(1-p) in training, reproducible") {
    const Td x = rnd(Shape{100, 100}, 11, 0.5, 1.5);
    Tape<double> t;
    Dropout<double> d(0.3, 1234);
    d.eval();
    const V xv = t.view(x);
    const V ye = d(xv);
    CHECK(ye.index() == xv.index());  // no node at all

    d.train();
    const V y = d(xv);
    std::size_t zeros = 0;
    for (std::size_t i = 0; i < x.size(); ++i) {
        if (y[i] == 0.0) ++zeros;
        else CHECK(y[i] == doctest::Approx(x[i] / 0.7).epsilon(1e-14));
    }
    // 10000 Bernoulli(0.3) draws: sd = sqrt(10000 * 0.21) ~ 46; allow 5 sd.
    CHECK(zeros > 3000 - 230);
    CHECK(zeros < 3000 + 230);

    Dropout<double> same(0.3, 1234), other(0.3, 99);
    const V y2 = same(xv), y3 = other(xv);
    std::size_t differ_same = 0, differ_other = 0;
    for (std::size_t i = 0; i < x.size(); ++i) {
        differ_same += y[i] != y2[i];
        differ_other += y[i] != y3[i];
    }
    CHECK(differ_same == 0);
    CHECK(differ_other > 1000);

    // Gradient: the mask times 1/(1-p); check with a fixed mask (reseeded per evaluation).
    const GradcheckFn f = [&d](Tape<double>&, const Vs& v) {
        d.reseed(77);
        return d(v[0]);
    };
    const Td xs = rnd(Shape{4, 5}, 12);
    CHECK(gradcheck(f, {xs}).passed);
    CHECK(gradgradcheck(f, {xs}).passed);

    Dropout<double> none(0.0), all(1.0);
    const V yn = none(xv), ya = all(xv);
    CHECK(yn.index() == xv.index());
    for (std::size_t i = 0; i < 50; ++i) CHECK(ya[i] == 0.0);
    CHECK_THROWS_AS(Dropout<double>(1.5), value_error);
    CHECK_THROWS_AS(Dropout<double>(-0.1), value_error);
    Rng rng(5);
    Dropout<double> from_rng(0.5, rng);
    CHECK(from_rng.p() == 0.5);
}

TEST_CASE("BatchNorm: batch statistics in training, running statistics (PyTorch convention), eval mode") {
    BatchNorm<double> bn(2);
    bn.weight.value = Td(Shape{2}, {2.0, 0.5});
    bn.bias.value = Td(Shape{2}, {1.0, -1.0});
    const Td x(Shape{3, 2}, {1, 2, 3, 6, 5, 10});
    // column means [3, 6]; biased variances [8/3, 32/3]; unbiased [4, 16].
    Tape<double> t;
    const V y = bn(t.view(x));
    const double eps = 1e-5;
    for (std::size_t i = 0; i < 3; ++i) {
        CHECK(y[i * 2 + 0] == doctest::Approx(2.0 * (x[i * 2] - 3.0) / std::sqrt(8.0 / 3.0 + eps) + 1.0).epsilon(1e-13));
        CHECK(y[i * 2 + 1] == doctest::Approx(0.5 * (x[i * 2 + 1] - 6.0) / std::sqrt(32.0 / 3.0 + eps) - 1.0).epsilon(1e-13));
    }
    // running = 0.9 running + 0.1 batch (unbiased variance for running_var)
    CHECK(bn.running_mean[0] == doctest::Approx(0.3).epsilon(1e-14));
    CHECK(bn.running_mean[1] == doctest::Approx(0.6).epsilon(1e-14));
    CHECK(bn.running_var[0] == doctest::Approx(0.9 + 0.4).epsilon(1e-14));
    CHECK(bn.running_var[1] == doctest::Approx(0.9 + 1.6).epsilon(1e-14));
    t.clear();
    bn(t.view(x));
    CHECK(bn.running_mean[0] == doctest::Approx(0.57).epsilon(1e-14));
    CHECK(bn.running_mean[1] == doctest::Approx(1.14).epsilon(1e-14));
    CHECK(bn.running_var[0] == doctest::Approx(1.57).epsilon(1e-14));
    CHECK(bn.running_var[1] == doctest::Approx(3.85).epsilon(1e-14));
    CHECK(bn.batches_tracked() == 2);

    // Eval: (x - running_mean) / sqrt(running_var + eps) * weight + bias; statistics frozen.
    bn.eval();
    t.clear();
    const V ye = bn(t.view(x));
    for (std::size_t i = 0; i < 3; ++i) {
        CHECK(ye[i * 2 + 0] == doctest::Approx(2.0 * (x[i * 2] - 0.57) / std::sqrt(1.57 + eps) + 1.0).epsilon(1e-13));
        CHECK(ye[i * 2 + 1] == doctest::Approx(0.5 * (x[i * 2 + 1] - 1.14) / std::sqrt(3.85 + eps) - 1.0).epsilon(1e-13));
    }
    CHECK(bn.running_mean[0] == doctest::Approx(0.57).epsilon(1e-14));
    CHECK(bn.batches_tracked() == 2);

    // Training output: zero mean and (biased) unit variance per feature with weight 1, bias 0.
    BatchNorm<double> plain(3);
    t.clear();
    const Td xr = rnd(Shape{50, 3}, 13, -3, 5);
    const V yp = plain(t.view(xr));
    for (std::size_t j = 0; j < 3; ++j) {
        double m = 0, v = 0;
        for (std::size_t i = 0; i < 50; ++i) m += yp[i * 3 + j];
        m /= 50;
        for (std::size_t i = 0; i < 50; ++i) v += (yp[i * 3 + j] - m) * (yp[i * 3 + j] - m);
        CHECK(std::abs(m) < 1e-12);
        CHECK(v / 50 == doctest::Approx(1.0).epsilon(1e-5));
    }

    // Gradients: train mode (through the batch statistics) and eval mode, first and second order.
    BatchNorm<double> g(3);
    Rng rg(14);
    init::uniform(g.weight.value, rg, 0.5, 1.5);
    init::uniform(g.bias.value, rg, -0.5, 0.5);
    const Td xg = rnd(Shape{5, 3}, 16);
    check_module(g, xg);
    g.eval();
    check_module(g, xg);

    CHECK_THROWS_WITH_AS(bn(t.view(Td(Shape{3, 3}))), "BatchNorm(2): expected input of shape (batch, 2), got (3, 3)", shape_error);
    bn.train();
    CHECK_THROWS_AS(bn(t.view(Td(Shape{1, 2}))), value_error);
    CHECK_THROWS_AS(BatchNorm<double>(2, 1.5), value_error);
    CHECK_THROWS_AS(BatchNorm<double>(0), value_error);
}

TEST_CASE("LayerNorm normalises each row over the last axis") {
    LayerNorm<double> ln(4);
    ln.weight.value = Td(Shape{4}, {1, 2, 0.5, -1});
    ln.bias.value = Td(Shape{4}, {0, 1, 0, 0.5});
    const Td x(Shape{2, 4}, {1, 2, 3, 4, -2, 0, 2, 8});
    Tape<double> t;
    const V y = ln(t.view(x));
    // row 0: mean 2.5, biased var 1.25; row 1: mean 2, biased var (16+4+0+36)/4 = 14
    const double m[] = {2.5, 2.0}, v[] = {1.25, 14.0};
    for (std::size_t i = 0; i < 2; ++i)
        for (std::size_t j = 0; j < 4; ++j)
            CHECK(y[i * 4 + j] == doctest::Approx((x[i * 4 + j] - m[i]) / std::sqrt(v[i] + 1e-5) * ln.weight.value[j] + ln.bias.value[j])
                                      .epsilon(1e-13));
    const double y5 = y[5];
    ln.eval();  // same in eval
    t.clear();
    const V y2 = ln(t.view(x));
    CHECK(y2[5] == y5);
    check_module(ln, rnd(Shape{3, 4}, 17));
    CHECK_THROWS_AS(ln(t.view(Td(Shape{2, 3}))), shape_error);
}
