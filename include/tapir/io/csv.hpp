#pragma once
/// CSV files of numbers: read (whole file in one go, std::from_chars, no per-field allocation)
/// and write (shortest round-trip text).
///
/// Format accepted by parse_csv / read_csv:
/// - The first non-blank line is the header. Columns with an empty name (the unnamed pandas
///   index column of `,pt_y1,eta_y1,...`) are skipped: never selected, never parsed.
/// - Fields may be quoted ("..." with "" for a quote, delimiters and newlines inside);
///   spaces and tabs around unquoted fields and around numbers are ignored. A leading '+' is
///   accepted. Line ends are `\n`, `\r\n` or `\r`; blank lines (empty, or only spaces and tabs) are
///   skipped; a UTF-8 BOM is skipped.
/// - Every selected field must be a decimal number. nan/inf are rejected unless
///   CsvOptions::allow_non_finite; numbers too small for a double read as (signed) zero, too
///   large ones are an error. An empty selected field is an error (no silent NaN).
/// - Every row has as many fields as the header (ragged rows are an error).
/// Errors name the source, the 1-based physical line, the 1-based column and its name:
///   `data.csv:17: column 3 (eta_y1): 'abc' is not a number`.

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "../config.hpp"
#include "../error.hpp"
#include "../tensor/shape.hpp"
#include "../tensor/tensor.hpp"

namespace tapir::io {

struct CsvOptions {
    char delimiter = ',';
    /// Accept nan / inf / -inf fields (rejected by default with their position).
    bool allow_non_finite = false;
    /// Columns to read, in this order; empty = every named column in file order.
    std::vector<std::string> columns;
};

namespace detail {
using tapir::detail::error_number;
inline std::string csv_join_names(const std::vector<std::string>& names) {
    std::string s;
    for (std::size_t i = 0; i < names.size(); ++i) {
        if (i) s += ", ";
        s += names[i];
    }
    return s;
}
} // namespace detail

/// Numbers read from a CSV file: row-major, rows x names.size().
struct CsvTable {
    std::string source;
    std::vector<std::string> names;
    std::size_t rows = 0;
    std::vector<double> values;

    std::size_t cols() const noexcept { return names.size(); }
    double operator()(std::size_t row, std::size_t col) const noexcept { return values[row * names.size() + col]; }

    bool has(const std::string& name) const noexcept {
        return std::find(names.begin(), names.end(), name) != names.end();
    }

    /// Position of a column; value_error listing the available names when it is absent.
    std::size_t index(const std::string& name) const {
        const auto it = std::find(names.begin(), names.end(), name);
        if (it == names.end())
            throw value_error(source + ": unknown column '" + name + "' (available: " + detail::csv_join_names(names) +
                              ")");
        return static_cast<std::size_t>(it - names.begin());
    }

    std::vector<double> column(const std::string& name) const {
        const std::size_t c = index(name);
        const std::size_t n = names.size();
        std::vector<double> out(rows);
        for (std::size_t r = 0; r < rows; ++r) out[r] = values[r * n + c];
        return out;
    }

    /// The named columns as a (rows, cols.size()) tensor; value_error if a value overflows T.
    template <class T>
    Tensor<T> to_tensor(const std::vector<std::string>& cols) const {
        if (cols.empty()) throw value_error(source + ": to_tensor: no columns requested");
        std::vector<std::size_t> idx(cols.size());
        for (std::size_t k = 0; k < cols.size(); ++k) idx[k] = index(cols[k]);
        Tensor<T> out(Shape{rows, cols.size()});
        const std::size_t n = names.size();
        const std::size_t m = cols.size();
        T* dst = out.data();
        for (std::size_t r = 0; r < rows; ++r) {
            const double* row = values.data() + r * n;
            for (std::size_t k = 0; k < m; ++k) {
                const double v = row[idx[k]];
                const T t = static_cast<T>(v);
                if (std::isfinite(v) && !std::isfinite(t))
                    throw value_error(source + ": to_tensor: value " + detail::error_number(v) + " in row " +
                                      std::to_string(r + 1) + ", column '" + cols[k] +
                                      "' overflows the tensor's float type");
                dst[r * m + k] = t;
            }
        }
        return out;
    }
    /// Every column, in table order.
    template <class T>
    Tensor<T> to_tensor() const {
        return to_tensor<T>(names);
    }
};

namespace detail {

/// A field's text for an error message: control bytes escaped, long text shortened.
inline std::string csv_excerpt(std::string_view s) {
    static const char hex[] = "0123456789abcdef";
    std::string out;
    const std::size_t limit = 40;
    for (std::size_t i = 0; i < s.size() && i < limit; ++i) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (c < 0x20 || c == 0x7f) {
            out += "\\x";
            out += hex[c >> 4];
            out += hex[c & 15];
        } else {
            out += static_cast<char>(c);
        }
    }
    if (s.size() > limit) out += "...";
    return out;
}

/// Decimal exponent sign of a syntactically valid number that std::from_chars called out of
/// range: true when its magnitude is below 1 (an underflow, read as zero).
inline bool csv_magnitude_below_one(std::string_view s) {
    std::size_t i = 0;
    if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
    long long int_digits = 0, lead_frac_zeros = 0;
    bool nonzero_int = false, nonzero_frac = false;
    for (; i < s.size() && s[i] >= '0' && s[i] <= '9'; ++i) {
        if (s[i] != '0') nonzero_int = true;
        if (nonzero_int) ++int_digits;
    }
    if (i < s.size() && s[i] == '.') {
        for (++i; i < s.size() && s[i] >= '0' && s[i] <= '9'; ++i) {
            if (!nonzero_frac && s[i] == '0') ++lead_frac_zeros;
            else nonzero_frac = true;
        }
    }
    long long e = 0;
    if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
        ++i;
        bool neg = false;
        if (i < s.size() && (s[i] == '+' || s[i] == '-')) neg = s[i++] == '-';
        for (; i < s.size() && s[i] >= '0' && s[i] <= '9'; ++i)
            if (e < 1000000000LL) e = e * 10 + (s[i] - '0');
        if (neg) e = -e;
    }
    const long long mag = nonzero_int ? int_digits - 1 + e : -(lead_frac_zeros + 1) + e;
    return mag < 0;
}

/// Parses all of [b, e) as a double; false when it is not exactly one number.
inline bool csv_to_double(const char* b, const char* e, double& v, bool& out_of_range) {
    out_of_range = false;
    const char* q = b;
    if (q < e && *q == '+') {
        ++q;
        if (q < e && (*q == '-' || *q == '+')) return false;
    }
#if defined(__cpp_lib_to_chars)
    const auto r = std::from_chars(q, e, v);
    if (r.ptr != e) return false;
    if (r.ec == std::errc::result_out_of_range) {
        out_of_range = true;
        return true;
    }
    return r.ec == std::errc();
#else
    // Fallback for standard libraries without floating-point from_chars: strtod on a copy
    // (assumes the "C" numeric locale).
    char buf[128];
    const auto n = static_cast<std::size_t>(e - q);
    if (n == 0 || n >= sizeof buf) return false;
    std::memcpy(buf, q, n);
    buf[n] = '\0';
    if (buf[0] == ' ' || buf[0] == '\t' || (n > 1 && (buf[1] == 'x' || buf[1] == 'X'))) return false;
    char* stop = nullptr;
    errno = 0;
    v = std::strtod(buf, &stop);
    if (stop != buf + n) return false;
    if (errno == ERANGE && (std::isinf(v) || v == 0.0)) out_of_range = true;
    return true;
#endif
}

class CsvParser {
public:
    CsvParser(std::string_view text, const std::string& source, const CsvOptions& opt)
        : p_(text.data()), end_(text.data() + text.size()), src_(source), opt_(opt), delim_(opt.delimiter) {}

    CsvTable parse() {
        if (delim_ == '"' || delim_ == '\n' || delim_ == '\r')
            throw value_error(src_ + ": invalid CSV delimiter '" + csv_excerpt(std::string_view(&delim_, 1)) + "'");
        if (end_ - p_ >= 3 && std::memcmp(p_, "\xEF\xBB\xBF", 3) == 0) p_ += 3;
        skip_blank_lines();
        if (p_ == end_) throw parse_error(src_ + ": empty file (no header row)");
        read_header();
        select_columns();

        CsvTable t;
        t.source = src_;
        for (std::size_t c : selected_) t.names.push_back(header_[c]);
        const std::size_t nsel = selected_.size();
        const std::size_t ncols = header_.size();
        std::vector<int> map(ncols, -1);
        for (std::size_t k = 0; k < nsel; ++k) map[selected_[k]] = static_cast<int>(k);

        // One cheap pass over the text sizes the output exactly for \n-terminated files.
        std::size_t lines = 1;
        for (const char* q = p_; (q = static_cast<const char*>(std::memchr(q, '\n', static_cast<std::size_t>(end_ - q))));
             ++q)
            ++lines;
        std::vector<double>& out = t.values;
        out.reserve(lines * nsel);
        std::vector<double> row_buf(nsel);
        double* row = row_buf.data();

        std::size_t rows = 0;
        while (true) {
            skip_blank_lines();
            if (p_ == end_) break;
            for (std::size_t c = 0; c < ncols; ++c) {
                const int k = map[c];
                if (k < 0) skip_field(c);
                else row[k] = number_field(c);
                if (c + 1 < ncols) {
                    if (p_ < end_ && *p_ == delim_) {
                        ++p_;
                        continue;
                    }
                    throw parse_error(where(c + 1) + " is missing (the row has " + std::to_string(c + 1) +
                                      (c == 0 ? " field" : " fields") + ", the header " + std::to_string(ncols) + ")");
                }
            }
            if (p_ < end_ && *p_ == delim_) too_many_fields(ncols);
            end_record();
            out.insert(out.end(), row, row + nsel);
            ++rows;
        }
        if (rows == 0) throw parse_error(src_ + ": no data rows (the file has only a header)");
        if (out.capacity() - out.size() > out.size() / 8) out.shrink_to_fit();
        t.rows = rows;
        return t;
    }

private:
    static bool is_space(char c, char delim) noexcept { return (c == ' ' || c == '\t') && c != delim; }
    bool at_field_end(const char* q) const noexcept { return q == end_ || *q == delim_ || *q == '\n' || *q == '\r'; }

    /// "file:line: column c (name)" for 0-based physical column c.
    std::string where(std::size_t c) const { return where_line(line_, c); }
    std::string where_line(std::size_t line, std::size_t c) const {
        std::string s = src_ + ":" + std::to_string(line) + ": column " + std::to_string(c + 1);
        if (c < header_.size() && !header_[c].empty()) s += " (" + header_[c] + ")";
        return s;
    }

    /// Skips lines that are empty or hold only spaces and tabs (other than the delimiter).
    void skip_blank_lines() noexcept {
        while (p_ < end_) {
            const char* q = p_;
            while (q < end_ && is_space(*q, delim_)) ++q;
            if (q < end_ && *q != '\n' && *q != '\r') return; // a line with content: p_ stays at its start
            p_ = q;
            if (p_ == end_) return;
            if (*p_++ == '\r' && p_ < end_ && *p_ == '\n') ++p_;
            ++line_;
        }
    }

    void end_record() noexcept {
        if (p_ == end_) return;
        if (*p_ == '\r') {
            ++p_;
            if (p_ < end_ && *p_ == '\n') ++p_;
        } else {
            ++p_; // '\n'
        }
        ++line_;
    }

    /// Scans one field from p_ and leaves p_ on its terminator. Quoted content is unescaped
    /// into *text when text is non-null; unquoted content is trimmed. Returns whether quoted.
    bool scan_field(std::size_t c, std::string* text) {
        const char* q = p_;
        while (q < end_ && is_space(*q, delim_)) ++q;
        if (q < end_ && *q == '"') {
            const std::size_t open_line = line_;
            ++q;
            for (;;) {
                if (q == end_) throw parse_error(where_line(open_line, c) + ": unterminated quoted field");
                const char ch = *q++;
                if (ch == '"') {
                    if (q < end_ && *q == '"') {
                        if (text) *text += '"';
                        ++q;
                        continue;
                    }
                    break;
                }
                if (ch == '\n' || (ch == '\r' && !(q < end_ && *q == '\n'))) ++line_;
                if (text) *text += ch;
            }
            while (q < end_ && is_space(*q, delim_)) ++q;
            if (!at_field_end(q))
                throw parse_error(where(c) + ": unexpected character '" + csv_excerpt(std::string_view(q, 1)) +
                                  "' after a closing quote");
            p_ = q;
            return true;
        }
        const char* b = q;
        while (!at_field_end(q)) ++q;
        p_ = q;
        if (text) {
            const char* e = q;
            while (e > b && is_space(e[-1], delim_)) --e;
            text->assign(b, static_cast<std::size_t>(e - b));
        }
        return false;
    }

    void skip_field(std::size_t c) {
        const char* q = p_;
        while (q < end_ && is_space(*q, delim_)) ++q;
        if (q < end_ && *q == '"') {
            scan_field(c, nullptr);
            return;
        }
        while (!at_field_end(q)) ++q;
        p_ = q;
    }

    double number_field(std::size_t c) {
        const char* q = p_;
        while (q < end_ && is_space(*q, delim_)) ++q;
        if (q < end_ && *q == '"') return quoted_number_field(c, q);
#if defined(__cpp_lib_to_chars)
        const char* num = q;
        bool plain = true;
        if (num < end_ && *num == '+') { // from_chars takes no '+'
            ++num;
            plain = !(num < end_ && (*num == '-' || *num == '+'));
        }
        if (TAPIR_LIKELY(plain)) {
            double v;
            const auto r = std::from_chars(num, end_, v);
            if (r.ec == std::errc()) {
                const char* t = r.ptr;
                while (t < end_ && is_space(*t, delim_)) ++t;
                if (at_field_end(t)) {
                    if (TAPIR_UNLIKELY(!opt_.allow_non_finite && !std::isfinite(v))) non_finite(c, q, r.ptr);
                    p_ = t;
                    return v;
                }
            }
        }
#endif
        return number_field_slow(c);
    }

    /// A quoted number without "" escapes, parsed in place.
    double quoted_number_field(std::size_t c, const char* q) {
        const char* b = q + 1;
        const char* close = static_cast<const char*>(std::memchr(b, '"', static_cast<std::size_t>(end_ - b)));
        if (close && !(close + 1 < end_ && close[1] == '"')) {
            const char* cb = b;
            const char* ce = close;
            while (cb < ce && (*cb == ' ' || *cb == '\t')) ++cb;
            while (ce > cb && (ce[-1] == ' ' || ce[-1] == '\t')) --ce;
            const char* t = close + 1;
            while (t < end_ && is_space(*t, delim_)) ++t;
            double v = 0.0;
            bool out_of_range = false;
            if (at_field_end(t) && cb < ce && csv_to_double(cb, ce, v, out_of_range) && !out_of_range &&
                (opt_.allow_non_finite || std::isfinite(v))) {
                p_ = t;
                return v;
            }
        }
        return number_field_slow(c);
    }

    /// Quoted fields, leading '+', out-of-range values, and every error.
    double number_field_slow(std::size_t c) {
        const std::size_t field_line = line_;
        std::string text;
        scan_field(c, &text);
        // Quoted content may itself carry spaces around the number.
        std::size_t b = 0, e = text.size();
        while (b < e && (text[b] == ' ' || text[b] == '\t')) ++b;
        while (e > b && (text[e - 1] == ' ' || text[e - 1] == '\t')) --e;
        const std::string_view s(text.data() + b, e - b);
        if (s.empty()) throw parse_error(where_line(field_line, c) + ": empty field (expected a number)");
        double v = 0.0;
        bool out_of_range = false;
        if (!csv_to_double(s.data(), s.data() + s.size(), v, out_of_range))
            throw parse_error(where_line(field_line, c) + ": '" + csv_excerpt(s) + "' is not a number");
        if (out_of_range) {
            if (!csv_magnitude_below_one(s))
                throw parse_error(where_line(field_line, c) + ": '" + csv_excerpt(s) +
                                  "' is out of the range of double");
            v = s[0] == '-' ? -0.0 : 0.0;
        }
        if (!opt_.allow_non_finite && !std::isfinite(v)) {
            line_ = field_line;
            non_finite(c, s.data(), s.data() + s.size());
        }
        return v;
    }

    [[noreturn]] void non_finite(std::size_t c, const char* b, const char* e) const {
        throw parse_error(where(c) + ": non-finite value '" + csv_excerpt(std::string_view(b, static_cast<std::size_t>(e - b))) +
                          "' (set CsvOptions::allow_non_finite to accept it)");
    }

    [[noreturn]] void too_many_fields(std::size_t ncols) {
        const std::size_t line = line_;
        std::size_t n = ncols;
        while (p_ < end_ && *p_ == delim_) {
            ++p_;
            scan_field(n, nullptr);
            ++n;
        }
        throw parse_error(src_ + ":" + std::to_string(line) + ": column " + std::to_string(ncols + 1) +
                          ": unexpected extra field (the row has " + std::to_string(n) + " fields, the header " +
                          std::to_string(ncols) + ")");
    }

    void read_header() {
        const std::size_t header_line = line_;
        for (;;) {
            std::string name;
            scan_field(header_.size(), &name);
            header_.push_back(std::move(name));
            if (p_ < end_ && *p_ == delim_) {
                ++p_;
                continue;
            }
            break;
        }
        end_record();
        bool any = false;
        for (std::size_t c = 0; c < header_.size(); ++c) {
            if (header_[c].empty()) continue;
            any = true;
            for (std::size_t d = 0; d < c; ++d)
                if (header_[d] == header_[c])
                    throw parse_error(src_ + ":" + std::to_string(header_line) + ": column " + std::to_string(c + 1) +
                                      ": duplicate column name '" + csv_excerpt(header_[c]) + "' (also column " +
                                      std::to_string(d + 1) + ")");
        }
        if (!any) throw parse_error(src_ + ":" + std::to_string(header_line) + ": the header names no columns");
    }

    void select_columns() {
        if (opt_.columns.empty()) {
            for (std::size_t c = 0; c < header_.size(); ++c)
                if (!header_[c].empty()) selected_.push_back(c);
            return;
        }
        std::vector<std::string> unknown;
        for (std::size_t k = 0; k < opt_.columns.size(); ++k) {
            const std::string& want = opt_.columns[k];
            for (std::size_t j = 0; j < k; ++j)
                if (opt_.columns[j] == want) throw value_error(src_ + ": column '" + want + "' is requested twice");
            const auto it = want.empty() ? header_.end() : std::find(header_.begin(), header_.end(), want);
            if (it == header_.end()) unknown.push_back(want);
            else selected_.push_back(static_cast<std::size_t>(it - header_.begin()));
        }
        if (!unknown.empty()) {
            std::vector<std::string> avail;
            for (const auto& h : header_)
                if (!h.empty()) avail.push_back(h);
            std::string u;
            for (std::size_t i = 0; i < unknown.size(); ++i) u += (i ? ", '" : "'") + unknown[i] + "'";
            throw value_error(src_ + ": unknown column" + (unknown.size() > 1 ? "s " : " ") + u +
                              " (available: " + csv_join_names(avail) + ")");
        }
    }

    const char* p_;
    const char* end_;
    const std::string& src_;
    const CsvOptions& opt_;
    char delim_;
    std::size_t line_ = 1;
    std::vector<std::string> header_;
    std::vector<std::size_t> selected_;
};

inline std::string csv_io_error(const char* op, const std::string& path, int err) {
    return std::string(op) + ": cannot " + (op[0] == 'w' ? "write '" : "read '") + path +
           "': " + std::generic_category().message(err);
}

template <class = void>
CsvTable parse_csv_text(std::string_view text, const std::string& source_name, const CsvOptions& options) {
    return CsvParser(text, source_name, options).parse();
}
TAPIR_COMPILED_ONCE(CsvTable parse_csv_text<>(std::string_view, const std::string&, const CsvOptions&))

template <class = void>
CsvTable read_csv_file(const std::string& path, const CsvOptions& options) {
    struct Closer {
        void operator()(std::FILE* f) const noexcept { std::fclose(f); }
    };
    errno = 0;
    std::unique_ptr<std::FILE, Closer> f(std::fopen(path.c_str(), "rb"));
    if (!f) throw parse_error("read_csv: cannot open '" + path + "': " + std::generic_category().message(errno));
    // A directory opens but does not read: find out before trusting its "size".
    errno = 0;
    const int first = std::fgetc(f.get());
    if (first == EOF && std::ferror(f.get()))
        throw parse_error(csv_io_error("read_csv", path, errno ? errno : EIO));
    // Size hint from seeking; the read loop below also copes with pipes and growing files.
    std::size_t cap = 1 << 16;
    bool rewound = false;
    if (std::fseek(f.get(), 0, SEEK_END) == 0) {
        const long n = std::ftell(f.get());
        if (n > 0) cap = static_cast<std::size_t>(n) + 1;
        rewound = std::fseek(f.get(), 0, SEEK_SET) == 0;
        if (!rewound) throw parse_error(csv_io_error("read_csv", path, errno ? errno : EIO));
    }
    std::unique_ptr<char[]> buf(new char[cap]);
    std::size_t size = 0;
    if (!rewound && first != EOF) buf[size++] = static_cast<char>(first); // a pipe: keep the byte read
    for (;;) {
        size += std::fread(buf.get() + size, 1, cap - size, f.get());
        if (std::ferror(f.get())) throw parse_error(csv_io_error("read_csv", path, errno ? errno : EIO));
        if (size < cap) break;
        std::unique_ptr<char[]> bigger(new char[2 * cap]);
        std::memcpy(bigger.get(), buf.get(), size);
        buf.swap(bigger);
        cap *= 2;
    }
    f.reset();
    return parse_csv_text(std::string_view(buf.get(), size), path, options);
}
TAPIR_COMPILED_ONCE(CsvTable read_csv_file<>(const std::string&, const CsvOptions&))

} // namespace detail

/// Parses CSV text; source_name prefixes every error message (a file name, "<stdin>", ...).
inline CsvTable parse_csv(std::string_view text, const std::string& source_name, const CsvOptions& options = {}) {
    return detail::parse_csv_text(text, source_name, options);
}

/// Reads a whole CSV file into memory and parses it (see parse_csv).
inline CsvTable read_csv(const std::string& path, const CsvOptions& options = {}) {
    return detail::read_csv_file(path, options);
}

/// Writes columns (all the same length) with a header row; numbers in the shortest text that
/// reads back to the same double. Names holding a delimiter, quote, newline or edge space are quoted.
inline void write_csv(const std::string& path, const std::vector<std::string>& names,
                      const std::vector<std::vector<double>>& columns) {
    if (names.size() != columns.size())
        throw value_error("write_csv: " + std::to_string(names.size()) + " names but " +
                          std::to_string(columns.size()) + " columns");
    if (names.empty()) throw value_error("write_csv: no columns to write");
    const std::size_t rows = columns[0].size();
    for (std::size_t c = 1; c < columns.size(); ++c)
        if (columns[c].size() != rows)
            throw value_error("write_csv: column '" + names[c] + "' has " + std::to_string(columns[c].size()) +
                              " values but column '" + names[0] + "' has " + std::to_string(rows));
    struct Closer {
        void operator()(std::FILE* f) const noexcept { std::fclose(f); }
    };
    errno = 0;
    std::unique_ptr<std::FILE, Closer> f(std::fopen(path.c_str(), "wb"));
    if (!f) throw parse_error("write_csv: cannot open '" + path + "' for writing: " +
                              std::generic_category().message(errno));
    std::string out;
    out.reserve(1 << 20);
    const auto flush = [&] {
        if (!out.empty() && std::fwrite(out.data(), 1, out.size(), f.get()) != out.size())
            throw parse_error(detail::csv_io_error("write_csv", path, errno ? errno : EIO));
        out.clear();
    };
    for (std::size_t c = 0; c < names.size(); ++c) {
        if (c) out += ',';
        const std::string& n = names[c];
        const bool quote = n.find_first_of(",\"\r\n") != std::string::npos ||
                           (!n.empty() && (n.front() == ' ' || n.back() == ' ' || n.front() == '\t' || n.back() == '\t'));
        if (!quote) {
            out += n;
            continue;
        }
        out += '"';
        for (char ch : n) {
            if (ch == '"') out += '"';
            out += ch;
        }
        out += '"';
    }
    out += '\n';
    char num[64];
    for (std::size_t r = 0; r < rows; ++r) {
        for (std::size_t c = 0; c < columns.size(); ++c) {
            if (c) out += ',';
            const double v = columns[c][r];
#if defined(__cpp_lib_to_chars)
            const auto res = std::to_chars(num, num + sizeof num, v);
            out.append(num, static_cast<std::size_t>(res.ptr - num));
#else
            const int k = std::snprintf(num, sizeof num, "%.17g", v);
            out.append(num, static_cast<std::size_t>(k));
#endif
        }
        out += '\n';
        if (out.size() > (1u << 20)) flush();
    }
    flush();
    if (std::fflush(f.get()) != 0) throw parse_error(detail::csv_io_error("write_csv", path, errno ? errno : EIO));
    if (std::fclose(f.release()) != 0) throw parse_error(detail::csv_io_error("write_csv", path, errno ? errno : EIO));
}

/// Writes a table (its names and columns).
inline void write_csv(const std::string& path, const CsvTable& table) {
    std::vector<std::vector<double>> cols;
    for (const auto& n : table.names) cols.push_back(table.column(n));
    write_csv(path, table.names, cols);
}

} // namespace tapir::io
