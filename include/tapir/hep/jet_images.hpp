#pragma once
/// Jet images with the standard preprocessing of the top-tagging literature (Kasieczka, Plehn,
/// Russell and Schell, arXiv:1701.08784; Macaluso and Shih, arXiv:1803.00107; the comparison
/// arXiv:1902.09914): centre on the pT-weighted centroid, rotate the principal axis to the
/// vertical, flip so that the harder halves lie right and up, pixelate in (eta, phi) over a
/// fixed window, normalise to unit sum. Each step is a pure function, so each can be tested
/// and reused (e.g. the centred, rotated constituents as point-cloud inputs).
///
/// Image layout: row-major pixels x pixels, row index = phi bin (row 0 the lowest phi),
/// column index = eta bin (column 0 the lowest eta), i.e. one channel of the (N, C, H, W)
/// layout with H the vertical phi axis and W the horizontal eta axis.

#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

#include "../error.hpp"
#include "kinematics.hpp"

namespace tapir::hep {

/// A constituent in the image plane: pseudorapidity, azimuth, transverse momentum.
struct ImagePoint {
    double eta = 0.0, phi = 0.0, pt = 0.0;
};

/// Pixel count per side and half-width of the square (eta, phi) window around the centre.
struct JetImageConfig {
    std::size_t pixels = 40;
    double half_width = 0.8;
};

/// (eta, phi, pT) of the constituents with pT > 0 (zero padding is dropped).
inline std::vector<ImagePoint> image_points(const std::vector<FourVector>& constituents) {
    std::vector<ImagePoint> out;
    for (const FourVector& c : constituents) {
        const double pt = c.pt();
        if (pt > 0.0) out.push_back(ImagePoint{c.eta(), c.phi(), pt});
    }
    return out;
}

/// pT-weighted centroid (eta, phi); phi is averaged relative to the hardest point, so a jet
/// across phi = +-pi has its centroid where the jet is. Zero pT sum gives (0, 0).
inline ImagePoint pt_centroid(const std::vector<ImagePoint>& points) {
    double s = 0.0, se = 0.0, sp = 0.0, ref = 0.0, best = -1.0;
    for (const ImagePoint& p : points)
        if (p.pt > best) best = p.pt, ref = p.phi;
    for (const ImagePoint& p : points) {
        s += p.pt;
        se += p.pt * p.eta;
        sp += p.pt * delta_phi(p.phi, ref);
    }
    if (!(s > 0.0)) return ImagePoint{};
    return ImagePoint{se / s, std::remainder(ref + sp / s, 2.0 * detail::pi), s};
}

/// Step 1: translate so the pT-weighted centroid is at (0, 0); phi differences are wrapped.
inline std::vector<ImagePoint> centre_points(const std::vector<ImagePoint>& points) {
    const ImagePoint c = pt_centroid(points);
    std::vector<ImagePoint> out = points;
    for (ImagePoint& p : out) p.eta -= c.eta, p.phi = delta_phi(p.phi, c.phi);
    return out;
}

/// Angle (radians, from the eta axis) of the principal axis of the pT-weighted second moments
/// about the origin: the eigenvector of the larger eigenvalue of [[See, Sep], [Sep, Spp]].
inline double principal_axis_angle(const std::vector<ImagePoint>& points) {
    double see = 0.0, spp = 0.0, sep = 0.0;
    for (const ImagePoint& p : points) see += p.pt * p.eta * p.eta, spp += p.pt * p.phi * p.phi, sep += p.pt * p.eta * p.phi;
    return 0.5 * std::atan2(2.0 * sep, see - spp);
}

/// Step 2: rotate about the origin so the principal axis points along phi (vertical).
inline std::vector<ImagePoint> rotate_points(const std::vector<ImagePoint>& points) {
    const double beta = 0.5 * detail::pi - principal_axis_angle(points);
    const double c = std::cos(beta), s = std::sin(beta);
    std::vector<ImagePoint> out = points;
    for (ImagePoint& p : out) {
        const double e = p.eta, f = p.phi;
        p.eta = c * e - s * f;
        p.phi = s * e + c * f;
    }
    return out;
}

/// Step 3: mirror eta and/or phi so that the half eta > 0 carries at least the pT of eta < 0, and
/// phi > 0 at least that of phi < 0: the subleading prongs end in the upper right quadrant.
inline std::vector<ImagePoint> flip_points(const std::vector<ImagePoint>& points) {
    double de = 0.0, dp = 0.0;  // pT(positive half) - pT(negative half)
    for (const ImagePoint& p : points) {
        de += p.eta > 0.0 ? p.pt : (p.eta < 0.0 ? -p.pt : 0.0);
        dp += p.phi > 0.0 ? p.pt : (p.phi < 0.0 ? -p.pt : 0.0);
    }
    std::vector<ImagePoint> out = points;
    for (ImagePoint& p : out) {
        if (de < 0.0) p.eta = -p.eta;
        if (dp < 0.0) p.phi = -p.phi;
    }
    return out;
}

/// Step 4: sum pT into pixels x pixels bins over [-half_width, half_width]^2 (see the layout
/// above). Points outside the window are dropped; a point on the upper edge goes to the last bin.
inline std::vector<double> pixelate(const std::vector<ImagePoint>& points, const JetImageConfig& config = JetImageConfig{}) {
    if (config.pixels == 0 || config.pixels > 4096)
        throw value_error("pixelate: pixels must be in [1, 4096], got " + std::to_string(config.pixels));
    if (!(config.half_width > 0.0 && std::isfinite(config.half_width)))
        throw value_error("pixelate: half_width must be finite and > 0, got " + std::to_string(config.half_width));
    const std::size_t n = config.pixels;
    std::vector<double> img(n * n, 0.0);
    const double w = config.half_width, scale = static_cast<double>(n) / (2.0 * w);
    for (const ImagePoint& p : points) {
        if (!(p.eta >= -w && p.eta <= w && p.phi >= -w && p.phi <= w)) continue;
        auto bin = [&](double x) {
            const auto b = static_cast<std::size_t>((x + w) * scale);
            return b < n ? b : n - 1;
        };
        img[bin(p.phi) * n + bin(p.eta)] += p.pt;
    }
    return img;
}

/// Step 5: divide by the sum so the pixels sum to 1; an empty image stays zero.
inline std::vector<double> normalise_image(std::vector<double> image) {
    double s = 0.0;
    for (double v : image) s += v;
    if (s > 0.0)
        for (double& v : image) v /= s;
    return image;
}

/// All five steps on a jet's constituents.
inline std::vector<double> jet_image(const std::vector<FourVector>& constituents, const JetImageConfig& config = JetImageConfig{}) {
    return normalise_image(pixelate(flip_points(rotate_points(centre_points(image_points(constituents)))), config));
}

} // namespace tapir::hep
