#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include <tapir/data/random.hpp>
#include <tapir/metrics/histogram.hpp>

#include "support/message_of.hpp"

using tapir_test::message_of;

TEST_CASE("the Higgs binning: 5 GeV from 105 to 160") {
    auto h = tapir::metrics::Histogram::with_width(105, 160, 5);
    REQUIRE(h.bins() == 11);
    CHECK(h.edge(0) == 105);
    CHECK(h.edge(1) == 110);
    CHECK(h.edge(11) == 160);
    CHECK(h.center(4) == 127.5);
    CHECK(h.width() == 5);
    h.fill(105.0);             // lower edge: first bin
    h.fill(110.0, 2.0);        // an inner edge belongs to the bin above
    h.fill(124.99, 0.5);       // bin 3
    h.fill(160.0, 3.0);        // hi belongs to the last bin (numpy)
    h.fill(104.999, 7.0);      // underflow
    h.fill(160.001, 11.0);     // overflow
    h.fill(-std::numeric_limits<double>::infinity());
    h.fill(std::numeric_limits<double>::infinity(), 2.0);
    CHECK(h[0] == 1.0);
    CHECK(h[1] == 2.0);
    CHECK(h[3] == 0.5);
    CHECK(h[10] == 3.0);
    CHECK(h.underflow() == 8.0);
    CHECK(h.overflow() == 13.0);
    CHECK(h.integral() == 6.5); // flows excluded
    CHECK(h.entries() == 8);
    const auto p = h.normalized();
    CHECK(p[10] == doctest::Approx(3.0 / 6.5));
    h.fill(112.0, -1.0);
    h.fill(113.0, 2.0);
    CHECK(h[1] == 3.0);
    CHECK(h.error(1) == doctest::Approx(3.0)); // sqrt(4 + 1 + 4)
}

TEST_CASE("every value lands in the bin whose edges hold it") {
    tapir::metrics::Histogram h(7, -1.3, 2.9);
    tapir::Rng rng(4);
    for (int i = 0; i < 20000; ++i) {
        double x = rng.uniform(-1.5, 3.1);
        if (i % 10 == 0) x = h.edge(rng.uniform_int(8)); // exact edges too
        const long long b = h.find_bin(x);
        if (x < -1.3) {
            CHECK(b == -1);
        } else if (x > 2.9) {
            CHECK(b == 7);
        } else if (x == 2.9) {
            CHECK(b == 6);
        } else {
            REQUIRE(b >= 0);
            REQUIRE(b < 7);
            const auto k = static_cast<std::size_t>(b);
            CHECK(h.edge(k) <= x);
            CHECK(x < h.edge(k + 1));
        }
    }
    tapir::metrics::Histogram t(10, 0.0, 1.0);
    CHECK(t.find_bin(0.3) == 3); // (0.3 - 0) * 10 rounds to 2.9999999999999996
    CHECK(t.find_bin(0.7) == 7);
}

TEST_CASE("vector fill with weights") {
    tapir::metrics::Histogram h(2, 0.0, 2.0);
    h.fill(std::vector<double>{0.5, 1.5, 1.5, 3.0}, std::vector<double>{1, 2, 3, 4});
    CHECK(h.contents() == std::vector<double>{1, 5});
    CHECK(h.overflow() == 4);
    h.fill(std::vector<float>{0.25f});
    CHECK(h[0] == 2);
    CHECK(message_of<tapir::value_error>([&] { h.fill(std::vector<double>{1, 2}, std::vector<double>{1}); }) ==
          "Histogram::fill: 2 values but 1 weights");
}

TEST_CASE("histogram errors") {
    CHECK(message_of<tapir::value_error>([] { tapir::metrics::Histogram::with_width(105, 160, 4); }) ==
          "Histogram::with_width: width 4 does not divide [105, 160] into whole bins");
    CHECK(message_of<tapir::value_error>([] { tapir::metrics::Histogram(0, 0.0, 1.0); }) ==
          "Histogram: the number of bins must be positive");
    CHECK(message_of<tapir::value_error>([] { tapir::metrics::Histogram(3, 1.0, 1.0); }) ==
          "Histogram: range [1, 1] must be finite with lo < hi");
    tapir::metrics::Histogram h(3, 0.0, 1.0);
    CHECK(message_of<tapir::value_error>([&] { h.fill(std::nan("")); }) == "Histogram::fill: value is NaN");
    CHECK(message_of<tapir::value_error>([&] { h.fill(0.5, std::numeric_limits<double>::infinity()); }) ==
          "Histogram::fill: non-finite weight inf for value 0.5");
    CHECK(message_of<tapir::value_error>([&] { h.normalized(); }) ==
          "Histogram::normalized: the in-range integral is 0 (need a positive total)");
    h.fill(5.0);
    CHECK(message_of<tapir::value_error>([&] { h.normalized(); }) ==
          "Histogram::normalized: the in-range integral is 0 (need a positive total)");
}
