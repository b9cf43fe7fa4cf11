#pragma once
/// Finite-difference checks of first and second derivatives, in double precision, for users'
/// own losses as much as for tapir's ops.
///
/// The function's output y is projected onto a fixed random tensor r (L = sum(y * r)) so that
/// every output component is checked. The error of one element is
/// |analytic - numeric| / max(1, |analytic|, |numeric|): relative for large derivatives,
/// absolute for small ones, where a relative error means nothing.

#include <cmath>
#include <cstddef>
#include <functional>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "../random.hpp"
#include "backward.hpp"
#include "ops.hpp"
#include "tape.hpp"

namespace tapir {

struct GradcheckResult {
    bool passed = true;
    double max_error = 0.0;     ///< worst error over all checked elements
    std::size_t input = 0;      ///< input holding the worst element
    std::size_t element = 0;    ///< flat index of the worst element
    double analytic = 0.0;
    double numeric = 0.0;
    std::size_t checked = 0;    ///< number of derivatives compared
    std::string message() const {
        std::ostringstream os;
        os.precision(10);
        os << (passed ? "passed" : "FAILED") << ": worst error " << max_error << " at input " << input << ", element "
           << element << " (analytic " << analytic << ", numeric " << numeric << "), " << checked << " derivatives checked";
        return os.str();
    }
    explicit operator bool() const noexcept { return passed; }
};

/// The function under test: records its output on the tape from the given input variables.
/// gradcheck() takes any callable of this form (a lambda, or this std::function).
using GradcheckFn = std::function<Var<double>(Tape<double>&, const std::vector<Var<double>>&)>;

namespace detail {
inline Tensor<double> random_like(const Shape& s, Rng& rng) {
    Tensor<double> r(s);
    for (auto& v : r) v = rng.uniform(0.5, 1.5) * (rng.bernoulli(0.5) ? 1.0 : -1.0);
    return r;
}

/// Projects y onto r and returns the scalar.
template <class T>
Var<T> project(Tape<T>& t, const Var<T>& y, const Tensor<T>& r) {
    return sum(mul(y, t.view(r)));
}

inline void record_error(GradcheckResult& res, double a, double n, std::size_t input, std::size_t element, double tol) {
    double scale = 1.0;
    if (std::abs(a) > scale) scale = std::abs(a);
    if (std::abs(n) > scale) scale = std::abs(n);
    const double err = std::abs(a - n) / scale;
    if (res.checked == 0 || !(err <= res.max_error)) {  // NaN counts as worst
        res.max_error = err;
        res.input = input;
        res.element = element;
        res.analytic = a;
        res.numeric = n;
    }
    ++res.checked;
    if (!(err <= tol)) res.passed = false;
}

/// Scalar L(xs) and, when wanted, its analytic gradients (first order) or the gradients of
/// M = sum_k <dL/dx_k, v_k> (second order, through create_graph).
/// Templates (T is double) so that the backward pass and GEMM in double are compiled only where a
/// check is made, not in every file that includes tapir.hpp (~0.1 s each).
template <class F, class T = double>
struct GradcheckEval {
    const F& f;
    std::vector<Tensor<T>> r;  // projection of f's output
    std::vector<Tensor<T>> v;  // projection of the gradients (second order)

    double value(Tape<T>& t, const std::vector<Tensor<T>>& xs, int order) {
        t.clear();
        std::vector<Var<T>> vars;
        for (const auto& x : xs) vars.push_back(t.variable(x));
        const Var<T> y = f(t, vars);
        if (r.empty()) {
            Rng rng(20240917);
            r.push_back(random_like(y.shape(), rng));
        }
        const Var<T> l = project(t, y, r[0]);
        if (order == 0) return l.item();
        const auto gs = grad(l, vars, false, /*allow_unused=*/true);
        double m = 0.0;
        for (std::size_t k = 0; k < gs.size(); ++k)
            for (std::size_t j = 0; j < gs[k].size(); ++j) m += gs[k][j] * v[k][j];
        return m;
    }

    /// Central differences of value(order) against `analytic`, element by element of every input.
    GradcheckResult compare(Tape<T>& t, const std::vector<Tensor<T>>& inputs, const std::vector<Tensor<T>>& analytic,
                            int order, double eps, double tol) {
        GradcheckResult res;
        std::vector<Tensor<T>> xs = inputs;
        for (std::size_t k = 0; k < xs.size(); ++k)
            for (std::size_t j = 0; j < xs[k].size(); ++j) {
                const double x0 = xs[k][j];
                xs[k][j] = x0 + eps;
                const double vp = value(t, xs, order);
                xs[k][j] = x0 - eps;
                const double vm = value(t, xs, order);
                xs[k][j] = x0;
                record_error(res, analytic[k][j], (vp - vm) / (2 * eps), k, j, tol);
            }
        return res;
    }
};
} // namespace detail

/// Compares the tape's gradients of f with central differences at `inputs`.
template <class F, class T = double>
GradcheckResult gradcheck(const F& f, const std::vector<Tensor<T>>& inputs, double eps = 1e-6, double tol = 1e-6) {
    static_assert(std::is_same<T, double>::value, "gradcheck: double precision");
    Tape<T> t;
    detail::GradcheckEval<F, T> ev{f, {}, {}};
    ev.value(t, inputs, 0);  // fixes the projection
    t.clear();
    std::vector<Var<T>> vars;
    for (const auto& x : inputs) vars.push_back(t.variable(x));
    const auto gs = grad(detail::project(t, f(t, vars), ev.r[0]), vars, false, /*allow_unused=*/true);
    std::vector<Tensor<T>> analytic;
    for (const auto& g : gs) analytic.push_back(g.value());
    return ev.compare(t, inputs, analytic, 0, eps, tol);
}

/// Compares the derivative of f's gradient (recorded with create_graph) with central differences
/// of the first-order gradient: checks every backward rule's own backward.
template <class F, class T = double>
GradcheckResult gradgradcheck(const F& f, const std::vector<Tensor<T>>& inputs, double eps = 1e-5, double tol = 1e-6) {
    static_assert(std::is_same<T, double>::value, "gradgradcheck: double precision");
    Tape<T> t;
    detail::GradcheckEval<F, T> ev{f, {}, {}};
    ev.value(t, inputs, 0);
    Rng rng(777);
    for (const auto& x : inputs) ev.v.push_back(detail::random_like(x.shape(), rng));

    t.clear();
    std::vector<Var<T>> vars;
    for (const auto& x : inputs) vars.push_back(t.variable(x));
    const auto gs = grad(detail::project(t, f(t, vars), ev.r[0]), vars, true, /*allow_unused=*/true);
    Var<T> m = t.scalar(T(0));
    for (std::size_t k = 0; k < gs.size(); ++k) m = add(m, sum(mul(gs[k], t.view(ev.v[k]))));
    std::vector<Tensor<T>> analytic;
    if (m.requires_grad()) {
        for (const auto& g : grad(m, vars, false, /*allow_unused=*/true)) analytic.push_back(g.value());
    } else {
        for (const auto& x : inputs) analytic.push_back(Tensor<T>(x.shape()));
    }
    return ev.compare(t, inputs, analytic, 1, eps, tol);
}

} // namespace tapir
