// Binned Poisson likelihood fits on the tape: the Poisson sampler, exact one-bin results, the
// Hessian against finite differences, coverage of the Hessian uncertainties over toys drawn from
// exponential-plus-Gaussian truth, and the local significance of an injected signal against the
// Asimov expectation.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <tapir/autodiff/backward.hpp>
#include <tapir/autodiff/gradcheck.hpp>
#include <tapir/loss/poisson_fit.hpp>

using namespace tapir;
using V = Var<double>;
using Vs = std::vector<V>;
using Td = Tensor<double>;

namespace {
bool quick() {
    const char* v = std::getenv("TAPIR_TEST_QUICK");
    return v && *v && std::strcmp(v, "0") != 0;
}

struct Truth {
    std::vector<double> p;       // [n0, a, b, n1, mu, sigma]
    std::vector<double> x;       // bin centres, t in [-1, 1]
    std::vector<double> lambda;  // expected counts
};
// Background n0 = 200, a = -1.2, b = 0.3 (counts per bin at t); signal n1 = 40, mu = 0.1, sigma = 0.08.
const std::vector<double> truth_sb{200.0, -1.2, 0.3, 40.0, 0.1, 0.08};
Truth make_truth(std::size_t bins, const std::vector<double>& p = truth_sb) {
    Truth tr;
    tr.p = p;
    for (std::size_t i = 0; i < bins; ++i) {
        const double t = -1.0 + (static_cast<double>(i) + 0.5) * 2.0 / static_cast<double>(bins);
        tr.x.push_back(t);
        const double d = (t - p[4]) / p[5];
        tr.lambda.push_back(p[0] * std::exp(p[1] * t + p[2] * t * t) + p[3] * std::exp(-0.5 * d * d));
    }
    return tr;
}
std::vector<double> draw(const std::vector<double>& lambda, Rng& rng) {
    std::vector<double> k;
    for (double l : lambda) k.push_back(static_cast<double>(loss::poisson_sample(rng, l)));
    return k;
}
auto bkg_model = [](const V& p, const V& x) { return loss::exp_poly2_background(p, x); };
auto sb_model = [](const V& p, const V& x) { return loss::exp_poly2_plus_gaussian(p, x); };
} // namespace

TEST_CASE("Poisson sampler: moments and probabilities, both algorithms") {
    Rng rng(1);
    for (double mean : {0.3, 3.0, 9.99, 10.0, 37.5, 1000.0}) {
        INFO("mean " << mean);
        const int n = 40000;
        double s = 0, s2 = 0;
        for (int i = 0; i < n; ++i) {
            const double k = static_cast<double>(loss::poisson_sample(rng, mean));
            s += k;
            s2 += k * k;
        }
        const double m = s / n, var = s2 / n - m * m;
        CHECK(std::abs(m - mean) < 5 * std::sqrt(mean / n));
        CHECK(var == doctest::Approx(mean).epsilon(0.05));
    }
    // Chi-square of the probability mass function at mean 25 (PTRS) and 4 (Knuth).
    for (double mean : {4.0, 25.0}) {
        const int n = 50000, kmax = static_cast<int>(3 * mean) + 10;
        std::vector<double> hist(static_cast<std::size_t>(kmax + 1), 0.0);
        for (int i = 0; i < n; ++i) {
            const auto k = static_cast<int>(loss::poisson_sample(rng, mean));
            hist[static_cast<std::size_t>(std::min(k, kmax))] += 1;
        }
        double chi2 = 0;
        int dof = 0;
        for (int k = 0; k < kmax; ++k) {
            const double e = n * std::exp(k * std::log(mean) - mean - std::lgamma(k + 1.0));
            if (e < 5) continue;
            chi2 += (hist[static_cast<std::size_t>(k)] - e) * (hist[static_cast<std::size_t>(k)] - e) / e;
            ++dof;
        }
        INFO("mean " << mean << ": chi2 " << chi2 << " for " << dof << " bins");
        CHECK(chi2 < dof + 5 * std::sqrt(2.0 * dof));
    }
    CHECK(loss::poisson_sample(rng, 0.0) == 0);
    CHECK_THROWS_AS(loss::poisson_sample(rng, -1.0), value_error);
    CHECK_THROWS_AS(loss::poisson_sample(rng, std::nan("")), value_error);
}

TEST_CASE("Poisson NLL and models: values and gradient checks") {
    Tape<double> t;
    const V lam = t.constant(Td(Shape{3}, {2.0, 0.5, 7.0})), k = t.constant(Td(Shape{3}, {3.0, 0.0, 6.0}));
    double expect = 0;
    for (auto [l, n] : std::vector<std::pair<double, double>>{{2.0, 3.0}, {0.5, 0.0}, {7.0, 6.0}})
        expect += l - n * std::log(l) + std::lgamma(n + 1);
    CHECK(loss::poisson_nll(lam, k).item() == doctest::Approx(expect).epsilon(1e-14));
    const Td x(Shape{4}, {-0.8, -0.1, 0.3, 0.9});
    const V m = loss::exp_poly2_plus_gaussian(t.constant(Td(Shape{6}, truth_sb)), t.constant(x));
    for (std::size_t i = 0; i < 4; ++i) {
        const double d = (x[i] - 0.1) / 0.08;
        CHECK(m[i] == doctest::Approx(200 * std::exp(-1.2 * x[i] + 0.3 * x[i] * x[i]) + 40 * std::exp(-0.5 * d * d)));
    }
    const Td kk(Shape{4}, {150.0, 300.0, 120.0, 60.0});
    const GradcheckFn f = [&](Tape<double>& tt, const Vs& p) { return loss::poisson_nll(loss::exp_poly2_plus_gaussian(p[0], tt.view(x)), tt.view(kk)); };
    const std::vector<Td> p0{Td(Shape{6}, truth_sb)};
    const auto r1 = gradcheck(f, p0, 1e-6, 1e-5);  // the NLL is ~1e3: FD noise ~1e-7
    INFO(r1.message());
    CHECK(r1.passed);
    const auto r2 = gradgradcheck(f, p0, 1e-6, 1e-5);
    INFO(r2.message());
    CHECK(r2.passed);
    CHECK_THROWS_AS(loss::poisson_nll(lam, t.constant(Td(Shape{3}, {1.0, -1.0, 2.0}))), value_error);
    CHECK_THROWS_AS(loss::exp_poly2_background(t.constant(Td(Shape{4}, 1.0)), t.constant(x)), shape_error);
}

TEST_CASE("Poisson fit: exact one-bin answer, Hessian against finite differences, fixed parameters") {
    // One bin, constant model: n0_hat = k, error sqrt(k).
    auto constant_model = [](const V& p, const V& x) { return mul(p, add_scalar(scale(x, 0.0), 1.0)); };
    const auto one = loss::poisson_fit(constant_model, {0.0}, {49.0}, {10.0});
    CHECK(one.converged);
    CHECK(one.params[0] == doctest::Approx(49.0).epsilon(1e-9));
    CHECK(one.errors[0] == doctest::Approx(7.0).epsilon(1e-6));
    CHECK(one.log_likelihood == doctest::Approx(49 * std::log(49.0) - 49 - std::lgamma(50.0)).epsilon(1e-12));

    // Background fit: the covariance inverts the finite-difference Hessian of the NLL.
    const Truth tr = make_truth(40);
    Rng rng(3);
    std::vector<double> bl;
    for (double xi : tr.x) bl.push_back(200 * std::exp(-1.2 * xi + 0.3 * xi * xi));
    const std::vector<double> k = draw(bl, rng);
    const auto fit = loss::poisson_fit(bkg_model, tr.x, k, {150.0, 0.0, 0.0});
    REQUIRE(fit.converged);
    Tape<double> t;
    auto nll = [&](std::vector<double> p) {
        t.clear();
        return loss::poisson_nll(bkg_model(t.constant(Td(Shape{3}, p)), t.constant(Td(Shape{40}, tr.x))), t.constant(Td(Shape{40}, k))).item();
    };
    double hfd[3][3];
    const double h[3] = {1e-2, 1e-4, 1e-4};
    for (std::size_t i = 0; i < 3; ++i)
        for (std::size_t j = 0; j < 3; ++j) {
            auto at = [&](double di, double dj) {
                std::vector<double> p = fit.params;
                p[i] += di;
                p[j] += dj;
                return nll(p);
            };
            hfd[i][j] = (at(h[i], h[j]) - at(h[i], -h[j]) - at(-h[i], h[j]) + at(-h[i], -h[j])) / (4 * h[i] * h[j]);
        }
    // H * C = I
    for (std::size_t i = 0; i < 3; ++i)
        for (std::size_t j = 0; j < 3; ++j) {
            double s = 0;
            for (std::size_t m = 0; m < 3; ++m) s += hfd[i][m] * fit.cov(m, j);
            CHECK(s == doctest::Approx(i == j ? 1.0 : 0.0).epsilon(1e-4).scale(1.0));
        }
    // Fixing a parameter: it keeps its value and gets no error.
    loss::PoissonFitOptions opt;
    opt.fixed = {false, false, true};
    const auto fixed = loss::poisson_fit(bkg_model, tr.x, k, {150.0, 0.0, 0.3}, opt);
    CHECK(fixed.converged);
    CHECK(fixed.params[2] == 0.3);
    CHECK(fixed.errors[2] == 0.0);
    CHECK(fixed.errors[1] > 0.0);
    CHECK(fixed.log_likelihood <= fit.log_likelihood + 1e-9);
    // Errors.
    CHECK_THROWS_AS(loss::poisson_fit(bkg_model, tr.x, std::vector<double>(3, 1.0), {1.0, 0.0, 0.0}), shape_error);
    CHECK_THROWS_AS(loss::poisson_fit(bkg_model, tr.x, k, {-1.0, 0.0, 0.0}), value_error);  // lambda < 0 at the start
    opt.fixed = {true};
    CHECK_THROWS_AS(loss::poisson_fit(bkg_model, tr.x, k, {150.0, 0.0, 0.0}, opt), value_error);
    // Bounds: a start outside is rejected; a bound that is active stops the fit at the boundary.
    loss::PoissonFitOptions bounded;
    bounded.lower = {0.0, -HUGE_VAL, -HUGE_VAL};
    bounded.upper = {HUGE_VAL, HUGE_VAL, 0.1};
    CHECK_THROWS_WITH_AS(loss::poisson_fit(bkg_model, tr.x, k, {150.0, 0.0, 0.2}, bounded), doctest::Contains("bounds"), value_error);
    const auto capped = loss::poisson_fit(bkg_model, tr.x, k, {150.0, 0.0, 0.0}, bounded);
    CHECK(capped.params[2] < 0.1);
    CHECK(capped.params[2] > 0.09);  // pressed against the bound (the free fit's b is near 0.3)
    CHECK(fit.params[2] > 0.15);
    bounded.lower = {0.0};
    CHECK_THROWS_AS(loss::poisson_fit(bkg_model, tr.x, k, {150.0, 0.0, 0.0}, bounded), value_error);
}

namespace {
/// Start of the signal-plus-background fits: background roughly, signal at the hypothesis.
std::vector<double> start_sb(const Truth& tr) { return {180.0, -1.0, 0.2, 0.7 * tr.p[3], tr.p[4], tr.p[5]}; }
const std::vector<double> start_b{180.0, -1.0, 0.2};
/// sigma > 0 (the model depends on sigma^2 only), n0 > 0.
loss::PoissonFitOptions sb_options() {
    loss::PoissonFitOptions o;
    o.lower = {0.0, -HUGE_VAL, -HUGE_VAL, -HUGE_VAL, -HUGE_VAL, 0.0};
    return o;
}
} // namespace

TEST_CASE("Poisson fit: coverage of the Hessian uncertainties over toys") {
    // n1 = 100: about 600 signal events on 12000 background, a regime where the Gaussian
    // approximation of the likelihood (hence the Hessian errors) should hold for all six
    // parameters, the signal width included.
    const std::size_t toys = quick() ? 100 : 1000;
    const Truth tr = make_truth(60, {200.0, -1.2, 0.3, 100.0, 0.1, 0.08});
    const auto asimov = loss::poisson_fit(sb_model, tr.x, tr.lambda, start_sb(tr), sb_options());
    REQUIRE(asimov.converged);
    for (std::size_t i = 0; i < 6; ++i) CHECK(asimov.params[i] == doctest::Approx(tr.p[i]).epsilon(1e-8));
    Rng rng(2024);
    std::size_t within1 = 0, within2 = 0, checked = 0, failed = 0;
    std::vector<double> per1(6, 0.0);
    for (std::size_t toy = 0; toy < toys; ++toy) {
        const std::vector<double> k = draw(tr.lambda, rng);
        const auto sb = loss::poisson_fit(sb_model, tr.x, k, start_sb(tr), sb_options());
        if (!sb.converged) {
            ++failed;
            continue;
        }
        for (std::size_t i = 0; i < 6; ++i) {
            const double pull = (sb.params[i] - tr.p[i]) / sb.errors[i];
            within1 += std::abs(pull) < 1 ? 1 : 0;
            within2 += std::abs(pull) < 2 ? 1 : 0;
            per1[i] += std::abs(pull) < 1 ? 1 : 0;
            ++checked;
        }
    }
    const double fits = static_cast<double>(checked) / 6.0;
    const double c1 = static_cast<double>(within1) / static_cast<double>(checked);
    const double c2 = static_cast<double>(within2) / static_cast<double>(checked);
    MESSAGE(toys << " toys, " << failed << " fits not converged; parameters within 1 sigma of the truth: " << c1
                 << " (68.3% nominal), within 2 sigma: " << c2 << " (95.4%); per parameter (n0 a b n1 mu sigma) within 1 sigma: "
                 << per1[0] / fits << " " << per1[1] / fits << " " << per1[2] / fits << " " << per1[3] / fits << " " << per1[4] / fits
                 << " " << per1[5] / fits);
    CHECK(failed <= toys / 50);
    // Nominal 68.3% and 95.4%; the margins allow for the toys' spread (quick mode: 100 toys).
    CHECK(c1 > (quick() ? 0.60 : 0.64));
    CHECK(c1 < (quick() ? 0.77 : 0.73));
    CHECK(c2 > (quick() ? 0.90 : 0.93));
    CHECK(c2 < 0.98);
    for (std::size_t i = 0; i < 6; ++i) CHECK(per1[i] / fits > (quick() ? 0.5 : 0.6));
}

TEST_CASE("Poisson fit: local significance of an injected signal against the Asimov expectation") {
    // n1 = 40 (about 240 signal events): the median local significance over toys is compared with
    // the significance of the Asimov data set (counts = expectations), its median expectation.
    const std::size_t toys = quick() ? 60 : 250;
    const Truth tr = make_truth(60);
    loss::PoissonFitOptions at_mass;  // at the mass hypothesis: mean and width fixed
    at_mass.fixed = {false, false, false, false, true, true};
    const auto asimov_b = loss::poisson_fit(bkg_model, tr.x, tr.lambda, start_b);
    const auto asimov_sb = loss::poisson_fit(sb_model, tr.x, tr.lambda, start_sb(tr), at_mass);
    const auto asimov_free = loss::poisson_fit(sb_model, tr.x, tr.lambda, start_sb(tr), sb_options());
    REQUIRE(asimov_b.converged);
    REQUIRE(asimov_sb.converged);
    REQUIRE(asimov_free.converged);
    const double z_asimov = loss::local_significance(asimov_sb, asimov_b);
    CHECK(loss::local_significance(asimov_free, asimov_b) == doctest::Approx(z_asimov).epsilon(1e-6));  // same maximum
    Rng rng(7);
    std::vector<double> zs, zfree;
    for (std::size_t toy = 0; toy < toys; ++toy) {
        const std::vector<double> k = draw(tr.lambda, rng);
        const auto b = loss::poisson_fit(bkg_model, tr.x, k, start_b);
        const auto sb = loss::poisson_fit(sb_model, tr.x, k, start_sb(tr), at_mass);
        const auto free = loss::poisson_fit(sb_model, tr.x, k, start_sb(tr), sb_options());
        if (b.converged && sb.converged) zs.push_back(loss::local_significance(sb, b));
        if (b.converged && free.converged) zfree.push_back(loss::local_significance(free, b));
    }
    REQUIRE(zs.size() > toys * 9 / 10);
    std::sort(zs.begin(), zs.end());
    std::sort(zfree.begin(), zfree.end());
    const double z_median = zs[zs.size() / 2], zfree_median = zfree[zfree.size() / 2];
    MESSAGE("local significance, " << zs.size() << " toys: median " << z_median << " (mass and width fixed), " << zfree_median
                                   << " (all free) vs Asimov " << z_asimov);
    CHECK(z_asimov > 4.0);  // a clearly visible signal, so the comparison means something
    CHECK(z_median == doctest::Approx(z_asimov).epsilon(0.10));
    CHECK(zfree_median == doctest::Approx(z_asimov).epsilon(0.15));  // floating mass and width add look-elsewhere freedom
}
