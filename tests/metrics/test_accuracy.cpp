#include <doctest/doctest.h>

#include <string>
#include <vector>

#include <tapir/metrics/accuracy.hpp>

#include "support/message_of.hpp"

using tapir_test::message_of;

TEST_CASE("accuracy: hand-counted, weighted, threshold convention") {
    const std::vector<double> s{0.2, 0.6, 0.5, 0.9}, y{0, 1, 1, 0};
    // Predictions (score > 0.5): 0 1 0 1 -> correct, correct, wrong, wrong.
    CHECK(tapir::metrics::accuracy(s, y) == 0.5);
    CHECK(tapir::metrics::accuracy(s, y, {1, 2, 3, 4}) == doctest::Approx(0.3));
    CHECK(tapir::metrics::accuracy(s, y, {}, 0.4) == 0.75);
    CHECK(tapir::metrics::accuracy(s, y, {}, 0.95) == 0.5);
    CHECK(tapir::metrics::accuracy(s, y, {1, 2, -1, 1}) == doctest::Approx(1.0));
    CHECK(message_of<tapir::value_error>([&] { tapir::metrics::accuracy(s, y, {1, 1, -1, -1}); }) ==
          "accuracy: the weights sum to 0 (need a positive total)");
    CHECK(message_of<tapir::value_error>([&] { tapir::metrics::accuracy(s, {0, 1, 1}); }) == "accuracy: 4 scores but 3 labels");
    CHECK(message_of<tapir::value_error>([&] { tapir::metrics::accuracy(s, {0, 1, 1, 0.5}); }) ==
          "accuracy: label 0.5 at index 3 is not 0 or 1");
}
