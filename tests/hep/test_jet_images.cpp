#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include <tapir/error.hpp>
#include <tapir/hep/jet_images.hpp>
#include <tapir/hep/jets.hpp>
#include <tapir/hep/kinematics.hpp>

namespace hep = tapir::hep;
using hep::ImagePoint;

namespace {
double pt_sum(const std::vector<ImagePoint>& v) {
    double s = 0;
    for (const auto& p : v) s += p.pt;
    return s;
}
// pT-weighted second moments about the origin.
void moments(const std::vector<ImagePoint>& v, double& see, double& spp, double& sep) {
    see = spp = sep = 0;
    for (const auto& p : v) see += p.pt * p.eta * p.eta, spp += p.pt * p.phi * p.phi, sep += p.pt * p.eta * p.phi;
}
// An elongated three-prong jet across phi = +-pi, off-centre in eta.
std::vector<ImagePoint> sample_points() {
    return {{1.30, 3.05, 300.0}, {1.55, -3.00, 120.0}, {1.10, 2.80, 60.0}, {1.42, 3.10, 5.0}, {1.00, -3.13, 2.0}};
}
} // namespace

TEST_CASE("jet images: centring puts the pT-weighted centroid at the origin, across phi = pi") {
    const auto c = hep::centre_points(sample_points());
    const ImagePoint m = hep::pt_centroid(c);
    CHECK(std::fabs(m.eta) < 1e-12);
    CHECK(std::fabs(m.phi) < 1e-12);
    for (const auto& p : c) CHECK(std::fabs(p.phi) < 0.5);  // no point ends up 2 pi away
    CHECK(pt_sum(c) == doctest::Approx(pt_sum(sample_points())));
    const ImagePoint raw = hep::pt_centroid(sample_points());
    CHECK(std::fabs(std::fabs(raw.phi) - 3.1) < 0.1);  // the centroid is where the jet is, near +-pi
}

TEST_CASE("jet images: rotation aligns the principal axis with phi (vertical)") {
    const auto r = hep::rotate_points(hep::centre_points(sample_points()));
    double see, spp, sep;
    moments(r, see, spp, sep);
    CHECK(std::fabs(sep) < 1e-10 * (see + spp));
    CHECK(spp > see);
    CHECK(std::fabs(std::fabs(hep::principal_axis_angle(r)) - 1.5707963267948966) < 1e-9);
    // A rotation keeps distances from the origin.
    const auto c = hep::centre_points(sample_points());
    for (std::size_t i = 0; i < c.size(); ++i) CHECK(std::hypot(r[i].eta, r[i].phi) == doctest::Approx(std::hypot(c[i].eta, c[i].phi)));
    // A jet along eta becomes a jet along phi.
    const auto line = hep::rotate_points({{-0.3, 0.0, 10.0}, {0.3, 0.0, 10.0}});
    CHECK(std::fabs(line[0].eta) < 1e-12);
    CHECK(std::fabs(std::fabs(line[0].phi) - 0.3) < 1e-12);
}

TEST_CASE("jet images: the flip puts the harder half right and up") {
    const std::vector<ImagePoint> v = {{0.0, 0.0, 100.0}, {-0.2, -0.3, 30.0}, {0.1, 0.2, 10.0}, {-0.4, 0.1, 5.0}};
    const auto f = hep::flip_points(v);
    double right = 0, left = 0, up = 0, down = 0;
    for (const auto& p : f) {
        right += p.eta > 0 ? p.pt : 0, left += p.eta < 0 ? p.pt : 0;
        up += p.phi > 0 ? p.pt : 0, down += p.phi < 0 ? p.pt : 0;
    }
    CHECK(right == doctest::Approx(35.0));
    CHECK(left == doctest::Approx(10.0));
    CHECK(up == doctest::Approx(30.0));  // was down
    CHECK(down == doctest::Approx(15.0));
    CHECK(f[1].eta == doctest::Approx(0.2));
    CHECK(f[1].phi == doctest::Approx(0.3));
    // Already right and up: unchanged.
    const auto again = hep::flip_points(f);
    for (std::size_t i = 0; i < f.size(); ++i) CHECK((again[i].eta == f[i].eta && again[i].phi == f[i].phi));
}

TEST_CASE("jet images: pixel sums equal the pT sum inside the window; normalisation sums to 1") {
    const std::vector<ImagePoint> v = {{0.0, 0.0, 100.0}, {-0.79, 0.79, 30.0}, {0.8, -0.8, 10.0}, {0.81, 0.0, 7.0}};
    const hep::JetImageConfig cfg;  // 40 x 40 over [-0.8, 0.8]
    const auto img = hep::pixelate(v, cfg);
    REQUIRE(img.size() == 1600);
    CHECK(std::accumulate(img.begin(), img.end(), 0.0) == doctest::Approx(140.0));  // the point at 0.81 is outside
    CHECK(img[20 * 40 + 20] == 100.0);     // (0, 0) is the lower-left corner of pixel (20, 20)
    CHECK(img[39 * 40 + 0] == 30.0);       // eta -0.79 -> column 0, phi 0.79 -> row 39
    CHECK(img[0 * 40 + 39] == 10.0);       // the upper eta edge belongs to the last column
    const auto n = hep::normalise_image(img);
    CHECK(std::accumulate(n.begin(), n.end(), 0.0) == doctest::Approx(1.0).epsilon(1e-14));
    CHECK(n[20 * 40 + 20] == doctest::Approx(100.0 / 140.0));
    CHECK(hep::normalise_image(std::vector<double>(4, 0.0)) == std::vector<double>(4, 0.0));
    CHECK_THROWS_WITH_AS(hep::pixelate(v, hep::JetImageConfig{0, 0.8}), doctest::Contains("pixels must be in [1, 4096], got 0"),
                         tapir::value_error);
    CHECK_THROWS_WITH_AS(hep::pixelate(v, hep::JetImageConfig{40, -1.0}), doctest::Contains("half_width must be finite and > 0"),
                         tapir::value_error);
}

TEST_CASE("jet images: generated jets give normalised images that keep most of the pT") {
    hep::JetGenerator gen(3);
    for (int i = 0; i < 20; ++i) {
        const hep::GeneratedJet j = gen.next(i % 2);
        const auto pts = hep::flip_points(hep::rotate_points(hep::centre_points(hep::image_points(j.constituents))));
        const auto raw = hep::pixelate(pts);
        const double inside = std::accumulate(raw.begin(), raw.end(), 0.0);
        CHECK(inside > 0.9 * pt_sum(pts));
        const auto img = hep::jet_image(j.constituents);
        CHECK(std::accumulate(img.begin(), img.end(), 0.0) == doctest::Approx(1.0));
        // After the flip the right half (eta columns 20..39) and the upper half (rows 20..39) hold
        // at least half of the image.
        double right = 0, up = 0;
        for (std::size_t r = 0; r < 40; ++r)
            for (std::size_t c = 0; c < 40; ++c) right += c >= 20 ? img[r * 40 + c] : 0.0, up += r >= 20 ? img[r * 40 + c] : 0.0;
        CHECK(right >= 0.5 - 1e-12);
        CHECK(up >= 0.5 - 1e-12);
    }
}
