// Learning-rate schedules: values at given counts (hand-computed) and how they drive the optimiser.
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <tapir/optim/schedule.hpp>
#include <tapir/optim/sgd.hpp>
#include <vector>

using namespace tapir;
using namespace tapir::optim;

namespace {
struct One {
    Parameter<double> w{"w", Tensor<double>(Shape{1}, {1.0})};
    std::vector<Parameter<double>*> params() { return {&w}; }
};
} // namespace

TEST_CASE("StepLR: base * gamma^floor(t / step_size)") {
    One m;
    SGD<double> opt(m.params(), 0.1);
    StepLR<double> s(opt, 3, 0.5);
    CHECK(s.name() == "StepLR");
    CHECK(s.lr_at(0) == 0.1);
    CHECK(s.lr_at(2) == 0.1);
    CHECK(s.lr_at(3) == doctest::Approx(0.05).epsilon(1e-15));
    CHECK(s.lr_at(5) == doctest::Approx(0.05).epsilon(1e-15));
    CHECK(s.lr_at(6) == doctest::Approx(0.025).epsilon(1e-15));
    CHECK(s.lr_at(7) == doctest::Approx(0.025).epsilon(1e-15));
    // step() advances and sets the optimiser's rate.
    for (int i = 0; i < 3; ++i) s.step();
    CHECK(s.count() == 3);
    CHECK(opt.learning_rate() == doctest::Approx(0.05).epsilon(1e-15));
}

TEST_CASE("ExponentialLR: base * gamma^t") {
    One m;
    SGD<double> opt(m.params(), 0.1);
    ExponentialLR<double> s(opt, 0.9);
    CHECK(s.lr_at(1) == doctest::Approx(0.09).epsilon(1e-15));
    CHECK(s.lr_at(2) == doctest::Approx(0.081).epsilon(1e-15));
    CHECK(s.lr_at(10) == doctest::Approx(0.03486784401).epsilon(1e-14));
    s.step();
    s.step();
    CHECK(opt.learning_rate() == doctest::Approx(0.081).epsilon(1e-15));
}

TEST_CASE("CosineAnnealingLR: half a cosine from base to min_lr over t_max steps, then min_lr") {
    One m;
    SGD<double> opt(m.params(), 0.1);
    CosineAnnealingLR<double> s(opt, 10, 0.001);
    CHECK(s.lr_at(0) == doctest::Approx(0.1).epsilon(1e-15));
    CHECK(s.lr_at(2) == doctest::Approx(0.0905463412215599).epsilon(1e-14));
    CHECK(s.lr_at(5) == doctest::Approx(0.0505).epsilon(1e-14));
    CHECK(s.lr_at(10) == doctest::Approx(0.001).epsilon(1e-14));
    CHECK(s.lr_at(15) == doctest::Approx(0.001).epsilon(1e-14));
    SUBCASE("annealing to exactly 0 is allowed for a schedule") {
        CosineAnnealingLR<double> z(opt, 4);
        for (int i = 0; i < 4; ++i) z.step();
        CHECK(opt.learning_rate() == 0.0);
        // A zero rate set by hand is still rejected.
        CHECK_THROWS_AS(opt.set_learning_rate(0.0), value_error);
    }
}

TEST_CASE("InverseTimeLR: base / (1 + decay t), Keras' legacy decay (1e-3, 3e-4)") {
    One m;
    SGD<double> opt(m.params(), 1e-3);
    InverseTimeLR<double> s(opt, 3e-4);
    CHECK(s.lr_at(0) == 1e-3);
    CHECK(s.lr_at(1) == doctest::Approx(0.000999700089973008).epsilon(1e-15));
    CHECK(s.lr_at(1000) == doctest::Approx(0.0007692307692307692).epsilon(1e-15));
    CHECK(s.lr_at(10000) == doctest::Approx(0.00025).epsilon(1e-15));
    SUBCASE("set_count resumes a run") {
        s.set_count(1000);
        CHECK(s.count() == 1000);
        CHECK(opt.learning_rate() == doctest::Approx(0.0007692307692307692).epsilon(1e-15));
        s.step();
        CHECK(opt.learning_rate() == doctest::Approx(1e-3 / 1.3003).epsilon(1e-15));
    }
}

TEST_CASE("Schedules for float optimisers") {
    Parameter<float> w("w", Tensor<float>(Shape{1}, {1.0f}));
    SGD<float> opt({&w}, 0.5f);
    StepLR<float> s(opt, 1, 0.5);
    s.step();
    CHECK(opt.learning_rate() == 0.25f);
}

TEST_CASE("Schedules reject invalid settings with a clear message") {
    One m;
    SGD<double> opt(m.params(), 0.1);
    CHECK_THROWS_WITH_AS(StepLR<double>(opt, 0, 0.5), "StepLR: step_size must be at least 1, got 0", value_error);
    CHECK_THROWS_WITH_AS(StepLR<double>(opt, 2, -0.5), "StepLR: gamma must be in (0, inf), got -0.5", value_error);
    CHECK_THROWS_WITH_AS(ExponentialLR<double>(opt, std::nan("")), "ExponentialLR: gamma must be in (0, inf), got NaN", value_error);
    CHECK_THROWS_WITH_AS(CosineAnnealingLR<double>(opt, 0), "CosineAnnealingLR: t_max must be at least 1, got 0", value_error);
    CHECK_THROWS_WITH_AS(CosineAnnealingLR<double>(opt, 10, 0.2), "CosineAnnealingLR: min_lr must be in [0, 0.1], got 0.2", value_error);
    CHECK_THROWS_WITH_AS(InverseTimeLR<double>(opt, -1e-3), "InverseTimeLR: decay must be in [0, inf), got -0.001", value_error);
}
