#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include <tapir/data/dataset.hpp>

#include "support/message_of.hpp"

using tapir_test::message_of;

namespace {

std::vector<std::size_t> sorted(std::vector<std::size_t> v) {
    std::sort(v.begin(), v.end());
    return v;
}

std::vector<std::size_t> iota_vec(std::size_t n) {
    std::vector<std::size_t> v(n);
    std::iota(v.begin(), v.end(), std::size_t(0));
    return v;
}

} // namespace

TEST_CASE("train_test_split: sizes, disjoint cover, fixed by the seed") {
    const auto s = tapir::data::train_test_split(10, 0.3, 42);
    CHECK(s.test.size() == 3);
    CHECK(s.train.size() == 7);
    std::vector<std::size_t> all = s.train;
    all.insert(all.end(), s.test.begin(), s.test.end());
    CHECK(sorted(all) == iota_vec(10));

    const auto again = tapir::data::train_test_split(10, 0.3, 42);
    CHECK(again.train == s.train);
    CHECK(again.test == s.test);
    // The split is the seed's permutation: the first round(f n) indices are the test set.
    tapir::Rng rng(42);
    const auto p = rng.permutation(10);
    CHECK(s.test == std::vector<std::size_t>(p.begin(), p.begin() + 3));

    const auto other = tapir::data::train_test_split(1000, 0.3, 43);
    const auto base = tapir::data::train_test_split(1000, 0.3, 42);
    CHECK(other.test.size() == 300);
    CHECK(other.test != base.test);
    // round(0.25 * 10) = 3 (half up); round(0.3 * 7) = 2.
    CHECK(tapir::data::train_test_split(10, 0.25, 1).test.size() == 3);
    CHECK(tapir::data::train_test_split(7, 0.3, 1).test.size() == 2);

    CHECK(message_of<tapir::value_error>([] { tapir::data::train_test_split(10, 0.0, 1); }) ==
          "train_test_split: test_fraction must be in (0, 1), got 0");
    CHECK(message_of<tapir::value_error>([] { tapir::data::train_test_split(10, 1.0, 1); }) ==
          "train_test_split: test_fraction must be in (0, 1), got 1");
    CHECK(message_of<tapir::value_error>([] { tapir::data::train_test_split(3, 0.1, 1); }) ==
          "train_test_split: test_fraction 0.1 of 3 events leaves the test set empty");
    CHECK(message_of<tapir::value_error>([] { tapir::data::train_test_split(1, 0.6, 1); }) ==
          "train_test_split: test_fraction 0.6 of 1 events leaves the training set empty");
}

TEST_CASE("stratified_split keeps each class's share") {
    std::vector<double> labels(150, 0.0);
    for (std::size_t i = 0; i < 100; ++i) labels[i * 3 / 2] = 1.0; // 100 signal, 50 background
    REQUIRE(std::count(labels.begin(), labels.end(), 1.0) == 100);
    const auto s = tapir::data::stratified_split(labels, 0.3, 7);
    CHECK(s.test.size() == 45);
    CHECK(s.train.size() == 105);
    std::size_t sig_test = 0;
    for (std::size_t i : s.test) sig_test += labels[i] == 1.0;
    CHECK(sig_test == 30);
    std::vector<std::size_t> all = s.train;
    all.insert(all.end(), s.test.begin(), s.test.end());
    CHECK(sorted(all) == iota_vec(150));
    const auto again = tapir::data::stratified_split(labels, 0.3, 7);
    CHECK(again.test == s.test);
    // Classes are mixed, not in blocks: the test set does not start with 30 signal events.
    std::size_t first_sig = 0;
    for (std::size_t k = 0; k < 30; ++k) first_sig += labels[s.test[k]] == 1.0;
    CHECK(first_sig < 30);
}

TEST_CASE("take and take_rows gather in the given order") {
    const std::vector<double> v{10, 11, 12, 13};
    CHECK(tapir::data::take(v, {3, 0, 0}) == std::vector<double>{13, 10, 10});
    tapir::Tensor<float> x(tapir::Shape{3, 2}, {0, 1, 2, 3, 4, 5});
    const auto r = tapir::data::take_rows(x, {2, 0});
    REQUIRE(r.shape() == tapir::Shape{2, 2});
    CHECK(r.to_vector() == std::vector<float>{4, 5, 0, 1});
    CHECK(message_of<tapir::value_error>([&] { tapir::data::take_rows(x, {3}); }) ==
          "take_rows: index 3 is out of range for 3 events");
    CHECK(message_of<tapir::value_error>([&] { tapir::data::take(v, {4}); }) == "take: index 4 is out of range for 4 events");
}

TEST_CASE("StandardScaler: hand-derived mean and scale, constant columns, inverse") {
    // Columns: 1..4 (mean 2.5, population sd sqrt(1.25)); constant 5; constant 0.1 (rounds in the mean).
    tapir::Tensor<double> x(tapir::Shape{4, 3}, {1, 5, 0.1, 2, 5, 0.1, 3, 5, 0.1, 4, 5, 0.1});
    tapir::data::StandardScaler sc;
    CHECK_FALSE(sc.fitted());
    const auto z = sc.fit_transform(x);
    REQUIRE(sc.features() == 3);
    CHECK(sc.mean()[0] == doctest::Approx(2.5));
    CHECK(sc.scale()[0] == doctest::Approx(std::sqrt(1.25)));
    CHECK(sc.mean()[1] == 5.0);
    CHECK(sc.scale()[1] == 1.0);
    CHECK(sc.scale()[2] == 1.0);
    CHECK(z(0, 0) == doctest::Approx(-1.5 / std::sqrt(1.25)));
    CHECK(z(3, 0) == doctest::Approx(1.5 / std::sqrt(1.25)));
    for (std::size_t i = 0; i < 4; ++i) {
        CHECK(z(i, 1) == 0.0);
        CHECK(std::abs(z(i, 2)) < 1e-15);
    }
    const auto back = sc.inverse_transform(z);
    for (std::size_t i = 0; i < x.size(); ++i) CHECK(back[i] == doctest::Approx(x[i]).epsilon(1e-14));

    // Standardised columns have mean 0 and variance 1.
    tapir::Rng rng(3);
    tapir::Tensor<float> y(tapir::Shape{1000, 2});
    for (std::size_t i = 0; i < 1000; ++i) {
        y(i, 0) = static_cast<float>(rng.normal(100.0, 20.0));
        y(i, 1) = static_cast<float>(rng.exponential(0.02));
    }
    const auto zy = tapir::data::StandardScaler().fit_transform(y);
    for (std::size_t j = 0; j < 2; ++j) {
        double m = 0, v = 0;
        for (std::size_t i = 0; i < 1000; ++i) m += zy(i, j);
        m /= 1000;
        for (std::size_t i = 0; i < 1000; ++i) v += (zy(i, j) - m) * (zy(i, j) - m);
        CHECK(std::abs(m) < 1e-5);
        CHECK(v / 1000 == doctest::Approx(1.0).epsilon(1e-5));
    }
}

TEST_CASE("StandardScaler: weighted fit and known parameters") {
    // Weights 1, 1, 2 on values 0, 3, 6: mean 15/4, var (1*14.0625 + 1*0.5625 + 2*5.0625)/4 = 6.1875.
    tapir::Tensor<double> x(tapir::Shape{3, 1}, {0, 3, 6});
    tapir::data::StandardScaler sc;
    sc.fit(x, {1, 1, 2});
    CHECK(sc.mean()[0] == doctest::Approx(3.75));
    CHECK(sc.scale()[0] == doctest::Approx(std::sqrt(6.1875)));
    // Duplicating an event equals weighting it by 2.
    tapir::Tensor<double> dup(tapir::Shape{4, 1}, {0, 3, 6, 6});
    tapir::data::StandardScaler sd;
    sd.fit(dup);
    CHECK(sd.mean()[0] == doctest::Approx(sc.mean()[0]));
    CHECK(sd.scale()[0] == doctest::Approx(sc.scale()[0]));

    tapir::data::StandardScaler known({1.0, -2.0}, {2.0, 0.5});
    tapir::Tensor<float> a(tapir::Shape{1, 2}, {3.0f, -1.0f});
    CHECK(known.transform(a).to_vector() == std::vector<float>{1.0f, 2.0f});
    CHECK(message_of<tapir::value_error>([] { tapir::data::StandardScaler({0.0}, {0.0}); }) ==
          "StandardScaler: feature 0 has mean 0 and scale 0 (need finite values and scale > 0)");
}

TEST_CASE("StandardScaler: errors") {
    tapir::data::StandardScaler sc;
    tapir::Tensor<double> x(tapir::Shape{2, 2}, {1, 2, 3, 4});
    CHECK(message_of<tapir::value_error>([&] { sc.transform(x); }) ==
          "StandardScaler::transform: the scaler is not fitted (call fit first)");
    sc.fit(x);
    tapir::Tensor<double> wrong(tapir::Shape{2, 3});
    CHECK(message_of<tapir::shape_error>([&] { sc.transform(wrong); }) ==
          "StandardScaler::transform: the scaler was fitted on 2 features, got shape (2, 3)");
    tapir::Tensor<double> flat(tapir::Shape{4});
    CHECK(message_of<tapir::shape_error>([&] { sc.fit(flat); }) ==
          "StandardScaler::fit: expected a (events, features) tensor, got shape (4,)");
    tapir::Tensor<double> nan(tapir::Shape{2, 2}, {1, 2, std::nan(""), 4});
    CHECK(message_of<tapir::value_error>([&] { sc.fit(nan); }) ==
          "StandardScaler::fit: non-finite value nan at event 1, feature 0");
    CHECK(message_of<tapir::value_error>([&] { sc.fit(x, {1.0}); }) == "StandardScaler::fit: 2 events but 1 weights");
    CHECK(message_of<tapir::value_error>([&] { sc.fit(x, {1.0, -1.0}); }) ==
          "StandardScaler::fit: the weights sum to 0 (must be positive)");
    CHECK(message_of<tapir::value_error>([&] { sc.fit(tapir::Tensor<double>(tapir::Shape{0, 2})); }) ==
          "StandardScaler::fit: empty input of shape (0, 2)");
    // A failed fit keeps the previous parameters.
    CHECK(sc.mean()[0] == 2.0);
}

TEST_CASE("MinMaxScaler: range, constant columns, inverse, errors") {
    tapir::Tensor<double> x(tapir::Shape{3, 2}, {-1, 7, 1, 7, 3, 7});
    tapir::data::MinMaxScaler mm;
    const auto z = mm.fit_transform(x);
    CHECK(z.to_vector() == std::vector<double>{0, 0, 0.5, 0, 1, 0});
    CHECK(mm.data_min() == std::vector<double>{-1, 7});
    CHECK(mm.data_max() == std::vector<double>{3, 7});
    CHECK(mm.scale() == std::vector<double>{0.25, 1.0});
    const auto back = mm.inverse_transform(z);
    CHECK(back.to_vector() == x.to_vector());

    tapir::data::MinMaxScaler sym(-1.0, 1.0);
    const auto s = sym.fit_transform(x);
    CHECK(s.to_vector() == std::vector<double>{-1, -1, 0, -1, 1, -1});
    CHECK(sym.inverse_transform(s).to_vector() == x.to_vector());
    // Values outside the fitted range map outside [lo, hi], linearly.
    tapir::Tensor<double> out(tapir::Shape{1, 2}, {5, 7});
    CHECK(mm.transform(out).to_vector() == std::vector<double>{1.5, 0});

    CHECK(message_of<tapir::value_error>([] { tapir::data::MinMaxScaler(1.0, 1.0); }) ==
          "MinMaxScaler: feature range [1, 1] must be finite with lo < hi");
    CHECK(message_of<tapir::shape_error>([&] { mm.inverse_transform(tapir::Tensor<double>(tapir::Shape{1, 3})); }) ==
          "MinMaxScaler::inverse_transform: the scaler was fitted on 2 features, got shape (1, 3)");
}

TEST_CASE("per-event weights: balanced and normalised") {
    const std::vector<double> labels{1, 0, 0, 0, 1, 0};
    const auto w = tapir::data::balanced_weights(labels);
    double sig = 0, bkg = 0;
    for (std::size_t i = 0; i < labels.size(); ++i) (labels[i] == 1 ? sig : bkg) += w[i];
    CHECK(sig == doctest::Approx(3.0));
    CHECK(bkg == doctest::Approx(3.0));
    CHECK(w[0] == doctest::Approx(1.5));
    CHECK(w[1] == doctest::Approx(0.75));
    // Existing (also negative) weights keep their ratios within a class.
    const auto wb = tapir::data::balanced_weights(labels, {2, 1, -0.5, 1.5, 2, 1});
    CHECK(wb[0] == doctest::Approx(1.5));
    CHECK(wb[1] == doctest::Approx(1.0));
    CHECK(wb[2] == doctest::Approx(-0.5));
    CHECK(message_of<tapir::value_error>([] { tapir::data::balanced_weights({0, 0}); }) ==
          "balanced_weights: the signal weights sum to 0 (must be positive)");
    CHECK(message_of<tapir::value_error>([] { tapir::data::balanced_weights({0, 2}); }) ==
          "balanced_weights: label 2 at index 1 is not 0 or 1");
    CHECK(message_of<tapir::value_error>([] { tapir::data::balanced_weights({0, 1}, {1}); }) ==
          "balanced_weights: 2 labels but 1 weights");

    const auto n = tapir::data::normalized_weights({1, 3});
    CHECK(n == std::vector<double>{0.5, 1.5});
    CHECK(tapir::data::normalized_weights({1, 3}, 1.0) == std::vector<double>{0.25, 0.75});
    CHECK(message_of<tapir::value_error>([] { tapir::data::normalized_weights({1, -1}); }) ==
          "normalized_weights: the weights sum to 0 (cannot normalise)");
}

TEST_CASE("Dataset: consistent event counts, subset, from CSV") {
    tapir::Tensor<float> x(tapir::Shape{3, 2}, {0, 1, 2, 3, 4, 5});
    tapir::Tensor<float> y(tapir::Shape{3}, {0, 1, 0});
    tapir::Tensor<float> w(tapir::Shape{3}, {1, 2, 3});
    tapir::data::Dataset<float> d(x, y, w);
    CHECK(d.size() == 3);
    CHECK(d.weighted());
    CHECK_FALSE(d.has_aux());
    const auto s = d.subset({2, 1});
    CHECK(s.x.to_vector() == std::vector<float>{4, 5, 2, 3});
    CHECK(s.y.to_vector() == std::vector<float>{0, 1});
    CHECK(s.w.to_vector() == std::vector<float>{3, 2});

    CHECK(message_of<tapir::shape_error>([&] { tapir::data::Dataset<float>(x, tapir::Tensor<float>(tapir::Shape{4})); }) ==
          "Dataset: x has 3 events (shape (3, 2)) but y has shape (4,)");
    CHECK(message_of<tapir::shape_error>([&] {
              tapir::data::Dataset<float>(x, y, tapir::Tensor<float>(tapir::Shape{3, 1}));
          }) == "Dataset: w must be one weight per event, got shape (3, 1)");

    const auto table = tapir::io::parse_csv(",a,b,m,label,wt\n0,1,2,120,1,0.5\n1,3,4,130,0,1.5\n", "d.csv");
    const auto dc = tapir::data::make_dataset<double>(table, {"b", "a"}, "label", "wt", {"m"});
    CHECK(dc.x.shape() == tapir::Shape{2, 2});
    CHECK(dc.x.to_vector() == std::vector<double>{2, 1, 4, 3});
    CHECK(dc.y.shape() == tapir::Shape{2});
    CHECK(dc.y.to_vector() == std::vector<double>{1, 0});
    CHECK(dc.w.to_vector() == std::vector<double>{0.5, 1.5});
    CHECK(dc.aux.shape() == tapir::Shape{2, 1});
    CHECK(dc.aux.to_vector() == std::vector<double>{120, 130});
    CHECK(message_of<tapir::value_error>([&] { tapir::data::make_dataset<double>(table, {"a"}, "y"); }) ==
          "d.csv: unknown column 'y' (available: a, b, m, label, wt)");
}

TEST_CASE("DataLoader: batches cover every event once per epoch, seeded, partial batch kept or dropped") {
    const std::size_t n = 10;
    tapir::Tensor<double> x(tapir::Shape{n, 2});
    tapir::Tensor<double> y(tapir::Shape{n});
    tapir::Tensor<double> aux(tapir::Shape{n});
    for (std::size_t i = 0; i < n; ++i) {
        x(i, 0) = static_cast<double>(i);
        x(i, 1) = 100.0 + static_cast<double>(i);
        y[i] = static_cast<double>(i % 2);
        aux[i] = 1000.0 + static_cast<double>(i);
    }
    tapir::data::Dataset<double> d(x, y, {}, aux);

    tapir::data::LoaderOptions opt;
    opt.seed = 9;
    tapir::data::DataLoader<double> loader(d, 4, opt);
    CHECK(loader.size() == 3);
    std::vector<std::size_t> sizes, seen;
    for (const auto& b : loader) {
        sizes.push_back(b.size());
        REQUIRE(b.x.shape() == tapir::Shape{b.size(), 2});
        REQUIRE(b.w.shape() == tapir::Shape{b.size()});
        for (std::size_t k = 0; k < b.size(); ++k) {
            const std::size_t i = b.indices[k];
            seen.push_back(i);
            CHECK(b.x(k, 0) == static_cast<double>(i));
            CHECK(b.x(k, 1) == 100.0 + static_cast<double>(i));
            CHECK(b.y[k] == static_cast<double>(i % 2));
            CHECK(b.aux[k] == 1000.0 + static_cast<double>(i));
            CHECK(b.w[k] == 1.0);
        }
    }
    CHECK(sizes == std::vector<std::size_t>{4, 4, 2});
    CHECK(sorted(seen) == iota_vec(n));
    const std::vector<std::size_t> epoch0 = seen;
    CHECK(epoch0 != iota_vec(n));

    // The second pass is epoch 1: another order.
    seen.clear();
    for (const auto& b : loader) seen.insert(seen.end(), b.indices.begin(), b.indices.end());
    CHECK(loader.epoch() == 1);
    CHECK(sorted(seen) == iota_vec(n));
    CHECK(seen != epoch0);

    // The order is a function of (seed, epoch): a new loader and set_epoch(0) reproduce it.
    tapir::data::DataLoader<double> other(d, 4, opt);
    seen.clear();
    for (const auto& b : other) seen.insert(seen.end(), b.indices.begin(), b.indices.end());
    CHECK(seen == epoch0);
    loader.set_epoch(0);
    CHECK(loader.order() == epoch0);
    CHECK(loader.batch(1).indices == std::vector<std::size_t>(epoch0.begin() + 4, epoch0.begin() + 8));

    opt.drop_last = true;
    tapir::data::DataLoader<double> drop(d, 4, opt);
    CHECK(drop.size() == 2);
    sizes.clear();
    for (const auto& b : drop) sizes.push_back(b.size());
    CHECK(sizes == std::vector<std::size_t>{4, 4});

    opt.shuffle = false;
    opt.drop_last = false;
    tapir::data::DataLoader<double> plain(d, 3, opt);
    seen.clear();
    for (const auto& b : plain) seen.insert(seen.end(), b.indices.begin(), b.indices.end());
    CHECK(seen == iota_vec(n));
    CHECK(plain.size() == 4);

    CHECK(message_of<tapir::value_error>([&] { tapir::data::DataLoader<double>(d, 0); }) ==
          "DataLoader: batch_size must be positive");
    CHECK(message_of<tapir::value_error>([&] { plain.batch(4); }) == "DataLoader::batch: batch 4 of 4");
}

TEST_CASE("DataLoader: weights are gathered with their events") {
    tapir::Tensor<float> x(tapir::Shape{5, 1}, {0, 1, 2, 3, 4});
    tapir::Tensor<float> y(tapir::Shape{5}, {0, 1, 0, 1, 0});
    tapir::Tensor<float> w(tapir::Shape{5}, {0.5f, 1.5f, 2.5f, 3.5f, -1.0f});
    tapir::data::Dataset<float> d(x, y, w);
    tapir::data::DataLoader<float> loader(d, 2);
    std::size_t count = 0;
    for (const auto& b : loader)
        for (std::size_t k = 0; k < b.size(); ++k) {
            CHECK(b.w[k] == w[b.indices[k]]);
            CHECK(b.x[k] == static_cast<float>(b.indices[k]));
            ++count;
        }
    CHECK(count == 5);
}
