// Bootstrap uncertainties and the random-selection floor of 1/JSD: against the standard error of
// a mean, the hand-derived expectation of the JSD between two samples of one parent, and the
// nominal metrics; seeded reproducibility; errors.
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include <tapir/metrics/bootstrap.hpp>
#include <tapir/random.hpp>

using namespace tapir;
using namespace tapir::metrics;

namespace {
double se_of(double sigma, double n) { return sigma / std::sqrt(n); }
double weighted_mean(const std::vector<double>& x, const ValueView& w) {
    double s = 0, sw = 0;
    for (std::size_t i = 0; i < x.size(); ++i) {
        const double wi = w.empty() ? 1.0 : w[i];
        s += wi * x[i];
        sw += wi;
    }
    return s / sw;
}

/// Background masses falling exponentially on [105, 160] and a score that ignores them (signal
/// scores shifted up), or (sculpt) that prefers high masses.
struct Sample {
    std::vector<double> score, mass, label;
};
Sample make_sample(std::size_t n, bool sculpt, std::uint64_t seed) {
    Rng r(seed);
    Sample s;
    for (std::size_t i = 0; i < n; ++i) {
        const bool sig = r.uniform() < 0.3;
        const double m = sig ? 125.0 + 2.0 * r.normal() : 105.0 - 20.0 * std::log(1.0 - r.uniform() * (1.0 - std::exp(-55.0 / 20.0)));
        double sc = r.normal() + (sig ? 2.0 : 0.0);
        if (sculpt && !sig) sc += 0.05 * (m - 130.0);
        s.score.push_back(sc);
        s.mass.push_back(m);
        s.label.push_back(sig ? 1.0 : 0.0);
    }
    return s;
}
} // namespace

TEST_CASE("bootstrap of a mean: value on the sample, spread = the standard error, seeded") {
    Rng r(3);
    std::vector<double> x(20000);
    for (auto& v : x) v = 2.0 + 3.0 * r.normal();
    const auto f = [&](const ValueView& w) { return weighted_mean(x, w); };
    const Estimate e = bootstrap(x.size(), {}, f);
    CHECK(e.value == weighted_mean(x, {}));
    CHECK(e.replicas == 200);
    CHECK(std::fabs(e.bias) < 0.3 * se_of(3.0, 20000));  // an unbiased metric
    const double se = 3.0 / std::sqrt(20000.0);  // 0.0212
    CHECK(e.sd == doctest::Approx(se).epsilon(0.15));
    CHECK(e.lo < e.value);
    CHECK(e.hi > e.value);
    CHECK((e.hi - e.lo) / 2 == doctest::Approx(se).epsilon(0.2));  // 68% interval ~ +-1 sigma
    const Estimate again = bootstrap(x.size(), {}, f);
    CHECK(again.sd == e.sd);
    BootstrapOptions o;
    o.seed = 2;
    CHECK(bootstrap(x.size(), {}, f, o).sd != e.sd);
    o.coverage = 0.9;
    const Estimate wide = bootstrap(x.size(), {}, f, o);
    CHECK(wide.hi - wide.lo > e.hi - e.lo);
}

TEST_CASE("bootstrap: errors name the problem") {
    const auto f = [](const ValueView&) { return 1.0; };
    CHECK_THROWS_WITH_AS(bootstrap(0, {}, f), "bootstrap: no events", value_error);
    const std::vector<double> w{1, 1};
    CHECK_THROWS_WITH_AS(bootstrap(3, w, f), "bootstrap: 2 weights for 3 events", value_error);
    BootstrapOptions o;
    o.replicas = 1;
    CHECK_THROWS_WITH_AS(bootstrap(3, {}, f, o), "bootstrap: need at least 2 replicas, got 1", value_error);
    o.replicas = 10;
    o.coverage = 1.0;
    CHECK_THROWS_WITH_AS(bootstrap(3, {}, f, o), "bootstrap: coverage must be in (0, 1), got 1", value_error);
}

TEST_CASE("random_selection_inverse_jsd: the floor of 1/JSD follows (K - 1)(1/N_pass + 1/N_fail) / (8 ln 2)") {
    // Flat masses in 11 bins of [105, 160], 40000 background events, a 10% blind selection.
    Rng r(9);
    std::vector<double> mass(40000), label(40000, 0.0);
    for (auto& m : mass) m = r.uniform(105.0, 160.0);
    const Estimate fl = random_selection_inverse_jsd(mass, label, {}, 0.1);
    const double n_pass = 4000, n_fail = 36000, k = 11;
    const double mean_jsd = (k - 1) * (1 / n_pass + 1 / n_fail) / (8 * std::log(2.0));  // 4.0e-4
    // JSD ~ mean_jsd * chi2(K-1)/(K-1): its median is (1 - 2/(9(K-1)))^3 = 0.935 of the mean.
    CHECK(fl.value == doctest::Approx(1.0 / (0.935 * mean_jsd)).epsilon(0.1));
    CHECK(fl.lo < fl.value);
    CHECK(fl.hi > fl.value);
    // A quarter of the events: a floor four times lower.
    const std::vector<double> m4(mass.begin(), mass.begin() + 10000), l4(10000, 0.0);
    CHECK(random_selection_inverse_jsd(m4, l4, {}, 0.1).value == doctest::Approx(fl.value / 4).epsilon(0.15));
    CHECK_THROWS_WITH_AS(random_selection_inverse_jsd(mass, label, {}, 1.0),
                         "random_selection_inverse_jsd: background efficiency must be in (0, 1), got 1", value_error);
    const std::vector<double> one{120.0}, lab{0.0};
    CHECK_THROWS_AS(random_selection_inverse_jsd(one, lab, {}, 0.5), value_error);
}

TEST_CASE("sculpting_with_uncertainty: nominal values, a blind score at its floor, a sculpting one far below it") {
    const Sample blind = make_sample(30000, false, 5), sculpt = make_sample(30000, true, 5);
    BootstrapOptions o;
    o.replicas = 60;
    const SculptingEstimate b = sculpting_with_uncertainty(blind.score, blind.mass, blind.label, {}, 0.5, 105, 160, 5, o);
    CHECK(b.rejection.value == background_rejection(blind.score, blind.label, {}, 0.5));
    CHECK(b.inverse_jsd.value == mass_sculpting_jsd(blind.score, blind.mass, blind.label).inverse_jsd());
    CHECK(b.rejection.sd > 0);
    CHECK(b.rejection.sd < 0.1 * b.rejection.value);
    // Mass-blind score: its 1/JSD is consistent with the floor (within the floor's 68% band, widened by 2x).
    CHECK(b.inverse_jsd.value > b.floor.lo / 2);
    const SculptingEstimate s = sculpting_with_uncertainty(sculpt.score, sculpt.mass, sculpt.label, {}, 0.5, 105, 160, 5, o);
    CHECK(s.inverse_jsd.hi < s.floor.lo / 5);  // sculpting: resolved far below the floor
    // The interval holds the value (bias-corrected: resampling adds fluctuations, JSD replicas sit higher).
    CHECK(s.inverse_jsd.lo < s.inverse_jsd.value);
    CHECK(s.inverse_jsd.hi > s.inverse_jsd.value);
    CHECK(s.inverse_jsd.bias > 0);
    CHECK(b.inverse_jsd.lo < b.inverse_jsd.value);
    CHECK(b.inverse_jsd.hi > b.inverse_jsd.value);
    CHECK(s.inverse_jsd.sd > 0);
    CHECK(s.rejection.lo < s.rejection.value);
    CHECK(s.rejection.hi > s.rejection.value);
}
