#pragma once
// Shared by the H -> gamma gamma examples (higgs, disco): R50 and 1/JSD with their bootstrap
// uncertainties and the 1/JSD floor of a mass-blind selection, in the printed table, summary.json
// and the R50-1/JSD plane.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <ostream>
#include <string>
#include <vector>

#include <tapir/io/svg/axes.hpp>
#include <tapir/metrics/bootstrap.hpp>

#include "diphoton.hpp"

namespace examples::diphoton {

/// R50 and 1/JSD of the test scores with `replicas` bootstrap replicas (68% intervals), and the floor.
inline tapir::metrics::SculptingEstimate estimate(const std::vector<double>& score, const std::vector<double>& myy,
                                                  const std::vector<double>& label, std::size_t replicas, std::uint64_t seed) {
    tapir::metrics::BootstrapOptions bo;
    bo.replicas = replicas < 2 ? 2 : replicas;
    bo.seed = seed;
    return tapir::metrics::sculpting_with_uncertainty(score, myy, label, {}, 0.5, kMassLo, kMassHi, 5.0, bo);
}

/// The table's extra columns: header, then one row's cells.
inline void print_estimate_header() { std::printf("   %-12s %-19s %-19s", "R50 +- sd", "1/JSD 68% interval", "floor 68% interval"); }
inline void print_estimate_cells(const tapir::metrics::SculptingEstimate& e) {
    char a[48], b[48], c[48];
    std::snprintf(a, sizeof a, "%.2f+-%.2f", e.rejection.value, e.rejection.sd);
    std::snprintf(b, sizeof b, "[%.4g, %.4g]", e.inverse_jsd.lo, e.inverse_jsd.hi);
    std::snprintf(c, sizeof c, "[%.4g, %.4g]", e.floor.lo, e.floor.hi);
    std::printf("   %-12s %-19s %-19s", a, b, c);
}
inline void print_estimate_note() {
    std::printf("(68%% intervals of bootstrap replicas; floor: 1/JSD of mass-blind selections at the same background "
                "efficiency: a 1/JSD inside it is no sculpting that this test set can see)\n");
}

/// `, "r50_bootstrap": {...}, "inverse_jsd_bootstrap": {...}, "inverse_jsd_random_selection_floor": {...}`
inline void write_estimate_json(std::ostream& f, const tapir::metrics::SculptingEstimate& e) {
    const auto interval = [&](const char* key, const tapir::metrics::Estimate& v) {
        f << ", \"" << key << "\": {\"value\": " << v.value << ", \"sd\": " << v.sd << ", \"lo68\": " << v.lo
          << ", \"hi68\": " << v.hi << ", \"replicas\": " << v.replicas << "}";
    };
    interval("r50_bootstrap", e.rejection);
    interval("inverse_jsd_bootstrap", e.inverse_jsd);
    interval("inverse_jsd_random_selection_floor", e.floor);
}

/// Error bars of points on the R50-1/JSD plane (68% intervals, asymmetric in 1/JSD) and, in grey,
/// the floor at each point's R50.
inline void plot_estimates(tapir::io::Axes& ax, const std::vector<tapir::metrics::SculptingEstimate>& es, const std::string& color,
                           bool with_floor) {
    std::vector<double> x, mid, half, xerr, fmid, fhalf;
    for (const auto& e : es) {
        x.push_back(e.rejection.value);
        xerr.push_back(e.rejection.sd);
        const double hi = std::isfinite(e.inverse_jsd.hi) ? e.inverse_jsd.hi : 10 * e.inverse_jsd.lo;
        mid.push_back(0.5 * (e.inverse_jsd.lo + hi));
        half.push_back(0.5 * (hi - e.inverse_jsd.lo));
        fmid.push_back(0.5 * (e.floor.lo + e.floor.hi));
        fhalf.push_back(0.5 * (e.floor.hi - e.floor.lo));
    }
    if (x.empty()) return;
    if (with_floor) ax.errorbars(x, fmid, fhalf, tapir::io::Style("1/JSD of a mass-blind selection (68%)", "#999999"));
    ax.errorbars(x, mid, half, tapir::io::Style("", color), xerr);
}

} // namespace examples::diphoton
