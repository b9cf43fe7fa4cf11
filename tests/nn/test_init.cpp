// Initialisers: limits and moments of Glorot/He, constants, fans, reproducibility by seed.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <tapir/random.hpp>
#include <tapir/nn/init.hpp>
#include <tapir/nn/layers.hpp>

using namespace tapir;
using namespace tapir::nn;

namespace {
struct Moments {
    double mean = 0, sd = 0, min = 1e300, max = -1e300;
};
template <class T>
Moments moments(const Tensor<T>& t) {
    Moments m;
    for (T v : t) {
        m.mean += static_cast<double>(v);
        m.min = std::min(m.min, static_cast<double>(v));
        m.max = std::max(m.max, static_cast<double>(v));
    }
    m.mean /= static_cast<double>(t.size());
    for (T v : t) m.sd += (static_cast<double>(v) - m.mean) * (static_cast<double>(v) - m.mean);
    m.sd = std::sqrt(m.sd / static_cast<double>(t.size() - 1));
    return m;
}
} // namespace

TEST_CASE("fans follow the (in, out) kernel layout") {
    CHECK(compute_fans(Shape{200, 300}).in == 200.0);
    CHECK(compute_fans(Shape{200, 300}).out == 300.0);
    CHECK(compute_fans(Shape{7}).in == 7.0);
    CHECK(compute_fans(Shape{7}).out == 7.0);
    CHECK(compute_fans(Shape{3, 3, 16, 32}).in == 9.0 * 16);
    CHECK(compute_fans(Shape{3, 3, 16, 32}).out == 9.0 * 32);
    CHECK(compute_fans(Shape{}).in == 1.0);
}

TEST_CASE("Glorot uniform: U(-a, a), a = sqrt(6 / (in + out))") {
    Tensor<float> w(Shape{200, 300});
    Rng rng(1);
    init::glorot_uniform(w, rng);
    const double a = std::sqrt(6.0 / 500.0);
    const Moments m = moments(w);
    CHECK(m.min >= -a);
    CHECK(m.max <= a);
    CHECK(m.max > 0.99 * a);  // 60000 draws reach the edges
    CHECK(m.min < -0.99 * a);
    CHECK(std::abs(m.mean) < 0.01 * a);
    CHECK(m.sd == doctest::Approx(a / std::sqrt(3.0)).epsilon(0.01));
    Tensor<float> g(Shape{200, 300});
    Rng rng2(1);
    init::glorot_uniform(g, rng2, 2.0);  // gain scales the limit
    CHECK(moments(g).max <= 2 * a);
    CHECK(moments(g).max > 1.98 * a);
}

TEST_CASE("Glorot normal and He normal/uniform moments") {
    Tensor<double> w(Shape{250, 150});
    Rng rng(2);
    init::glorot_normal(w, rng);
    Moments m = moments(w);
    CHECK(m.sd == doctest::Approx(std::sqrt(2.0 / 400.0)).epsilon(0.02));
    CHECK(std::abs(m.mean) < 0.02 * m.sd);

    init::he_normal(w, rng);
    m = moments(w);
    CHECK(m.sd == doctest::Approx(std::sqrt(2.0 / 250.0)).epsilon(0.02));  // std sqrt(2 / fan_in)
    CHECK(std::abs(m.mean) < 0.02 * m.sd);

    init::he_uniform(w, rng);
    m = moments(w);
    const double a = std::sqrt(6.0 / 250.0);
    CHECK(m.max <= a);
    CHECK(m.min >= -a);
    CHECK(m.max > 0.99 * a);
    CHECK(m.sd == doctest::Approx(std::sqrt(2.0 / 250.0)).epsilon(0.02));

    init::normal(w, rng, 3.0, 0.5);
    m = moments(w);
    CHECK(m.mean == doctest::Approx(3.0).epsilon(0.002));
    CHECK(m.sd == doctest::Approx(0.5).epsilon(0.02));
}

TEST_CASE("constant initialisers and the Init value type") {
    Tensor<float> w(Shape{3, 4}, 7.0f);
    Rng rng(3);
    init::zeros(w);
    for (float v : w) CHECK(v == 0.0f);
    init::ones(w);
    for (float v : w) CHECK(v == 1.0f);
    init::constant(w, 0.25f);
    for (float v : w) CHECK(v == 0.25f);
    Init::constant(-2.0).apply(w, rng);
    for (float v : w) CHECK(v == -2.0f);
    CHECK(Init::he_normal().name() == "he_normal");
    CHECK(Init::xavier_uniform().kind == Init::Kind::glorot_uniform);

    Tensor<float> empty;
    init::glorot_uniform(empty, rng);  // nothing to fill, no division by a zero fan
    Tensor<float> zero_fan(Shape{0, 4});
    init::he_normal(zero_fan, rng);
    CHECK_THROWS_AS(init::uniform(w, rng, 1.0, -1.0), value_error);
    CHECK_THROWS_AS(init::normal(w, rng, 0.0, -1.0), value_error);
}

TEST_CASE("initialisation is reproducible by seed") {
    for (const Init& ini : {Init::glorot_uniform(), Init::glorot_normal(), Init::he_uniform(), Init::he_normal()}) {
        INFO(ini.name());
        Tensor<float> a(Shape{16, 8}), b(Shape{16, 8}), c(Shape{16, 8});
        Rng r1(77), r2(77), r3(78);
        ini.apply(a, r1);
        ini.apply(b, r2);
        ini.apply(c, r3);
        std::size_t same = 0, diff = 0;
        for (std::size_t i = 0; i < a.size(); ++i) {
            same += a[i] == b[i];
            diff += a[i] != c[i];
        }
        CHECK(same == a.size());
        CHECK(diff == a.size());
    }
    // A whole model from one seed: identical twice.
    Rng s1(5), s2(5);
    Dense<float> d1(8, 24, s1), d2(8, 24, s2);
    for (std::size_t i = 0; i < d1.weight.size(); ++i) REQUIRE(d1.weight.value[i] == d2.weight.value[i]);
}

TEST_CASE("Dense defaults to a Glorot uniform kernel and a zero bias (Keras); options override") {
    Rng rng(9);
    Dense<double> d(100, 50, rng);
    const double a = std::sqrt(6.0 / 150.0);
    const Moments m = moments(d.weight.value);
    CHECK(m.max <= a);
    CHECK(m.max > 0.95 * a);
    for (double v : d.bias.value) CHECK(v == 0.0);

    DenseOptions o;
    o.kernel_init = Init::he_normal();
    o.bias_init = Init::constant(0.1);
    Dense<double> h(400, 100, rng, o);
    CHECK(moments(h.weight.value).sd == doctest::Approx(std::sqrt(2.0 / 400.0)).epsilon(0.03));
    for (double v : h.bias.value) CHECK(v == 0.1);
}
