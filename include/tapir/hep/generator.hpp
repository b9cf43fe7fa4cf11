#pragma once
/// What the event generators (diphoton, Z gamma, stop, jets) share: a configuration checked at
/// construction, one random stream, next() drawing the class and the retry loop of next(label).

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "../error.hpp"
#include "../random.hpp"

namespace tapir {
namespace hep {
namespace detail {

/// A configuration check's failure: throws value_error "who: what". The checks every generator's
/// configuration needs (the class fraction and the retry budget that Generator reads) live here once.
struct ConfigCheck {
    const char* who;

    [[noreturn]] void operator()(const std::string& what) const { throw value_error(std::string(who) + ": " + what); }
    static std::string num(double x) { return std::to_string(x); }
    template <class Config>
    void signal_fraction(const Config& c) const {
        if (!(c.signal_fraction >= 0.0 && c.signal_fraction <= 1.0)) (*this)("signal_fraction must be in [0, 1], got " + num(c.signal_fraction));
    }
    template <class Config>
    void max_attempts(const Config& c) const {
        if (c.max_attempts == 0) (*this)("max_attempts must be > 0");
    }
    /// The invariant-mass window [m_min, m_max] of the generators that sample a mass spectrum.
    template <class Config>
    void mass_window(const Config& c) const {
        if (!(c.m_min > 0.0 && c.m_max > c.m_min && std::isfinite(c.m_max)))
            (*this)("need 0 < m_min < m_max, got [" + num(c.m_min) + ", " + num(c.m_max) + "]");
    }

    /// The spectra of the generators of a resonance over a falling continuum (diphoton, Z gamma),
    /// whose configurations share these fields: the mass window and slope, the pT spectra
    /// (generalised gamma: scale, shape, tail), the rapidity widths and the continuum's decay angle.
    /// `pt` names the system's pT in the errors ("pT(yy)").
    template <class Config>
    void resonance_over_continuum(const Config& c, const char* pt) const {
        mass_window(c);
        if (!std::isfinite(c.bkg_slope)) (*this)("bkg_slope must be finite");
        for (double v : {c.bkg_pt_scale, c.bkg_pt_shape, c.bkg_pt_tail, c.sig_pt_scale, c.sig_pt_shape, c.sig_pt_tail})
            if (!(v > 0.0 && std::isfinite(v))) (*this)(std::string(pt) + " spectra need finite scale > 0, shape > 0 and tail > 0");
        if (!(c.bkg_y_sigma >= 0.0 && c.sig_y_sigma >= 0.0)) (*this)("rapidity widths must be >= 0");
        if (!(c.bkg_angle_power >= -2.0 && c.bkg_angle_power <= 8.0) || !(c.bkg_eta_star_max > 0.0 && c.bkg_eta_star_max <= 10.0))
            (*this)("need bkg_angle_power in [-2, 8] and bkg_eta_star_max in (0, 10], got " + num(c.bkg_angle_power) + ", " +
                    num(c.bkg_eta_star_max));
    }

    /// A generator's whole configuration check: the class fraction, then own(check) with the
    /// generator's own conditions, then the retry budget (the order of the error messages).
    template <class Config, class Own>
    static void generator(const char* who, const Config& c, Own own) {
        const ConfigCheck check{who};
        check.signal_fraction(c);
        own(check);
        check.max_attempts(c);
    }
};

/// The streaming frame of a generator Derived of Event under Config (which has signal_fraction
/// and max_attempts; check throws value_error for one it rejects): Derived inherits the
/// constructor and provides next(int label) and the event's kinematics.
template <class Derived, class Config, class Event, void (*check)(const Config&)>
class Generator {
public:
    explicit Generator(std::uint64_t seed, const Config& config = Config{}) : cfg_(config), rng_(seed) { check(cfg_); }

    const Config& config() const noexcept { return cfg_; }

    /// An event of a random class (class 1 with probability signal_fraction).
    Event next() { return static_cast<Derived&>(*this).next(rng_.bernoulli(cfg_.signal_fraction) ? 1 : 0); }

protected:
    /// Throws value_error "who: label must be 0 or 1" unless label is 0 or 1. Small enough to
    /// inline, so the compiler sees that label indexes a two-element array only when it returns.
    static void check_label(const char* who, int label) {
        if (label != 0 && label != 1) bad_label(who, label);
    }
    [[noreturn]] static void bad_label(const char* who, int label) {
        throw value_error(std::string(who) + ": label must be 0 or 1, got " + std::to_string(label));
    }

    /// The first event of up to max_attempts tries of attempt(ev) (each on a fresh event) that
    /// returns true; else throws the value_error failure() makes.
    template <class Attempt, class Failure>
    Event first_accepted(Attempt attempt, Failure failure) {
        for (std::size_t i = 0; i < cfg_.max_attempts; ++i) {
            Event ev{};
            if (attempt(ev)) return ev;
        }
        throw failure();
    }

    Config cfg_;
    Rng rng_;
};

/// n events of a fresh Gen(seed, config): the loop behind generate_diphoton, generate_zgamma,
/// generate_stop and generate_jets (so a shorter run is a prefix of a longer one).
template <class Gen, class Config>
auto generate_n(std::size_t n, std::uint64_t seed, const Config& config) {
    Gen gen(seed, config);
    std::vector<decltype(gen.next())> out;
    out.reserve(n);
    for (std::size_t i = 0; i < n; ++i) out.push_back(gen.next());
    return out;
}

} // namespace detail
} // namespace hep
} // namespace tapir
