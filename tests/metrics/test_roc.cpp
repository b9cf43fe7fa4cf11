#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include <tapir/data/random.hpp>
#include <tapir/metrics/roc.hpp>

#include "support/message_of.hpp"

using tapir_test::message_of;

namespace {

/// Weighted AUC by counting every (signal, background) pair, ties 1/2.
double brute_force_auc(const std::vector<double>& s, const std::vector<double>& y, const std::vector<double>& w) {
    double num = 0, wp = 0, wn = 0;
    for (std::size_t i = 0; i < s.size(); ++i) (y[i] == 1 ? wp : wn) += w[i];
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (y[i] != 1) continue;
        for (std::size_t j = 0; j < s.size(); ++j) {
            if (y[j] != 0) continue;
            num += w[i] * w[j] * (s[i] > s[j] ? 1.0 : s[i] == s[j] ? 0.5 : 0.0);
        }
    }
    return num / (wp * wn);
}

} // namespace

TEST_CASE("roc curve and auc of a hand-worked example (sklearn's doc example)") {
    const std::vector<double> s{0.1, 0.4, 0.35, 0.8}, y{0, 0, 1, 1};
    const auto r = tapir::metrics::roc_curve(s, y);
    CHECK(r.thresholds == std::vector<double>{std::numeric_limits<double>::infinity(), 0.8, 0.4, 0.35, 0.1});
    CHECK(r.tpr == std::vector<double>{0, 0.5, 0.5, 1, 1});
    CHECK(r.fpr == std::vector<double>{0, 0, 0.5, 0.5, 1});
    CHECK(tapir::metrics::roc_auc(s, y) == 0.75);
    CHECK(r.auc() == 0.75);
}

TEST_CASE("ties count one half; extremes") {
    CHECK(tapir::metrics::roc_auc({0.3, 0.3, 0.3, 0.3}, {0, 1, 0, 1}) == 0.5);
    const auto r = tapir::metrics::roc_curve({0.3, 0.3, 0.3}, {0, 1, 0});
    CHECK(r.tpr == std::vector<double>{0, 1});
    CHECK(r.fpr == std::vector<double>{0, 1});
    // One tied pair among four: (1 + 1 + 1 + 0.5) / 4.
    CHECK(tapir::metrics::roc_auc({0.9, 0.5, 0.5, 0.1}, {1, 1, 0, 0}) == 0.875);
    CHECK(tapir::metrics::roc_auc({0.9, 0.8, 0.2, 0.1}, {1, 1, 0, 0}) == 1.0);
    CHECK(tapir::metrics::roc_auc({0.9, 0.8, 0.2, 0.1}, {0, 0, 1, 1}) == 0.0);
}

TEST_CASE("weighted auc equals the brute-force pairwise count, with ties and negative weights") {
    tapir::Rng rng(2024);
    for (int trial = 0; trial < 20; ++trial) {
        const std::size_t n = 50 + rng.uniform_int(150);
        std::vector<double> s(n), y(n), w(n);
        for (std::size_t i = 0; i < n; ++i) {
            y[i] = rng.bernoulli(0.4) ? 1.0 : 0.0;
            // Scores on a coarse grid: many ties, within and across classes.
            s[i] = std::round((rng.normal() + y[i]) * 4.0) / 4.0;
            w[i] = rng.uniform(0.1, 2.0);
            if (trial % 2 && rng.bernoulli(0.1)) w[i] = -0.3 * w[i]; // a few negative MC weights
        }
        y[0] = 1;
        y[1] = 0;
        const double expect = brute_force_auc(s, y, w);
        CHECK(tapir::metrics::roc_auc(s, y, w) == doctest::Approx(expect).epsilon(1e-12));
        CHECK(tapir::metrics::roc_curve(s, y, w).auc() == doctest::Approx(expect).epsilon(1e-12));
        const std::vector<double> ones(n, 1.0);
        CHECK(tapir::metrics::roc_auc(s, y) == doctest::Approx(brute_force_auc(s, y, ones)).epsilon(1e-12));
    }
}

TEST_CASE("auc is invariant under a monotone map of the scores and complements when labels flip") {
    tapir::Rng rng(8);
    std::vector<double> s(300), e(300), y(300), flip(300), w(300);
    for (std::size_t i = 0; i < 300; ++i) {
        y[i] = static_cast<double>(i % 2);
        s[i] = rng.normal() + 0.7 * y[i];
        e[i] = std::exp(3.0 * s[i]);
        flip[i] = 1.0 - y[i];
        w[i] = rng.uniform(0.5, 1.5);
    }
    const double a = tapir::metrics::roc_auc(s, y, w);
    CHECK(a > 0.6);
    CHECK(tapir::metrics::roc_auc(e, y, w) == doctest::Approx(a).epsilon(1e-14));
    CHECK(tapir::metrics::roc_auc(s, flip, w) == doctest::Approx(1.0 - a).epsilon(1e-14));
}

TEST_CASE("background rejection at a signal efficiency, interpolated between ROC points") {
    // ROC (eps_S, eps_B): (0,0) (.25,0)@.9 (.75,.5)@.5 (.75,.75)@.2 (1,1)@.1.
    const std::vector<double> s{0.9, 0.5, 0.5, 0.1, 0.5, 0.5, 0.2, 0.1}, y{1, 1, 1, 1, 0, 0, 0, 0};
    const auto r = tapir::metrics::roc_curve(s, y);
    CHECK(r.background_efficiency(0.5) == 0.25); // halfway along the tied step
    CHECK(tapir::metrics::background_rejection(s, y, {}, 0.5) == 4.0);
    CHECK(r.background_efficiency(0.25) == 0.0);
    CHECK(r.rejection(0.25) == std::numeric_limits<double>::infinity());
    CHECK(r.background_efficiency(0.75) == 0.5); // a point of the curve: no interpolation
    CHECK(r.background_efficiency(0.3) == doctest::Approx(0.05));
    CHECK(tapir::metrics::background_rejection(s, y, {}, 0.3) == doctest::Approx(20.0));
    CHECK(r.background_efficiency(1.0) == 1.0);
    // Scaling all background weights changes nothing.
    CHECK(tapir::metrics::background_rejection(s, y, {1, 1, 1, 1, 2, 2, 2, 2}, 0.5) == 4.0);
    CHECK(message_of<tapir::value_error>([&] { r.rejection(0.0); }) ==
          "background_efficiency: signal efficiency must be in (0, 1], got 0");
    CHECK(message_of<tapir::value_error>([&] { r.rejection(1.5); }) ==
          "background_efficiency: signal efficiency must be in (0, 1], got 1.5");
}

TEST_CASE("the score cut of a signal efficiency") {
    const std::vector<double> s{0.9, 0.8, 0.7, 0.6, 0.95, 0.1}, y{1, 1, 1, 1, 0, 0};
    CHECK(tapir::metrics::efficiency_threshold(s, y) == 0.8);
    CHECK(tapir::metrics::efficiency_threshold(s, y, {}, 0.25) == 0.9);
    CHECK(tapir::metrics::efficiency_threshold(s, y, {}, 0.3) == 0.8);
    CHECK(tapir::metrics::efficiency_threshold(s, y, {}, 1.0) == 0.6);
    CHECK(tapir::metrics::efficiency_threshold(s, y, {1, 1, 1, 3, 1, 1}, 0.5) == 0.7);
    // Rounding of weight sums does not push the cut one event further: 0.1 * 10, eps 0.3.
    std::vector<double> s10, y10, w10;
    for (int i = 0; i < 10; ++i) {
        s10.push_back(1.0 - 0.05 * i);
        y10.push_back(1);
        w10.push_back(0.1);
    }
    CHECK(tapir::metrics::efficiency_threshold(s10, y10, w10, 0.3) == s10[2]);
}

TEST_CASE("float vectors and tensors are accepted") {
    const std::vector<float> s{0.1f, 0.4f, 0.35f, 0.8f};
    const tapir::Tensor<float> y(tapir::Shape{4, 1}, {0, 0, 1, 1});
    CHECK(tapir::metrics::roc_auc(s, y) == 0.75);
}

TEST_CASE("bad input: sizes, labels, empty, non-finite, class totals") {
    CHECK(message_of<tapir::value_error>([] { tapir::metrics::roc_auc({0.1, 0.2, 0.3}, {0, 1}); }) ==
          "roc_auc: 3 scores but 2 labels");
    CHECK(message_of<tapir::value_error>([] { tapir::metrics::roc_curve({0.1, 0.2}, {0, 1}, {1, 1, 1}); }) ==
          "roc_curve: 2 scores but 3 weights");
    CHECK(message_of<tapir::value_error>([] { tapir::metrics::roc_auc({0.1, 0.2}, {0, 2}); }) ==
          "roc_auc: label 2 at index 1 is not 0 or 1");
    CHECK(message_of<tapir::value_error>([] { tapir::metrics::roc_auc({0.1, 0.2}, {0, -1}); }) ==
          "roc_auc: label -1 at index 1 is not 0 or 1");
    CHECK(message_of<tapir::value_error>([] { tapir::metrics::roc_auc(std::vector<double>{}, std::vector<double>{}); }) ==
          "roc_auc: empty input");
    CHECK(message_of<tapir::value_error>([] { tapir::metrics::roc_auc({0.1, std::nan("")}, {0, 1}); }) ==
          "roc_auc: non-finite score nan at index 1");
    CHECK(message_of<tapir::value_error>([] { tapir::metrics::roc_auc({0.1, 0.2}, {1, 1}); }) ==
          "roc_auc: the background (label 0) weights sum to 0 (need a positive total)");
    CHECK(message_of<tapir::value_error>([] { tapir::metrics::roc_auc({0.1, 0.2, 0.3}, {1, 1, 0}, {1, -2, 1}); }) ==
          "roc_auc: the signal (label 1) weights sum to -1 (need a positive total)");
    CHECK(message_of<tapir::value_error>([] { tapir::metrics::efficiency_threshold({0.1}, {0}); }) ==
          "efficiency_threshold: the signal (label 1) weights sum to 0 (need a positive total)");
}
