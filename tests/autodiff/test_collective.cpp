// group_sum, the differentiable sum over the members of a data-parallel group: two members
// simulated by two threads (each with its own tape and loss weight) give the gradient of the
// weighted global loss recorded on one tape; and first and second order against finite
// differences for a group of identical members.
#include <doctest/doctest.h>

#include <cmath>
#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <thread>
#include <vector>

#include <tapir/autodiff/backward.hpp>
#include <tapir/autodiff/collective.hpp>
#include <tapir/autodiff/ops.hpp>

#include "support/gradcheck.hpp"

using namespace tapir;
using namespace tapir_test;

namespace {

/// Two threads meeting in sum(): each gets the element-wise sum of both arguments.
struct Exchange {
    std::mutex m;
    std::condition_variable cv;
    std::vector<double> total, result;
    int arrived = 0;
    unsigned generation = 0;
    int calls = 0;

    void run(double* v, std::size_t n) {
        std::unique_lock<std::mutex> lock(m);
        const unsigned g = generation;
        if (arrived == 0) total.assign(v, v + n);
        else
            for (std::size_t i = 0; i < n; ++i) total[i] += v[i];
        if (++arrived == 2) {
            result = total;
            arrived = 0;
            ++generation;
            ++calls;
            cv.notify_all();
        } else {
            cv.wait(lock, [&] { return generation != g; });
        }
        for (std::size_t i = 0; i < n; ++i) v[i] = result[i];
    }
};

struct ThreadMember final : SumGroup<double> {
    Exchange* ex;
    double w;
    ThreadMember(Exchange& e, double weight) : ex(&e), w(weight) {}
    void sum(double* v, std::size_t n) override { ex->run(v, n); }
    double loss_weight() const override { return w; }
};

/// k identical members: every sum is k times the value; each member's weight is 1 / k.
struct Identical final : SumGroup<double> {
    double k;
    explicit Identical(double members) : k(members) {}
    void sum(double* v, std::size_t n) override {
        for (std::size_t i = 0; i < n; ++i) v[i] *= k;
    }
    double loss_weight() const override { return 1.0 / k; }
};

/// Member r's loss: its rows d (n x 3) weighted by a, summed over the group, then a mean over
/// its own rows of a nonlinear function of the sum.
V member_loss(const V& d, const V& s_global) { return mean(square(tanh(mul(d, s_global)))); }
V member_share(const V& a, const V& d) { return sum(mul(d, a), 0, true); }

} // namespace

TEST_CASE("group_sum: two members with unequal loss weights give the gradient of the weighted global loss") {
    const Td theta = rnd(Shape{1, 3}, 1, -0.5, 0.5);
    const Td d0 = rnd(Shape{4, 3}, 2), d1 = rnd(Shape{7, 3}, 3);
    const double w0 = 0.3, w1 = 0.7;

    // One tape: L = w0 L0(s0 + s1) + w1 L1(s0 + s1).
    Tape<double> t;
    const V a = t.variable(theta);
    const V dd0 = t.constant(d0), dd1 = t.constant(d1);
    const V s = add(member_share(a, dd0), member_share(a, dd1));
    const V l = add(scale(member_loss(dd0, s), w0), scale(member_loss(dd1, s), w1));
    const Td ref = grad(l, a).value();
    const Td s_ref = s.value();

    // Two members on two threads, each with its own tape and its own loss (unweighted), their
    // gradients then weighted and added as the gradient all-reduce does.
    Exchange ex;
    Td g[2], sums[2];
    auto member = [&](int r) {
        ThreadMember group(ex, r == 0 ? w0 : w1);
        Tape<double> tr;
        const V ar = tr.variable(theta);
        const V dr = tr.constant(r == 0 ? d0 : d1);
        const V sr = group_sum(member_share(ar, dr), group);
        sums[r] = sr.value();
        g[r] = grad(member_loss(dr, sr), ar).value();
    };
    std::thread other(member, 1);
    member(0);
    other.join();
    CHECK(ex.calls == 2);  // one sum forward, one backward
    for (std::size_t j = 0; j < 3; ++j) {
        CHECK(sums[0][j] == doctest::Approx(s_ref[j]).epsilon(1e-14));
        CHECK(sums[1][j] == sums[0][j]);
        const double got = w0 * g[0][j] + w1 * g[1][j];
        CHECK(got == doctest::Approx(ref[j]).epsilon(1e-12));
        // not a comparison of zeros
        CHECK(std::abs(ref[j]) > 1e-6);
    }
}

TEST_CASE("group_sum: first and second order against finite differences (identical members)") {
    Identical three(3.0);
    check_both([&](Tape<double>&, const Vs& v) { return mul(group_sum(square(v[0]), three), v[1]); }, {rnd(Shape{2, 3}, 4), rnd(Shape{2, 3}, 5)});
    Tape<double> t;
    const Td x(Shape{2}, {1.0, -2.5});
    const Td y = group_sum(t.constant(x), three).value();
    CHECK(y[0] == 3.0);
    CHECK(y[1] == -7.5);
}
