#pragma once
// Shared by the jet-image examples (anomaly, transfer_learning): jets of one class and pT window
// from hep/jets.hpp, turned into the (N, 1, 40, 40) image tensors of hep/jet_images.hpp.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include <tapir/hep/jet_images.hpp>
#include <tapir/hep/jets.hpp>
#include <tapir/tensor/tensor.hpp>

namespace examples::jet_images {

/// The generator's configuration for jets with pt_lo < pT < pt_hi: the hard parton's pT window is
/// widened as in the default (540-700 GeV for 550-650), so that jets losing pT to out-of-cone
/// radiation still fill the low edge.
inline tapir::hep::JetConfig pt_window(double pt_lo, double pt_hi) {
    tapir::hep::JetConfig c;
    c.jet_pt_min = pt_lo;
    c.jet_pt_max = pt_hi;
    c.parton_pt_min = pt_lo - 0.1 * (pt_hi - pt_lo);
    c.parton_pt_max = pt_hi + 0.5 * (pt_hi - pt_lo);
    return c;
}

/// n_qcd QCD jets then n_top top jets, from one generator stream; labels 0 and 1 in that order.
inline std::vector<tapir::hep::GeneratedJet> jets_by_class(std::size_t n_qcd, std::size_t n_top, std::uint64_t seed,
                                                          const tapir::hep::JetConfig& config) {
    tapir::hep::JetGenerator gen(seed, config);
    std::vector<tapir::hep::GeneratedJet> out;
    out.reserve(n_qcd + n_top);
    for (std::size_t i = 0; i < n_qcd; ++i) out.push_back(gen.next(0));
    for (std::size_t i = 0; i < n_top; ++i) out.push_back(gen.next(1));
    return out;
}

/// Images (N, 1, pixels, pixels) of the jets, the notes' preprocessing (unit pixel sum); with
/// power != 1 each pixel x becomes x^power afterwards (an intensity rescaling, see anomaly/).
inline tapir::Tensor<float> image_tensor(const std::vector<tapir::hep::GeneratedJet>& jets, double power = 1.0,
                                         const tapir::hep::JetImageConfig& config = tapir::hep::JetImageConfig{}) {
    const std::size_t p = config.pixels, n = jets.size();
    tapir::Tensor<float> t(tapir::Shape{n, 1, p, p});
    for (std::size_t i = 0; i < n; ++i) {
        const std::vector<double> img = tapir::hep::jet_image(jets[i].constituents, config);
        float* row = t.data() + i * p * p;
        for (std::size_t k = 0; k < p * p; ++k) row[k] = static_cast<float>(power == 1.0 ? img[k] : std::pow(img[k], power));
    }
    return t;
}

/// Labels (N, 1) of the jets: 1 top, 0 QCD.
inline tapir::Tensor<float> label_tensor(const std::vector<tapir::hep::GeneratedJet>& jets) {
    tapir::Tensor<float> y(tapir::Shape{jets.size(), 1});
    for (std::size_t i = 0; i < jets.size(); ++i) y[i] = static_cast<float>(jets[i].label);
    return y;
}

/// Mean and sample standard deviation (0 for fewer than two values).
struct MeanSd {
    double mean = 0.0, sd = 0.0;
};
inline MeanSd mean_sd(const std::vector<double>& v) {
    MeanSd r;
    if (v.empty()) return r;
    for (double x : v) r.mean += x;
    r.mean /= static_cast<double>(v.size());
    if (v.size() < 2) return r;
    double s = 0.0;
    for (double x : v) s += (x - r.mean) * (x - r.mean);
    r.sd = std::sqrt(s / static_cast<double>(v.size() - 1));
    return r;
}

} // namespace examples::jet_images
