#pragma once
/// A random generator whose stream is fixed by its seed on every platform.
///
/// xoshiro256** (Blackman & Vigna) seeded through splitmix64. Integers, uniforms, shuffles
/// and permutations are bit-identical on every platform and standard library (std::
/// distributions are not: their algorithms are implementation-defined). Normal variates use
/// the Marsaglia polar method, so they also depend on std::log being the same function:
/// identical across machines with the same libm.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace tapir {

class Rng {
public:
    explicit Rng(std::uint64_t seed = 0x5eed) { reseed(seed); }

    void reseed(std::uint64_t seed) noexcept {
        std::uint64_t x = seed;
        for (auto& s : s_) s = splitmix64(x);
        has_spare_ = false;
    }

    std::uint64_t next_u64() noexcept {
        const std::uint64_t result = rotl(s_[1] * 5, 7) * 9;
        const std::uint64_t t = s_[1] << 17;
        s_[2] ^= s_[0];
        s_[3] ^= s_[1];
        s_[1] ^= s_[2];
        s_[0] ^= s_[3];
        s_[2] ^= t;
        s_[3] = rotl(s_[3], 45);
        return result;
    }

    /// Uniform in [0, 1) with 53 random bits.
    double uniform() noexcept { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }
    double uniform(double lo, double hi) noexcept { return lo + (hi - lo) * uniform(); }

    /// Uniform integer in [0, n) without modulo bias (rejection of the short top range).
    std::uint64_t uniform_int(std::uint64_t n) noexcept {
        if (n == 0) return 0;
        const std::uint64_t threshold = (0 - n) % n;
        for (;;) {
            const std::uint64_t x = next_u64();
            if (x >= threshold) return x % n;
        }
    }

    /// Standard normal variate (Marsaglia polar method).
    double normal() noexcept {
        if (has_spare_) {
            has_spare_ = false;
            return spare_;
        }
        double u, v, s;
        do {
            u = 2.0 * uniform() - 1.0;
            v = 2.0 * uniform() - 1.0;
            s = u * u + v * v;
        } while (s >= 1.0 || s == 0.0);
        const double f = std::sqrt(-2.0 * std::log(s) / s);
        spare_ = v * f;
        has_spare_ = true;
        return u * f;
    }
    double normal(double mean, double stddev) noexcept { return mean + stddev * normal(); }
    double exponential(double rate) noexcept { return -std::log1p(-uniform()) / rate; }
    bool bernoulli(double p) noexcept { return uniform() < p; }

    /// Fisher-Yates shuffle; portable, unlike std::shuffle.
    template <class It>
    void shuffle(It first, It last) noexcept {
        const auto n = static_cast<std::uint64_t>(last - first);
        for (std::uint64_t i = n; i > 1; --i) {
            const std::uint64_t j = uniform_int(i);
            using std::swap;
            swap(first[static_cast<std::ptrdiff_t>(i - 1)], first[static_cast<std::ptrdiff_t>(j)]);
        }
    }

    std::vector<std::size_t> permutation(std::size_t n) {
        std::vector<std::size_t> p(n);
        for (std::size_t i = 0; i < n; ++i) p[i] = i;
        shuffle(p.begin(), p.end());
        return p;
    }

private:
    static std::uint64_t rotl(std::uint64_t x, int k) noexcept { return (x << k) | (x >> (64 - k)); }
    static std::uint64_t splitmix64(std::uint64_t& x) noexcept {
        std::uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        return z ^ (z >> 31);
    }

    std::uint64_t s_[4]{};
    double spare_ = 0.0;
    bool has_spare_ = false;
};

} // namespace tapir
