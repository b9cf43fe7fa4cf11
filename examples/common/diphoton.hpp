#pragma once
// Shared by the H -> gamma gamma examples (higgs, disco): the events in the course's CSV format
// or generated, and the course classifier.
#include "cli.hpp"

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <tapir/error.hpp>
#include <tapir/hep/diphoton.hpp>
#include <tapir/io/csv.hpp>
#include <tapir/nn/layers.hpp>
#include <tapir/nn/sequential.hpp>
#include <tapir/random.hpp>
#include <tapir/simd/activation.hpp>
#include <tapir/tensor/tensor.hpp>

namespace examples::diphoton {

/// The classifier's inputs: both photons' (pT, eta, phi, E).
inline const std::vector<std::string> kFeatures = {"pt_y1", "eta_y1", "phi_y1", "e_y1",
                                                   "pt_y2", "eta_y2", "phi_y2", "e_y2"};
/// The m_yy window of the mass-sculpting measure, GeV.
constexpr double kMassLo = 105.0, kMassHi = 160.0;
/// Fewer events leave the 30% test split too few background events on each side of the cut for
/// R50 and the mass-sculpting JSD.
constexpr std::size_t kMinEvents = 1000;

struct Events {
    tapir::Tensor<float> x;     // (n, 8) photon 4-vectors (pt, eta, phi, E) x 2
    std::vector<double> myy;    // GeV
    std::vector<double> label;  // 1 = H -> gamma gamma, 0 = background
    std::size_t size() const { return myy.size(); }
};

inline Events from_generated(const std::vector<tapir::hep::DiphotonEvent>& ev) {
    Events e;
    e.x = tapir::Tensor<float>(tapir::Shape{ev.size(), 8});
    for (std::size_t i = 0; i < ev.size(); ++i) {
        const double f[8] = {ev[i].pt1, ev[i].eta1, ev[i].phi1, ev[i].e1, ev[i].pt2, ev[i].eta2, ev[i].phi2, ev[i].e2};
        for (std::size_t j = 0; j < 8; ++j) e.x(i, j) = static_cast<float>(f[j]);
        e.myy.push_back(ev[i].myy);
        e.label.push_back(ev[i].label);
    }
    return e;
}

/// A course-format CSV (,pt_y1,...,e_y2,myy,label): at least kMinEvents events, labels 0 or 1.
inline Events from_csv(const std::string& path) {
    tapir::io::CsvOptions opt;
    opt.columns = kFeatures;
    opt.columns.push_back("myy");
    opt.columns.push_back("label");
    const tapir::io::CsvTable t = tapir::io::read_csv(path, opt);
    if (t.rows < kMinEvents)
        throw tapir::value_error(path + ": only " + std::to_string(t.rows) + " events; the 70/30 split needs at least " +
                                 std::to_string(kMinEvents));
    Events e;
    e.x = t.to_tensor<float>(kFeatures);
    e.myy = t.column("myy");
    e.label = t.column("label");
    for (std::size_t i = 0; i < t.rows; ++i)
        if (e.label[i] != 0.0 && e.label[i] != 1.0)
            throw tapir::value_error(path + ": event " + std::to_string(i) + " (data line " + std::to_string(i + 2) +
                                     "): label " + std::to_string(e.label[i]) + " is not 0 or 1");
    return e;
}

/// Fewer than kMinEvents generated events is a usage error before any work (a --data file is
/// checked when it is read).
inline void check_event_count(const Cli& cli, const std::string& data, std::size_t events) {
    if (data.empty() && events < kMinEvents)
        cli.usage("--events " + std::to_string(events) + " is too few: the 70/30 split needs at least " +
                  std::to_string(kMinEvents) + " events for R50 and the mass sculpting of its test part");
}

/// The events of the CSV data, or when data is empty `events` generated with seed (and written to
/// write_events unless it is empty); source says which, for the log and summary.json.
inline Events load_events(const std::string& data, std::size_t events, std::uint64_t seed, std::string& source,
                          const std::string& write_events = "") {
    if (!data.empty()) {
        source = data;
        return from_csv(data);
    }
    const auto gen = tapir::hep::generate_diphoton(events, seed);
    if (!write_events.empty()) tapir::hep::write_diphoton_csv(write_events, gen);
    source = "generated (" + std::to_string(events) + " events, seed " + std::to_string(seed) + ")";
    return from_generated(gen);
}

/// The events of a study whose test set may get more generated events than its 70/30 split: the
/// first n_split events are split, the rest (test_events more when generating) are test events.
struct Sample {
    Events events;
    std::size_t n_split = 0;
    std::string source;  // as load_events says
};
inline Sample load_sample(const std::string& data, std::size_t events, std::size_t test_events, std::uint64_t seed,
                          const std::string& write_events = "") {
    const std::size_t extra = data.empty() ? test_events : 0;
    Sample s;
    s.events = load_events(data, events + extra, seed, s.source, write_events);
    s.n_split = s.events.size() - extra;
    return s;
}

/// The course classifier: 8 -> 24 -> 16 -> 8 -> 1, ReLU; the output is a logit (sigmoid applied in the loss).
inline tapir::nn::Sequential<float> make_classifier(tapir::Rng& rng) {
    using tapir::nn::Dense;
    tapir::nn::Sequential<float> m;
    m.add<Dense<float>>(8, 24, rng, tapir::Activation::relu)
        .add<Dense<float>>(24, 16, rng, tapir::Activation::relu)
        .add<Dense<float>>(16, 8, rng, tapir::Activation::relu)
        .add<Dense<float>>(8, 1, rng);
    return m;
}

} // namespace examples::diphoton
