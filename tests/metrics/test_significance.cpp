#include <doctest/doctest.h>

#include <cmath>
#include <string>

#include <tapir/metrics/significance.hpp>

#include "support/message_of.hpp"

using tapir_test::message_of;

namespace {
/// The textbook formula, evaluated naively (fine away from r -> 0 and s << b).
double z_direct(double s, double b, double r) {
    const double sb2 = r * r * b * b;
    return std::sqrt(2.0 * ((s + b) * std::log((s + b) * (b + sb2) / (b * b + (s + b) * sb2)) -
                            b * b / sb2 * std::log(1.0 + sb2 * s / (b * (b + sb2)))));
}
} // namespace

TEST_CASE("Asimov Z_A (Cowan et al., arXiv:1007.1727): check values") {
    CHECK(tapir::metrics::asimov_significance(14, 5, 0.3) == doctest::Approx(3.6149635).epsilon(1e-8));
    CHECK(tapir::metrics::asimov_significance(100, 1000, 0.0) == doctest::Approx(3.11165).epsilon(2e-6));
    CHECK(tapir::metrics::asimov_significance(100, 1000) == doctest::Approx(3.11165).epsilon(2e-6));
    CHECK(tapir::metrics::asimov_significance(100, 1000, 1e-9) == doctest::Approx(3.11165).epsilon(2e-6));
}

TEST_CASE("Asimov Z_A: r = 0 is exactly the no-systematic formula, r -> 0 reaches it smoothly") {
    for (double s : {0.5, 14.0, 100.0, 5000.0}) {
        for (double b : {1.0, 5.0, 1000.0, 1e6}) {
            const double z0 = std::sqrt(2.0 * ((s + b) * std::log1p(s / b) - s));
            CHECK(tapir::metrics::asimov_significance(s, b, 0.0) == doctest::Approx(z0).epsilon(1e-13));
            double prev = tapir::metrics::asimov_significance(s, b, 0.0);
            for (double r : {1e-12, 1e-9, 1e-6, 1e-4, 1e-2, 0.1, 0.3, 1.0}) {
                const double z = tapir::metrics::asimov_significance(s, b, r);
                CHECK(std::isfinite(z));
                CHECK(z <= prev * (1 + 1e-14)); // a systematic never helps
                prev = z;
            }
            const double tiny = tapir::metrics::asimov_significance(s, b, 1e-12);
            CHECK(tiny == doctest::Approx(z0).epsilon(1e-10));
        }
    }
}

TEST_CASE("Asimov Z_A agrees with the direct formula where that one is well conditioned") {
    for (double s : {3.0, 14.0, 80.0})
        for (double b : {5.0, 50.0, 400.0})
            for (double r : {0.05, 0.1, 0.3, 0.5})
                CHECK(tapir::metrics::asimov_significance(s, b, r) == doctest::Approx(z_direct(s, b, r)).epsilon(1e-10));
}

TEST_CASE("Asimov Z_A limits: s << b gives s/sqrt(b + (r b)^2)") {
    // No systematic: Z = s/sqrt(b) (1 - x/6 + ...), x = s/b; full precision, no cancellation.
    const double s = 1e-3, b = 1000.0;
    CHECK(tapir::metrics::asimov_significance(s, b) == doctest::Approx(s / std::sqrt(b) * (1 - 1e-6 / 6)).epsilon(1e-12));
    CHECK(tapir::metrics::asimov_significance(1.0, 1000.0, 0.01) == doctest::Approx(1.0 / std::sqrt(1000.0 + 100.0)).epsilon(1e-3));
    CHECK(tapir::metrics::asimov_significance(0.0, 10.0, 0.2) == 0.0);
}

TEST_CASE("HiggsML AMS") {
    CHECK(tapir::metrics::ams(100, 1000) == doctest::Approx(3.09669).epsilon(2e-6));
    CHECK(tapir::metrics::ams(100, 1000, 0.0) == doctest::Approx(tapir::metrics::asimov_significance(100, 1000)).epsilon(1e-14));
    CHECK(tapir::metrics::ams(100, 990, 10.0) == doctest::Approx(tapir::metrics::asimov_significance(100, 1000)).epsilon(1e-14));
    CHECK(tapir::metrics::ams(0, 0) == 0.0);
    CHECK(tapir::metrics::ams(1e-9, 5) == doctest::Approx(1e-9 / std::sqrt(15.0)).epsilon(1e-9));
}

TEST_CASE("significance errors") {
    CHECK(message_of<tapir::value_error>([] { tapir::metrics::asimov_significance(1, 0); }) ==
          "asimov_significance: b must be finite and positive, got 0");
    CHECK(message_of<tapir::value_error>([] { tapir::metrics::asimov_significance(-1, 5); }) ==
          "asimov_significance: s must be finite and >= 0, got -1");
    CHECK(message_of<tapir::value_error>([] { tapir::metrics::asimov_significance(1, 5, -0.1); }) ==
          "asimov_significance: relative systematic r must be finite and >= 0, got -0.1");
    CHECK(message_of<tapir::value_error>([] { tapir::metrics::ams(std::nan(""), 5); }) == "ams: s must be finite and >= 0, got nan");
    CHECK(message_of<tapir::value_error>([] { tapir::metrics::ams(1, 0, 0); }) == "ams: b + b_reg must be positive, got 0");
}
