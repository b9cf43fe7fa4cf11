#pragma once
/// Jets in the layout of the public Top Quark Tagging Reference Dataset (Kasieczka, Plehn et al.,
/// arXiv:1902.09914; zenodo record 2603256): per jet the (E, px, py, pz) of up to 200 constituents
/// sorted by pT, zero-padded, in columns E_0, PX_0, PY_0, PZ_0, ..., E_199, ..., PZ_199, then
/// truthE, truthPX, truthPY, truthPZ (the top's four-momentum, zero for QCD jets), ttv (the
/// train/test/validation flag) and is_signal_new (1 top, 0 QCD). As CSV through io/csv.hpp:
/// parse errors name the file, line and column; the pandas index column of a to_csv export (an
/// unnamed first column) is skipped; columns other than these are ignored. A user with the real
/// dataset converts it to this CSV once and runs the same programs on it.
///
/// As NumPy arrays (io/npy.hpp, io/npz.hpp), the layout most top-tagging codes feed their
/// networks: constituents (N, n, 4) of (E, px, py, pz) per constituent, sorted by pT and
/// zero-padded, float64; is_signal_new (N,) int64; truth (N, 4) of (E, px, py, pz), zero for
/// QCD jets. In one .npz archive with members of these names, or in two .npy files (no truth).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "../error.hpp"
#include "../io/csv.hpp"
#include "../io/npy.hpp"
#include "../io/npz.hpp"
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

/// The jets as NumPy arrays in the (N, n, 4) layout described at the top of this header.
struct TopTaggingArrays {
    io::NpyArray constituents, is_signal_new, truth;
};

/// The jets as arrays: the same constituents, order and padding as top_tagging_table.
inline TopTaggingArrays top_tagging_arrays(const std::vector<GeneratedJet>& jets, std::size_t n_constituents = 200) {
    const io::CsvTable t = top_tagging_table(jets, n_constituents);
    const std::size_t n = jets.size(), nc = t.names.size(), k = 4 * n_constituents;
    std::vector<double> c(n * k), truth(n * 4);
    std::vector<std::int64_t> label(n);
    for (std::size_t r = 0; r < n; ++r) {
        const double* row = t.values.data() + r * nc;
        std::copy(row, row + k, c.data() + r * k);
        std::copy(row + k, row + k + 4, truth.data() + r * 4);
        label[r] = static_cast<std::int64_t>(row[k + 5]);
    }
    TopTaggingArrays a;
    a.constituents = io::NpyArray::from(Shape{n, n_constituents, 4}, c);
    a.is_signal_new = io::NpyArray::from(Shape{n}, label);
    a.truth = io::NpyArray::from(Shape{n, 4}, truth);
    return a;
}

/// Jets from arrays in the (N, n, 4) layout: constituents of any float or integer dtype, labels
/// (N,) or (N, 1) of 0 and 1, truth (N, 4) optional. All-zero constituents are padding and
/// dropped. Errors name the array's source, the jet and the constituent.
inline std::vector<GeneratedJet> jets_from_top_tagging_arrays(const io::NpyArray& constituents, const io::NpyArray& is_signal_new,
                                                              const io::NpyArray* truth = nullptr) {
    const Shape& s = constituents.shape();
    if (s.rank() != 3 || s[2] != 4)
        throw shape_error(constituents.source() + ": constituents must have shape (jets, constituents, 4) of (E, px, py, pz), got " + s.str());
    const std::size_t n = s[0], m = s[1];
    const Shape& ls = is_signal_new.shape();
    if (!((ls.rank() == 1 && ls[0] == n) || (ls.rank() == 2 && ls[0] == n && ls[1] == 1)))
        throw shape_error(is_signal_new.source() + ": is_signal_new must have shape (" + std::to_string(n) + ",) for the " + std::to_string(n) +
                          " jets of the constituents, got " + ls.str());
    if (truth && truth->shape() != Shape{n, 4})
        throw shape_error(truth->source() + ": truth must have shape (" + std::to_string(n) + ", 4), got " + truth->shape().str());
    const std::vector<double> c = constituents.values<double>();
    const std::vector<double> labels = is_signal_new.values<double>();
    const std::vector<double> tv = truth ? truth->values<double>() : std::vector<double>();
    std::vector<GeneratedJet> out(n);
    for (std::size_t r = 0; r < n; ++r) {
        GeneratedJet& j = out[r];
        const double l = labels[r];
        if (l != 0.0 && l != 1.0)
            throw value_error(is_signal_new.source() + ": is_signal_new of jet " + std::to_string(r) + " is " + tapir::detail::number_text(l) +
                              ", not 0 or 1");
        j.label = static_cast<int>(l);
        for (std::size_t i = 0; i < m; ++i) {
            const double* v = c.data() + (r * m + i) * 4;
            if (v[0] == 0.0 && v[1] == 0.0 && v[2] == 0.0 && v[3] == 0.0) continue;
            if (!(v[0] >= 0.0))
                throw value_error(constituents.source() + ": jet " + std::to_string(r) + ", constituent " + std::to_string(i) +
                                  ": negative energy " + tapir::detail::number_text(v[0]));
            j.constituents.emplace_back(v[1], v[2], v[3], v[0]);
        }
        if (truth) j.truth = FourVector(tv[4 * r + 1], tv[4 * r + 2], tv[4 * r + 3], tv[4 * r]);
    }
    return out;
}

/// Writes jets as an .npz archive with members constituents, is_signal_new and truth.
inline void write_top_tagging_npz(const std::string& path, const std::vector<GeneratedJet>& jets, std::size_t n_constituents = 200) {
    TopTaggingArrays a = top_tagging_arrays(jets, n_constituents);
    io::write_npz(path, {{"constituents", std::move(a.constituents)}, {"is_signal_new", std::move(a.is_signal_new)}, {"truth", std::move(a.truth)}});
}

/// Reads jets from an .npz archive with arrays constituents and is_signal_new (truth optional).
inline std::vector<GeneratedJet> read_top_tagging_npz(const std::string& path) {
    const io::NpzFile f = io::read_npz(path);
    return jets_from_top_tagging_arrays(f["constituents"], f["is_signal_new"], f.has("truth") ? &f["truth"] : nullptr);
}

/// Writes jets as two .npy files: constituents (N, n, 4) and is_signal_new (N,).
inline void write_top_tagging_npy(const std::string& constituents_path, const std::string& labels_path, const std::vector<GeneratedJet>& jets,
                                  std::size_t n_constituents = 200) {
    const TopTaggingArrays a = top_tagging_arrays(jets, n_constituents);
    io::write_npy(constituents_path, a.constituents);
    io::write_npy(labels_path, a.is_signal_new);
}

/// Reads jets from two .npy files: constituents (N, n, 4) and is_signal_new (N,).
inline std::vector<GeneratedJet> read_top_tagging_npy(const std::string& constituents_path, const std::string& labels_path) {
    return jets_from_top_tagging_arrays(io::read_npy_array(constituents_path), io::read_npy_array(labels_path));
}

} // namespace tapir::hep
