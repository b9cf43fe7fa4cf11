#pragma once
/// Jets in the layout of the public Top Quark Tagging Reference Dataset (Kasieczka, Plehn et al.,
/// arXiv:1902.09914; zenodo record 2603256): per jet the (E, px, py, pz) of up to 200 constituents
/// sorted by pT, zero-padded, in columns E_0, PX_0, PY_0, PZ_0, ..., E_199, ..., PZ_199, then
/// truthE, truthPX, truthPY, truthPZ (the top's four-momentum, zero for QCD jets), ttv (the
/// train/test/validation flag) and is_signal_new (1 top, 0 QCD). As CSV through io/csv.hpp:
/// parse errors name the file, line and column; the pandas index column of a to_csv export (an
/// unnamed first column) is skipped; columns other than these are ignored. A user with the real
/// dataset converts it to this CSV once and runs the same programs on it.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "../error.hpp"
#include "../io/csv.hpp"
#include "jets.hpp"
#include "kinematics.hpp"

namespace tapir::hep {

/// The reference dataset's column names for n constituents (4 n + 6 names).
inline std::vector<std::string> top_tagging_columns(std::size_t n_constituents = 200) {
    std::vector<std::string> names;
    names.reserve(4 * n_constituents + 6);
    for (std::size_t i = 0; i < n_constituents; ++i) {
        const std::string k = std::to_string(i);
        names.push_back("E_" + k), names.push_back("PX_" + k), names.push_back("PY_" + k), names.push_back("PZ_" + k);
    }
    for (const char* s : {"truthE", "truthPX", "truthPY", "truthPZ", "ttv", "is_signal_new"}) names.emplace_back(s);
    return names;
}

/// The jets as a table in the reference layout: constituents sorted by pT (descending), the
/// first n_constituents kept, zero-padded; truth is written for top jets only, ttv = 0.
inline io::CsvTable top_tagging_table(const std::vector<GeneratedJet>& jets, std::size_t n_constituents = 200) {
    if (n_constituents == 0) throw value_error("top_tagging_table: n_constituents must be >= 1");
    io::CsvTable t;
    t.source = "top_tagging_table";
    t.names = top_tagging_columns(n_constituents);
    t.rows = jets.size();
    const std::size_t nc = t.names.size();
    t.values.assign(jets.size() * nc, 0.0);
    for (std::size_t r = 0; r < jets.size(); ++r) {
        const GeneratedJet& j = jets[r];
        if (j.label != 0 && j.label != 1)
            throw value_error("top_tagging_table: jet " + std::to_string(r) + " has label " + std::to_string(j.label) + " (must be 0 or 1)");
        std::vector<FourVector> c = j.constituents;
        std::stable_sort(c.begin(), c.end(), [](const FourVector& a, const FourVector& b) { return a.pt() > b.pt(); });
        double* row = t.values.data() + r * nc;
        for (std::size_t i = 0; i < c.size() && i < n_constituents; ++i) {
            const FourVector& v = c[i];
            if (!(std::isfinite(v.e) && std::isfinite(v.px) && std::isfinite(v.py) && std::isfinite(v.pz)))
                throw value_error("top_tagging_table: jet " + std::to_string(r) + ", constituent " + std::to_string(i) +
                                  " has a non-finite component");
            row[4 * i] = v.e, row[4 * i + 1] = v.px, row[4 * i + 2] = v.py, row[4 * i + 3] = v.pz;
        }
        const std::size_t k = 4 * n_constituents;
        if (j.label == 1) row[k] = j.truth.e, row[k + 1] = j.truth.px, row[k + 2] = j.truth.py, row[k + 3] = j.truth.pz;
        row[k + 5] = static_cast<double>(j.label);
    }
    return t;
}

/// Jets from a table in the reference layout: E_i, PX_i, PY_i, PZ_i for i = 0, 1, ... as long as
/// E_i exists (all four required) and is_signal_new; truth* optional. All-zero constituents are
/// padding and dropped. Errors name the source, the data row and the column.
inline std::vector<GeneratedJet> jets_from_top_tagging_table(const io::CsvTable& t) {
    auto col = [&](const std::string& name) -> std::size_t {
        if (!t.has(name)) {
            throw parse_error(t.source + ": missing column '" + name + "' of the top-tagging layout (found " +
                              std::to_string(t.names.size()) + " columns" + (t.names.empty() ? std::string() : ", first '" + t.names.front() + "'") + ")");
        }
        return t.index(name);
    };
    std::vector<std::size_t> idx;
    for (std::size_t i = 0;; ++i) {
        const std::string k = std::to_string(i);
        if (!t.has("E_" + k)) break;
        idx.push_back(col("E_" + k)), idx.push_back(col("PX_" + k)), idx.push_back(col("PY_" + k)), idx.push_back(col("PZ_" + k));
    }
    if (idx.empty()) throw parse_error(t.source + ": no constituent columns (E_0, PX_0, PY_0, PZ_0, ...) in the header");
    const std::size_t lab = col("is_signal_new");
    const bool has_truth = t.has("truthE") && t.has("truthPX") && t.has("truthPY") && t.has("truthPZ");
    std::vector<GeneratedJet> out(t.rows);
    for (std::size_t r = 0; r < t.rows; ++r) {
        GeneratedJet& j = out[r];
        const double l = t(r, lab);
        if (l != 0.0 && l != 1.0)
            throw parse_error(t.source + ": data row " + std::to_string(r + 1) + ", column " + std::to_string(lab + 1) +
                              " (is_signal_new): " + tapir::detail::number_text(l) + " is not 0 or 1");
        j.label = static_cast<int>(l);
        for (std::size_t i = 0; 4 * i < idx.size(); ++i) {
            const FourVector v(t(r, idx[4 * i + 1]), t(r, idx[4 * i + 2]), t(r, idx[4 * i + 3]), t(r, idx[4 * i]));
            if (v.e == 0.0 && v.px == 0.0 && v.py == 0.0 && v.pz == 0.0) continue;
            if (!(v.e >= 0.0))
                throw parse_error(t.source + ": data row " + std::to_string(r + 1) + ", column " + std::to_string(idx[4 * i] + 1) +
                                  " (" + t.names[idx[4 * i]] + "): negative energy " + tapir::detail::number_text(v.e));
            j.constituents.push_back(v);
        }
        if (has_truth) j.truth = FourVector(t(r, col("truthPX")), t(r, col("truthPY")), t(r, col("truthPZ")), t(r, col("truthE")));
    }
    return out;
}

/// Writes jets as a CSV file in the reference layout (shortest round-trip numbers).
inline void write_top_tagging_csv(const std::string& path, const std::vector<GeneratedJet>& jets, std::size_t n_constituents = 200) {
    io::write_csv(path, top_tagging_table(jets, n_constituents));
}

/// Parses CSV text in the reference layout; source names it in errors.
inline std::vector<GeneratedJet> parse_top_tagging_csv(std::string_view text, const std::string& source) {
    return jets_from_top_tagging_table(io::parse_csv(text, source));
}

/// Reads a CSV file in the reference layout.
inline std::vector<GeneratedJet> read_top_tagging_csv(const std::string& path) {
    return jets_from_top_tagging_table(io::read_csv(path));
}

} // namespace tapir::hep
