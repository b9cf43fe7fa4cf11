#pragma once
/// Exception types: every failure names the operation and the offending values.

#include <cstdio>
#include <stdexcept>
#include <string>

namespace tapir {

// Each error is one line: a distinct type (so callers catch exactly what they mean) that takes
// its message like the standard exception it derives from.

/// Shapes of operands do not fit the operation; the message carries both shapes.
class shape_error : public std::invalid_argument { public: using std::invalid_argument::invalid_argument; };
/// A value is outside what an operation accepts (negative learning rate, label 2, ...).
class value_error : public std::invalid_argument { public: using std::invalid_argument::invalid_argument; };
/// Input file or text is malformed; the message names file, line and column.
class parse_error : public std::runtime_error { public: using std::runtime_error::runtime_error; };
/// A model or state file is truncated, corrupted or of another architecture.
class format_error : public std::runtime_error { public: using std::runtime_error::runtime_error; };
/// Misuse of the tape: a Var from a cleared tape, grad of a non-scalar, ...
class tape_error : public std::logic_error { public: using std::logic_error::logic_error; };
/// Anomaly mode: an op produced a non-finite value.
class anomaly_error : public std::runtime_error { public: using std::runtime_error::runtime_error; };

namespace detail {
/// "%.<digits>g" text of v; the default 6 digits is plain "%g" (labels, hyper-parameters: 0.01, 1, 0.2).
inline std::string number_text(double v, int digits = 6) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.*g", digits, v);
    return buf;
}
/// A number in an error message: 9 significant digits, enough to tell two floats apart.
inline std::string error_number(double v) { return number_text(v, 9); }
} // namespace detail

} // namespace tapir
