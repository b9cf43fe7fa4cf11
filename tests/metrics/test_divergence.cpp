#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include <tapir/data/random.hpp>
#include <tapir/io/csv.hpp>
#include <tapir/metrics/divergence.hpp>

#include "support/data_path.hpp"
#include "support/message_of.hpp"

using tapir_test::message_of;

TEST_CASE("Jensen-Shannon divergence (Lin 1991): check values and invariants") {
    CHECK(tapir::metrics::jensen_shannon({1, 0}, {0, 1}) == 1.0);
    CHECK(tapir::metrics::jensen_shannon({1, 1}, {1, 3}) == doctest::Approx(0.048795).epsilon(1e-5));
    // Hand-derived: 0.5 [0.5 log2(4/3) + 0.5 log2(4/5)] + 0.5 [0.25 log2(2/3) + 0.75 log2(6/5)].
    const double hand = 0.5 * (0.5 * std::log2(4.0 / 3.0) + 0.5 * std::log2(0.8)) +
                        0.5 * (0.25 * std::log2(2.0 / 3.0) + 0.75 * std::log2(1.2));
    CHECK(tapir::metrics::jensen_shannon({1, 1}, {1, 3}) == doctest::Approx(hand).epsilon(1e-14));
    CHECK(tapir::metrics::jensen_shannon({2, 5, 0, 1}, {2, 5, 0, 1}) == 0.0);
    CHECK(tapir::metrics::jensen_shannon({2, 5, 0, 1}, {20, 50, 0, 10}) == doctest::Approx(0.0).epsilon(1e-15));
    // Disjoint supports give the maximum, 1 bit, whatever the shapes.
    CHECK(tapir::metrics::jensen_shannon({3, 1, 0, 0}, {0, 0, 2, 7}) == 1.0);
    tapir::Rng rng(6);
    for (int t = 0; t < 50; ++t) {
        std::vector<double> p(8), q(8);
        for (std::size_t i = 0; i < 8; ++i) {
            p[i] = rng.bernoulli(0.2) ? 0.0 : rng.uniform();
            q[i] = rng.uniform();
        }
        const double d = tapir::metrics::jensen_shannon(p, q);
        CHECK(d >= 0.0);
        CHECK(d <= 1.0);
        CHECK(d == doctest::Approx(tapir::metrics::jensen_shannon(q, p)).epsilon(1e-14));
    }
}

TEST_CASE("Jensen-Shannon divergence: bad input") {
    CHECK(message_of<tapir::value_error>([] { tapir::metrics::jensen_shannon({1, 2}, {1, 2, 3}); }) ==
          "jensen_shannon: 2 bins in p but 3 bins in q");
    CHECK(message_of<tapir::value_error>([] { tapir::metrics::jensen_shannon({1, -2}, {1, 2}); }) ==
          "jensen_shannon: bin 1 of p is -2 (need finite values >= 0)");
    CHECK(message_of<tapir::value_error>([] { tapir::metrics::jensen_shannon({1, 2}, {0, 0}); }) ==
          "jensen_shannon: q sums to 0 (cannot normalise)");
    CHECK(message_of<tapir::value_error>([] {
              tapir::metrics::jensen_shannon(std::vector<double>{}, std::vector<double>{});
          }) == "jensen_shannon: empty input");
    CHECK(message_of<tapir::value_error>([] {
              tapir::metrics::jensen_shannon(tapir::metrics::Histogram(3, 0, 1), tapir::metrics::Histogram(4, 0, 1));
          }) == "jensen_shannon: histograms have different binnings: 3 bins in [0, 1] vs 4 bins in [0, 1]");
}

TEST_CASE("mass sculpting: identical pass/fail shapes give 0, separated ones give 1") {
    // Signal scores 0.9, 0.8, 0.7, 0.6: the 50% cut is at 0.8.
    std::vector<double> score{0.9, 0.8, 0.7, 0.6}, mass{125, 125, 125, 125}, label{1, 1, 1, 1};
    // Background: the same mass spectrum above and below the cut.
    for (double m : {107.0, 122.0, 151.0}) {
        score.push_back(0.85);
        mass.push_back(m);
        label.push_back(0);
        score.push_back(0.2);
        mass.push_back(m);
        label.push_back(0);
    }
    const auto flat = tapir::metrics::mass_sculpting_jsd(score, mass, label);
    CHECK(flat.threshold == 0.8);
    CHECK(flat.jsd == 0.0);
    CHECK(flat.pass.bins() == 11);
    CHECK(flat.pass.integral() == 3.0);
    CHECK(flat.fail.integral() == 3.0);

    // Background passing only at high mass, failing only at low mass: full sculpting.
    std::vector<double> s2{0.9, 0.8, 0.7, 0.6, 0.99, 0.95, 0.1, 0.2}, m2{125, 125, 125, 125, 150, 158, 106, 112},
        l2{1, 1, 1, 1, 0, 0, 0, 0};
    const auto full = tapir::metrics::mass_sculpting_jsd(s2, m2, l2);
    CHECK(full.jsd == 1.0);
    CHECK(full.inverse_jsd() == 1.0);

    // Hand-derived partial case with weights: pass = [1, 1] (bins 105-110, 110-115),
    // fail = [1, 3] -> JSD([1,1],[1,3]); a mass outside [105, 160] is left out.
    std::vector<double> s3{0.9, 0.8, 0.7, 0.6, 0.85, 0.85, 0.1, 0.1, 0.1}, m3{125, 125, 125, 125, 107, 112, 107, 112, 170},
        l3{1, 1, 1, 1, 0, 0, 0, 0, 0}, w3{1, 1, 1, 1, 2, 2, 1, 3, 5};
    const auto part = tapir::metrics::mass_sculpting_jsd(s3, m3, l3, w3);
    CHECK(part.jsd == doctest::Approx(0.048795).epsilon(1e-5));
    CHECK(part.fail.overflow() == 5.0);
    // Other efficiency and binning.
    const auto loose = tapir::metrics::mass_sculpting_jsd(s3, m3, l3, w3, 1.0, 100.0, 120.0, 10.0);
    CHECK(loose.threshold == 0.6);
    CHECK(loose.pass.bins() == 2);
    CHECK(loose.jsd == doctest::Approx(tapir::metrics::jensen_shannon({2, 2}, {1, 3})).epsilon(1e-14));
}

TEST_CASE("mass sculpting: bad input") {
    const std::vector<double> s{0.9, 0.1, 0.5}, m{125, 120, 130}, l{1, 0, 0};
    CHECK(message_of<tapir::value_error>([&] { tapir::metrics::mass_sculpting_jsd(s, {125, 120}, l); }) ==
          "mass_sculpting_jsd: 3 scores but 2 masses");
    CHECK(message_of<tapir::value_error>([&] { tapir::metrics::mass_sculpting_jsd(s, {125, std::nan(""), 130}, l); }) ==
          "mass_sculpting_jsd: non-finite mass nan at index 1");
    CHECK(message_of<tapir::value_error>([&] { tapir::metrics::mass_sculpting_jsd(s, m, l); }) ==
          "mass_sculpting_jsd: no background weight in [105, 160] passes the cut at score 0.9 (total 0)");
    CHECK(message_of<tapir::value_error>([&] { tapir::metrics::mass_sculpting_jsd(s, m, l, {}, 0.5, 105, 160, 7); }) ==
          "Histogram::with_width: width 7 does not divide [105, 160] into whole bins");
}

TEST_CASE("mass sculpting on the course data: m_yy as score sculpts, an angle does not") {
    const std::string path = tapir_test::shared_data("higgs_diphoton_50k.csv");
    if (path.empty()) {
        MESSAGE("shared/data/higgs_diphoton_50k.csv not found; skipped");
        return;
    }
    tapir::io::CsvOptions opt;
    opt.columns = {"phi_y1", "myy", "label"};
    const auto t = tapir::io::read_csv(path, opt);
    const auto phi = t.column("phi_y1"), myy = t.column("myy"), label = t.column("label");
    // A score that is the mass itself splits the background spectrum at the signal median.
    const auto by_mass = tapir::metrics::mass_sculpting_jsd(myy, myy, label);
    CHECK(by_mass.threshold == doctest::Approx(124.95).epsilon(2e-3));
    CHECK(by_mass.jsd > 0.5);
    // phi is independent of the mass: almost no sculpting.
    const auto by_phi = tapir::metrics::mass_sculpting_jsd(phi, myy, label);
    CHECK(by_phi.jsd < 0.005);
    CHECK(by_phi.pass.integral() + by_phi.fail.integral() + by_phi.pass.overflow() + by_phi.fail.overflow() +
              by_phi.pass.underflow() + by_phi.fail.underflow() ==
          doctest::Approx(static_cast<double>(t.rows) - [&] {
              double n = 0;
              for (double v : label) n += v;
              return n;
          }()));
}
