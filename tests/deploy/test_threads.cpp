// Thread safety of inference: four threads share one model and must compute exactly what one
// thread computes. Run under ThreadSanitizer by .ci/tsan.sh; in the ordinary build it checks
// the results only.
//
// Shared read-only across threads: a deploy::Mlp (forward is const and keeps no state), and a
// Sequential in eval mode when each thread records on its own Tape (and, for nn::predict, the
// model is already in eval mode, so predict does not switch modes).
#include <doctest/doctest.h>

// GCC 12 for aarch64 (Debian 12.2) dies with an internal compiler error in the loop vectoriser
// (vect_transform_reduction) on this file at -O3; the kernels under test are vectorised by hand.
#if defined(__aarch64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ == 12
#pragma GCC optimize("no-tree-vectorize")
#endif

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <thread>
#include <vector>

#include <tapir/autodiff/tape.hpp>
#include <tapir/data/random.hpp>
#include <tapir/deploy/convert.hpp>
#include <tapir/nn/fit.hpp>
#include <tapir/nn/layers.hpp>
#include <tapir/nn/sequential.hpp>

using namespace tapir;

namespace {

constexpr std::size_t n_threads = 4;
constexpr std::size_t n_events = 300;  // not a multiple of predict's batch size below

using Fixed = deploy::Mlp<float, 8, 24, 16, 1>;

nn::Sequential<float> make_net() {
    Rng rng(2024);
    nn::Sequential<float> m;
    m.add<nn::Dense<float>>(8, 24, rng)
        .add<nn::ReLU<float>>()
        .add<nn::Dense<float>>(24, 16, rng)
        .add<nn::Tanh<float>>()
        .add<nn::Dense<float>>(16, 1, rng)
        .add<nn::Sigmoid<float>>();
    return m;
}

Tensor<float> make_inputs() {
    Rng rng(7);
    Tensor<float> x(Shape{n_events, 8});
    for (auto& v : x) v = static_cast<float>(rng.normal());
    return x;
}

/// The Sequential's outputs, recorded on the calling thread's own tape.
std::vector<float> tape_forward(nn::Sequential<float>& net, const Tensor<float>& x) {
    Tape<float> tape;
    NoGradGuard<float> guard(tape);
    const Var<float> y = net(tape.view(x));
    return std::vector<float>(y.data(), y.data() + y.size());
}

std::vector<float> fixed_forward(const Fixed& m, const Tensor<float>& x) {
    std::vector<float> y(n_events);
    m.forward(x.data(), y.data(), n_events);
    return y;
}

std::vector<float> fixed_forward_rows(const Fixed& m, const Tensor<float>& x) {
    std::vector<float> y(n_events);
    for (std::size_t i = 0; i < n_events; ++i) m.forward(x.data() + i * Fixed::inputs, y.data() + i);
    return y;
}

std::vector<float> predicted(nn::Sequential<float>& net, const Tensor<float>& x) {
    const Tensor<float> p = nn::predict(net, x, 64);
    return std::vector<float>(p.data(), p.data() + p.size());
}

/// Bitwise comparison: NaNs never pass.
std::size_t count_different(const std::vector<float>& a, const std::vector<float>& b) {
    if (a.size() != b.size()) return a.size() + b.size();
    std::size_t d = 0;
    for (std::size_t i = 0; i < a.size(); ++i) d += !(a[i] == b[i]);
    return d;
}

} // namespace

TEST_CASE("four threads sharing one model compute what one thread computes") {
    nn::Sequential<float> net = make_net();
    net.eval();
    const Tensor<float> x = make_inputs();
    const std::unique_ptr<const Fixed> fixed = deploy::to_fixed<Fixed>(net);

    // Single-threaded references.
    const std::vector<float> ref_tape = tape_forward(net, x);
    const std::vector<float> ref_pred = predicted(net, x);
    const std::vector<float> ref_fixed = fixed_forward(*fixed, x);
    const std::vector<float> ref_rows = fixed_forward_rows(*fixed, x);
    REQUIRE(ref_tape.size() == n_events);
    // The references are real outputs: sigmoids in (0, 1), not all equal.
    double lo = 1.0, hi = 0.0;
    for (float v : ref_tape) {
        lo = std::fmin(lo, double(v));
        hi = std::fmax(hi, double(v));
    }
    CHECK(lo > 0.0);
    CHECK(hi < 1.0);
    CHECK(hi - lo > 0.05);
    CHECK(count_different(ref_pred, ref_tape) == 0);
    // The fixed-size model rounds like the dynamic one up to FMA differences across kernels.
    for (std::size_t i = 0; i < n_events; ++i) CHECK(std::fabs(ref_fixed[i] - ref_tape[i]) <= 1e-5f);
    CHECK(count_different(ref_rows, ref_fixed) == 0);

    const int rounds = 8;
    std::vector<std::size_t> wrong(n_threads * 4, 0);  // one slot per thread and path: no sharing
    std::vector<std::thread> pool;
    for (std::size_t t = 0; t < n_threads; ++t) {
        pool.emplace_back([&, t] {
            for (int r = 0; r < rounds; ++r) {
                wrong[t * 4 + 0] += count_different(tape_forward(net, x), ref_tape);
                wrong[t * 4 + 1] += count_different(predicted(net, x), ref_pred);
                wrong[t * 4 + 2] += count_different(fixed_forward(*fixed, x), ref_fixed);
                wrong[t * 4 + 3] += count_different(fixed_forward_rows(*fixed, x), ref_rows);
            }
        });
    }
    for (std::thread& th : pool) th.join();
    for (std::size_t t = 0; t < n_threads; ++t) {
        CAPTURE(t);
        CHECK(wrong[t * 4 + 0] == 0);
        CHECK(wrong[t * 4 + 1] == 0);
        CHECK(wrong[t * 4 + 2] == 0);
        CHECK(wrong[t * 4 + 3] == 0);
    }
    // Inference left the model in eval mode.
    for (bool training : net.training_modes()) CHECK(!training);
}
