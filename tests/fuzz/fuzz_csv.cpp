/// libFuzzer target for the CSV reader (parse_csv). Any input must either parse into a
/// consistent table or throw one of tapir's documented exceptions; anything else (a crash, a
/// sanitizer report, another exception type, an inconsistent table) is a finding.
#include <tapir/io/csv.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

namespace {

void check_table(const tapir::io::CsvTable& t, bool finite_only) {
    if (t.rows == 0 || t.cols() == 0 || t.values.size() != t.rows * t.cols()) std::abort();
    if (finite_only)
        for (double v : t.values)
            if (!std::isfinite(v)) std::abort();
    for (const std::string& n : t.names)
        if (n.empty()) std::abort();  // unnamed columns are never selected
}

/// One parse; returns whether it succeeded. Only tapir's exception types may escape parse_csv.
bool parse_once(std::string_view text, const tapir::io::CsvOptions& opt, tapir::io::CsvTable* out) {
    try {
        tapir::io::CsvTable t = tapir::io::parse_csv(text, "fuzz.csv", opt);
        check_table(t, !opt.allow_non_finite);
        try {
            (void)t.to_tensor<float>();  // may overflow float: value_error
        } catch (const tapir::value_error&) {
        }
        if (out) *out = std::move(t);
        return true;
    } catch (const tapir::parse_error&) {
    } catch (const tapir::value_error&) {
    }
    return false;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);

    tapir::io::CsvTable t;
    tapir::io::CsvOptions opt;
    const bool ok = parse_once(text, opt, &t);

    // Column selection in reverse order, and one column name that does not exist.
    if (ok) {
        tapir::io::CsvOptions sel;
        sel.columns.assign(t.names.rbegin(), t.names.rend());
        tapir::io::CsvTable r;
        if (!parse_once(text, sel, &r)) std::abort();  // same text, a subset of its columns
        if (r.rows != t.rows) std::abort();
        for (std::size_t i = 0; i < t.rows; ++i)
            for (std::size_t c = 0; c < t.cols(); ++c) {
                const double a = t(i, c), b = r(i, t.cols() - 1 - c);
                if (!(a == b || (std::isnan(a) && std::isnan(b)))) std::abort();
            }
        sel.columns.push_back("no such column \x01");
        if (parse_once(text, sel, nullptr)) std::abort();
    }

    // Other dialects: ';' and tab delimiters with nan/inf allowed.
    tapir::io::CsvOptions alt;
    alt.allow_non_finite = true;
    alt.delimiter = ';';
    (void)parse_once(text, alt, nullptr);
    alt.delimiter = '\t';
    (void)parse_once(text, alt, nullptr);
    return 0;
}
