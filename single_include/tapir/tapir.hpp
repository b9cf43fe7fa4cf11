// tapir: single-header amalgamation generated from include/tapir/ by single_include/amalgamate.cmake.
// Do not edit: edit include/tapir/ and regenerate with `cmake -P single_include/amalgamate.cmake`.
#pragma once
// ---- begin tapir/tapir.hpp ----
/// tapir: the umbrella header. Include this, or only the concept headers you use.

// ---- begin tapir/config.hpp ----
/// Version, compiler and build-mode macros shared by every tapir header.

#define TAPIR_VERSION_MAJOR 0
#define TAPIR_VERSION_MINOR 1
#define TAPIR_VERSION_PATCH 0
#define TAPIR_VERSION_STRING "0.1.0"

#if defined(__GNUC__) || defined(__clang__)
#define TAPIR_ALWAYS_INLINE inline __attribute__((always_inline))
#define TAPIR_NOINLINE __attribute__((noinline))
#define TAPIR_LIKELY(x) __builtin_expect(!!(x), 1)
#define TAPIR_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define TAPIR_RESTRICT __restrict__
#else
#define TAPIR_ALWAYS_INLINE inline
#define TAPIR_NOINLINE
#define TAPIR_LIKELY(x) (x)
#define TAPIR_UNLIKELY(x) (x)
#define TAPIR_RESTRICT
#endif

/// Headers that must also build with -fno-exceptions (deploy/) test this.
#if defined(__cpp_exceptions) || defined(__EXCEPTIONS)
#define TAPIR_HAS_EXCEPTIONS 1
#else
#define TAPIR_HAS_EXCEPTIONS 0
#endif

/// TAPIR_THROW(value_error("...")): throws where exceptions exist; in a -fno-exceptions build the
/// exception expression is not even evaluated and the program aborts (the nlohmann/json rule:
/// checks sit at the public entry points only, the kernels below them never fail). A project may
/// define TAPIR_THROW itself beforehand (to log, or to trap).
#ifndef TAPIR_THROW
#if TAPIR_HAS_EXCEPTIONS
#define TAPIR_THROW(exception) throw exception
#else
#include <cstdlib>
#define TAPIR_THROW(exception) std::abort()
#endif
#endif
// ---- end tapir/config.hpp ----
// ---- begin tapir/error.hpp ----
/// Exception types: every failure names the operation and the offending values.

#include <cstdio>
#include <stdexcept>
#include <string>

namespace tapir {

/// Shapes of operands do not fit the operation; the message carries both shapes.
class shape_error : public std::invalid_argument {
public:
    using std::invalid_argument::invalid_argument;
};

/// A value is outside what an operation accepts (negative learning rate, label 2, ...).
class value_error : public std::invalid_argument {
public:
    using std::invalid_argument::invalid_argument;
};

/// Input file or text is malformed; the message names file, line and column.
class parse_error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/// A model or state file is truncated, corrupted or of another architecture.
class format_error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/// Misuse of the tape: a Var from a cleared tape, grad of a non-scalar, ...
class tape_error : public std::logic_error {
public:
    using std::logic_error::logic_error;
};

/// Anomaly mode: an op produced a non-finite value.
class anomaly_error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

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
// ---- end tapir/error.hpp ----
// ---- begin tapir/random.hpp ----
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
// ---- end tapir/random.hpp ----
// ---- begin tapir/tensor/shape.hpp ----
/// Shapes of rank 0 to 4, stored inline so a shape never allocates.

#include <array>
#include <cstddef>
#include <initializer_list>
#include <string>


namespace tapir {

constexpr std::size_t max_rank = 4;

class Shape {
public:
    Shape() = default;
    Shape(std::initializer_list<std::size_t> dims) {
        if (dims.size() > max_rank) throw shape_error("Shape: rank " + std::to_string(dims.size()) + " exceeds the maximum rank 4");
        for (std::size_t d : dims) d_[rank_++] = d;
    }
    template <class It>
    static Shape from_range(It first, It last) {
        Shape s;
        for (; first != last; ++first) {
            if (s.rank_ == max_rank) throw shape_error("Shape: rank exceeds the maximum rank 4");
            s.d_[s.rank_++] = static_cast<std::size_t>(*first);
        }
        return s;
    }

    std::size_t rank() const noexcept { return rank_; }
    std::size_t operator[](std::size_t i) const noexcept { return d_[i]; }
    std::size_t& operator[](std::size_t i) noexcept { return d_[i]; }
    /// Unused trailing dimensions are stored as 1, so this is branch-free.
    std::size_t numel() const noexcept { return d_[0] * d_[1] * d_[2] * d_[3]; }
    /// Rows and columns as seen by 2-D ops: a vector is one row, a scalar 1x1.
    std::size_t rows() const noexcept {
        std::size_t r = 1;
        for (std::size_t i = 0; i + 1 < rank_; ++i) r *= d_[i];
        return r;
    }
    std::size_t cols() const noexcept { return rank_ >= 1 ? d_[rank_ - 1] : 1; }

    void push_back(std::size_t d) {
        if (rank_ == max_rank) throw shape_error("Shape: rank exceeds the maximum rank 4");
        d_[rank_++] = d;
    }

    friend bool operator==(const Shape& a, const Shape& b) noexcept {
        return ((a.rank_ ^ b.rank_) | (a.d_[0] ^ b.d_[0]) | (a.d_[1] ^ b.d_[1]) | (a.d_[2] ^ b.d_[2]) | (a.d_[3] ^ b.d_[3])) == 0;
    }
    friend bool operator!=(const Shape& a, const Shape& b) noexcept { return !(a == b); }

    std::string str() const {
        std::string s = "(";
        for (std::size_t i = 0; i < rank_; ++i) {
            if (i) s += ", ";
            s += std::to_string(d_[i]);
        }
        if (rank_ == 1) s += ",";
        return s + ")";
    }

private:
    std::array<std::size_t, max_rank> d_{{1, 1, 1, 1}};
    std::size_t rank_ = 0;
};

namespace detail {
[[noreturn]] inline void throw_shape(const char* op, const Shape& a, const Shape& b, const char* why = "shapes do not match") {
    throw shape_error(std::string(op) + ": " + why + ": " + a.str() + " vs " + b.str());
}
} // namespace detail

/// Numpy-style broadcasting (dimensions aligned from the right, 1 stretches).
inline Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
    const std::size_t r = a.rank() > b.rank() ? a.rank() : b.rank();
    Shape out;
    for (std::size_t i = 0; i < r; ++i) {
        const std::size_t ia = i + a.rank() >= r ? a[i + a.rank() - r] : 1;
        const std::size_t ib = i + b.rank() >= r ? b[i + b.rank() - r] : 1;
        if (ia != ib && ia != 1 && ib != 1) detail::throw_shape(op, a, b, "shapes cannot be broadcast");
        out.push_back(ia == 1 ? ib : ia);
    }
    return out;
}

} // namespace tapir
// ---- end tapir/tensor/shape.hpp ----
// ---- begin tapir/tensor/tensor.hpp ----
/// Dense row-major tensors with 64-byte aligned storage and value semantics.

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <initializer_list>
#include <new>
#include <ostream>
#include <type_traits>
#include <utility>
#include <vector>


namespace tapir {

namespace detail {
constexpr std::size_t tensor_alignment = 64;

template <class T>
T* aligned_alloc_array(std::size_t n) {
    if (n == 0) return nullptr;
    return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(tensor_alignment)));
}
template <class T>
void aligned_free_array(T* p) noexcept {
    if (p) ::operator delete(p, std::align_val_t(tensor_alignment));
}
} // namespace detail

template <class T>
class Tensor {
    static_assert(std::is_floating_point<T>::value, "tapir::Tensor holds float or double");

public:
    using value_type = T;

    Tensor() = default;
    explicit Tensor(const Shape& shape) : shape_(shape) { allocate(shape.numel()); std::fill_n(data_, size_, T(0)); }
    Tensor(const Shape& shape, T fill) : shape_(shape) { allocate(shape.numel()); std::fill_n(data_, size_, fill); }
    Tensor(const Shape& shape, std::initializer_list<T> values) : Tensor(shape, values.begin(), values.size()) {}
    Tensor(const Shape& shape, const std::vector<T>& values) : Tensor(shape, values.data(), values.size()) {}
    Tensor(const Shape& shape, const T* values, std::size_t n) : shape_(shape) {
        if (n != shape.numel())
            throw shape_error("Tensor: " + std::to_string(n) + " values given for shape " + shape.str() + " (" +
                              std::to_string(shape.numel()) + " elements)");
        allocate(n);
        if (n) std::memcpy(data_, values, n * sizeof(T));
    }

    static Tensor zeros(const Shape& s) { return Tensor(s); }
    static Tensor ones(const Shape& s) { return Tensor(s, T(1)); }
    static Tensor full(const Shape& s, T v) { return Tensor(s, v); }
    static Tensor scalar(T v) { return Tensor(Shape{}, v); }

    Tensor(const Tensor& o) : shape_(o.shape_) {
        allocate(o.size_);
        if (size_) std::memcpy(data_, o.data_, size_ * sizeof(T));
    }
    Tensor(Tensor&& o) noexcept : shape_(o.shape_), data_(o.data_), size_(o.size_), capacity_(o.capacity_) {
        o.data_ = nullptr;
        o.size_ = o.capacity_ = 0;
        o.shape_ = Shape{};
    }
    Tensor& operator=(const Tensor& o) {
        if (this != &o) {
            if (capacity_ < o.size_) {
                detail::aligned_free_array(data_);
                data_ = nullptr;
                capacity_ = 0;
                allocate(o.size_);
            }
            size_ = o.size_;
            shape_ = o.shape_;
            if (size_) std::memcpy(data_, o.data_, size_ * sizeof(T));
        }
        return *this;
    }
    Tensor& operator=(Tensor&& o) noexcept {
        if (this != &o) {
            detail::aligned_free_array(data_);
            shape_ = o.shape_;
            data_ = o.data_;
            size_ = o.size_;
            capacity_ = o.capacity_;
            o.data_ = nullptr;
            o.size_ = o.capacity_ = 0;
            o.shape_ = Shape{};
        }
        return *this;
    }
    ~Tensor() { detail::aligned_free_array(data_); }

    const Shape& shape() const noexcept { return shape_; }
    std::size_t rank() const noexcept { return shape_.rank(); }
    std::size_t dim(std::size_t i) const noexcept { return shape_[i]; }
    std::size_t size() const noexcept { return size_; }
    bool empty() const noexcept { return size_ == 0; }
    T* data() noexcept { return data_; }
    const T* data() const noexcept { return data_; }
    T* begin() noexcept { return data_; }
    T* end() noexcept { return data_ + size_; }
    const T* begin() const noexcept { return data_; }
    const T* end() const noexcept { return data_ + size_; }

    T& operator[](std::size_t i) noexcept { return data_[i]; }
    const T& operator[](std::size_t i) const noexcept { return data_[i]; }

    /// Multi-index access; the number of indices must equal the rank.
    template <class... I>
    T& operator()(I... idx) noexcept { return data_[offset(static_cast<std::size_t>(idx)...)]; }
    template <class... I>
    const T& operator()(I... idx) const noexcept { return data_[offset(static_cast<std::size_t>(idx)...)]; }

    /// Scalar value of a one-element tensor.
    T item() const {
        if (size_ != 1) throw shape_error("Tensor::item: tensor of shape " + shape_.str() + " is not a single value");
        return data_[0];
    }

    void fill(T v) noexcept { std::fill_n(data_, size_, v); }

    /// Same data, new shape with the same number of elements.
    Tensor& reshape_(const Shape& s) {
        if (s.numel() != size_) detail::throw_shape("Tensor::reshape", shape_, s, "element counts differ");
        shape_ = s;
        return *this;
    }
    Tensor reshaped(const Shape& s) const& {
        Tensor t(*this);
        t.reshape_(s);
        return t;
    }

    /// Changes the shape, reusing storage when it is large enough (contents unspecified).
    void resize(const Shape& s) {
        const std::size_t n = s.numel();
        if (n > capacity_) {
            detail::aligned_free_array(data_);
            data_ = nullptr;
            capacity_ = 0;
            allocate(n);
        }
        size_ = n;
        shape_ = s;
    }

    std::vector<T> to_vector() const { return std::vector<T>(data_, data_ + size_); }

    template <class U>
    Tensor<U> cast() const {
        Tensor<U> out(shape_);
        for (std::size_t i = 0; i < size_; ++i) out[i] = static_cast<U>(data_[i]);
        return out;
    }

private:
    void allocate(std::size_t n) {
        data_ = detail::aligned_alloc_array<T>(n);
        size_ = n;
        capacity_ = n;
    }
    std::size_t offset() const noexcept { return 0; }
    template <class... I>
    std::size_t offset(std::size_t i0, I... rest) const noexcept {
        std::size_t idx[] = {i0, static_cast<std::size_t>(rest)...};
        std::size_t off = 0;
        for (std::size_t k = 0; k < sizeof...(I) + 1; ++k) off = off * shape_[k] + idx[k];
        return off;
    }

    Shape shape_{};
    T* data_ = nullptr;
    std::size_t size_ = 0;
    std::size_t capacity_ = 0;
};

template <class T>
std::ostream& operator<<(std::ostream& os, const Tensor<T>& t) {
    os << "Tensor" << t.shape().str() << " [";
    const std::size_t n = t.size() < 16 ? t.size() : 16;
    for (std::size_t i = 0; i < n; ++i) os << (i ? ", " : "") << t[i];
    if (n < t.size()) os << ", ...";
    return os << "]";
}

} // namespace tapir
// ---- end tapir/tensor/tensor.hpp ----
// ---- begin tapir/simd/activation.hpp ----
/// The activations a dense layer can fuse: one enum for the tape, the layers, the deployed models
/// and the code generator, and their one definition: value and derivative written once over the
/// vector wrappers of vec.hpp. The tape's dense op and its backward pass, simd::relu, the
/// deployed models (deploy/fixed.hpp, deploy/quantize.hpp) all evaluate these functions, so they
/// agree bit for bit on the same instruction set. deploy/codegen.hpp emits the same operations as
/// text; tests/deploy/test_codegen.cpp compiles its output and compares the bits.

#include <cmath>
#include <cstddef>
#include <cstdint>

// ---- begin tapir/simd/isa.hpp ----
/// SIMD instruction sets: the names, run-time detection (cpuid, and whether the OS saves the vector
/// state), and the per-function target attributes that let a plain -O2 build run AVX-512 kernels.
/// Cheap to include and exception-free: the no-exceptions deploy models build on it. The active
/// kernel family (the TAPIR_SIMD override) is in arch.hpp.

#include <cstddef>


// x86 kernels need GCC/Clang target attributes; other compilers get the scalar path only.
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__)) && \
    !defined(TAPIR_SIMD_NO_X86)
#define TAPIR_SIMD_X86 1
#include <cpuid.h>
/// Kernels compiled for AVX2+FMA regardless of -march, called only after cpuid says so.
#define TAPIR_TARGET_AVX2 __attribute__((target("avx2,fma")))
/// Kernels compiled for AVX-512 (F/BW/DQ/VL, as on Skylake-X and Zen 4/5).
#define TAPIR_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,fma,avx2")))
#else
#define TAPIR_SIMD_X86 0
#endif

// NEON is part of the aarch64 baseline: no attribute and no run-time check needed.
#if defined(__aarch64__) && defined(__ARM_NEON) && !defined(TAPIR_SIMD_NO_NEON)
#define TAPIR_SIMD_NEON 1
#include <arm_neon.h>
#else
#define TAPIR_SIMD_NEON 0
#endif

/// Generic kernels carry no target attribute and pass vector registers to the attributed wrappers;
/// they are always inlined into an attributed entry, so the ABI note GCC and Clang give is moot.
#if defined(__clang__)
#define TAPIR_SIMD_DIAG_PUSH _Pragma("clang diagnostic push") _Pragma("clang diagnostic ignored \"-Wpsabi\"")
#define TAPIR_SIMD_DIAG_POP _Pragma("clang diagnostic pop")
#elif defined(__GNUC__)
#define TAPIR_SIMD_DIAG_PUSH _Pragma("GCC diagnostic push") _Pragma("GCC diagnostic ignored \"-Wpsabi\"")
#define TAPIR_SIMD_DIAG_POP _Pragma("GCC diagnostic pop")
#else
#define TAPIR_SIMD_DIAG_PUSH
#define TAPIR_SIMD_DIAG_POP
#endif

namespace tapir::simd {

enum class isa { scalar, avx2, avx512, neon };

inline const char* isa_name(isa i) noexcept {
    switch (i) {
    case isa::scalar: return "scalar";
    case isa::avx2: return "avx2";
    case isa::avx512: return "avx512";
    case isa::neon: return "neon";
    }
    return "unknown";
}

namespace detail {

#if TAPIR_SIMD_X86
struct x86_features {
    bool avx2_fma = false;
    bool avx512 = false;
};

inline x86_features query_x86() noexcept {
    x86_features f;
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return f;
    const bool osxsave = (ecx >> 27) & 1u, avx = (ecx >> 28) & 1u, fma = (ecx >> 12) & 1u;
    if (!osxsave || !avx) return f;
    unsigned xcr0_lo = 0, xcr0_hi = 0;
    __asm__ volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0u));
    /// The OS must save the YMM (bits 1,2) and, for AVX-512, the opmask/ZMM state (bits 5,6,7).
    const bool ymm_os = (xcr0_lo & 0x6u) == 0x6u;
    const bool zmm_os = (xcr0_lo & 0xE6u) == 0xE6u;
    if (__get_cpuid_max(0, nullptr) < 7) return f;
    __cpuid_count(7, 0, eax, ebx, ecx, edx);
    const bool avx2 = (ebx >> 5) & 1u;
    const bool f512 = (ebx >> 16) & 1u, dq = (ebx >> 17) & 1u, bw = (ebx >> 30) & 1u, vl = (ebx >> 31) & 1u;
    f.avx2_fma = ymm_os && avx2 && fma;
    f.avx512 = f.avx2_fma && zmm_os && f512 && dq && bw && vl;
    return f;
}
#endif

} // namespace detail

/// Whether this CPU (cpuid, with the OS saving the vector state) and this build can run a kernel family.
inline bool isa_supported(isa i) noexcept {
    switch (i) {
    case isa::scalar: return true;
#if TAPIR_SIMD_X86
    case isa::avx2: {
#if defined(__AVX2__) && defined(__FMA__)
        return true; // -march already guarantees it: no cpuid needed.
#else
        static const bool ok = detail::query_x86().avx2_fma;
        return ok;
#endif
    }
    case isa::avx512: {
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512DQ__) && defined(__AVX512VL__) && defined(__FMA__)
        return true;
#else
        static const bool ok = detail::query_x86().avx512;
        return ok;
#endif
    }
#else
    case isa::avx2:
    case isa::avx512: return false;
#endif
    case isa::neon: return TAPIR_SIMD_NEON != 0;
    }
    return false;
}

/// Best instruction set that both this CPU and this build support.
inline isa detected_isa() noexcept {
    if (isa_supported(isa::avx512)) return isa::avx512;
    if (isa_supported(isa::avx2)) return isa::avx2;
    if (isa_supported(isa::neon)) return isa::neon;
    return isa::scalar;
}

} // namespace tapir::simd
// ---- end tapir/simd/isa.hpp ----
// ---- begin tapir/simd/vec.hpp ----
/// Thin vector wrappers, one per instruction set, with one interface so that every kernel is written
/// once as a template over the wrapper and instantiated per ISA inside a target-attributed entry.
///
/// Contract of a wrapper V (all static): value_type, reg (W lanes), mask (lane predicate), ireg
/// (same-width unsigned integer lanes), load/store (unaligned), load_partial/store_partial (first n < W
/// lanes, others zero), set1, zero, add, sub, mul, div, sqrt (correctly rounded, as std::sqrt),
/// fma(a,b,c)=a*b+c, fnma(a,b,c)=c-a*b, min, max
/// (max(a,b) returns b when either is NaN, so max(0,x) keeps a NaN x), lt, gt, le, ge, eq, isnan,
/// select(m,a,b) = m ? a : b, hsum, and bit access: bits, from_bits, iadd, isub, iset1, iand, ior,
/// ixor, shl<N>, shr<N> (logical).
///
/// Wrapper functions are `inline` with the ISA's target attribute and deliberately NOT always_inline:
/// generic kernels carry no attribute, so GCC and Clang would reject always_inline calls into them;
/// once the generic kernel is inlined into its attributed entry the wrappers inline normally.
///
/// The wrappers are internal; code outside simd/ writes a kernel K (value_type and a static
/// `template <class V> run(args...)` over the contract above) and runs it with simd::dispatch<K>
/// (the active instruction set, arch.hpp) or simd::dispatch_to<K>(isa, ...) (a given one).

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

// ---- begin tapir/simd/detail/x86_builtins.hpp ----
/// The AVX2/FMA/AVX-512F operations tapir's kernels use (simd/vec.hpp's wrappers, the deploy and
/// optimiser kernels), written with GCC/Clang vector extensions and compiler builtins instead of
/// <immintrin.h>, which alone costs ~0.7 s of compile time in every file that includes it. Each
/// operation is the instruction the intrinsic of the same name emits (same operand order, so the
/// same bits, NaN and signed-zero cases included); plain arithmetic, bit operations and shifts are
/// the vector-extension operators, as in the intrinsics themselves.
/// Every function carries its target attribute: callers compiled for that target (or a superset)
/// inline it, no -march needed. Defines TAPIR_X86_BUILTINS to 1 where available (x86 with GCC or
/// Clang), else to 0 and nothing else.

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define TAPIR_X86_BUILTINS 1
#else
#define TAPIR_X86_BUILTINS 0
#endif

#if TAPIR_X86_BUILTINS

#define TAPIR_X86_AVX2 __attribute__((target("avx2,fma")))
#define TAPIR_X86_AVX512 __attribute__((target("avx512f,avx2,fma")))

// 512-bit vectors in signatures outside an AVX-512 region draw an ABI note; these functions are
// always inlined into code of their own target.
#if defined(__clang__)
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wpsabi"
#else
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

namespace tapir::detail::x86 {

// Register types (the vector_size of the whole register, in bytes).
typedef float f32x8 __attribute__((vector_size(32)));
typedef double f64x4 __attribute__((vector_size(32)));
typedef float f32x16 __attribute__((vector_size(64)));
typedef double f64x8 __attribute__((vector_size(64)));
typedef int i32x8 __attribute__((vector_size(32)));
typedef unsigned u32x8 __attribute__((vector_size(32)));
typedef short i16x16 __attribute__((vector_size(32)));
typedef signed char i8x16 __attribute__((vector_size(16)));
typedef long long i64x4 __attribute__((vector_size(32)));
typedef unsigned long long u64x4 __attribute__((vector_size(32)));
typedef unsigned u32x16 __attribute__((vector_size(64)));
typedef unsigned long long u64x8 __attribute__((vector_size(64)));
typedef float f32x4 __attribute__((vector_size(16)));
typedef double f64x2 __attribute__((vector_size(16)));
/// AVX-512 lane masks (one bit per lane), the types of __mmask16 and __mmask8.
typedef unsigned short mask16;
typedef unsigned char mask8;

/// Memory views for loads and stores: may_alias (any object's bytes), aligned(1) for unaligned
/// access, natural alignment for the aligned forms.
typedef float f32x8_u __attribute__((vector_size(32), aligned(1), may_alias));
typedef double f64x4_u __attribute__((vector_size(32), aligned(1), may_alias));
typedef float f32x16_u __attribute__((vector_size(64), aligned(1), may_alias));
typedef double f64x8_u __attribute__((vector_size(64), aligned(1), may_alias));
typedef int i32x8_a __attribute__((vector_size(32), may_alias));
typedef signed char i8x16_a __attribute__((vector_size(16), may_alias));

/// _MM_FROUND_CUR_DIRECTION: the builtins' rounding operand for "as MXCSR says".
constexpr int cur_direction = 4;

/// Comparison predicates (the _CMP_*_O* immediates): ordered and quiet, or unordered.
constexpr int cmp_eq_oq = 0x00;
constexpr int cmp_unord_q = 0x03;
constexpr int cmp_lt_oq = 0x11;
constexpr int cmp_le_oq = 0x12;
constexpr int cmp_ge_oq = 0x1d;
constexpr int cmp_gt_oq = 0x1e;

// ---- AVX2 + FMA, 256 bits ----

TAPIR_X86_AVX2 inline __attribute__((always_inline)) f32x8 loadu256(const float* p) noexcept {
    return *reinterpret_cast<const f32x8_u*>(p);
}
TAPIR_X86_AVX2 inline __attribute__((always_inline)) f64x4 loadu256(const double* p) noexcept {
    return *reinterpret_cast<const f64x4_u*>(p);
}
TAPIR_X86_AVX2 inline __attribute__((always_inline)) void storeu(float* p, f32x8 v) noexcept {
    *reinterpret_cast<f32x8_u*>(p) = v;
}
TAPIR_X86_AVX2 inline __attribute__((always_inline)) void storeu(double* p, f64x4 v) noexcept {
    *reinterpret_cast<f64x4_u*>(p) = v;
}
TAPIR_X86_AVX2 inline __attribute__((always_inline)) f32x8 set1_256(float x) noexcept {
    return f32x8{x, x, x, x, x, x, x, x};
}
TAPIR_X86_AVX2 inline __attribute__((always_inline)) f64x4 set1_256(double x) noexcept { return f64x4{x, x, x, x}; }
/// a * b + c, one rounding (vfmadd).
TAPIR_X86_AVX2 inline __attribute__((always_inline)) f32x8 fmadd(f32x8 a, f32x8 b, f32x8 c) noexcept {
    return __builtin_ia32_vfmaddps256(a, b, c);
}
TAPIR_X86_AVX2 inline __attribute__((always_inline)) f64x4 fmadd(f64x4 a, f64x4 b, f64x4 c) noexcept {
    return __builtin_ia32_vfmaddpd256(a, b, c);
}
/// vmaxps: a > b ? a : b per lane (b when either is NaN or both are zeros).
TAPIR_X86_AVX2 inline __attribute__((always_inline)) f32x8 max(f32x8 a, f32x8 b) noexcept {
    return __builtin_ia32_maxps256(a, b);
}
TAPIR_X86_AVX2 inline __attribute__((always_inline)) f64x4 max(f64x4 a, f64x4 b) noexcept {
    return __builtin_ia32_maxpd256(a, b);
}

/// Aligned integer loads and stores.
TAPIR_X86_AVX2 inline __attribute__((always_inline)) i32x8 load_i32x8(const int* p) noexcept {
    return *reinterpret_cast<const i32x8_a*>(p);
}
TAPIR_X86_AVX2 inline __attribute__((always_inline)) void store_i32x8(int* p, i32x8 v) noexcept {
    *reinterpret_cast<i32x8_a*>(p) = v;
}
TAPIR_X86_AVX2 inline __attribute__((always_inline)) i8x16 load_i8x16(const signed char* p) noexcept {
    return *reinterpret_cast<const i8x16_a*>(p);
}
TAPIR_X86_AVX2 inline __attribute__((always_inline)) i32x8 set1_i32x8(int x) noexcept {
    return i32x8{x, x, x, x, x, x, x, x};
}
/// Sign extension of 16 bytes to 16 shorts (vpmovsxbw). GCC 12 splits __builtin_convertvector
/// into two 128-bit halves; Clang has no vpmovsxbw builtin and emits it for the conversion.
TAPIR_X86_AVX2 inline __attribute__((always_inline)) i16x16 widen_i8(i8x16 v) noexcept {
#if defined(__clang__)
    return __builtin_convertvector(v, i16x16);
#else
    typedef char c8x16 __attribute__((vector_size(16)));  // the builtin's operand: plain char
    return __builtin_ia32_pmovsxbw256(reinterpret_cast<c8x16>(v));
#endif
}
/// Products of 16-bit pairs summed into 32 bits (vpmaddwd).
TAPIR_X86_AVX2 inline __attribute__((always_inline)) i32x8 madd_i16(i16x16 a, i16x16 b) noexcept {
    return __builtin_ia32_pmaddwd256(a, b);
}
/// Wrapping 32-bit addition (vpaddd).
TAPIR_X86_AVX2 inline __attribute__((always_inline)) i32x8 add_wrap(i32x8 a, i32x8 b) noexcept {
    return reinterpret_cast<i32x8>(reinterpret_cast<u32x8>(a) + reinterpret_cast<u32x8>(b));
}

/// c - a * b, one rounding (vfnmadd). Clang has no vfnmadd builtin: its negated operand folds into one.
TAPIR_X86_AVX2 inline __attribute__((always_inline)) f32x8 fnmadd(f32x8 a, f32x8 b, f32x8 c) noexcept {
#if defined(__clang__)
    return __builtin_ia32_vfmaddps256(-a, b, c);
#else
    return __builtin_ia32_vfnmaddps256(a, b, c);
#endif
}
TAPIR_X86_AVX2 inline __attribute__((always_inline)) f64x4 fnmadd(f64x4 a, f64x4 b, f64x4 c) noexcept {
#if defined(__clang__)
    return __builtin_ia32_vfmaddpd256(-a, b, c);
#else
    return __builtin_ia32_vfnmaddpd256(a, b, c);
#endif
}
/// vminps: a < b ? a : b per lane (b when either is NaN or both are zeros).
TAPIR_X86_AVX2 inline __attribute__((always_inline)) f32x8 min(f32x8 a, f32x8 b) noexcept {
    return __builtin_ia32_minps256(a, b);
}
TAPIR_X86_AVX2 inline __attribute__((always_inline)) f64x4 min(f64x4 a, f64x4 b) noexcept {
    return __builtin_ia32_minpd256(a, b);
}
/// vcmpps with predicate P: all-ones lanes where it holds, as a float vector.
template <int P> TAPIR_X86_AVX2 inline __attribute__((always_inline)) f32x8 cmp(f32x8 a, f32x8 b) noexcept {
    return __builtin_ia32_cmpps256(a, b, P);
}
template <int P> TAPIR_X86_AVX2 inline __attribute__((always_inline)) f64x4 cmp(f64x4 a, f64x4 b) noexcept {
    return __builtin_ia32_cmppd256(a, b, P);
}
/// vblendvps: b in lanes whose mask sign bit is set, else a.
TAPIR_X86_AVX2 inline __attribute__((always_inline)) f32x8 blendv(f32x8 a, f32x8 b, f32x8 m) noexcept {
    return __builtin_ia32_blendvps256(a, b, m);
}
TAPIR_X86_AVX2 inline __attribute__((always_inline)) f64x4 blendv(f64x4 a, f64x4 b, f64x4 m) noexcept {
    return __builtin_ia32_blendvpd256(a, b, m);
}
/// vmaskmovps: lanes whose mask sign bit is set; the others read as zero and are never touched.
TAPIR_X86_AVX2 inline __attribute__((always_inline)) f32x8 maskload(const float* p, i32x8 m) noexcept {
    return __builtin_ia32_maskloadps256(reinterpret_cast<const f32x8*>(p), m);
}
TAPIR_X86_AVX2 inline __attribute__((always_inline)) f64x4 maskload(const double* p, i64x4 m) noexcept {
    return __builtin_ia32_maskloadpd256(reinterpret_cast<const f64x4*>(p), m);
}
TAPIR_X86_AVX2 inline __attribute__((always_inline)) void maskstore(float* p, i32x8 m, f32x8 v) noexcept {
    __builtin_ia32_maskstoreps256(reinterpret_cast<f32x8*>(p), m, v);
}
TAPIR_X86_AVX2 inline __attribute__((always_inline)) void maskstore(double* p, i64x4 m, f64x4 v) noexcept {
    __builtin_ia32_maskstorepd256(reinterpret_cast<f64x4*>(p), m, v);
}
TAPIR_X86_AVX2 inline __attribute__((always_inline)) f32x8 sqrt(f32x8 a) noexcept { return __builtin_ia32_sqrtps256(a); }
TAPIR_X86_AVX2 inline __attribute__((always_inline)) f64x4 sqrt(f64x4 a) noexcept { return __builtin_ia32_sqrtpd256(a); }
/// Horizontal sums in a fixed order: halves added lane by lane down to one (float: 8 -> 4 -> 2 -> 1).
TAPIR_X86_AVX2 inline __attribute__((always_inline)) float hsum(f32x8 v) noexcept {
    const f32x4 s = __builtin_shufflevector(v, v, 0, 1, 2, 3) + __builtin_shufflevector(v, v, 4, 5, 6, 7);
    const f32x4 t = s + __builtin_shufflevector(s, s, 2, 3, 2, 3);
    return t[0] + t[1];
}
TAPIR_X86_AVX2 inline __attribute__((always_inline)) double hsum(f64x4 v) noexcept {
    const f64x2 s = __builtin_shufflevector(v, v, 0, 1) + __builtin_shufflevector(v, v, 2, 3);
    return s[0] + s[1];
}

// ---- AVX-512F, 512 bits ----

TAPIR_X86_AVX512 inline __attribute__((always_inline)) f32x16 loadu512(const float* p) noexcept {
    return *reinterpret_cast<const f32x16_u*>(p);
}
TAPIR_X86_AVX512 inline __attribute__((always_inline)) f64x8 loadu512(const double* p) noexcept {
    return *reinterpret_cast<const f64x8_u*>(p);
}
TAPIR_X86_AVX512 inline __attribute__((always_inline)) void storeu(float* p, f32x16 v) noexcept {
    *reinterpret_cast<f32x16_u*>(p) = v;
}
TAPIR_X86_AVX512 inline __attribute__((always_inline)) void storeu(double* p, f64x8 v) noexcept {
    *reinterpret_cast<f64x8_u*>(p) = v;
}
TAPIR_X86_AVX512 inline __attribute__((always_inline)) f32x16 set1_512(float x) noexcept {
    return f32x16{x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x};
}
TAPIR_X86_AVX512 inline __attribute__((always_inline)) f64x8 set1_512(double x) noexcept {
    return f64x8{x, x, x, x, x, x, x, x};
}
TAPIR_X86_AVX512 inline __attribute__((always_inline)) f32x16 fmadd(f32x16 a, f32x16 b, f32x16 c) noexcept {
    return __builtin_ia32_vfmaddps512_mask(a, b, c, static_cast<unsigned short>(0xFFFF), cur_direction);
}
TAPIR_X86_AVX512 inline __attribute__((always_inline)) f64x8 fmadd(f64x8 a, f64x8 b, f64x8 c) noexcept {
    return __builtin_ia32_vfmaddpd512_mask(a, b, c, static_cast<unsigned char>(0xFF), cur_direction);
}
/// GCC's 512-bit max takes a pass-through source and a mask (all lanes here; a zero source, not
/// the undefined one of GCC 12's intrinsic, PR 105593), Clang's does not.
TAPIR_X86_AVX512 inline __attribute__((always_inline)) f32x16 max(f32x16 a, f32x16 b) noexcept {
#if defined(__clang__)
    return __builtin_ia32_maxps512(a, b, cur_direction);
#else
    return __builtin_ia32_maxps512_mask(a, b, f32x16{}, static_cast<unsigned short>(0xFFFF), cur_direction);
#endif
}
TAPIR_X86_AVX512 inline __attribute__((always_inline)) f64x8 max(f64x8 a, f64x8 b) noexcept {
#if defined(__clang__)
    return __builtin_ia32_maxpd512(a, b, cur_direction);
#else
    return __builtin_ia32_maxpd512_mask(a, b, f64x8{}, static_cast<unsigned char>(0xFF), cur_direction);
#endif
}

/// c - a * b, one rounding (vfnmadd).
TAPIR_X86_AVX512 inline __attribute__((always_inline)) f32x16 fnmadd(f32x16 a, f32x16 b, f32x16 c) noexcept {
#if defined(__clang__)
    return __builtin_ia32_vfmaddps512_mask(a, -b, c, static_cast<mask16>(0xFFFF), cur_direction);
#else
    return __builtin_ia32_vfnmaddps512_mask(a, b, c, static_cast<mask16>(0xFFFF), cur_direction);
#endif
}
TAPIR_X86_AVX512 inline __attribute__((always_inline)) f64x8 fnmadd(f64x8 a, f64x8 b, f64x8 c) noexcept {
#if defined(__clang__)
    return __builtin_ia32_vfmaddpd512_mask(a, -b, c, static_cast<mask8>(0xFF), cur_direction);
#else
    return __builtin_ia32_vfnmaddpd512_mask(a, b, c, static_cast<mask8>(0xFF), cur_direction);
#endif
}
/// vminps (as max above: GCC's masked form with a zero source and all lanes, Clang's plain one).
TAPIR_X86_AVX512 inline __attribute__((always_inline)) f32x16 min(f32x16 a, f32x16 b) noexcept {
#if defined(__clang__)
    return __builtin_ia32_minps512(a, b, cur_direction);
#else
    return __builtin_ia32_minps512_mask(a, b, f32x16{}, static_cast<mask16>(0xFFFF), cur_direction);
#endif
}
TAPIR_X86_AVX512 inline __attribute__((always_inline)) f64x8 min(f64x8 a, f64x8 b) noexcept {
#if defined(__clang__)
    return __builtin_ia32_minpd512(a, b, cur_direction);
#else
    return __builtin_ia32_minpd512_mask(a, b, f64x8{}, static_cast<mask8>(0xFF), cur_direction);
#endif
}
/// vcmpps into a mask register with predicate P.
template <int P> TAPIR_X86_AVX512 inline __attribute__((always_inline)) mask16 cmp_mask(f32x16 a, f32x16 b) noexcept {
    return __builtin_ia32_cmpps512_mask(a, b, P, static_cast<mask16>(0xFFFF), cur_direction);
}
template <int P> TAPIR_X86_AVX512 inline __attribute__((always_inline)) mask8 cmp_mask(f64x8 a, f64x8 b) noexcept {
    return __builtin_ia32_cmppd512_mask(a, b, P, static_cast<mask8>(0xFF), cur_direction);
}
/// vblendmps: b in the lanes set in m, else a.
TAPIR_X86_AVX512 inline __attribute__((always_inline)) f32x16 blend(mask16 m, f32x16 a, f32x16 b) noexcept {
#if defined(__clang__)
    return __builtin_ia32_selectps_512(m, b, a);
#else
    return __builtin_ia32_blendmps_512_mask(a, b, m);
#endif
}
TAPIR_X86_AVX512 inline __attribute__((always_inline)) f64x8 blend(mask8 m, f64x8 a, f64x8 b) noexcept {
#if defined(__clang__)
    return __builtin_ia32_selectpd_512(m, b, a);
#else
    return __builtin_ia32_blendmpd_512_mask(a, b, m);
#endif
}
/// Masked unaligned load (lanes not in m read as zero, never touched) and store (only lanes in m).
TAPIR_X86_AVX512 inline __attribute__((always_inline)) f32x16 maskz_loadu(mask16 m, const float* p) noexcept {
    return __builtin_ia32_loadups512_mask(p, f32x16{}, m);
}
TAPIR_X86_AVX512 inline __attribute__((always_inline)) f64x8 maskz_loadu(mask8 m, const double* p) noexcept {
    return __builtin_ia32_loadupd512_mask(p, f64x8{}, m);
}
TAPIR_X86_AVX512 inline __attribute__((always_inline)) void mask_storeu(float* p, mask16 m, f32x16 v) noexcept {
    __builtin_ia32_storeups512_mask(p, v, m);
}
TAPIR_X86_AVX512 inline __attribute__((always_inline)) void mask_storeu(double* p, mask8 m, f64x8 v) noexcept {
    __builtin_ia32_storeupd512_mask(p, v, m);
}
/// vsqrtps (GCC's masked form over all lanes, as with min and max).
TAPIR_X86_AVX512 inline __attribute__((always_inline)) f32x16 sqrt(f32x16 a) noexcept {
#if defined(__clang__)
    return __builtin_ia32_sqrtps512(a, cur_direction);
#else
    return __builtin_ia32_sqrtps512_mask(a, a, static_cast<mask16>(0xFFFF), cur_direction);
#endif
}
TAPIR_X86_AVX512 inline __attribute__((always_inline)) f64x8 sqrt(f64x8 a) noexcept {
#if defined(__clang__)
    return __builtin_ia32_sqrtpd512(a, cur_direction);
#else
    return __builtin_ia32_sqrtpd512_mask(a, a, static_cast<mask8>(0xFF), cur_direction);
#endif
}
/// Horizontal sums: the two 256-bit halves added lane by lane, then the 256-bit order above.
TAPIR_X86_AVX512 inline __attribute__((always_inline)) float hsum(f32x16 v) noexcept {
    return hsum(f32x8(__builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
                      __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15)));
}
TAPIR_X86_AVX512 inline __attribute__((always_inline)) double hsum(f64x8 v) noexcept {
    return hsum(f64x4(__builtin_shufflevector(v, v, 0, 1, 2, 3) + __builtin_shufflevector(v, v, 4, 5, 6, 7)));
}

} // namespace tapir::detail::x86

#if defined(__clang__)
#pragma clang diagnostic pop
#else
#pragma GCC diagnostic pop
#endif

#endif // TAPIR_X86_BUILTINS
// ---- end tapir/simd/detail/x86_builtins.hpp ----

TAPIR_SIMD_DIAG_PUSH

namespace tapir::simd::detail {

template <class T> struct int_of;
template <> struct int_of<float> { using type = std::uint32_t; };
template <> struct int_of<double> { using type = std::uint64_t; };

/// Bit-exact float <-> integer view without aliasing violations.
template <class T> TAPIR_ALWAYS_INLINE typename int_of<T>::type bits_of(T x) noexcept {
    typename int_of<T>::type u;
    std::memcpy(&u, &x, sizeof u);
    return u;
}
template <class T> TAPIR_ALWAYS_INLINE T from_bits_of(typename int_of<T>::type u) noexcept {
    T x;
    std::memcpy(&x, &u, sizeof x);
    return x;
}

// ------------------------------------------------------------------------------------------------
/// Whether the scalar family fuses multiply-adds: where the target has FMA (aarch64; x86 built with
/// -mfma). Left to the compiler, a * b + c is contracted at some call sites and not at others, and
/// paths that must agree bit for bit (gemm's tiled and one-column paths, deployed models) would not.
#if defined(__FP_FAST_FMA) && defined(__FP_FAST_FMAF)
#define TAPIR_SIMD_SCALAR_FUSED 1
#else
#define TAPIR_SIMD_SCALAR_FUSED 0
#endif

/// Portable path: one lane. The compiler may still auto-vectorise the loops around it. Fused picks
/// fma = std::fma (true) or a * b + c (false); the scalar family is vscalar<T> (the default).
template <class T, bool Fused = TAPIR_SIMD_SCALAR_FUSED != 0> struct vscalar {
    using value_type = T;
    using reg = T;
    using mask = bool;
    using ireg = typename int_of<T>::type;
    static constexpr std::size_t W = 1;
    static constexpr isa id = isa::scalar;

    static reg load(const T* p) { return *p; }
    static void store(T* p, reg v) { *p = v; }
    static reg load_partial(const T* p, std::size_t n) { return n ? *p : T(0); }
    static void store_partial(T* p, reg v, std::size_t n) {
        if (n) *p = v;
    }
    static reg set1(T x) { return x; }
    static reg zero() { return T(0); }
    static reg add(reg a, reg b) { return a + b; }
    static reg sub(reg a, reg b) { return a - b; }
    static reg mul(reg a, reg b) { return a * b; }
    static reg div(reg a, reg b) { return a / b; }
    static constexpr bool fused_madd = Fused;
    static reg fma(reg a, reg b, reg c) {
        if constexpr (Fused) return fused(a, b, c);
        else return a * b + c;
    }
    static reg fnma(reg a, reg b, reg c) {
        if constexpr (Fused) return fused(-a, b, c);
        else return c - a * b;
    }
    static reg fused(reg a, reg b, reg c) {
        if constexpr (std::is_same<T, float>::value) return __builtin_fmaf(a, b, c);
        else return __builtin_fma(a, b, c);
    }
    static reg sqrt(reg a) {
        if constexpr (std::is_same<T, float>::value) return __builtin_sqrtf(a);
        else return __builtin_sqrt(a);
    }
    static reg min(reg a, reg b) { return a < b ? a : b; }
    static reg max(reg a, reg b) { return a > b ? a : b; }
    static mask lt(reg a, reg b) { return a < b; }
    static mask gt(reg a, reg b) { return a > b; }
    static mask le(reg a, reg b) { return a <= b; }
    static mask ge(reg a, reg b) { return a >= b; }
    static mask eq(reg a, reg b) { return a == b; }
    static mask isnan(reg a) { return a != a; }
    static mask mask_or(mask a, mask b) { return a || b; }
    static reg select(mask m, reg a, reg b) { return m ? a : b; }
    static T hsum(reg v) { return v; }
    static ireg bits(reg v) { return bits_of<T>(v); }
    static reg from_bits(ireg v) { return from_bits_of<T>(v); }
    static ireg iadd(ireg a, ireg b) { return static_cast<ireg>(a + b); }
    static ireg isub(ireg a, ireg b) { return static_cast<ireg>(a - b); }
    static ireg iset1(ireg x) { return x; }
    static ireg iand(ireg a, ireg b) { return a & b; }
    static ireg ior(ireg a, ireg b) { return a | b; }
    static ireg ixor(ireg a, ireg b) { return a ^ b; }
    template <int N> static ireg shl(ireg a) { return static_cast<ireg>(a << N); }
    template <int N> static ireg shr(ireg a) { return static_cast<ireg>(a >> N); }
    static void prefetch(const void*) {}
};

#if TAPIR_SIMD_X86
// ------------------------------------------------------------------------------------------------
/// x86 registers travel boxed in a struct: a raw 256/512-bit vector crossing from a generic
/// (unattributed) kernel into an attributed wrapper is a hard error in Clang and a -Wpsabi warning
/// in GCC, while a struct is not; both compilers always inline the generic kernel into its
/// attributed entry, so the boxed value never actually crosses an ABI boundary. The boxed values
/// are GCC/Clang vector types (simd/detail/x86_builtins.hpp), not <immintrin.h>'s: arithmetic and
/// bit operations are the vector-extension operators (the same instructions the intrinsics emit).
namespace x86 = tapir::detail::x86;
template <class R> struct box { R v; };

/// Per element type: the register types, the lane indices of the tail masks, the integer broadcasts.
template <class T> struct x86_lanes;
template <> struct x86_lanes<float> {
    using r256 = x86::f32x8;
    using i256 = x86::u32x8;
    using r512 = x86::f32x16;
    using i512 = x86::u32x16;
    using mask512 = x86::mask16;
    using bits_type = std::uint32_t;
    /// Lanes below n all ones (vpcmpgtd against the lane indices).
    TAPIR_TARGET_AVX2 static inline x86::i32x8 tail256(std::size_t n) {
        return x86::set1_i32x8(static_cast<int>(n)) > x86::i32x8{0, 1, 2, 3, 4, 5, 6, 7};
    }
    TAPIR_TARGET_AVX2 static inline i256 iset256(std::uint32_t x) { return i256{x, x, x, x, x, x, x, x}; }
    TAPIR_TARGET_AVX512 static inline i512 iset512(std::uint32_t x) {
        return i512{x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x};
    }
};
template <> struct x86_lanes<double> {
    using r256 = x86::f64x4;
    using i256 = x86::u64x4;
    using r512 = x86::f64x8;
    using i512 = x86::u64x8;
    using mask512 = x86::mask8;
    using bits_type = std::uint64_t;
    /// Lanes below n all ones (vpcmpgtq against the lane indices).
    TAPIR_TARGET_AVX2 static inline x86::i64x4 tail256(std::size_t n) {
        const long long k = static_cast<long long>(n);
        return x86::i64x4{k, k, k, k} > x86::i64x4{0, 1, 2, 3};
    }
    TAPIR_TARGET_AVX2 static inline i256 iset256(std::uint64_t x) {
        const unsigned long long u = x;
        return i256{u, u, u, u};
    }
    TAPIR_TARGET_AVX512 static inline i512 iset512(std::uint64_t x) {
        const unsigned long long u = x;
        return i512{u, u, u, u, u, u, u, u};
    }
};

#define TAPIR_V2 TAPIR_TARGET_AVX2 static inline
template <class T> struct vavx2 {
    using L = x86_lanes<T>;
    using value_type = T;
    using reg = box<typename L::r256>;
    using mask = reg;
    using ireg = box<typename L::i256>;
    static constexpr std::size_t W = 32 / sizeof(T);
    static constexpr isa id = isa::avx2;
    static constexpr bool fused_madd = true;

    TAPIR_V2 reg load(const T* p) { return {x86::loadu256(p)}; }
    TAPIR_V2 void store(T* p, reg v) { x86::storeu(p, v.v); }
    TAPIR_V2 reg load_partial(const T* p, std::size_t n) { return {x86::maskload(p, L::tail256(n))}; }
    TAPIR_V2 void store_partial(T* p, reg v, std::size_t n) { x86::maskstore(p, L::tail256(n), v.v); }
    TAPIR_V2 reg set1(T x) { return {x86::set1_256(x)}; }
    TAPIR_V2 reg zero() { return {typename L::r256{}}; }
    TAPIR_V2 reg add(reg a, reg b) { return {a.v + b.v}; }
    TAPIR_V2 reg sub(reg a, reg b) { return {a.v - b.v}; }
    TAPIR_V2 reg mul(reg a, reg b) { return {a.v * b.v}; }
    TAPIR_V2 reg div(reg a, reg b) { return {a.v / b.v}; }
    TAPIR_V2 reg sqrt(reg a) { return {x86::sqrt(a.v)}; }
    TAPIR_V2 reg fma(reg a, reg b, reg c) { return {x86::fmadd(a.v, b.v, c.v)}; }
    TAPIR_V2 reg fnma(reg a, reg b, reg c) { return {x86::fnmadd(a.v, b.v, c.v)}; }
    TAPIR_V2 reg min(reg a, reg b) { return {x86::min(a.v, b.v)}; }
    TAPIR_V2 reg max(reg a, reg b) { return {x86::max(a.v, b.v)}; }
    TAPIR_V2 mask lt(reg a, reg b) { return {x86::cmp<x86::cmp_lt_oq>(a.v, b.v)}; }
    TAPIR_V2 mask gt(reg a, reg b) { return {x86::cmp<x86::cmp_gt_oq>(a.v, b.v)}; }
    TAPIR_V2 mask le(reg a, reg b) { return {x86::cmp<x86::cmp_le_oq>(a.v, b.v)}; }
    TAPIR_V2 mask ge(reg a, reg b) { return {x86::cmp<x86::cmp_ge_oq>(a.v, b.v)}; }
    TAPIR_V2 mask eq(reg a, reg b) { return {x86::cmp<x86::cmp_eq_oq>(a.v, b.v)}; }
    TAPIR_V2 mask isnan(reg a) { return {x86::cmp<x86::cmp_unord_q>(a.v, a.v)}; }
    TAPIR_V2 mask mask_or(mask a, mask b) { return from_bits(ior(bits(a), bits(b))); }
    TAPIR_V2 reg select(mask m, reg a, reg b) { return {x86::blendv(b.v, a.v, m.v)}; }
    TAPIR_V2 T hsum(reg v) { return x86::hsum(v.v); }
    TAPIR_V2 ireg bits(reg v) { return {reinterpret_cast<typename L::i256>(v.v)}; }
    TAPIR_V2 reg from_bits(ireg v) { return {reinterpret_cast<typename L::r256>(v.v)}; }
    TAPIR_V2 ireg iadd(ireg a, ireg b) { return {a.v + b.v}; }
    TAPIR_V2 ireg isub(ireg a, ireg b) { return {a.v - b.v}; }
    TAPIR_V2 ireg iset1(typename L::bits_type x) { return {L::iset256(x)}; }
    TAPIR_V2 ireg iand(ireg a, ireg b) { return {a.v & b.v}; }
    TAPIR_V2 ireg ior(ireg a, ireg b) { return {a.v | b.v}; }
    TAPIR_V2 ireg ixor(ireg a, ireg b) { return {a.v ^ b.v}; }
    template <int N> TAPIR_V2 ireg shl(ireg a) { return {a.v << N}; }
    template <int N> TAPIR_V2 ireg shr(ireg a) { return {a.v >> N}; }
    TAPIR_V2 void prefetch(const void* p) { __builtin_prefetch(p, 0, 3); }
};
#undef TAPIR_V2

// ------------------------------------------------------------------------------------------------
/// AVX-512 min, max and sqrt are GCC's masked builtins over all lanes with a zero or self source:
/// the unmasked intrinsics of GCC 12 start from an undefined vector, which trips
/// -Wmaybe-uninitialized once inlined (GCC PR 105593).
#define TAPIR_V5 TAPIR_TARGET_AVX512 static inline
template <class T> struct vavx512 {
    using L = x86_lanes<T>;
    using value_type = T;
    using reg = box<typename L::r512>;
    using mask = typename L::mask512;
    using ireg = box<typename L::i512>;
    static constexpr std::size_t W = 64 / sizeof(T);
    static constexpr isa id = isa::avx512;
    static constexpr bool fused_madd = true;
    static constexpr mask all = static_cast<mask>((1u << W) - 1u);

    TAPIR_V5 reg load(const T* p) { return {x86::loadu512(p)}; }
    TAPIR_V5 void store(T* p, reg v) { x86::storeu(p, v.v); }
    TAPIR_V5 mask tail_mask(std::size_t n) { return static_cast<mask>((1u << n) - 1u); }
    TAPIR_V5 reg load_partial(const T* p, std::size_t n) { return {x86::maskz_loadu(tail_mask(n), p)}; }
    TAPIR_V5 void store_partial(T* p, reg v, std::size_t n) { x86::mask_storeu(p, tail_mask(n), v.v); }
    TAPIR_V5 reg set1(T x) { return {x86::set1_512(x)}; }
    TAPIR_V5 reg zero() { return {typename L::r512{}}; }
    TAPIR_V5 reg add(reg a, reg b) { return {a.v + b.v}; }
    TAPIR_V5 reg sub(reg a, reg b) { return {a.v - b.v}; }
    TAPIR_V5 reg mul(reg a, reg b) { return {a.v * b.v}; }
    TAPIR_V5 reg div(reg a, reg b) { return {a.v / b.v}; }
    TAPIR_V5 reg sqrt(reg a) { return {x86::sqrt(a.v)}; }
    TAPIR_V5 reg fma(reg a, reg b, reg c) { return {x86::fmadd(a.v, b.v, c.v)}; }
    TAPIR_V5 reg fnma(reg a, reg b, reg c) { return {x86::fnmadd(a.v, b.v, c.v)}; }
    TAPIR_V5 reg min(reg a, reg b) { return {x86::min(a.v, b.v)}; }
    TAPIR_V5 reg max(reg a, reg b) { return {x86::max(a.v, b.v)}; }
    TAPIR_V5 mask lt(reg a, reg b) { return x86::cmp_mask<x86::cmp_lt_oq>(a.v, b.v); }
    TAPIR_V5 mask gt(reg a, reg b) { return x86::cmp_mask<x86::cmp_gt_oq>(a.v, b.v); }
    TAPIR_V5 mask le(reg a, reg b) { return x86::cmp_mask<x86::cmp_le_oq>(a.v, b.v); }
    TAPIR_V5 mask ge(reg a, reg b) { return x86::cmp_mask<x86::cmp_ge_oq>(a.v, b.v); }
    TAPIR_V5 mask eq(reg a, reg b) { return x86::cmp_mask<x86::cmp_eq_oq>(a.v, b.v); }
    TAPIR_V5 mask isnan(reg a) { return x86::cmp_mask<x86::cmp_unord_q>(a.v, a.v); }
    TAPIR_V5 mask mask_or(mask a, mask b) { return static_cast<mask>(a | b); }
    TAPIR_V5 reg select(mask m, reg a, reg b) { return {x86::blend(m, b.v, a.v)}; }
    TAPIR_V5 T hsum(reg v) { return x86::hsum(v.v); }
    TAPIR_V5 ireg bits(reg v) { return {reinterpret_cast<typename L::i512>(v.v)}; }
    TAPIR_V5 reg from_bits(ireg v) { return {reinterpret_cast<typename L::r512>(v.v)}; }
    TAPIR_V5 ireg iadd(ireg a, ireg b) { return {a.v + b.v}; }
    TAPIR_V5 ireg isub(ireg a, ireg b) { return {a.v - b.v}; }
    TAPIR_V5 ireg iset1(typename L::bits_type x) { return {L::iset512(x)}; }
    TAPIR_V5 ireg iand(ireg a, ireg b) { return {a.v & b.v}; }
    TAPIR_V5 ireg ior(ireg a, ireg b) { return {a.v | b.v}; }
    TAPIR_V5 ireg ixor(ireg a, ireg b) { return {a.v ^ b.v}; }
    template <int N> TAPIR_V5 ireg shl(ireg a) { return {a.v << N}; }
    template <int N> TAPIR_V5 ireg shr(ireg a) { return {a.v >> N}; }
    TAPIR_V5 void prefetch(const void* p) { __builtin_prefetch(p, 0, 3); }
};
#undef TAPIR_V5
#endif // TAPIR_SIMD_X86

#if TAPIR_SIMD_NEON
// ------------------------------------------------------------------------------------------------
template <class T> struct vneon;

template <> struct vneon<float> {
    using value_type = float;
    using reg = float32x4_t;
    using mask = uint32x4_t;
    using ireg = uint32x4_t;
    static constexpr std::size_t W = 4;
    static constexpr isa id = isa::neon;
    static constexpr bool fused_madd = true;

    static inline reg load(const float* p) { return vld1q_f32(p); }
    static inline void store(float* p, reg v) { vst1q_f32(p, v); }
    static inline reg load_partial(const float* p, std::size_t n) {
        float t[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        std::memcpy(t, p, n * sizeof(float));
        return vld1q_f32(t);
    }
    static inline void store_partial(float* p, reg v, std::size_t n) {
        float t[4];
        vst1q_f32(t, v);
        std::memcpy(p, t, n * sizeof(float));
    }
    static inline reg set1(float x) { return vdupq_n_f32(x); }
    static inline reg zero() { return vdupq_n_f32(0.0f); }
    static inline reg add(reg a, reg b) { return vaddq_f32(a, b); }
    static inline reg sub(reg a, reg b) { return vsubq_f32(a, b); }
    static inline reg mul(reg a, reg b) { return vmulq_f32(a, b); }
    static inline reg div(reg a, reg b) { return vdivq_f32(a, b); }
    static inline reg sqrt(reg a) { return vsqrtq_f32(a); }
    static inline reg fma(reg a, reg b, reg c) { return vfmaq_f32(c, a, b); }
    static inline reg fnma(reg a, reg b, reg c) { return vfmsq_f32(c, a, b); }
    static inline reg min(reg a, reg b) { return vbslq_f32(vcltq_f32(a, b), a, b); }
    /// Same NaN rule as x86 maxps: b unless a > b.
    static inline reg max(reg a, reg b) { return vbslq_f32(vcgtq_f32(a, b), a, b); }
    static inline mask lt(reg a, reg b) { return vcltq_f32(a, b); }
    static inline mask gt(reg a, reg b) { return vcgtq_f32(a, b); }
    static inline mask le(reg a, reg b) { return vcleq_f32(a, b); }
    static inline mask ge(reg a, reg b) { return vcgeq_f32(a, b); }
    static inline mask eq(reg a, reg b) { return vceqq_f32(a, b); }
    static inline mask isnan(reg a) { return vmvnq_u32(vceqq_f32(a, a)); }
    static inline mask mask_or(mask a, mask b) { return vorrq_u32(a, b); }
    static inline reg select(mask m, reg a, reg b) { return vbslq_f32(m, a, b); }
    static inline float hsum(reg v) { return vaddvq_f32(v); }
    static inline ireg bits(reg v) { return vreinterpretq_u32_f32(v); }
    static inline reg from_bits(ireg v) { return vreinterpretq_f32_u32(v); }
    static inline ireg iadd(ireg a, ireg b) { return vaddq_u32(a, b); }
    static inline ireg isub(ireg a, ireg b) { return vsubq_u32(a, b); }
    static inline ireg iset1(std::uint32_t x) { return vdupq_n_u32(x); }
    static inline ireg iand(ireg a, ireg b) { return vandq_u32(a, b); }
    static inline ireg ior(ireg a, ireg b) { return vorrq_u32(a, b); }
    static inline ireg ixor(ireg a, ireg b) { return veorq_u32(a, b); }
    template <int N> static inline ireg shl(ireg a) { return vshlq_n_u32(a, N); }
    template <int N> static inline ireg shr(ireg a) { return vshrq_n_u32(a, N); }
    static inline void prefetch(const void* p) { __builtin_prefetch(p); }
};

template <> struct vneon<double> {
    using value_type = double;
    using reg = float64x2_t;
    using mask = uint64x2_t;
    using ireg = uint64x2_t;
    static constexpr std::size_t W = 2;
    static constexpr isa id = isa::neon;
    static constexpr bool fused_madd = true;

    static inline reg load(const double* p) { return vld1q_f64(p); }
    static inline void store(double* p, reg v) { vst1q_f64(p, v); }
    static inline reg load_partial(const double* p, std::size_t n) {
        return n ? vsetq_lane_f64(p[0], vdupq_n_f64(0.0), 0) : vdupq_n_f64(0.0);
    }
    static inline void store_partial(double* p, reg v, std::size_t n) {
        if (n) p[0] = vgetq_lane_f64(v, 0);
    }
    static inline reg set1(double x) { return vdupq_n_f64(x); }
    static inline reg zero() { return vdupq_n_f64(0.0); }
    static inline reg add(reg a, reg b) { return vaddq_f64(a, b); }
    static inline reg sub(reg a, reg b) { return vsubq_f64(a, b); }
    static inline reg mul(reg a, reg b) { return vmulq_f64(a, b); }
    static inline reg div(reg a, reg b) { return vdivq_f64(a, b); }
    static inline reg sqrt(reg a) { return vsqrtq_f64(a); }
    static inline reg fma(reg a, reg b, reg c) { return vfmaq_f64(c, a, b); }
    static inline reg fnma(reg a, reg b, reg c) { return vfmsq_f64(c, a, b); }
    static inline reg min(reg a, reg b) { return vbslq_f64(vcltq_f64(a, b), a, b); }
    static inline reg max(reg a, reg b) { return vbslq_f64(vcgtq_f64(a, b), a, b); }
    static inline mask lt(reg a, reg b) { return vcltq_f64(a, b); }
    static inline mask gt(reg a, reg b) { return vcgtq_f64(a, b); }
    static inline mask le(reg a, reg b) { return vcleq_f64(a, b); }
    static inline mask ge(reg a, reg b) { return vcgeq_f64(a, b); }
    static inline mask eq(reg a, reg b) { return vceqq_f64(a, b); }
    static inline mask isnan(reg a) {
        return vreinterpretq_u64_u32(vmvnq_u32(vreinterpretq_u32_u64(vceqq_f64(a, a))));
    }
    static inline mask mask_or(mask a, mask b) { return vorrq_u64(a, b); }
    static inline reg select(mask m, reg a, reg b) { return vbslq_f64(m, a, b); }
    static inline double hsum(reg v) { return vaddvq_f64(v); }
    static inline ireg bits(reg v) { return vreinterpretq_u64_f64(v); }
    static inline reg from_bits(ireg v) { return vreinterpretq_f64_u64(v); }
    static inline ireg iadd(ireg a, ireg b) { return vaddq_u64(a, b); }
    static inline ireg isub(ireg a, ireg b) { return vsubq_u64(a, b); }
    static inline ireg iset1(std::uint64_t x) { return vdupq_n_u64(x); }
    static inline ireg iand(ireg a, ireg b) { return vandq_u64(a, b); }
    static inline ireg ior(ireg a, ireg b) { return vorrq_u64(a, b); }
    static inline ireg ixor(ireg a, ireg b) { return veorq_u64(a, b); }
    template <int N> static inline ireg shl(ireg a) { return vshlq_n_u64(a, N); }
    template <int N> static inline ireg shr(ireg a) { return vshrq_n_u64(a, N); }
    static inline void prefetch(const void* p) { __builtin_prefetch(p); }
};
#endif // TAPIR_SIMD_NEON

// ------------------------------------------------------------------------------------------------
// Entries: K::template run<V>(args...) is an always_inline generic kernel; each entry compiles it for
// one ISA. dispatch<K>() picks the entry for active_isa().

template <class K, class... A> inline auto run_scalar(A... args) {
    return K::template run<vscalar<typename K::value_type>>(args...);
}
#if TAPIR_SIMD_X86
template <class K, class... A> TAPIR_TARGET_AVX2 inline auto run_avx2(A... args) {
    return K::template run<vavx2<typename K::value_type>>(args...);
}
template <class K, class... A> TAPIR_TARGET_AVX512 inline auto run_avx512(A... args) {
    return K::template run<vavx512<typename K::value_type>>(args...);
}
#endif
#if TAPIR_SIMD_NEON
template <class K, class... A> inline auto run_neon(A... args) {
    return K::template run<vneon<typename K::value_type>>(args...);
}
#endif

} // namespace tapir::simd::detail

namespace tapir::simd {

/// Runs the kernel K (K::value_type, and `template <class V> static run(args...)` written over the
/// wrapper contract above, always_inline) compiled for the instruction set `which`; an ISA this
/// build lacks runs the scalar family. The caller checks isa_supported(which) (an unsupported
/// one would fault): this is the unchecked, exception-free entry.
template <class K, class... A> inline auto dispatch_to(isa which, A... args) {
    switch (which) {
#if TAPIR_SIMD_X86
    case isa::avx512: return detail::run_avx512<K>(args...);
    case isa::avx2: return detail::run_avx2<K>(args...);
#endif
#if TAPIR_SIMD_NEON
    case isa::neon: return detail::run_neon<K>(args...);
#endif
    default: return detail::run_scalar<K>(args...);
    }
}

/// Depth of simd::gemm's K blocks per kernel family and element size: sums longer than this are
/// split into equal blocks (gemm_k_block), each a fresh multiply-add chain added to C in order.
/// Deployed models restart their chains at the same places to reproduce the bits.
constexpr std::size_t gemm_kc(isa which, std::size_t elem_size) noexcept {
    switch (which) {
    case isa::avx2: return elem_size == 4 ? 384 : 256;
    case isa::avx512: return elem_size == 4 ? 512 : 384;
    default: return 256;
    }
}

/// The block depth gemm uses for a sum of k terms: k itself up to kc, else equal blocks no deeper
/// than kc (depends on k only, so results do not depend on how a product is split or threaded).
constexpr std::size_t gemm_k_block(std::size_t k, std::size_t kc) noexcept {
    if (k <= kc) return k;
    const std::size_t nb = (k + kc - 1) / kc;
    return (k + nb - 1) / nb;
}

} // namespace tapir::simd

TAPIR_SIMD_DIAG_POP
// ---- end tapir/simd/vec.hpp ----
// ---- begin tapir/simd/vmath.hpp ----
/// exp, log, tanh and sigmoid on one register of any vector wrapper (vec.hpp), written once: the
/// array kernels of math.hpp, the activations (activation.hpp) and the deployed models use them.
/// Polynomials are truncated Taylor series (exp, expm1) and the atanh series (log) on reduced
/// arguments; every edge (NaN, +-inf, denormal input or output, overflow) is handled explicitly.
/// Accuracy is measured against a higher-precision reference in tests/simd/test_math.cpp.

#include <cstddef>
#include <cstdint>
#include <limits>


TAPIR_SIMD_DIAG_PUSH

namespace tapir::simd {
namespace detail {

template <class T> struct math_consts;

template <> struct math_consts<float> {
    static constexpr int mant_bits = 23;
    static constexpr std::uint32_t bias = 127;
    static constexpr std::uint32_t mant_mask = 0x007FFFFFu;
    static constexpr std::uint32_t sign_mask = 0x80000000u;
    static constexpr std::uint32_t one_bits = 0x3F800000u;
    static constexpr std::uint32_t two_pow_mant_bits = 0x4B000000u; // 2^23
    static constexpr std::uint32_t shifter_bits = 0x4B400000u;      // 1.5 * 2^23
    static constexpr float shifter = 12582912.0f;
    static constexpr float two_pow_mant = 8388608.0f;
    static constexpr float log2e = 1.44269502163f;
    /// ln2 = hi + lo with hi on 16 bits: n*hi is exact for |n| < 256 even without FMA.
    static constexpr float ln2_hi = 0.693145751953125f;
    static constexpr float ln2_lo = 1.428606765330187e-06f;
    static constexpr float sqrt2 = 1.41421353816986083984f;
    /// exp overflows above 88.72 and underflows to 0 below -103.97; clamping keeps n in range.
    static constexpr float exp_hi = 89.0f, exp_lo = -104.0f;
    /// 1 - tanh(x) < 2^-25 beyond 9.01: tanh rounds to 1 there.
    static constexpr float tanh_clamp = 10.0f;
    static constexpr float denorm_scale = 16777216.0f; // 2^24
    static constexpr float denorm_shift = 24.0f;
    static constexpr int exp_terms = 8;  // Taylor 1 .. r^7/7!
    static constexpr int log_terms = 5;  // atanh series s^3 .. s^11
};

template <> struct math_consts<double> {
    static constexpr int mant_bits = 52;
    static constexpr std::uint64_t bias = 1023;
    static constexpr std::uint64_t mant_mask = 0x000FFFFFFFFFFFFFull;
    static constexpr std::uint64_t sign_mask = 0x8000000000000000ull;
    static constexpr std::uint64_t one_bits = 0x3FF0000000000000ull;
    static constexpr std::uint64_t two_pow_mant_bits = 0x4330000000000000ull; // 2^52
    static constexpr std::uint64_t shifter_bits = 0x4338000000000000ull;      // 1.5 * 2^52
    static constexpr double shifter = 6755399441055744.0;
    static constexpr double two_pow_mant = 4503599627370496.0;
    static constexpr double log2e = 1.4426950408889634;
    /// hi on 32 bits: n*hi exact for |n| < 2^21.
    static constexpr double ln2_hi = 0.6931471806019545;
    static constexpr double ln2_lo = -4.2009150726810846e-11;
    static constexpr double sqrt2 = 1.4142135623730951;
    static constexpr double exp_hi = 710.0, exp_lo = -746.0;
    static constexpr double tanh_clamp = 20.0;
    static constexpr double denorm_scale = 18014398509481984.0; // 2^54
    static constexpr double denorm_shift = 54.0;
    static constexpr int exp_terms = 14; // Taylor 1 .. r^13/13!
    static constexpr int log_terms = 10; // atanh series s^3 .. s^21
};

/// 1/k! and 2/(2k+1) as constants in T, computed at compile time from exact integers.
template <class T> constexpr T inv_factorial(int k) {
    double f = 1.0;
    for (int i = 2; i <= k; ++i) f *= i;
    return static_cast<T>(1.0 / f);
}

/// Round-to-nearest integer part of y/ln2 (as a T holding an integer) and the reduced r = y - n ln2,
/// |r| <= ln2/2 (Cody-Waite: n*hi is exact and y - n*hi is exact by Sterbenz, with or without FMA).
template <class V>
TAPIR_ALWAYS_INLINE void reduce_ln2(const typename V::reg& y, typename V::reg& n, typename V::reg& r) {
    using C = math_consts<typename V::value_type>;
    const auto kd = V::fma(y, V::set1(C::log2e), V::set1(C::shifter));
    n = V::sub(kd, V::set1(C::shifter));
    r = V::fnma(n, V::set1(C::ln2_hi), y);
    r = V::fnma(n, V::set1(C::ln2_lo), r);
}

/// 2^n for an integer-valued n inside the normal exponent range.
template <class V> TAPIR_ALWAYS_INLINE typename V::reg pow2i(const typename V::reg& n) {
    using T = typename V::value_type;
    using C = math_consts<T>;
    using U = typename int_of<T>::type;
    const auto kb = V::bits(V::add(n, V::set1(C::shifter)));
    const auto e = V::iadd(kb, V::iset1(static_cast<U>(C::bias - C::shifter_bits)));
    return V::from_bits(V::template shl<C::mant_bits>(e));
}

/// Horner steps q = q*r + 1/K! for K = Hi down to Lo, unrolled at compile time.
template <class V, int K, int Lo>
TAPIR_ALWAYS_INLINE typename V::reg horner_fact(const typename V::reg& q, const typename V::reg& r) {
    if constexpr (K < Lo) {
        return q;
    } else {
        using T = typename V::value_type;
        return horner_fact<V, K - 1, Lo>(V::fma(q, r, V::set1(inv_factorial<T>(K))), r);
    }
}

/// Sum_{k=2}^{terms-1} r^k/k! = r^2 * q(r); returns q.
template <class V> TAPIR_ALWAYS_INLINE typename V::reg exp_tail(const typename V::reg& r) {
    using T = typename V::value_type;
    constexpr int top = math_consts<T>::exp_terms - 1;
    return horner_fact<V, top - 1, 2>(V::set1(inv_factorial<T>(top)), r);
}

/// Horner steps R = R*z + 2/(2K+1) for K = Hi down to 1 (the atanh series in z = s^2).
template <class V, int K>
TAPIR_ALWAYS_INLINE typename V::reg horner_atanh(const typename V::reg& R, const typename V::reg& z) {
    if constexpr (K < 1) {
        return R;
    } else {
        using T = typename V::value_type;
        constexpr T c = static_cast<T>(2.0 / (2 * K + 1));
        return horner_atanh<V, K - 1>(V::fma(R, z, V::set1(c)), z);
    }
}

template <class V> TAPIR_ALWAYS_INLINE typename V::reg exp_v(const typename V::reg& x) {
    using T = typename V::value_type;
    using C = math_consts<T>;
    const auto xc = V::min(V::max(x, V::set1(C::exp_lo)), V::set1(C::exp_hi));
    typename V::reg n, r;
    reduce_ln2<V>(xc, n, r);
    const auto em = V::fma(V::mul(r, r), exp_tail<V>(r), r); // e^r - 1
    const auto p = V::add(em, V::set1(T(1)));
    /// n may be 129 or -150: split 2^n into two in-range factors so overflow and gradual
    /// underflow happen in the final multiply, rounded once.
    const auto n1 = V::sub(V::fma(n, V::set1(T(0.5)), V::set1(C::shifter)), V::set1(C::shifter));
    const auto n2 = V::sub(n, n1);
    const auto y = V::mul(V::mul(p, pow2i<V>(n1)), pow2i<V>(n2));
    return V::select(V::isnan(x), V::add(x, x), y);
}

/// expm1 for 0 <= y <= 2*tanh_clamp: 2^n (e^r - 1) + (2^n - 1), accurate in relative terms near 0.
template <class V> TAPIR_ALWAYS_INLINE typename V::reg expm1_pos_v(const typename V::reg& y) {
    using T = typename V::value_type;
    typename V::reg n, r;
    reduce_ln2<V>(y, n, r);
    const auto em = V::fma(V::mul(r, r), exp_tail<V>(r), r);
    const auto s = pow2i<V>(n);
    return V::fma(s, em, V::sub(s, V::set1(T(1))));
}

template <class V> TAPIR_ALWAYS_INLINE typename V::reg log_v(const typename V::reg& x) {
    using T = typename V::value_type;
    using C = math_consts<T>;
    const T inf = std::numeric_limits<T>::infinity();
    const auto one = V::set1(T(1));
    // Denormals: scale into the normal range first.
    const auto sub = V::lt(x, V::set1(std::numeric_limits<T>::min()));
    const auto xs = V::select(sub, V::mul(x, V::set1(C::denorm_scale)), x);
    const auto u = V::bits(xs);
    const auto ebits = V::template shr<C::mant_bits>(u);
    auto e = V::sub(V::from_bits(V::ior(ebits, V::iset1(C::two_pow_mant_bits))),
                    V::set1(C::two_pow_mant + static_cast<T>(C::bias)));
    e = V::sub(e, V::select(sub, V::set1(C::denorm_shift), V::zero()));
    auto m = V::from_bits(V::ior(V::iand(u, V::iset1(C::mant_mask)), V::iset1(C::one_bits)));
    const auto big = V::gt(m, V::set1(C::sqrt2));
    m = V::select(big, V::mul(m, V::set1(T(0.5))), m);
    e = V::select(big, V::add(e, one), e);
    /// log(1+f) = f - (f^2/2 - s (f^2/2 + R(s^2))), s = f/(2+f), R the atanh series tail.
    const auto f = V::sub(m, one);
    const auto s = V::div(f, V::add(f, V::set1(T(2))));
    const auto z = V::mul(s, s);
    constexpr T c_top = static_cast<T>(2.0 / (2 * C::log_terms + 1));
    const auto R = V::mul(horner_atanh<V, C::log_terms - 1>(V::set1(c_top), z), z);
    const auto hfsq = V::mul(V::set1(T(0.5)), V::mul(f, f));
    const auto l1p = V::sub(f, V::fnma(s, V::add(hfsq, R), hfsq));
    auto y = V::fma(e, V::set1(C::ln2_hi), V::fma(e, V::set1(C::ln2_lo), l1p));
    y = V::select(V::eq(x, V::set1(inf)), x, y);
    y = V::select(V::eq(x, V::zero()), V::set1(-inf), y);
    y = V::select(V::lt(x, V::zero()), V::set1(std::numeric_limits<T>::quiet_NaN()), y);
    return V::select(V::isnan(x), V::add(x, x), y);
}

template <class V> TAPIR_ALWAYS_INLINE typename V::reg tanh_v(const typename V::reg& x) {
    using T = typename V::value_type;
    using C = math_consts<T>;
    const auto sign = V::iand(V::bits(x), V::iset1(C::sign_mask));
    auto a = V::from_bits(V::ixor(V::bits(x), sign));
    a = V::min(a, V::set1(C::tanh_clamp));
    const auto em = expm1_pos_v<V>(V::add(a, a));
    const auto t = V::div(em, V::add(em, V::set1(T(2))));
    const auto y = V::from_bits(V::ior(V::bits(t), sign));
    return V::select(V::isnan(x), V::add(x, x), y);
}

template <class V> TAPIR_ALWAYS_INLINE typename V::reg sigmoid_v(const typename V::reg& x) {
    using T = typename V::value_type;
    using C = math_consts<T>;
    /// e = exp(-|x|) never overflows: 1/(1+e) for x >= 0, e/(1+e) for x < 0 (exact tails, no NaN).
    const auto nega = V::from_bits(V::ior(V::bits(x), V::iset1(C::sign_mask)));
    const auto e = exp_v<V>(nega);
    const auto d = V::add(V::set1(T(1)), e);
    const auto num = V::select(V::ge(x, V::zero()), V::set1(T(1)), e);
    const auto y = V::div(num, d);
    return V::select(V::isnan(x), V::add(x, x), y);
}

/// Elementwise y = F(x) over arrays; out may alias x.
template <class T, class F> struct map1_kernel {
    using value_type = T;
    template <class V> static TAPIR_ALWAYS_INLINE void run(const T* x, T* out, std::size_t n) {
        constexpr std::size_t W = V::W;
        std::size_t i = 0;
        for (; i + 2 * W <= n; i += 2 * W) {
            const auto a = V::load(x + i);
            const auto b = V::load(x + i + W);
            V::store(out + i, F::template apply<V>(a));
            V::store(out + i + W, F::template apply<V>(b));
        }
        for (; i + W <= n; i += W) V::store(out + i, F::template apply<V>(V::load(x + i)));
        if (i < n) V::store_partial(out + i, F::template apply<V>(V::load_partial(x + i, n - i)), n - i);
    }
};

struct exp_f {
    template <class V> static TAPIR_ALWAYS_INLINE typename V::reg apply(const typename V::reg& x) { return exp_v<V>(x); }
};
struct log_f {
    template <class V> static TAPIR_ALWAYS_INLINE typename V::reg apply(const typename V::reg& x) { return log_v<V>(x); }
};
struct tanh_f {
    template <class V> static TAPIR_ALWAYS_INLINE typename V::reg apply(const typename V::reg& x) { return tanh_v<V>(x); }
};
struct sigmoid_f {
    template <class V> static TAPIR_ALWAYS_INLINE typename V::reg apply(const typename V::reg& x) {
        return sigmoid_v<V>(x);
    }
};

} // namespace detail

/// The constants of the polynomial kernels above (deploy/codegen.hpp writes the same operations
/// out as text, with these numbers).
template <class T> using math_constants = detail::math_consts<T>;
/// 1/k! rounded to T, as the exp polynomial's Horner steps use it.
template <class T> constexpr T inv_factorial(int k) { return detail::inv_factorial<T>(k); }

} // namespace tapir::simd

TAPIR_SIMD_DIAG_POP
// ---- end tapir/simd/vmath.hpp ----

namespace tapir {

/// Activation fused into a dense node.
enum class Activation : std::uint8_t { none, relu, leaky_relu, elu, tanh, sigmoid, softplus };

inline const char* activation_name(Activation a) noexcept {
    switch (a) {
    case Activation::none: return "linear";
    case Activation::relu: return "relu";
    case Activation::leaky_relu: return "leaky_relu";
    case Activation::elu: return "elu";
    case Activation::tanh: return "tanh";
    case Activation::sigmoid: return "sigmoid";
    case Activation::softplus: return "softplus";
    }
    return "?";
}

} // namespace tapir

TAPIR_SIMD_DIAG_PUSH

namespace tapir::simd {
namespace detail {

/// f applied lane by lane through memory: the activations whose only definition is libm's
/// (expm1, log1p), identical on every instruction set.
template <class V, class F> TAPIR_ALWAYS_INLINE typename V::reg lanewise(const typename V::reg& x, F f) {
    typename V::value_type t[V::W];
    V::store(t, x);
    for (std::size_t l = 0; l < V::W; ++l) t[l] = f(t[l]);
    return V::load(t);
}
template <class V, class F>
TAPIR_ALWAYS_INLINE typename V::reg lanewise2(const typename V::reg& x, const typename V::reg& y, F f) {
    typename V::value_type a[V::W], b[V::W];
    V::store(a, x);
    V::store(b, y);
    for (std::size_t l = 0; l < V::W; ++l) a[l] = f(a[l], b[l]);
    return V::load(a);
}

} // namespace detail

/// act(z) on one register of wrapper V (alpha: the leaky slope, the ELU scale).
/// relu is max(0, z): NaN stays NaN, -0 stays -0 (the x86 maxps rule every wrapper follows).
template <Activation A, class V>
TAPIR_ALWAYS_INLINE typename V::reg activation_value(const typename V::reg& z, typename V::value_type alpha) {
    using T = typename V::value_type;
    if constexpr (A == Activation::none) {
        (void)alpha;
        return z;
    } else if constexpr (A == Activation::relu) {
        (void)alpha;
        return V::max(V::zero(), z);
    } else if constexpr (A == Activation::leaky_relu) {
        return V::select(V::gt(z, V::zero()), z, V::mul(V::set1(alpha), z));
    } else if constexpr (A == Activation::elu) {
        return detail::lanewise<V>(z, [alpha](T v) { return v > T(0) ? v : alpha * std::expm1(v); });
    } else if constexpr (A == Activation::tanh) {
        (void)alpha;
        return detail::tanh_v<V>(z);
    } else if constexpr (A == Activation::sigmoid) {
        (void)alpha;
        return detail::sigmoid_v<V>(z);
    } else {
        static_assert(A == Activation::softplus, "activation_value: unknown activation");
        (void)alpha;
        return detail::lanewise<V>(z, [](T v) { return (v > T(0) ? v : T(0)) + std::log1p(std::exp(-std::abs(v))); });
    }
}

/// g * act'(z), written with the activation's output y = act(z) (softplus: sigmoid(z) = 1 - e^-y).
template <Activation A, class V>
TAPIR_ALWAYS_INLINE typename V::reg activation_grad(const typename V::reg& g, const typename V::reg& y,
                                                    typename V::value_type alpha) {
    using T = typename V::value_type;
    if constexpr (A == Activation::none) {
        (void)y;
        (void)alpha;
        return g;
    } else if constexpr (A == Activation::relu) {
        (void)alpha;
        return V::select(V::gt(y, V::zero()), g, V::zero());
    } else if constexpr (A == Activation::leaky_relu) {
        return V::select(V::gt(y, V::zero()), g, V::mul(V::set1(alpha), g));
    } else if constexpr (A == Activation::elu) {
        return V::select(V::gt(y, V::zero()), g, V::mul(g, V::add(y, V::set1(alpha))));
    } else if constexpr (A == Activation::tanh) {
        (void)alpha;
        return V::mul(g, V::sub(V::set1(T(1)), V::mul(y, y)));
    } else if constexpr (A == Activation::sigmoid) {
        (void)alpha;
        return V::mul(V::mul(g, y), V::sub(V::set1(T(1)), y));
    } else {
        static_assert(A == Activation::softplus, "activation_grad: unknown activation");
        (void)alpha;
        return detail::lanewise2<V>(g, y, [](T gi, T yi) { return -gi * std::expm1(-yi); });
    }
}

namespace detail {

/// Calls F::template apply<A>() with the run-time activation turned into a compile-time one.
template <class F, class... Args> TAPIR_ALWAYS_INLINE auto with_activation(Activation a, Args&&... args) {
    switch (a) {
    case Activation::relu: return F::template apply<Activation::relu>(args...);
    case Activation::leaky_relu: return F::template apply<Activation::leaky_relu>(args...);
    case Activation::elu: return F::template apply<Activation::elu>(args...);
    case Activation::tanh: return F::template apply<Activation::tanh>(args...);
    case Activation::sigmoid: return F::template apply<Activation::sigmoid>(args...);
    case Activation::softplus: return F::template apply<Activation::softplus>(args...);
    case Activation::none: break;
    }
    return F::template apply<Activation::none>(args...);
}

/// out = act(x) over an array (out may alias x).
template <class T, Activation A> struct activation_kernel {
    using value_type = T;
    template <class V> static TAPIR_ALWAYS_INLINE void run(const T* x, T* out, std::size_t n, T alpha) {
        constexpr std::size_t W = V::W;
        std::size_t i = 0;
        for (; i + 2 * W <= n; i += 2 * W) {
            const auto a = V::load(x + i);
            const auto b = V::load(x + i + W);
            V::store(out + i, activation_value<A, V>(a, alpha));
            V::store(out + i + W, activation_value<A, V>(b, alpha));
        }
        for (; i + W <= n; i += W) V::store(out + i, activation_value<A, V>(V::load(x + i), alpha));
        if (i < n) V::store_partial(out + i, activation_value<A, V>(V::load_partial(x + i, n - i), alpha), n - i);
    }
};

/// out = g * act'(z) from y = act(z) over arrays (out may alias g or y).
template <class T, Activation A> struct activation_grad_kernel {
    using value_type = T;
    template <class V> static TAPIR_ALWAYS_INLINE void run(const T* g, const T* y, T* out, std::size_t n, T alpha) {
        constexpr std::size_t W = V::W;
        std::size_t i = 0;
        for (; i + 4 * W <= n; i += 4 * W) {
            const auto g0 = V::load(g + i), g1 = V::load(g + i + W), g2 = V::load(g + i + 2 * W), g3 = V::load(g + i + 3 * W);
            const auto y0 = V::load(y + i), y1 = V::load(y + i + W), y2 = V::load(y + i + 2 * W), y3 = V::load(y + i + 3 * W);
            V::store(out + i, activation_grad<A, V>(g0, y0, alpha));
            V::store(out + i + W, activation_grad<A, V>(g1, y1, alpha));
            V::store(out + i + 2 * W, activation_grad<A, V>(g2, y2, alpha));
            V::store(out + i + 3 * W, activation_grad<A, V>(g3, y3, alpha));
        }
        for (; i + W <= n; i += W) V::store(out + i, activation_grad<A, V>(V::load(g + i), V::load(y + i), alpha));
        if (i < n) {
            const std::size_t r = n - i;
            V::store_partial(out + i, activation_grad<A, V>(V::load_partial(g + i, r), V::load_partial(y + i, r), alpha), r);
        }
    }
};

struct activate_on_f {
    template <Activation A, class T> static void apply(isa which, const T* x, T* out, std::size_t n, T alpha) {
        dispatch_to<activation_kernel<T, A>>(which, x, out, n, alpha);
    }
};
struct activation_grad_f {
    template <Activation A, class T>
    static void apply(isa which, const T* g, const T* y, T* out, std::size_t n, T alpha) {
        /// tanh's 1 - y*y on the scalar family: on an FMA target the compiler may contract it in
        /// vector code (GNU mode's -ffp-contract=fast), which would change the tape's bits. The
        /// other derivatives have no multiply feeding an add and give the same bits on every family.
        dispatch_to<activation_grad_kernel<T, A>>(A == Activation::tanh ? isa::scalar : which, g, y, out, n, alpha);
    }
};
template <bool Fused> struct activation_one_f {
    template <Activation A, class T> static TAPIR_ALWAYS_INLINE T apply(T z, T alpha) {
        return activation_value<A, vscalar<T, Fused>>(z, alpha);
    }
};

} // namespace detail

/// out[i] = act(x[i]) on the instruction set `which` (unchecked: see dispatch_to); out may alias x.
template <class T> void activate_on(isa which, Activation a, const T* x, T* out, std::size_t n, T alpha = T(0)) {
    detail::with_activation<detail::activate_on_f>(a, which, x, out, n, alpha);
}
/// out[i] = g[i] act'(z[i]) from the outputs y[i] = act(z[i]), on the instruction set `which`
/// (tanh's on the scalar family; unchecked, see dispatch_to); out may alias g or y.
template <class T>
void activation_backward_on(isa which, Activation a, const T* g, const T* y, T* out, std::size_t n, T alpha = T(0)) {
    detail::with_activation<detail::activation_grad_f>(a, which, g, y, out, n, alpha);
}
/// act(z) for one value: the scalar family (Fused as in vscalar: the default is this build's
/// scalar kernels; true reproduces the FMA kernel families lane for lane).
template <class T, bool Fused = (TAPIR_SIMD_SCALAR_FUSED != 0)>
TAPIR_ALWAYS_INLINE T activation_scalar(Activation a, T z, T alpha) noexcept {
    return detail::with_activation<detail::activation_one_f<Fused>>(a, z, alpha);
}

} // namespace tapir::simd

TAPIR_SIMD_DIAG_POP
// ---- end tapir/simd/activation.hpp ----
// ---- begin tapir/simd/arch.hpp ----
/// The active kernel family: TAPIR_SIMD (read once), set_active_isa, the GEMM thread count, and
/// simd::dispatch, which runs a kernel on the active family. Like all of simd/, this header builds
/// with -fno-exceptions -fno-rtti: its two checking entry points (parse_isa, which active_isa
/// uses for TAPIR_SIMD, and set_active_isa) raise through TAPIR_THROW.

#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <string>
#include <thread>


namespace tapir::simd {

namespace detail {

/// -1 until the first call of active_isa() reads TAPIR_SIMD.
inline std::atomic<int>& active_slot() noexcept {
    static std::atomic<int> slot{-1};
    return slot;
}

inline std::atomic<unsigned>& threads_slot() noexcept {
    static std::atomic<unsigned> n{1};
    return n;
}

} // namespace detail

/// An instruction set from its name (scalar|avx2|avx512|neon, or auto / empty for detected_isa()),
/// as TAPIR_SIMD gives it; raises value_error (TAPIR_THROW) for an unknown or unsupported one.
inline isa parse_isa(const char* v) {
    const std::string s(v);
    isa want;
    if (s.empty() || s == "auto") return detected_isa();
    if (s == "scalar") want = isa::scalar;
    else if (s == "avx2") want = isa::avx2;
    else if (s == "avx512") want = isa::avx512;
    else if (s == "neon") want = isa::neon;
    else
        TAPIR_THROW(value_error("TAPIR_SIMD='" + s + "' is not an instruction set (expected scalar, avx2, avx512, neon or auto)"));
    if (!isa_supported(want))
        TAPIR_THROW(value_error("TAPIR_SIMD='" + s + "': this CPU or build does not support " + isa_name(want) +
                          " (best available: " + isa_name(detected_isa()) + ")"));
    return want;
}

/// The kernel family in use: TAPIR_SIMD if set (scalar|avx2|avx512|neon|auto), else detected_isa().
inline isa active_isa() {
    const int v = detail::active_slot().load(std::memory_order_relaxed);
    if (TAPIR_LIKELY(v >= 0)) return static_cast<isa>(v);
    const char* env = std::getenv("TAPIR_SIMD");
    const isa chosen = env ? parse_isa(env) : detected_isa();
    detail::active_slot().store(static_cast<int>(chosen), std::memory_order_relaxed);
    return chosen;
}

/// Forces a kernel family (tests, benchmarks). Throws value_error if the CPU or build lacks it.
inline void set_active_isa(isa i) {
    if (!isa_supported(i))
        TAPIR_THROW(value_error(std::string("set_active_isa: this CPU or build does not support ") + isa_name(i) +
                                " (best available: " + isa_name(detected_isa()) + ")"));
    detail::active_slot().store(static_cast<int>(i), std::memory_order_relaxed);
}

/// Threads used by large GEMMs (default 1). 0 means std::thread::hardware_concurrency().
/// Results are bitwise identical for every thread count.
inline void set_num_threads(unsigned n) {
    if (n == 0) n = std::thread::hardware_concurrency();
    detail::threads_slot().store(n == 0 ? 1u : n, std::memory_order_relaxed);
}

inline unsigned num_threads() noexcept { return detail::threads_slot().load(std::memory_order_relaxed); }

/// Runs the kernel K (see dispatch_to in vec.hpp) on the active instruction set (active_isa()).
template <class K, class... A> inline auto dispatch(A... args) { return dispatch_to<K>(active_isa(), args...); }

} // namespace tapir::simd
// ---- end tapir/simd/arch.hpp ----
// ---- begin tapir/simd/elementwise.hpp ----
/// Vectorised elementwise ops and reductions used by the tape. Arrays are contiguous; an output may
/// be the same array as an input (exact aliasing), not a shifted view of it.

#include <cstddef>

// ---- begin tapir/simd/math.hpp ----
/// Vectorised exp, log, tanh and sigmoid over arrays on the active instruction set; the kernels
/// themselves (one register of any wrapper) are in vmath.hpp.

#include <cstddef>


TAPIR_SIMD_DIAG_PUSH

namespace tapir::simd {

/// out[i] = e^x[i]. Max error 1.5 ulp (float and double, every ISA), gradual underflow included;
/// exp(x) = +inf above the overflow threshold, 0 below the underflow one, NaN propagates.
template <class T> void exp(const T* x, T* out, std::size_t n) {
    dispatch<detail::map1_kernel<T, detail::exp_f>>(x, out, n);
}
/// out[i] = ln x[i]. Max error 1.5 ulp; denormal inputs are rescaled exactly; log(0) = -inf,
/// log(x<0) = NaN, log(+inf) = +inf.
template <class T> void log(const T* x, T* out, std::size_t n) {
    dispatch<detail::map1_kernel<T, detail::log_f>>(x, out, n);
}
/// out[i] = tanh x[i]. Max error 3 ulp; odd, exactly +-1 for |x| >= 10 (float) / 20 (double).
template <class T> void tanh(const T* x, T* out, std::size_t n) {
    dispatch<detail::map1_kernel<T, detail::tanh_f>>(x, out, n);
}
/// out[i] = 1/(1+e^-x[i]). Max error 3 ulp; tends to exactly 1 and to the (denormal) e^x tail,
/// never NaN for finite or infinite input.
template <class T> void sigmoid(const T* x, T* out, std::size_t n) {
    dispatch<detail::map1_kernel<T, detail::sigmoid_f>>(x, out, n);
}

/// Compiled once per program under TAPIR_EXTERN_TEMPLATES, like gemm() (see simd/gemm.hpp).
#define TAPIR_MATH_INSTANTIATIONS(X, T)                                                                 \
    X void exp<T>(const T*, T*, std::size_t);                                                           \
    X void log<T>(const T*, T*, std::size_t);                                                           \
    X void tanh<T>(const T*, T*, std::size_t);                                                          \
    X void sigmoid<T>(const T*, T*, std::size_t);
#if defined(TAPIR_INSTANTIATE_KERNELS)
TAPIR_MATH_INSTANTIATIONS(template, float)
TAPIR_MATH_INSTANTIATIONS(template, double)
#elif defined(TAPIR_EXTERN_TEMPLATES)
TAPIR_MATH_INSTANTIATIONS(extern template, float)
TAPIR_MATH_INSTANTIATIONS(extern template, double)
#endif
#undef TAPIR_MATH_INSTANTIATIONS

} // namespace tapir::simd

TAPIR_SIMD_DIAG_POP
// ---- end tapir/simd/math.hpp ----

TAPIR_SIMD_DIAG_PUSH

namespace tapir::simd {
namespace detail {

/// out = F(a, b) lane-wise.
template <class T, class F> struct map2_kernel {
    using value_type = T;
    template <class V> static TAPIR_ALWAYS_INLINE void run(const T* a, const T* b, T* out, std::size_t n) {
        constexpr std::size_t W = V::W;
        std::size_t i = 0;
        for (; i + 4 * W <= n; i += 4 * W) {
            const auto a0 = V::load(a + i), a1 = V::load(a + i + W), a2 = V::load(a + i + 2 * W),
                       a3 = V::load(a + i + 3 * W);
            const auto b0 = V::load(b + i), b1 = V::load(b + i + W), b2 = V::load(b + i + 2 * W),
                       b3 = V::load(b + i + 3 * W);
            V::store(out + i, F::template apply<V>(a0, b0));
            V::store(out + i + W, F::template apply<V>(a1, b1));
            V::store(out + i + 2 * W, F::template apply<V>(a2, b2));
            V::store(out + i + 3 * W, F::template apply<V>(a3, b3));
        }
        for (; i + W <= n; i += W) V::store(out + i, F::template apply<V>(V::load(a + i), V::load(b + i)));
        if (i < n) {
            const std::size_t r = n - i;
            V::store_partial(out + i, F::template apply<V>(V::load_partial(a + i, r), V::load_partial(b + i, r)), r);
        }
    }
};

/// out = F(a, s) with a broadcast scalar s.
template <class T, class F> struct map_scalar_kernel {
    using value_type = T;
    template <class V> static TAPIR_ALWAYS_INLINE void run(const T* a, T s, T* out, std::size_t n) {
        constexpr std::size_t W = V::W;
        const auto sv = V::set1(s);
        std::size_t i = 0;
        for (; i + 2 * W <= n; i += 2 * W) {
            const auto a0 = V::load(a + i), a1 = V::load(a + i + W);
            V::store(out + i, F::template apply<V>(a0, sv));
            V::store(out + i + W, F::template apply<V>(a1, sv));
        }
        for (; i + W <= n; i += W) V::store(out + i, F::template apply<V>(V::load(a + i), sv));
        if (i < n) V::store_partial(out + i, F::template apply<V>(V::load_partial(a + i, n - i), sv), n - i);
    }
};

/// The four lane-wise arithmetic operations as map2/map_scalar functors.
enum class arith_op { add, sub, mul, div };
template <arith_op Op>
struct arith_f {
    template <class V> static TAPIR_ALWAYS_INLINE typename V::reg apply(const typename V::reg& a, const typename V::reg& b) {
        if constexpr (Op == arith_op::add) return V::add(a, b);
        else if constexpr (Op == arith_op::sub) return V::sub(a, b);
        else if constexpr (Op == arith_op::mul) return V::mul(a, b);
        else return V::div(a, b);
    }
};
using add_f = arith_f<arith_op::add>;
using sub_f = arith_f<arith_op::sub>;
using mul_f = arith_f<arith_op::mul>;
using div_f = arith_f<arith_op::div>;

template <class T> struct axpy_kernel {
    using value_type = T;
    template <class V> static TAPIR_ALWAYS_INLINE void run(T alpha, const T* x, T* y, std::size_t n) {
        constexpr std::size_t W = V::W;
        const auto av = V::set1(alpha);
        std::size_t i = 0;
        for (; i + 2 * W <= n; i += 2 * W) {
            const auto x0 = V::load(x + i), x1 = V::load(x + i + W);
            const auto y0 = V::load(y + i), y1 = V::load(y + i + W);
            V::store(y + i, V::fma(av, x0, y0));
            V::store(y + i + W, V::fma(av, x1, y1));
        }
        for (; i + W <= n; i += W) V::store(y + i, V::fma(av, V::load(x + i), V::load(y + i)));
        if (i < n) V::store_partial(y + i, V::fma(av, V::load_partial(x + i, n - i), V::load_partial(y + i, n - i)), n - i);
    }
};

/// sum (Dot = false) or dot product (Dot = true) with four independent vector accumulators.
template <class T, bool Dot> struct reduce_kernel {
    using value_type = T;
    template <class V> static TAPIR_ALWAYS_INLINE typename V::reg term(const T* a, const T* b, std::size_t i) {
        if constexpr (Dot) {
            return V::mul(V::load(a + i), V::load(b + i));
        } else {
            (void)b;
            return V::load(a + i);
        }
    }
    template <class V> static TAPIR_ALWAYS_INLINE T run(const T* a, const T* b, std::size_t n) {
        constexpr std::size_t W = V::W;
        auto s0 = V::zero(), s1 = V::zero(), s2 = V::zero(), s3 = V::zero();
        std::size_t i = 0;
        for (; i + 4 * W <= n; i += 4 * W) {
            if constexpr (Dot) {
                s0 = V::fma(V::load(a + i), V::load(b + i), s0);
                s1 = V::fma(V::load(a + i + W), V::load(b + i + W), s1);
                s2 = V::fma(V::load(a + i + 2 * W), V::load(b + i + 2 * W), s2);
                s3 = V::fma(V::load(a + i + 3 * W), V::load(b + i + 3 * W), s3);
            } else {
                s0 = V::add(s0, V::load(a + i));
                s1 = V::add(s1, V::load(a + i + W));
                s2 = V::add(s2, V::load(a + i + 2 * W));
                s3 = V::add(s3, V::load(a + i + 3 * W));
            }
        }
        for (; i + W <= n; i += W) s0 = V::add(s0, term<V>(a, b, i));
        if (i < n) {
            const auto x = V::load_partial(a + i, n - i);
            if constexpr (Dot) {
                s1 = V::fma(x, V::load_partial(b + i, n - i), s1);
            } else {
                s1 = V::add(s1, x);
            }
        }
        return V::hsum(V::add(V::add(s0, s1), V::add(s2, s3)));
    }
};

/// C[i, :] += row for i < m.
template <class T> struct add_row_kernel {
    using value_type = T;
    template <class V>
    static TAPIR_ALWAYS_INLINE void run(T* c, std::size_t m, std::size_t n, std::size_t ldc, const T* row) {
        if (n == 1) { // a one-output layer's bias: one add per row, not one kernel call per row
            const T r = row[0];
            for (std::size_t i = 0; i < m; ++i) c[i * ldc] += r;
            return;
        }
        for (std::size_t i = 0; i < m; ++i) map2_kernel<T, add_f>::template run<V>(c + i * ldc, row, c + i * ldc, n);
    }
};

/// out[j] = sum_i G[i, j], column blocks of 4 vectors kept in registers across all rows.
template <class T> struct sum_rows_kernel {
    using value_type = T;
    template <class V>
    static TAPIR_ALWAYS_INLINE void run(const T* g, std::size_t m, std::size_t n, std::size_t ldg, T* out) {
        constexpr std::size_t W = V::W;
        std::size_t j = 0;
        for (; j + 4 * W <= n; j += 4 * W) {
            auto s0 = V::zero(), s1 = V::zero(), s2 = V::zero(), s3 = V::zero();
            for (std::size_t i = 0; i < m; ++i) {
                const T* p = g + i * ldg + j;
                s0 = V::add(s0, V::load(p));
                s1 = V::add(s1, V::load(p + W));
                s2 = V::add(s2, V::load(p + 2 * W));
                s3 = V::add(s3, V::load(p + 3 * W));
            }
            V::store(out + j, s0);
            V::store(out + j + W, s1);
            V::store(out + j + 2 * W, s2);
            V::store(out + j + 3 * W, s3);
        }
        for (; j + W <= n; j += W) {
            auto s = V::zero();
            for (std::size_t i = 0; i < m; ++i) s = V::add(s, V::load(g + i * ldg + j));
            V::store(out + j, s);
        }
        if (j < n) {
            const std::size_t r = n - j;
            auto s = V::zero();
            for (std::size_t i = 0; i < m; ++i) s = V::add(s, V::load_partial(g + i * ldg + j, r));
            V::store_partial(out + j, s, r);
        }
    }
};

} // namespace detail

template <class T> void add(const T* a, const T* b, T* out, std::size_t n) {
    dispatch<detail::map2_kernel<T, detail::add_f>>(a, b, out, n);
}
template <class T> void sub(const T* a, const T* b, T* out, std::size_t n) {
    dispatch<detail::map2_kernel<T, detail::sub_f>>(a, b, out, n);
}
template <class T> void mul(const T* a, const T* b, T* out, std::size_t n) {
    dispatch<detail::map2_kernel<T, detail::mul_f>>(a, b, out, n);
}
template <class T> void div(const T* a, const T* b, T* out, std::size_t n) {
    dispatch<detail::map2_kernel<T, detail::div_f>>(a, b, out, n);
}
template <class T> void add_scalar(const T* a, T s, T* out, std::size_t n) {
    dispatch<detail::map_scalar_kernel<T, detail::add_f>>(a, s, out, n);
}
template <class T> void mul_scalar(const T* a, T s, T* out, std::size_t n) {
    dispatch<detail::map_scalar_kernel<T, detail::mul_f>>(a, s, out, n);
}
/// y += alpha * x (fused multiply-add on SIMD paths).
template <class T> void axpy(T alpha, const T* x, T* y, std::size_t n) {
    dispatch<detail::axpy_kernel<T>>(alpha, x, y, n);
}
/// out = max(0, x); NaN stays NaN (simd/activation.hpp's relu).
template <class T> void relu(const T* x, T* out, std::size_t n) {
    dispatch<detail::activation_kernel<T, Activation::relu>>(x, out, n, T(0));
}
/// out = y > 0 ? g : 0 (y is the relu output; simd/activation.hpp's relu derivative).
template <class T> void relu_backward(const T* g, const T* y, T* out, std::size_t n) {
    dispatch<detail::activation_grad_kernel<T, Activation::relu>>(g, y, out, n, T(0));
}
/// Sum with several independent partial sums: the rounding (not the value) depends on the ISA.
template <class T> T sum(const T* x, std::size_t n) {
    return dispatch<detail::reduce_kernel<T, false>>(x, static_cast<const T*>(nullptr), n);
}
template <class T> T dot(const T* a, const T* b, std::size_t n) {
    return dispatch<detail::reduce_kernel<T, true>>(a, b, n);
}
/// C[i, :] += row[:] for the m rows of a row-major m x n matrix with leading dimension ldc.
template <class T> void add_row(T* c, std::size_t m, std::size_t n, std::size_t ldc, const T* row) {
    dispatch<detail::add_row_kernel<T>>(c, m, n, ldc, row);
}
/// out[j] = sum_i G[i, j]; out is overwritten (zero when m == 0).
template <class T> void sum_rows(const T* g, std::size_t m, std::size_t n, std::size_t ldg, T* out) {
    dispatch<detail::sum_rows_kernel<T>>(g, m, n, ldg, out);
}

/// Compiled once per program under TAPIR_EXTERN_TEMPLATES, like gemm() (see simd/gemm.hpp).
#define TAPIR_ELEMENTWISE_INSTANTIATIONS(X, T)                                                          \
    X void add<T>(const T*, const T*, T*, std::size_t);                                                 \
    X void sub<T>(const T*, const T*, T*, std::size_t);                                                 \
    X void mul<T>(const T*, const T*, T*, std::size_t);                                                 \
    X void div<T>(const T*, const T*, T*, std::size_t);                                                 \
    X void add_scalar<T>(const T*, T, T*, std::size_t);                                                 \
    X void mul_scalar<T>(const T*, T, T*, std::size_t);                                                 \
    X void axpy<T>(T, const T*, T*, std::size_t);                                                       \
    X void relu<T>(const T*, T*, std::size_t);                                                          \
    X void relu_backward<T>(const T*, const T*, T*, std::size_t);                                       \
    X T sum<T>(const T*, std::size_t);                                                                  \
    X T dot<T>(const T*, const T*, std::size_t);                                                        \
    X void add_row<T>(T*, std::size_t, std::size_t, std::size_t, const T*);                            \
    X void sum_rows<T>(const T*, std::size_t, std::size_t, std::size_t, T*);
#if defined(TAPIR_INSTANTIATE_KERNELS)
TAPIR_ELEMENTWISE_INSTANTIATIONS(template, float)
TAPIR_ELEMENTWISE_INSTANTIATIONS(template, double)
#elif defined(TAPIR_EXTERN_TEMPLATES)
TAPIR_ELEMENTWISE_INSTANTIATIONS(extern template, float)
TAPIR_ELEMENTWISE_INSTANTIATIONS(extern template, double)
#endif
#undef TAPIR_ELEMENTWISE_INSTANTIATIONS

} // namespace tapir::simd

TAPIR_SIMD_DIAG_POP
// ---- end tapir/simd/elementwise.hpp ----
// ---- begin tapir/simd/gemm.hpp ----
/// GEMM, C = alpha * op(A) * op(B) + beta * C, row-major, float and double.
/// Goto/BLIS-style: B is packed in KC x NC blocks, A in MC x KC blocks (the transposes are absorbed
/// by the packing), and a register-blocked MR x NR micro-kernel written once over the vector
/// wrappers runs on the packed panels. Threads split C into independent stripes only, so each
/// element's summation order, hence the result, is the same for any thread count.

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <new>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>


TAPIR_SIMD_DIAG_PUSH

namespace tapir::simd {
namespace detail {

/// Register tile (MR rows x NV vectors) and cache blocks (KC depth, MC rows of A, NC columns of B).
template <class V> struct gemm_blocking;

template <class T, bool F> struct gemm_blocking<vscalar<T, F>> {
    static constexpr std::size_t MR = 4, NV = 4, KC = gemm_kc(isa::scalar, sizeof(T)), MC = 64, NC = 1024;
};
#if TAPIR_SIMD_X86
template <> struct gemm_blocking<vavx2<float>> {
    static constexpr std::size_t MR = 6, NV = 2, KC = gemm_kc(isa::avx2, sizeof(float)), MC = 120, NC = 2048;
};
template <> struct gemm_blocking<vavx2<double>> {
    static constexpr std::size_t MR = 6, NV = 2, KC = gemm_kc(isa::avx2, sizeof(double)), MC = 72, NC = 1024;
};
template <> struct gemm_blocking<vavx512<float>> {
    static constexpr std::size_t MR = 8, NV = 2, KC = gemm_kc(isa::avx512, sizeof(float)), MC = 128, NC = 2048;
    /// Unpacked products whose width is a multiple of 64: 4 x 64 tiles (8 loads per 16 FMAs, not 10).
    static constexpr std::size_t MRW = 4, NVW = 4;
};
template <> struct gemm_blocking<vavx512<double>> {
    static constexpr std::size_t MR = 8, NV = 2, KC = gemm_kc(isa::avx512, sizeof(double)), MC = 96, NC = 1024;
};
#endif
#if TAPIR_SIMD_NEON
template <> struct gemm_blocking<vneon<float>> {
    static constexpr std::size_t MR = 8, NV = 3, KC = gemm_kc(isa::neon, sizeof(float)), MC = 96, NC = 1020;
};
template <> struct gemm_blocking<vneon<double>> {
    static constexpr std::size_t MR = 8, NV = 3, KC = gemm_kc(isa::neon, sizeof(double)), MC = 48, NC = 510;
};
#endif

/// Per-thread packing buffer, grown on demand and kept: fresh pages on every call cost more
/// than the packing itself at moderate sizes.
class work_buffer {
public:
    work_buffer() = default;
    work_buffer(const work_buffer&) = delete;
    work_buffer& operator=(const work_buffer&) = delete;
    ~work_buffer() { release(); }
    void* get(std::size_t bytes) {
        if (bytes > cap_) {
            release();
            const std::size_t want = std::max(bytes, cap_ + cap_ / 2);
            p_ = ::operator new(want, std::align_val_t(64));
            cap_ = want;
        }
        return p_;
    }

private:
    void release() noexcept {
        if (p_) ::operator delete(p_, std::align_val_t(64));
        p_ = nullptr;
        cap_ = 0;
    }
    void* p_ = nullptr;
    std::size_t cap_ = 0;
};

inline work_buffer& gemm_buffer() {
    thread_local work_buffer buf;
    return buf;
}

template <class T> struct gemm_args {
    bool ta, tb;
    std::size_t m, n, k;
    T alpha;
    const T* a;
    std::size_t lda;
    const T* b;
    std::size_t ldb;
    T beta;
    T* c;
    std::size_t ldc;
};

constexpr std::size_t round_up(std::size_t x, std::size_t r) { return (x + r - 1) / r * r; }

/// The second tile shape of a blocking (MRW x NVW), or its main one when it has none.
template <class B, class = void> struct wide_tiles {
    static constexpr std::size_t MR = B::MR, NV = B::NV;
};
template <class B> struct wide_tiles<B, std::void_t<decltype(B::NVW)>> {
    static constexpr std::size_t MR = B::MRW, NV = B::NVW;
};

/// Depth of the K blocks: equal-sized blocks no deeper than KC; depends on K only (determinism).
template <std::size_t KC> constexpr std::size_t k_block(std::size_t k) { return gemm_k_block(k, KC); }

/// Elements of T the serial driver needs: one packed A edge panel and one packed B block.
template <class V> constexpr std::size_t gemm_work_elems(std::size_t, std::size_t n, std::size_t k) {
    using B = gemm_blocking<V>;
    constexpr std::size_t NR = B::NV * V::W;
    const std::size_t kc = k_block<B::KC>(k);
    const std::size_t nc = round_up(std::min(n, B::NC), NR);
    return round_up(B::MR * kc, 64) + nc * kc;
}

/// In-register transpose of an N x N block held as N vectors (log2 N stages of two-input shuffles;
/// stage D swaps the off-diagonal D x D sub-blocks). Packing a transposed B with it moves whole
/// vectors: the scalar loop's one store per element cost 1.2 us of a 6 us 128x64x64 NT product.
#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12)
#define TAPIR_GEMM_SHUFFLE 1
template <std::size_t N, std::size_t D, bool Hi> constexpr int transpose_lane(std::size_t l) {
    return static_cast<int>(Hi ? ((l & D) ? N + l : l + D) : ((l & D) ? N + l - D : l));
}
/// Output by reference: these helpers carry no target attribute, and a returned 64-byte vector
/// would draw GCC's ABI note (they are always inlined into the kernels anyway).
template <std::size_t N, std::size_t D, bool Hi, class VT, std::size_t... L>
TAPIR_ALWAYS_INLINE void transpose_shuffle(const VT& a, const VT& b, VT& out, std::index_sequence<L...>) {
    out = __builtin_shufflevector(a, b, transpose_lane<N, D, Hi>(L)...);
}
template <std::size_t N, std::size_t D, class VT> TAPIR_ALWAYS_INLINE void transpose_stage(VT* r) {
#pragma GCC unroll 16
    for (std::size_t i = 0; i < N; ++i)
        if (!(i & D)) {
            const VT a = r[i], b = r[i + D];
            transpose_shuffle<N, D, false>(a, b, r[i], std::make_index_sequence<N>());
            transpose_shuffle<N, D, true>(a, b, r[i + D], std::make_index_sequence<N>());
        }
    if constexpr (D * 2 < N) transpose_stage<N, D * 2>(r);
}
/// The compiler's vector inside a register wrapper (x86 wrappers box it; NEON's is bare).
template <class R> TAPIR_ALWAYS_INLINE auto& raw_vector(R& r) {
    if constexpr (std::is_class<R>::value) return r.v;
    else return r;
}
#else
#define TAPIR_GEMM_SHUFFLE 0
#endif

template <class T> struct gemm_kernel {
    using value_type = T;

    /// How the micro-kernel reads A: a packed MR-row panel (a[p*MR + i]), rows of a row-major A
    /// (a[i*lda + p], rows past the edge clamped to the last valid one), or columns of a transposed
    /// A (a[p*lda + i], full panels only).
    enum class amode { packed, rows, cols };

    /// Clears the MR x NV accumulator block of the micro-kernels.
    template <class V, std::size_t MR, std::size_t NV>
    static TAPIR_ALWAYS_INLINE void zero_acc(typename V::reg (&acc)[MR][NV]) {
#pragma GCC unroll 16
        for (std::size_t i = 0; i < MR; ++i)
#pragma GCC unroll 8
            for (std::size_t j = 0; j < NV; ++j) acc[i][j] = V::zero();
    }

    /// C[mr x nr] = alpha * op(A)[panel] * op(B)[panel] + beta * C, beta == 0: C not read.
    /// B rows are read at stride ldb (NR for packed panels); MaskB reads the last vectors partially.
    /// Every element sees the same operation sequence whatever the variant, so results never depend
    /// on which path (packed or direct, edge or interior) computed them.
    template <class V, std::size_t MR, std::size_t NV, amode AM, bool MaskB>
    static TAPIR_ALWAYS_INLINE void micro(std::size_t kc, const T* a, std::size_t lda, const T* b, std::size_t ldb,
                                          std::size_t mr, std::size_t nr, T alpha, T beta, T* c, std::size_t ldc) {
        constexpr std::size_t W = V::W, NR = NV * W;
        using R = typename V::reg;
        R acc[MR][NV];
        zero_acc<V>(acc);
        std::size_t bcnt[NV];
#pragma GCC unroll 8
        for (std::size_t j = 0; j < NV; ++j) bcnt[j] = nr > j * W ? std::min(W, nr - j * W) : 0;
        const T* ar[AM == amode::rows ? MR : 1];
        if constexpr (AM == amode::rows) {
#pragma GCC unroll 16
            for (std::size_t i = 0; i < MR; ++i) ar[i] = a + std::min(i, mr - 1) * lda;
        } else {
            ar[0] = a;
        }
        for (std::size_t p = 0; p < kc; ++p) {
            R bv[NV];
#pragma GCC unroll 8
            for (std::size_t j = 0; j < NV; ++j) {
                if constexpr (MaskB) {
                    bv[j] = bcnt[j] == W ? V::load(b + j * W) : bcnt[j] ? V::load_partial(b + j * W, bcnt[j]) : V::zero();
                } else {
                    bv[j] = V::load(b + j * W);
                }
            }
#pragma GCC unroll 16
            for (std::size_t i = 0; i < MR; ++i) {
                R av;
                if constexpr (AM == amode::rows) {
                    av = V::set1(ar[i][p]);
                } else {
                    av = V::set1(a[i]);
                }
#pragma GCC unroll 8
                for (std::size_t j = 0; j < NV; ++j) acc[i][j] = V::fma(av, bv[j], acc[i][j]);
            }
            if constexpr (AM == amode::packed) a += MR;
            if constexpr (AM == amode::cols) a += lda;
            b += ldb;
        }
        (void)ar;
        // alpha * acc + beta * C; alpha == 1 and beta in {0, 1} skip operations that are exact anyway.
        // Two store variants keep the code size (and compile time) down: mode 1 with alpha = 1 is
        // exactly acc, and mode 4 with beta = 1 is exactly acc + C or alpha acc + C (one rounding).
        const bool full = mr == MR && nr == NR;
        if (beta == T(0))
            store_tile<V, MR, NV, 1>(acc, alpha, beta, c, ldc, mr, bcnt, full);
        else
            store_tile<V, MR, NV, 4>(acc, alpha, beta, c, ldc, mr, bcnt, full);
    }

    /// micro() for the commonest small case: a full MR x NR tile, A read in place by rows, B in place.
    /// One A base pointer (not MR row pointers) and no edge bookkeeping: at 32^3 and 64^3 the
    /// general kernel's per-tile setup cost ~7% of the time. Same operation sequence per element.
    /// Epi (only with alpha = 1, beta = 0): 0 none, 1 C = acc + bias, 2 C = max(0, acc + bias): a
    /// dense layer's bias and ReLU while the tile is in registers, the same two roundings as
    /// add_row() and relu() after gemm(), without their passes over C.
    template <class V, std::size_t MR, std::size_t NV, int Epi = 0>
    static TAPIR_ALWAYS_INLINE void micro_full(std::size_t kc, const T* a, std::size_t lda, const T* b,
                                               std::size_t ldb, T alpha, T beta, T* c, std::size_t ldc,
                                               const T* bias = nullptr) {
        constexpr std::size_t W = V::W;
        using R = typename V::reg;
        R acc[MR][NV];
        zero_acc<V>(acc);
        for (std::size_t p = 0; p < kc; ++p) {
            R bv[NV];
#pragma GCC unroll 8
            for (std::size_t j = 0; j < NV; ++j) bv[j] = V::load(b + j * W);
#pragma GCC unroll 16
            for (std::size_t i = 0; i < MR; ++i) {
                const R av = V::set1(a[i * lda + p]);
#pragma GCC unroll 8
                for (std::size_t j = 0; j < NV; ++j) acc[i][j] = V::fma(av, bv[j], acc[i][j]);
            }
            b += ldb;
        }
        if constexpr (Epi != 0) {
            (void)alpha;
            (void)beta;
            R bv[NV];
#pragma GCC unroll 8
            for (std::size_t j = 0; j < NV; ++j) bv[j] = V::load(bias + j * W);
#pragma GCC unroll 16
            for (std::size_t i = 0; i < MR; ++i)
#pragma GCC unroll 8
                for (std::size_t j = 0; j < NV; ++j) {
                    R v = V::add(acc[i][j], bv[j]);
                    if constexpr (Epi == 2) v = V::max(V::zero(), v);
                    V::store(c + i * ldc + j * W, v);
                }
            return;
        }
        std::size_t bcnt[NV];
#pragma GCC unroll 8
        for (std::size_t j = 0; j < NV; ++j) bcnt[j] = W;
        if (beta == T(0))
            store_tile<V, MR, NV, 1>(acc, alpha, beta, c, ldc, MR, bcnt, true);
        else
            store_tile<V, MR, NV, 4>(acc, alpha, beta, c, ldc, MR, bcnt, true);
    }

    /// No lambdas in kernels: a lambda carries no target attribute, so the wrappers would not inline.
    template <class V, int Mode>
    static TAPIR_ALWAYS_INLINE typename V::reg combine(const typename V::reg& x, const typename V::reg& old,
                                                       const typename V::reg& al, const typename V::reg& be,
                                                       bool unit) {
        (void)old;
        (void)unit;
        (void)al;
        (void)be;
        if constexpr (Mode == 0) return x;
        if constexpr (Mode == 1) return unit ? x : V::mul(al, x);
        if constexpr (Mode == 2) return V::add(x, old);
        if constexpr (Mode == 3) return V::fma(al, x, old);
        if constexpr (Mode == 4) return V::fma(al, x, V::mul(be, old));
    }

    /// C tile update, Mode: 0 C = acc, 1 C = alpha acc, 2 C = acc + C, 3 C = alpha acc + C,
    /// 4 C = alpha acc + beta C (all FMA-rounded alike, see micro()).
    template <class V, std::size_t MR, std::size_t NV, int Mode>
    static TAPIR_ALWAYS_INLINE void store_tile(const typename V::reg (&acc)[MR][NV], T alpha, T beta, T* c,
                                               std::size_t ldc, std::size_t mr, const std::size_t (&bcnt)[NV],
                                               bool full) {
        constexpr std::size_t W = V::W;
        using R = typename V::reg;
        const R al = V::set1(alpha), be = V::set1(beta);
        const bool unit = alpha == T(1); // alpha * acc == acc exactly: skip the multiply
        if (full) {
#pragma GCC unroll 16
            for (std::size_t i = 0; i < MR; ++i)
#pragma GCC unroll 8
                for (std::size_t j = 0; j < NV; ++j) {
                    T* p = c + i * ldc + j * W;
                    V::store(p, combine<V, Mode>(acc[i][j], Mode >= 2 ? V::load(p) : acc[i][j], al, be, unit));
                }
            return;
        }
        // Edge tiles: unrolled too. A run-time index into acc would force the whole accumulator
        // array to the stack, in the k loop as well (measured 4% slower at 64^3, 8% at 32^3).
#pragma GCC unroll 16
        for (std::size_t i = 0; i < MR; ++i) {
            if (i >= mr) break;
#pragma GCC unroll 8
            for (std::size_t j = 0; j < NV; ++j) {
                T* p = c + i * ldc + j * W;
                if (bcnt[j] == W)
                    V::store(p, combine<V, Mode>(acc[i][j], Mode >= 2 ? V::load(p) : acc[i][j], al, be, unit));
                else if (bcnt[j])
                    V::store_partial(
                        p, combine<V, Mode>(acc[i][j], Mode >= 2 ? V::load_partial(p, bcnt[j]) : acc[i][j], al, be, unit),
                        bcnt[j]);
            }
        }
    }

    /// Packs op(A)[i0 .. i0+mr, p0 .. p0+kc) (mr <= MR) into one MR-row panel, zero-padded.
    template <std::size_t MR>
    static TAPIR_ALWAYS_INLINE void pack_a_panel(const gemm_args<T>& g, std::size_t i0, std::size_t mr,
                                                 std::size_t p0, std::size_t kc, T* TAPIR_RESTRICT d) {
        if (g.ta) {
            const T* s = g.a + p0 * g.lda + i0;
            for (std::size_t p = 0; p < kc; ++p, s += g.lda, d += MR) {
                std::size_t i = 0;
                for (; i < mr; ++i) d[i] = s[i];
                for (; i < MR; ++i) d[i] = T(0);
            }
        } else {
            const T* s = g.a + i0 * g.lda + p0;
            for (std::size_t i = 0; i < MR; ++i) {
                if (i < mr) {
                    const T* si = s + i * g.lda;
                    for (std::size_t p = 0; p < kc; ++p) d[p * MR + i] = si[p];
                } else {
                    for (std::size_t p = 0; p < kc; ++p) d[p * MR + i] = T(0);
                }
            }
        }
    }

    /// Packs op(B)[p0 .. p0+kc, j0 .. j0+nc) into NR-column panels, p-major inside a panel, zero-padded.
    template <class V>
    static TAPIR_ALWAYS_INLINE void pack_b(const gemm_args<T>& g, std::size_t p0, std::size_t kc, std::size_t j0,
                                           std::size_t nc, T* TAPIR_RESTRICT dst) {
        constexpr std::size_t NV = gemm_blocking<V>::NV, W = V::W, NR = NV * W;
        for (std::size_t jr = 0; jr < nc; jr += NR) {
            const std::size_t nr = std::min(NR, nc - jr);
            T* d = dst + jr * kc;
            if (!g.tb) {
                // op(B)(p, j) = b[p * ldb + j]: NR contiguous values per p.
                const T* s = g.b + p0 * g.ldb + j0 + jr;
                if (nr == NR) {
                    for (std::size_t p = 0; p < kc; ++p, s += g.ldb, d += NR)
#pragma GCC unroll 8
                        for (std::size_t j = 0; j < NV; ++j) V::store(d + j * W, V::load(s + j * W));
                } else {
                    for (std::size_t p = 0; p < kc; ++p, s += g.ldb, d += NR) {
                        std::size_t j = 0;
                        for (; j < nr; ++j) d[j] = s[j];
                        for (; j < NR; ++j) d[j] = T(0);
                    }
                }
            } else {
                // op(B)(p, j) = b[j * ldb + p]: columns of op(B) are contiguous rows of B.
                const T* s = g.b + (j0 + jr) * g.ldb + p0;
#if TAPIR_GEMM_SHUFFLE
                if constexpr (W > 1) {
                    if (nr == NR) {
                        using R = typename V::reg;
                        std::size_t p = 0;
                        for (; p + W <= kc; p += W)
#pragma GCC unroll 8
                            for (std::size_t jv = 0; jv < NV; ++jv) {
                                R r[W];
#pragma GCC unroll 16
                                for (std::size_t q = 0; q < W; ++q) r[q] = V::load(s + (jv * W + q) * g.ldb + p);
                                transpose_stage<W, 1>(&raw_vector(r[0]));
#pragma GCC unroll 16
                                for (std::size_t q = 0; q < W; ++q) V::store(d + (p + q) * NR + jv * W, r[q]);
                            }
                        for (std::size_t j = 0; j < NR; ++j)
                            for (std::size_t pp = p; pp < kc; ++pp) d[pp * NR + j] = s[j * g.ldb + pp];
                        continue;
                    }
                }
#endif
                for (std::size_t j = 0; j < NR; ++j) {
                    if (j < nr) {
                        const T* sj = s + j * g.ldb;
                        for (std::size_t p = 0; p < kc; ++p) d[p * NR + j] = sj[p];
                    } else {
                        for (std::size_t p = 0; p < kc; ++p) d[p * NR + j] = T(0);
                    }
                }
            }
        }
    }

    /// Products small enough to read B in place (no packing): its rows then stay in L1/L2 anyway.
    template <class V> static bool direct_b(const gemm_args<T>& g) {
        return !g.tb && g.k <= 256 && g.n <= 512 && g.k * g.n * sizeof(T) <= 128 * 1024;
    }

    /// One MC x nc block of C for one K block: A read in place where it can be, edge panels packed.
    /// B in place (direct) or packed is a run-time flag, not a template one: the tiles of both are
    /// then inlined once per instruction set, not twice (a sixth less GEMM code to compile).
    template <class V>
    static TAPIR_ALWAYS_INLINE void block(bool direct, const gemm_args<T>& g, std::size_t ic, std::size_t mc,
                                          std::size_t jc, std::size_t nc, std::size_t pc, std::size_t kc, T beta,
                                          const T* bsrc, std::size_t ldb, T* apanel) {
        using B = gemm_blocking<V>;
        constexpr std::size_t MR = B::MR, NV = B::NV, NR = NV * V::W;
        for (std::size_t jr = 0; jr < nc; jr += NR) {
            const std::size_t nr = std::min(NR, nc - jr);
            const T* bp = direct ? bsrc + jr : bsrc + jr * kc;
            T* cj = g.c + jc + jr;
            for (std::size_t ir = 0; ir < mc; ir += MR) {
                const std::size_t mr = std::min(MR, mc - ir), i = ic + ir;
                T* cp = cj + i * g.ldc;
                if (!g.ta) {
                    const T* ap = g.a + i * g.lda + pc;
                    if (nr == NR && mr == MR)
                        micro_full<V, MR, NV>(kc, ap, g.lda, bp, ldb, g.alpha, beta, cp, g.ldc);
                    else if (direct && nr < NR)
                        micro<V, MR, NV, amode::rows, true>(kc, ap, g.lda, bp, ldb, mr, nr, g.alpha, beta, cp, g.ldc);
                    else
                        micro<V, MR, NV, amode::rows, false>(kc, ap, g.lda, bp, ldb, mr, nr, g.alpha, beta, cp, g.ldc);
                } else if (mr == MR) {
                    const T* ap = g.a + pc * g.lda + i;
                    if (direct && nr < NR)
                        micro<V, MR, NV, amode::cols, true>(kc, ap, g.lda, bp, ldb, mr, nr, g.alpha, beta, cp, g.ldc);
                    else
                        micro<V, MR, NV, amode::cols, false>(kc, ap, g.lda, bp, ldb, mr, nr, g.alpha, beta, cp, g.ldc);
                } else {
                    pack_a_panel<MR>(g, i, mr, pc, kc, apanel);
                    if (direct && nr < NR)
                        micro<V, MR, NV, amode::packed, true>(kc, apanel, MR, bp, ldb, mr, nr, g.alpha, beta, cp, g.ldc);
                    else
                        micro<V, MR, NV, amode::packed, false>(kc, apanel, MR, bp, ldb, mr, nr, g.alpha, beta, cp, g.ldc);
                }
            }
        }
    }

    /// Serial driver over the whole (sub)problem g; work holds gemm_work_elems<V>(m, n, k) elements,
    /// or is null: then this thread's buffer is used, and only if something needs packing.
    template <class V> static TAPIR_ALWAYS_INLINE void run(const gemm_args<T>* gp, T* work) {
        using B = gemm_blocking<V>;
        const gemm_args<T>& g = *gp;
        const std::size_t kcb = k_block<B::KC>(g.k);
        const bool direct = direct_b<V>(g);
        if (!work && (g.ta || !direct))
            work = static_cast<T*>(gemm_buffer().get(gemm_work_elems<V>(g.m, g.n, g.k) * sizeof(T)));
        T* const apanel = work;
        T* const bbuf = work ? work + round_up(B::MR * kcb, 64) : nullptr;
        for (std::size_t jc = 0; jc < g.n; jc += B::NC) {
            const std::size_t nc = std::min(B::NC, g.n - jc);
            for (std::size_t pc = 0; pc < g.k; pc += kcb) {
                const std::size_t kc = std::min(kcb, g.k - pc);
                const T beta = pc == 0 ? g.beta : T(1);
                const T* bsrc = bbuf;
                std::size_t ldb = B::NV * V::W;
                if (direct) {
                    bsrc = g.b + pc * g.ldb + jc;
                    ldb = g.ldb;
                } else {
                    pack_b<V>(g, pc, kc, jc, nc, bbuf);
                }
                for (std::size_t ic = 0; ic < g.m; ic += B::MC)
                    block<V>(direct, g, ic, std::min(B::MC, g.m - ic), jc, nc, pc, kc, beta, bsrc, ldb, apanel);
            }
        }
    }

    /// Small products made of full tiles only (op(A) = A, op(B) = B read in place, one K block,
    /// M and N multiples of the tile): a lean entry without the general driver's edge and packing
    /// set-up, which costs ~60 cycles per call. False when the product does not fit; then run().
    /// Epi is micro_full's epilogue: 0 C = alpha A B + beta C (gemm), 1 C = A B + bias and
    /// 2 C = max(0, A B + bias) (gemm_bias_act, with alpha = 1 and beta = 0).
    template <int Epi> struct small_tiles {
        using value_type = T;
        template <class V> static TAPIR_ALWAYS_INLINE bool run(const gemm_args<T>* gp, const T* bias = nullptr) {
            using B = gemm_blocking<V>;
            const gemm_args<T>& g = *gp;
            if (!direct_b<V>(g) || g.k > B::KC) return false;
            constexpr std::size_t NRW = wide_tiles<B>::NV * V::W;
            // 4 x 64 tiles only while their B panel stays small: at 128^3 its 32 KB rows, 512 B apart, thrash L1.
            if (wide_tiles<B>::NV != B::NV && g.n % NRW == 0 && g.m % wide_tiles<B>::MR == 0 &&
                g.k * NRW * sizeof(T) <= 16384)
                return tiles<V, wide_tiles<B>::MR, wide_tiles<B>::NV>(g, bias);
            if (g.n % (B::NV * V::W) != 0 || g.m % B::MR != 0) return false;
            return tiles<V, B::MR, B::NV>(g, bias);
        }
        template <class V, std::size_t MR, std::size_t NV>
        static TAPIR_ALWAYS_INLINE bool tiles(const gemm_args<T>& g, const T* bias) {
            for (std::size_t j = 0; j < g.n; j += NV * V::W)
                for (std::size_t i = 0; i < g.m; i += MR)
                    micro_full<V, MR, NV, Epi>(g.k, g.a + i * g.lda, g.lda, g.b + j, g.ldb, g.alpha, g.beta,
                                               g.c + i * g.ldc + j, g.ldc, Epi != 0 ? bias + j : nullptr);
            return true;
        }
    };
    using small = small_tiles<0>;

    /// op(A) = A^T times a vector (n == 1, C contiguous): the weight gradient of a one-output layer.
    /// Rows of C are lanes: one vector load of A per p (A^T's columns are A's rows), and the chain
    /// per element is micro()'s (products commute, K blocks restart alike), so results are the same
    /// bits as the tiled path, which would use 1 lane in 32 here.
    struct gemv_t {
        using value_type = T;
        template <class V> static TAPIR_ALWAYS_INLINE void run(const gemm_args<T>* gp) {
            using B = gemm_blocking<V>;
            using R = typename V::reg;
            constexpr std::size_t W = V::W, U = 4;
            const gemm_args<T>& g = *gp;
            const std::size_t kcb = k_block<B::KC>(g.k), bs = g.tb ? 1 : g.ldb;
            for (std::size_t pc = 0; pc < g.k; pc += kcb) {
                const std::size_t kc = std::min(kcb, g.k - pc);
                const T beta = pc == 0 ? g.beta : T(1);
                std::size_t i0 = 0;
                for (; i0 + U * W <= g.m; i0 += U * W) {
                    R acc[1][U];
#pragma GCC unroll 8
                    for (std::size_t u = 0; u < U; ++u) acc[0][u] = V::zero();
                    const T* a = g.a + pc * g.lda + i0;
                    const T* b = g.b + pc * bs;
                    for (std::size_t p = 0; p < kc; ++p, a += g.lda, b += bs) {
                        const R bv = V::set1(*b);
#pragma GCC unroll 8
                        for (std::size_t u = 0; u < U; ++u) acc[0][u] = V::fma(V::load(a + u * W), bv, acc[0][u]);
                    }
                    store<V, U>(acc, g.alpha, beta, g.c + i0, W * U);
                }
                for (; i0 < g.m; i0 += W) {
                    const std::size_t cnt = std::min(W, g.m - i0);
                    R acc[1][1] = {{V::zero()}};
                    const T* a = g.a + pc * g.lda + i0;
                    const T* b = g.b + pc * bs;
                    for (std::size_t p = 0; p < kc; ++p, a += g.lda, b += bs)
                        acc[0][0] = V::fma(cnt == W ? V::load(a) : V::load_partial(a, cnt), V::set1(*b), acc[0][0]);
                    store<V, 1>(acc, g.alpha, beta, g.c + i0, cnt);
                }
            }
        }
        template <class V, std::size_t U>
        static TAPIR_ALWAYS_INLINE void store(const typename V::reg (&acc)[1][U], T alpha, T beta, T* c,
                                              std::size_t count) {
            std::size_t bcnt[U];
#pragma GCC unroll 8
            for (std::size_t u = 0; u < U; ++u) bcnt[u] = std::min(V::W, count - std::min(count, u * V::W));
            const bool full = count == U * V::W;
            if (beta == T(0))
                store_tile<V, 1, U, 1>(acc, alpha, beta, c, 0, 1, bcnt, full);
            else
                store_tile<V, 1, U, 4>(acc, alpha, beta, c, 0, 1, bcnt, full);
        }
    };

    /// A times a vector (n == 1, op(A) = A): sixteen rows' chains interleaved, one lane each. The
    /// chain order per element must stay micro()'s (deployed models reproduce it bit for bit), which
    /// rules out summing across lanes; still twice as fast as 1-of-32-lane tiles.
    struct gemv_n {
        using value_type = T;
        template <class V> static TAPIR_ALWAYS_INLINE T mad(T a, T b, T c) {
            if constexpr (V::W == 1) return V::fma(a, b, c); // the scalar family's a * b + c
            else if constexpr (std::is_same<T, float>::value) return __builtin_fmaf(a, b, c); // vectors fuse
            else return __builtin_fma(a, b, c);
        }
        template <class V> static TAPIR_ALWAYS_INLINE void run(const gemm_args<T>* gp) {
            using B = gemm_blocking<V>;
            constexpr std::size_t R = 16;
            const gemm_args<T>& g = *gp;
            const std::size_t kcb = k_block<B::KC>(g.k), bs = g.tb ? 1 : g.ldb;
            const bool unit = g.alpha == T(1);
            for (std::size_t pc = 0; pc < g.k; pc += kcb) {
                const std::size_t kc = std::min(kcb, g.k - pc);
                const T beta = pc == 0 ? g.beta : T(1);
                std::size_t i0 = 0;
#if TAPIR_GEMM_SHUFFLE
                if constexpr (V::W > 1) i0 = lanes<V>(g, pc, kc, bs, beta);
#endif
                // Bounds as multiples (not i0 + R <= m): GCC then sees the tail's trip count and does
                // not warn that a (never reached) 2^62nd iteration would overflow the C pointer.
                const std::size_t m_full = i0 + (g.m - i0) / R * R;
                for (; i0 < m_full; i0 += R) {
                    T acc[R];
#pragma GCC unroll 16
                    for (std::size_t r = 0; r < R; ++r) acc[r] = T(0);
                    const T* a = g.a + i0 * g.lda + pc;
                    const T* b = g.b + pc * bs;
                    for (std::size_t p = 0; p < kc; ++p, b += bs) {
                        const T bv = *b;
#pragma GCC unroll 16
                        for (std::size_t r = 0; r < R; ++r) acc[r] = mad<V>(a[r * g.lda + p], bv, acc[r]);
                    }
                    for (std::size_t r = 0; r < R; ++r) put<V>(acc[r], g.alpha, beta, unit, g.c + (i0 + r) * g.ldc);
                }
                for (; i0 < g.m; ++i0) {
                    T acc = T(0);
                    const T* a = g.a + i0 * g.lda + pc;
                    const T* b = g.b + pc * bs;
                    for (std::size_t p = 0; p < kc; ++p, b += bs) acc = mad<V>(a[p], *b, acc);
                    put<V>(acc, g.alpha, beta, unit, g.c + i0 * g.ldc);
                }
            }
        }
#if TAPIR_GEMM_SHUFFLE
        /// W rows at a time as the lanes of one vector: W x W blocks of A transposed in registers
        /// give each lane its row's values in order p, so each lane runs the same chain as above.
        /// Returns the first row it did not do.
        template <class V>
        static TAPIR_ALWAYS_INLINE std::size_t lanes(const gemm_args<T>& g, std::size_t pc, std::size_t kc,
                                                     std::size_t bs, T beta) {
            using Rg = typename V::reg;
            constexpr std::size_t W = V::W;
            const bool unit = g.alpha == T(1);
            std::size_t i0 = 0;
            const std::size_t m_full = g.m / W * W;
            for (; i0 < m_full; i0 += W) {
                Rg acc = V::zero();
                const T* a = g.a + i0 * g.lda + pc;
                const T* b = g.b + pc * bs;
                std::size_t p = 0;
                for (; p + W <= kc; p += W) {
                    Rg r[W];
#pragma GCC unroll 16
                    for (std::size_t q = 0; q < W; ++q) r[q] = V::load(a + q * g.lda + p);
                    transpose_stage<W, 1>(&raw_vector(r[0]));
#pragma GCC unroll 16
                    for (std::size_t q = 0; q < W; ++q) acc = V::fma(r[q], V::set1(b[(p + q) * bs]), acc);
                }
                for (; p < kc; ++p) {
                    alignas(64) T col[W];
                    for (std::size_t q = 0; q < W; ++q) col[q] = a[q * g.lda + p];
                    acc = V::fma(V::load(col), V::set1(b[p * bs]), acc);
                }
                alignas(64) T out[W];
                V::store(out, acc);
                for (std::size_t q = 0; q < W; ++q) put<V>(out[q], g.alpha, beta, unit, g.c + (i0 + q) * g.ldc);
            }
            return i0;
        }
#endif
        /// store_tile's combine on one lane: alpha acc, or alpha acc + beta C in one rounding.
        template <class V> static TAPIR_ALWAYS_INLINE void put(T acc, T alpha, T beta, bool unit, T* c) {
            if (beta == T(0)) *c = unit ? acc : alpha * acc;
            else *c = mad<V>(alpha, acc, beta * *c);
        }
    };

    /// Work size for one thread's share, in elements.
    struct work_size {
        using value_type = T;
        template <class V> static std::size_t run(std::size_t m, std::size_t n, std::size_t k) {
            return gemm_work_elems<V>(m, n, k);
        }
    };
};

/// C = beta * C, without reading C when beta == 0.
template <class T> void scale_c(std::size_t m, std::size_t n, T beta, T* c, std::size_t ldc) {
    for (std::size_t i = 0; i < m; ++i) {
        T* r = c + i * ldc;
        if (beta == T(0))
            std::fill(r, r + n, T(0));
        else if (beta != T(1))
            for (std::size_t j = 0; j < n; ++j) r[j] *= beta;
    }
}

/// Raises (TAPIR_THROW) the message for whichever argument is wrong (cold: gemm() only calls it when one is).
TAPIR_NOINLINE inline void gemm_check(bool ta, bool tb, std::size_t m, std::size_t n, std::size_t k, const void* a,
                                      std::size_t lda, const void* b, std::size_t ldb, const void* c, std::size_t ldc) {
    const auto s = [](std::size_t v) { return std::to_string(v); };
    (void)s; // unused when TAPIR_THROW aborts
    const std::size_t acols = ta ? m : k, bcols = tb ? k : n;
    if (k > 0 && lda < acols)
        TAPIR_THROW(value_error("gemm: lda=" + s(lda) + " is smaller than the " + s(acols) + " columns of A (trans_a=" +
                                (ta ? "true" : "false") + ", m=" + s(m) + ", k=" + s(k) + ")"));
    if (k > 0 && ldb < bcols)
        TAPIR_THROW(value_error("gemm: ldb=" + s(ldb) + " is smaller than the " + s(bcols) + " columns of B (trans_b=" +
                                (tb ? "true" : "false") + ", k=" + s(k) + ", n=" + s(n) + ")"));
    if (ldc < n) TAPIR_THROW(value_error("gemm: ldc=" + s(ldc) + " is smaller than the " + s(n) + " columns of C"));
    if (!c || (k > 0 && (!a || !b)))
        TAPIR_THROW(value_error("gemm: null matrix pointer for a non-empty " + s(m) + "x" + s(n) + "x" + s(k) + " product"));
}

/// Products below this many multiply-adds stay on the calling thread (threads are started per call,
/// ~20-50 us; 2^24 multiply-adds take ~150 us on one AVX-512 core). Tests lower it.
inline std::atomic<std::size_t>& gemm_parallel_min() noexcept {
    static std::atomic<std::size_t> v{std::size_t(1) << 24};
    return v;
}

/// The threaded driver (out of line, so the serial call keeps a small frame): splits the longer of
/// M and N into stripes of C, which are independent. False when the product is too narrow to split.
template <class T> TAPIR_NOINLINE bool gemm_parallel(isa which, const gemm_args<T>& g, unsigned nt) {
    using K = gemm_kernel<T>;
    const bool split_m = g.m >= g.n;
    const std::size_t len = split_m ? g.m : g.n, quantum = 64;
    const std::size_t max_parts = (len + quantum - 1) / quantum;
    nt = static_cast<unsigned>(std::min<std::size_t>(nt, max_parts));
    if (nt < 2) return false;
    const std::size_t step = round_up((len + nt - 1) / nt, quantum);
    std::vector<gemm_args<T>> parts;
    for (std::size_t s0 = 0; s0 < len; s0 += step) {
        gemm_args<T> p = g;
        const std::size_t l = std::min(step, len - s0);
        if (split_m) {
            p.m = l;
            p.a = g.ta ? g.a + s0 : g.a + s0 * g.lda;
            p.c = g.c + s0 * g.ldc;
        } else {
            p.n = l;
            p.b = g.tb ? g.b + s0 * g.ldb : g.b + s0;
            p.c = g.c + s0;
        }
        parts.push_back(p);
    }
    if (parts.size() < 2) return false;
    const std::size_t per = dispatch_to<typename K::work_size>(which, split_m ? step : g.m, split_m ? g.n : step, g.k);
    const std::size_t stride = round_up(per, 64);
    T* work = static_cast<T*>(gemm_buffer().get(stride * parts.size() * sizeof(T)));
    /// Const, as gemm() passes it: a gemm_args<T>* would instantiate every kernel entry a second time.
    const gemm_args<T>* const part = parts.data();
    std::vector<std::thread> pool;
    pool.reserve(parts.size() - 1);
    std::size_t started = 1;
#if TAPIR_HAS_EXCEPTIONS
    try {
#endif
        for (; started < parts.size(); ++started) {
            const std::size_t t = started;
            pool.emplace_back([&, t] { dispatch_to<K>(which, part + t, work + t * stride); });
        }
#if TAPIR_HAS_EXCEPTIONS
    } catch (...) {
        // No more threads available: the calling thread does the remaining stripes.
    }
#endif
    dispatch_to<K>(which, part, work);
    for (std::size_t t = started; t < parts.size(); ++t) dispatch_to<K>(which, part + t, work + t * stride);
    for (auto& th : pool) th.join();
    return true;
}

} // namespace detail

/// Products of at least this many multiply-adds are split over num_threads() threads (default 2^24).
inline std::size_t gemm_parallel_threshold() noexcept { return detail::gemm_parallel_min().load(std::memory_order_relaxed); }
/// Sets that threshold (tests lower it to exercise the threads on small products); returns the previous one.
inline std::size_t set_gemm_parallel_threshold(std::size_t multiply_adds) noexcept {
    return detail::gemm_parallel_min().exchange(multiply_adds, std::memory_order_relaxed);
}

/// C = alpha * op(A) * op(B) + beta * C, row-major. op(A) is m x k (A is k x m if trans_a), op(B) is
/// k x n (B is n x k if trans_b). When beta == 0, C is only written (it may hold NaN or garbage).
template <class T>
void gemm(bool trans_a, bool trans_b, std::size_t m, std::size_t n, std::size_t k, T alpha, const T* a,
          std::size_t lda, const T* b, std::size_t ldb, T beta, T* c, std::size_t ldc) {
    static_assert(std::is_same<T, float>::value || std::is_same<T, double>::value, "gemm: float or double");
    if (m == 0 || n == 0) return;
    // Inline test, out-of-line message: the checks cost ~10% of a 8x32x1 call when not inlined.
    if (TAPIR_UNLIKELY((k > 0 && (lda < (trans_a ? m : k) || ldb < (trans_b ? k : n) || !a || !b)) || ldc < n || !c))
        detail::gemm_check(trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc);
    if (k == 0 || alpha == T(0)) {
        detail::scale_c(m, n, beta, c, ldc);
        return;
    }
    using K = detail::gemm_kernel<T>;
    const isa which = active_isa();
    const detail::gemm_args<T> g{trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc};
    if (!trans_a && !trans_b && k <= 256 && n <= 512 && dispatch_to<typename K::small>(which, &g)) return;
    if (n == 1) {
        if (trans_a && ldc == 1) dispatch_to<typename K::gemv_t>(which, &g);
        else if (!trans_a) dispatch_to<typename K::gemv_n>(which, &g);
        if (!trans_a || ldc == 1) return;
    }
    const unsigned nt = num_threads();
    if (nt > 1 && m * n * k >= detail::gemm_parallel_min().load(std::memory_order_relaxed) &&
        detail::gemm_parallel(which, g, nt))
        return;
    dispatch_to<K>(which, &g, static_cast<T*>(nullptr));
}

/// C = A B + bias (bias added to every row), then max(0, .) when relu: a dense layer's forward
/// pass in one sweep over C, for products of whole register tiles with k in one K block (the
/// common small layer shapes). Returns false, leaving C untouched, for any other product: the
/// caller then runs gemm(), add_row() and relu(), which give the same bits.
template <class T>
bool gemm_bias_act(std::size_t m, std::size_t n, std::size_t k, const T* a, std::size_t lda, const T* b,
                   std::size_t ldb, const T* bias, bool relu, T* c, std::size_t ldc) {
    static_assert(std::is_same<T, float>::value || std::is_same<T, double>::value, "gemm: float or double");
    if (m == 0 || n == 0 || k == 0 || k > 256 || n > 512 || !bias || lda < k || ldb < n || ldc < n || !a || !b || !c)
        return false;
    const detail::gemm_args<T> g{false, false, m, n, k, T(1), a, lda, b, ldb, T(0), c, ldc};
    using K = detail::gemm_kernel<T>;
    return relu ? dispatch_to<typename K::template small_tiles<2>>(active_isa(), &g, bias)
                : dispatch_to<typename K::template small_tiles<1>>(active_isa(), &g, bias);
}

#define TAPIR_GEMM_SIGNATURE(T)                                                                          \
    void gemm<T>(bool, bool, std::size_t, std::size_t, std::size_t, T, const T*, std::size_t, const T*, std::size_t, T, \
                 T*, std::size_t)
/// The kernels are the costliest code to compile (three instruction sets, two types). A program can
/// compile them once: define TAPIR_EXTERN_TEMPLATES everywhere and TAPIR_INSTANTIATE_KERNELS in
/// exactly one file that includes <tapir/tapir.hpp> (see tapir/extern_templates.hpp; the tests do).
#define TAPIR_GEMM_BIAS_SIGNATURE(T)                                                                     \
    bool gemm_bias_act<T>(std::size_t, std::size_t, std::size_t, const T*, std::size_t, const T*, std::size_t, \
                          const T*, bool, T*, std::size_t)
#if defined(TAPIR_INSTANTIATE_KERNELS)
template TAPIR_GEMM_SIGNATURE(float);
template TAPIR_GEMM_SIGNATURE(double);
template TAPIR_GEMM_BIAS_SIGNATURE(float);
template TAPIR_GEMM_BIAS_SIGNATURE(double);
#elif defined(TAPIR_EXTERN_TEMPLATES)
extern template TAPIR_GEMM_SIGNATURE(float);
extern template TAPIR_GEMM_SIGNATURE(double);
extern template TAPIR_GEMM_BIAS_SIGNATURE(float);
extern template TAPIR_GEMM_BIAS_SIGNATURE(double);
#endif
#undef TAPIR_GEMM_SIGNATURE
#undef TAPIR_GEMM_BIAS_SIGNATURE

} // namespace tapir::simd

TAPIR_SIMD_DIAG_POP
// ---- end tapir/simd/gemm.hpp ----
// ---- begin tapir/data/dataset.hpp ----
/// Data preparation: seeded train/test splits, StandardScaler / MinMaxScaler, per-event
/// weights, datasets of tensors and a seeded shuffled mini-batch loader.
///
/// Everything random takes a seed and uses tapir::Rng, so a split or an epoch's batch order is
/// the same on every platform.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

// ---- begin tapir/io/csv.hpp ----
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

} // namespace detail

/// Parses CSV text; source_name prefixes every error message (a file name, "<stdin>", ...).
inline CsvTable parse_csv(std::string_view text, const std::string& source_name, const CsvOptions& options = {}) {
    return detail::CsvParser(text, source_name, options).parse();
}

/// Reads a whole CSV file into memory and parses it (see parse_csv).
inline CsvTable read_csv(const std::string& path, const CsvOptions& options = {}) {
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
        throw parse_error(detail::csv_io_error("read_csv", path, errno ? errno : EIO));
    // Size hint from seeking; the read loop below also copes with pipes and growing files.
    std::size_t cap = 1 << 16;
    bool rewound = false;
    if (std::fseek(f.get(), 0, SEEK_END) == 0) {
        const long n = std::ftell(f.get());
        if (n > 0) cap = static_cast<std::size_t>(n) + 1;
        rewound = std::fseek(f.get(), 0, SEEK_SET) == 0;
        if (!rewound) throw parse_error(detail::csv_io_error("read_csv", path, errno ? errno : EIO));
    }
    std::unique_ptr<char[]> buf(new char[cap]);
    std::size_t size = 0;
    if (!rewound && first != EOF) buf[size++] = static_cast<char>(first); // a pipe: keep the byte read
    for (;;) {
        size += std::fread(buf.get() + size, 1, cap - size, f.get());
        if (std::ferror(f.get())) throw parse_error(detail::csv_io_error("read_csv", path, errno ? errno : EIO));
        if (size < cap) break;
        std::unique_ptr<char[]> bigger(new char[2 * cap]);
        std::memcpy(bigger.get(), buf.get(), size);
        buf.swap(bigger);
        cap *= 2;
    }
    f.reset();
    return parse_csv(std::string_view(buf.get(), size), path, options);
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
// ---- end tapir/io/csv.hpp ----
// ---- begin tapir/data/random.hpp ----
/// Rng lives on the base floor (tapir/random.hpp); this header is kept so that existing includes work.

// ---- end tapir/data/random.hpp ----

namespace tapir::data {

// ---------------------------------------------------------------- splits and gathers

struct TrainTestSplit {
    std::vector<std::size_t> train;
    std::vector<std::size_t> test;
};

namespace detail {
using tapir::detail::error_number;

inline std::size_t split_test_count(const char* fn, std::size_t n, double test_fraction) {
    if (!(test_fraction > 0.0 && test_fraction < 1.0))
        throw value_error(std::string(fn) + ": test_fraction must be in (0, 1), got " + detail::error_number(test_fraction));
    return static_cast<std::size_t>(std::floor(test_fraction * static_cast<double>(n) + 0.5));
}
inline void split_check_sizes(const char* fn, std::size_t n, std::size_t k, double test_fraction) {
    if (k == 0 || k == n)
        throw value_error(std::string(fn) + ": test_fraction " + detail::error_number(test_fraction) + " of " +
                          std::to_string(n) + " events leaves the " + (k == 0 ? "test" : "training") + " set empty");
}
} // namespace detail

/// Seeded random split of n events: round(test_fraction * n) indices go to test, the rest to
/// train, each in random order (like sklearn's train_test_split with shuffle=True).
inline TrainTestSplit train_test_split(std::size_t n, double test_fraction, std::uint64_t seed) {
    const std::size_t k = detail::split_test_count("train_test_split", n, test_fraction);
    detail::split_check_sizes("train_test_split", n, k, test_fraction);
    Rng rng(seed);
    const std::vector<std::size_t> p = rng.permutation(n);
    TrainTestSplit s;
    s.test.assign(p.begin(), p.begin() + static_cast<std::ptrdiff_t>(k));
    s.train.assign(p.begin() + static_cast<std::ptrdiff_t>(k), p.end());
    return s;
}

/// Seeded split that keeps each label value's share: round(test_fraction * n_c) events of
/// every class c go to test. Both parts are shuffled.
inline TrainTestSplit stratified_split(const std::vector<double>& labels, double test_fraction, std::uint64_t seed) {
    const std::size_t n = labels.size();
    detail::split_test_count("stratified_split", n, test_fraction);
    std::vector<std::size_t> order(n);
    for (std::size_t i = 0; i < n; ++i) {
        if (std::isnan(labels[i]))
            throw value_error("stratified_split: label " + std::to_string(i) + " is NaN");
        order[i] = i;
    }
    std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
        return labels[a] < labels[b] || (labels[a] == labels[b] && a < b);
    });
    Rng rng(seed);
    TrainTestSplit s;
    for (std::size_t b = 0; b < n;) {
        std::size_t e = b;
        while (e < n && labels[order[e]] == labels[order[b]]) ++e;
        rng.shuffle(order.begin() + static_cast<std::ptrdiff_t>(b), order.begin() + static_cast<std::ptrdiff_t>(e));
        const std::size_t k = detail::split_test_count("stratified_split", e - b, test_fraction);
        s.test.insert(s.test.end(), order.begin() + static_cast<std::ptrdiff_t>(b),
                      order.begin() + static_cast<std::ptrdiff_t>(b + k));
        s.train.insert(s.train.end(), order.begin() + static_cast<std::ptrdiff_t>(b + k),
                       order.begin() + static_cast<std::ptrdiff_t>(e));
        b = e;
    }
    detail::split_check_sizes("stratified_split", n, s.test.size(), test_fraction);
    rng.shuffle(s.test.begin(), s.test.end());
    rng.shuffle(s.train.begin(), s.train.end());
    return s;
}

namespace detail {
inline void check_index(const char* fn, std::size_t i, std::size_t n) {
    if (i >= n)
        throw value_error(std::string(fn) + ": index " + std::to_string(i) + " is out of range for " +
                          std::to_string(n) + " events");
}
} // namespace detail

/// v[idx[0]], v[idx[1]], ...
template <class V>
std::vector<V> take(const std::vector<V>& v, const std::vector<std::size_t>& idx) {
    std::vector<V> out;
    out.reserve(idx.size());
    for (std::size_t i : idx) {
        detail::check_index("take", i, v.size());
        out.push_back(v[i]);
    }
    return out;
}

/// Rows idx of x along its first dimension (any rank >= 1).
template <class T>
Tensor<T> take_rows(const Tensor<T>& x, const std::vector<std::size_t>& idx) {
    if (x.rank() == 0) throw shape_error("take_rows: tensor of shape " + x.shape().str() + " has no rows");
    const std::size_t n = x.dim(0);
    const std::size_t row = n ? x.size() / n : 0;
    Shape s = x.shape();
    s[0] = idx.size();
    Tensor<T> out(s);
    for (std::size_t k = 0; k < idx.size(); ++k) {
        detail::check_index("take_rows", idx[k], n);
        if (row) std::memcpy(out.data() + k * row, x.data() + idx[k] * row, row * sizeof(T));
    }
    return out;
}

/// Rows idx[0..n) of src (along its first axis) into dst, shaped (n, <src's other axes>). dst's
/// storage is reused, so gathering batches of one size allocates once (nn::fit's training step
/// relies on it). The indices are not checked: callers check them once, not per batch.
template <class T>
void gather_rows(const Tensor<T>& src, const std::size_t* idx, std::size_t n, Tensor<T>& dst) {
    const std::size_t rows = src.rank() ? src.dim(0) : 0;
    const std::size_t row = rows ? src.size() / rows : 0;
    Shape s = src.shape();
    if (s.rank()) s[0] = n;
    dst.resize(s);
    for (std::size_t k = 0; k < n; ++k)
        if (row) std::memcpy(dst.data() + k * row, src.data() + idx[k] * row, row * sizeof(T));
}

// ---------------------------------------------------------------- scalers

namespace detail {
inline void scaler_check_2d(const char* fn, const Shape& s) {
    if (s.rank() != 2)
        throw shape_error(std::string(fn) + ": expected a (events, features) tensor, got shape " + s.str());
}
inline void scaler_check_features(const char* fn, const Shape& s, std::size_t d) {
    scaler_check_2d(fn, s);
    if (d == 0) throw value_error(std::string(fn) + ": the scaler is not fitted (call fit first)");
    if (s[1] != d)
        throw shape_error(std::string(fn) + ": the scaler was fitted on " + std::to_string(d) +
                          " features, got shape " + s.str());
}
/// out[i, j] = f(j, x[i, j]) in double, for a fitted scaler of d features.
template <class T, class F>
Tensor<T> scaler_map(const char* fn, const Tensor<T>& x, std::size_t d, F f) {
    scaler_check_features(fn, x.shape(), d);
    Tensor<T> out(x.shape());
    const std::size_t n = x.dim(0);
    for (std::size_t i = 0; i < n; ++i)
        for (std::size_t j = 0; j < d; ++j) out[i * d + j] = static_cast<T>(f(j, static_cast<double>(x[i * d + j])));
    return out;
}
template <class T>
void scaler_check_fit_input(const char* fn, const Tensor<T>& x, const std::vector<double>& w) {
    scaler_check_2d(fn, x.shape());
    const std::size_t n = x.dim(0), d = x.dim(1);
    if (n == 0 || d == 0) throw value_error(std::string(fn) + ": empty input of shape " + x.shape().str());
    if (!w.empty() && w.size() != n)
        throw value_error(std::string(fn) + ": " + std::to_string(n) + " events but " + std::to_string(w.size()) +
                          " weights");
    for (std::size_t i = 0; i < n; ++i)
        for (std::size_t j = 0; j < d; ++j)
            if (!std::isfinite(x[i * d + j]))
                throw value_error(std::string(fn) + ": non-finite value " + detail::error_number(static_cast<double>(x[i * d + j])) +
                                  " at event " + std::to_string(i) + ", feature " + std::to_string(j));
    for (std::size_t i = 0; i < w.size(); ++i)
        if (!std::isfinite(w[i]))
            throw value_error(std::string(fn) + ": non-finite weight " + detail::error_number(w[i]) + " at event " +
                              std::to_string(i));
}
/// A spread this small next to the values is rounding noise of a constant column.
inline bool negligible_spread(double spread, double magnitude) {
    return !(spread > 16.0 * std::numeric_limits<double>::epsilon() * magnitude) || spread == 0.0;
}
} // namespace detail

/// Standardises each feature to zero mean and unit variance: (x - mean) / scale, with the
/// population standard deviation (ddof = 0, as sklearn). A constant feature gets scale 1, so it
/// maps to 0 and nothing divides by zero. Optional per-event weights (sum must be positive).
class StandardScaler {
public:
    StandardScaler() = default;
    /// A scaler with known parameters (for instance loaded from a file).
    StandardScaler(std::vector<double> mean, std::vector<double> scale) : mean_(std::move(mean)), scale_(std::move(scale)) {
        if (mean_.size() != scale_.size())
            throw value_error("StandardScaler: " + std::to_string(mean_.size()) + " means but " +
                              std::to_string(scale_.size()) + " scales");
        for (std::size_t j = 0; j < scale_.size(); ++j)
            if (!(scale_[j] > 0.0 && std::isfinite(scale_[j]) && std::isfinite(mean_[j])))
                throw value_error("StandardScaler: feature " + std::to_string(j) + " has mean " +
                                  detail::error_number(mean_[j]) + " and scale " + detail::error_number(scale_[j]) +
                                  " (need finite values and scale > 0)");
    }

    template <class T>
    StandardScaler& fit(const Tensor<T>& x, const std::vector<double>& weights = {}) {
        detail::scaler_check_fit_input("StandardScaler::fit", x, weights);
        const std::size_t n = x.dim(0), d = x.dim(1);
        double wsum = 0.0;
        for (std::size_t i = 0; i < n; ++i) wsum += weights.empty() ? 1.0 : weights[i];
        if (!(wsum > 0.0))
            throw value_error("StandardScaler::fit: the weights sum to " + detail::error_number(wsum) + " (must be positive)");
        std::vector<double> mean(d, 0.0), var(d, 0.0);
        for (std::size_t i = 0; i < n; ++i) {
            const double w = weights.empty() ? 1.0 : weights[i];
            for (std::size_t j = 0; j < d; ++j) mean[j] += w * static_cast<double>(x[i * d + j]);
        }
        for (double& m : mean) m /= wsum;
        for (std::size_t i = 0; i < n; ++i) {
            const double w = weights.empty() ? 1.0 : weights[i];
            for (std::size_t j = 0; j < d; ++j) {
                const double dev = static_cast<double>(x[i * d + j]) - mean[j];
                var[j] += w * dev * dev;
            }
        }
        std::vector<double> scale(d);
        for (std::size_t j = 0; j < d; ++j) {
            const double sd = std::sqrt(std::max(var[j] / wsum, 0.0));
            scale[j] = detail::negligible_spread(sd, std::abs(mean[j])) ? 1.0 : sd;
        }
        mean_ = std::move(mean);
        scale_ = std::move(scale);
        return *this;
    }

    template <class T>
    Tensor<T> transform(const Tensor<T>& x) const {
        return detail::scaler_map("StandardScaler::transform", x, mean_.size(),
                                  [this](std::size_t j, double v) { return (v - mean_[j]) / scale_[j]; });
    }

    template <class T>
    Tensor<T> inverse_transform(const Tensor<T>& z) const {
        return detail::scaler_map("StandardScaler::inverse_transform", z, mean_.size(),
                                  [this](std::size_t j, double v) { return v * scale_[j] + mean_[j]; });
    }

    template <class T>
    Tensor<T> fit_transform(const Tensor<T>& x, const std::vector<double>& weights = {}) {
        return fit(x, weights).transform(x);
    }

    bool fitted() const noexcept { return !mean_.empty(); }
    std::size_t features() const noexcept { return mean_.size(); }
    const std::vector<double>& mean() const noexcept { return mean_; }
    /// Standard deviation per feature (1 for constant features).
    const std::vector<double>& scale() const noexcept { return scale_; }

private:
    std::vector<double> mean_, scale_;
};

/// Maps each feature linearly so that its fitted [min, max] becomes [lo, hi] (default [0, 1]).
/// A constant feature (max == min) gets scale 1, so it maps to lo; nothing divides by zero.
class MinMaxScaler {
public:
    explicit MinMaxScaler(double lo = 0.0, double hi = 1.0) : lo_(lo), hi_(hi) {
        if (!(std::isfinite(lo) && std::isfinite(hi) && lo < hi))
            throw value_error("MinMaxScaler: feature range [" + detail::error_number(lo) + ", " + detail::error_number(hi) +
                              "] must be finite with lo < hi");
    }

    template <class T>
    MinMaxScaler& fit(const Tensor<T>& x) {
        detail::scaler_check_fit_input("MinMaxScaler::fit", x, {});
        const std::size_t n = x.dim(0), d = x.dim(1);
        std::vector<double> mn(d, std::numeric_limits<double>::infinity()), mx(d, -std::numeric_limits<double>::infinity());
        for (std::size_t i = 0; i < n; ++i)
            for (std::size_t j = 0; j < d; ++j) {
                const double v = static_cast<double>(x[i * d + j]);
                mn[j] = std::min(mn[j], v);
                mx[j] = std::max(mx[j], v);
            }
        std::vector<double> scale(d);
        for (std::size_t j = 0; j < d; ++j) {
            const double range = mx[j] - mn[j];
            scale[j] = detail::negligible_spread(range, std::max(std::abs(mn[j]), std::abs(mx[j]))) ? 1.0
                                                                                                     : (hi_ - lo_) / range;
        }
        min_ = std::move(mn);
        max_ = std::move(mx);
        scale_ = std::move(scale);
        return *this;
    }

    template <class T>
    Tensor<T> transform(const Tensor<T>& x) const {
        return detail::scaler_map("MinMaxScaler::transform", x, min_.size(),
                                  [this](std::size_t j, double v) { return lo_ + (v - min_[j]) * scale_[j]; });
    }

    template <class T>
    Tensor<T> inverse_transform(const Tensor<T>& z) const {
        return detail::scaler_map("MinMaxScaler::inverse_transform", z, min_.size(),
                                  [this](std::size_t j, double v) { return (v - lo_) / scale_[j] + min_[j]; });
    }

    template <class T>
    Tensor<T> fit_transform(const Tensor<T>& x) {
        return fit(x).transform(x);
    }

    bool fitted() const noexcept { return !min_.empty(); }
    std::size_t features() const noexcept { return min_.size(); }
    const std::vector<double>& data_min() const noexcept { return min_; }
    const std::vector<double>& data_max() const noexcept { return max_; }
    /// (hi - lo) / (max - min) per feature (1 for constant features).
    const std::vector<double>& scale() const noexcept { return scale_; }
    double lo() const noexcept { return lo_; }
    double hi() const noexcept { return hi_; }

private:
    double lo_, hi_;
    std::vector<double> min_, max_, scale_;
};

// ---------------------------------------------------------------- per-event weights

namespace detail {
inline void check_binary_labels(const char* fn, const std::vector<double>& labels) {
    for (std::size_t i = 0; i < labels.size(); ++i)
        if (labels[i] != 0.0 && labels[i] != 1.0)
            throw value_error(std::string(fn) + ": label " + detail::error_number(labels[i]) + " at index " +
                              std::to_string(i) + " is not 0 or 1");
}
} // namespace detail

/// Rescales weights (all 1 when empty) so that signal (label 1) and background (label 0) each
/// sum to N/2, N the number of events: a balanced training sample with unchanged shapes.
/// Negative weights are kept; each class total must be positive.
inline std::vector<double> balanced_weights(const std::vector<double>& labels, const std::vector<double>& weights = {}) {
    const std::size_t n = labels.size();
    if (n == 0) throw value_error("balanced_weights: empty input");
    if (!weights.empty() && weights.size() != n)
        throw value_error("balanced_weights: " + std::to_string(n) + " labels but " + std::to_string(weights.size()) +
                          " weights");
    detail::check_binary_labels("balanced_weights", labels);
    double tot[2] = {0.0, 0.0};
    for (std::size_t i = 0; i < n; ++i) tot[labels[i] == 1.0 ? 1 : 0] += weights.empty() ? 1.0 : weights[i];
    for (int c = 0; c < 2; ++c)
        if (!(tot[c] > 0.0 && std::isfinite(tot[c])))
            throw value_error(std::string("balanced_weights: the ") + (c ? "signal" : "background") +
                              " weights sum to " + detail::error_number(tot[c]) + " (must be positive)");
    const double half = 0.5 * static_cast<double>(n);
    std::vector<double> out(n);
    for (std::size_t i = 0; i < n; ++i) {
        const int c = labels[i] == 1.0 ? 1 : 0;
        out[i] = (weights.empty() ? 1.0 : weights[i]) * (half / tot[c]);
    }
    return out;
}

/// Scales weights so that they sum to total (default: the number of events).
inline std::vector<double> normalized_weights(const std::vector<double>& weights, double total = -1.0) {
    if (weights.empty()) throw value_error("normalized_weights: empty input");
    if (total < 0.0) total = static_cast<double>(weights.size());
    double s = 0.0;
    for (double w : weights) s += w;
    if (!(std::isfinite(s) && s != 0.0))
        throw value_error("normalized_weights: the weights sum to " + detail::error_number(s) + " (cannot normalise)");
    std::vector<double> out(weights.size());
    for (std::size_t i = 0; i < weights.size(); ++i) out[i] = weights[i] * (total / s);
    return out;
}

// ---------------------------------------------------------------- datasets and batches

/// Events as tensors sharing their first dimension: features x, targets y, optional per-event
/// weights w (rank 1) and optional auxiliary columns aux (e.g. m_yy for a decorrelation loss).
/// An empty w means every weight is 1.
template <class T>
struct Dataset {
    Tensor<T> x, y, w, aux;

    Dataset() = default;
    Dataset(Tensor<T> x_, Tensor<T> y_, Tensor<T> w_ = {}, Tensor<T> aux_ = {})
        : x(std::move(x_)), y(std::move(y_)), w(std::move(w_)), aux(std::move(aux_)) {
        validate();
    }

    std::size_t size() const noexcept { return x.rank() ? x.dim(0) : 0; }
    bool weighted() const noexcept { return !w.empty(); }
    bool has_aux() const noexcept { return !aux.empty(); }

    /// The events idx, in that order.
    Dataset subset(const std::vector<std::size_t>& idx) const {
        Dataset d;
        d.x = take_rows(x, idx);
        d.y = take_rows(y, idx);
        if (weighted()) d.w = take_rows(w, idx);
        if (has_aux()) d.aux = take_rows(aux, idx);
        return d;
    }

    void validate() const {
        if (x.rank() == 0) throw shape_error("Dataset: x must have an event dimension, got shape " + x.shape().str());
        const std::size_t n = x.dim(0);
        const auto check = [&](const Tensor<T>& t, const char* name) {
            if (t.rank() == 0 || t.dim(0) != n)
                throw shape_error(std::string("Dataset: x has ") + std::to_string(n) + " events (shape " +
                                  x.shape().str() + ") but " + name + " has shape " + t.shape().str());
        };
        check(y, "y");
        if (!w.empty()) {
            check(w, "w");
            if (w.rank() != 1) throw shape_error("Dataset: w must be one weight per event, got shape " + w.shape().str());
        }
        if (!aux.empty()) check(aux, "aux");
    }
};

/// A dataset from CSV columns: features -> x (n, features), label -> y (n), optional weight
/// column -> w (n), optional aux columns -> aux (n, aux).
template <class T>
Dataset<T> make_dataset(const io::CsvTable& table, const std::vector<std::string>& features, const std::string& label,
                        const std::string& weight = "", const std::vector<std::string>& aux = {}) {
    Dataset<T> d;
    d.x = table.to_tensor<T>(features);
    d.y = table.to_tensor<T>({label}).reshaped(Shape{table.rows});
    if (!weight.empty()) d.w = table.to_tensor<T>({weight}).reshaped(Shape{table.rows});
    if (!aux.empty()) d.aux = table.to_tensor<T>(aux);
    d.validate();
    return d;
}

/// One mini-batch: the gathered rows of every dataset tensor, w filled with 1 for an
/// unweighted dataset, and the dataset indices of its events.
template <class T>
struct Batch {
    Tensor<T> x, y, w, aux;
    std::vector<std::size_t> indices;
    std::size_t size() const noexcept { return indices.size(); }
};

struct LoaderOptions {
    bool shuffle = true;
    /// Drop the last batch when it is smaller than batch_size (kept by default).
    bool drop_last = false;
    std::uint64_t seed = 0;
};

/// Seeded shuffled mini-batches over a Dataset, which must outlive the loader.
///
/// The order of epoch e is a fixed function of (seed, e). Each range-for over the loader is one
/// epoch: the first uses epoch 0 (or the one given to set_epoch), each later one the next epoch.
/// Batch storage is reused: a Batch reference is valid until the next batch is requested.
template <class T>
class DataLoader {
public:
    DataLoader(const Dataset<T>& data, std::size_t batch_size, const LoaderOptions& options = {})
        : data_(&data), bs_(batch_size), opt_(options) {
        if (batch_size == 0) throw value_error("DataLoader: batch_size must be positive");
        data.validate();
        set_epoch(0);
    }
    DataLoader(const Dataset<T>&&, std::size_t, const LoaderOptions& = {}) = delete;

    /// Batches per epoch.
    std::size_t size() const noexcept {
        const std::size_t n = data_->size();
        return opt_.drop_last ? n / bs_ : (n + bs_ - 1) / bs_;
    }
    std::size_t batch_size() const noexcept { return bs_; }
    std::uint64_t epoch() const noexcept { return epoch_; }
    const std::vector<std::size_t>& order() const noexcept { return order_; }

    /// Selects the order of epoch e; the next range-for iterates over it.
    void set_epoch(std::uint64_t e) {
        epoch_ = e;
        started_ = false;
        cached_ = static_cast<std::size_t>(-1);
        const std::size_t n = data_->size();
        if (opt_.shuffle) {
            Rng rng(mix(opt_.seed, e));
            order_ = rng.permutation(n);
        } else {
            order_.resize(n);
            for (std::size_t i = 0; i < n; ++i) order_[i] = i;
        }
    }

    /// Batch i of the current epoch.
    const Batch<T>& batch(std::size_t i) {
        if (i >= size())
            throw value_error("DataLoader::batch: batch " + std::to_string(i) + " of " + std::to_string(size()));
        if (i == cached_) return buf_;
        const std::size_t b = i * bs_;
        const std::size_t m = std::min(bs_, data_->size() - b);
        buf_.indices.assign(order_.begin() + static_cast<std::ptrdiff_t>(b),
                            order_.begin() + static_cast<std::ptrdiff_t>(b + m));
        gather(data_->x, buf_.x);
        gather(data_->y, buf_.y);
        if (data_->weighted()) {
            gather(data_->w, buf_.w);
        } else {
            buf_.w.resize(Shape{m});
            buf_.w.fill(T(1));
        }
        if (data_->has_aux()) gather(data_->aux, buf_.aux);
        cached_ = i;
        return buf_;
    }

    class iterator {
    public:
        using value_type = Batch<T>;
        using reference = const Batch<T>&;
        using difference_type = std::ptrdiff_t;
        iterator(DataLoader* l, std::size_t i) : l_(l), i_(i) {}
        reference operator*() const { return l_->batch(i_); }
        const Batch<T>* operator->() const { return &l_->batch(i_); }
        iterator& operator++() {
            ++i_;
            return *this;
        }
        bool operator==(const iterator& o) const noexcept { return i_ == o.i_; }
        bool operator!=(const iterator& o) const noexcept { return i_ != o.i_; }

    private:
        DataLoader* l_;
        std::size_t i_;
    };

    /// Starts an epoch: the current one the first time after construction or set_epoch, else the next.
    iterator begin() {
        if (started_) set_epoch(epoch_ + 1);
        started_ = true;
        return iterator(this, 0);
    }
    iterator end() { return iterator(this, size()); }

private:
    static std::uint64_t mix(std::uint64_t seed, std::uint64_t e) noexcept {
        std::uint64_t z = seed ^ (e * 0x9e3779b97f4a7c15ULL + 0x632be59bd9b4e019ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        return z ^ (z >> 31);
    }

    void gather(const Tensor<T>& src, Tensor<T>& dst) const { gather_rows(src, buf_.indices.data(), buf_.indices.size(), dst); }

    const Dataset<T>* data_;
    std::size_t bs_;
    LoaderOptions opt_;
    std::uint64_t epoch_ = 0;
    bool started_ = false;
    std::size_t cached_ = static_cast<std::size_t>(-1);
    std::vector<std::size_t> order_;
    Batch<T> buf_;
};

} // namespace tapir::data
// ---- end tapir/data/dataset.hpp ----
// ---- begin tapir/autodiff/arena.hpp ----
/// Bump allocator for a tape's intermediate tensors.
///
/// Blocks are kept across reset(), so a step that requests the same sizes as the step before
/// is served from the same blocks and touches the heap not at all. Owned by one tape; not movable.

#include <cstddef>
#include <new>
#include <vector>


namespace tapir {

class Arena {
public:
    static constexpr std::size_t alignment = 64;

    Arena() = default;
    Arena(const Arena&) = delete;
    Arena& operator=(const Arena&) = delete;
    ~Arena() { release(); }

    void* allocate(std::size_t bytes) {
        bytes = (bytes + alignment - 1) & ~(alignment - 1);
        if (TAPIR_LIKELY(cur_ < blocks_.size() && off_ + bytes <= blocks_[cur_].capacity)) {
            void* p = blocks_[cur_].data + off_;
            off_ += bytes;
            return p;
        }
        return allocate_slow(bytes);
    }

    template <class T>
    T* allocate_array(std::size_t n) { return static_cast<T*>(allocate(n * sizeof(T) + (n == 0 ? 1 : 0))); }

    /// Forget every allocation but keep the memory.
    void reset() noexcept {
        cur_ = 0;
        off_ = 0;
    }

    std::size_t capacity() const noexcept {
        std::size_t c = 0;
        for (const auto& b : blocks_) c += b.capacity;
        return c;
    }
    std::size_t blocks() const noexcept { return blocks_.size(); }

private:
    struct Block {
        unsigned char* data;
        std::size_t capacity;
    };

    TAPIR_NOINLINE void* allocate_slow(std::size_t bytes) {
        // Move on to the next kept block that fits; the same sequence of requests takes the same path.
        while (cur_ + 1 < blocks_.size()) {
            ++cur_;
            off_ = 0;
            if (bytes <= blocks_[cur_].capacity) {
                off_ = bytes;
                return blocks_[cur_].data;
            }
        }
        std::size_t cap = blocks_.empty() ? std::size_t(1) << 16 : blocks_.back().capacity * 2;
        if (cap < bytes) cap = bytes;
        auto* p = static_cast<unsigned char*>(::operator new(cap, std::align_val_t(alignment)));
        blocks_.push_back(Block{p, cap});
        cur_ = blocks_.size() - 1;
        off_ = bytes;
        return p;
    }

    void release() noexcept {
        for (auto& b : blocks_) ::operator delete(b.data, std::align_val_t(alignment));
        blocks_.clear();
        cur_ = off_ = 0;
    }

    std::vector<Block> blocks_;
    std::size_t cur_ = 0;
    std::size_t off_ = 0;
};

} // namespace tapir
// ---- end tapir/autodiff/arena.hpp ----
// ---- begin tapir/autodiff/backward.hpp ----
/// Reverse-mode passes over a tape: backward() for training (first order, eager, accumulates
/// into parameters) and grad() for gradients as values, optionally recorded (create_graph) so
/// that they can be differentiated again. Each node's descriptor holds its rule instantiated for
/// the two contexts below; a rule sees them only through in/out/shape/needs/acc.

#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

// ---- begin tapir/autodiff/kernels.hpp ----
/// Forward kernels on arena values (Ref). They allocate their output from the tape's arena and
/// never record: the recorded ops in ops.hpp and the eager backward pass both call them.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>

// ---- begin tapir/autodiff/tape.hpp ----
/// The tape: nodes in recording order, values in an arena, parameters outside.
///
/// A Var is two words (tape pointer, node index) plus a generation counter that catches use
/// after clear(). Nodes live in one vector whose capacity survives clear(); backward walks them
/// in reverse index order, which is already topological, so there is no recursion and no sort.

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

// ---- begin tapir/autodiff/parameter.hpp ----
/// Parameters: trainable tensors that live outside the tape, across steps.

#include <string>
#include <utility>


namespace tapir {

/// A trainable tensor with its gradient buffer; lives outside the tape, across steps.
template <class T>
struct Parameter {
    std::string name;
    Tensor<T> value;
    Tensor<T> grad;
    bool requires_grad = true;

    Parameter() = default;
    Parameter(std::string n, Tensor<T> v) : name(std::move(n)), value(std::move(v)), grad(value.shape()) {}
    const Shape& shape() const noexcept { return value.shape(); }
    std::size_t size() const noexcept { return value.size(); }
    void zero_grad() noexcept { grad.fill(T(0)); }
};

} // namespace tapir
// ---- end tapir/autodiff/parameter.hpp ----

namespace tapir {

template <class T>
class Tape;
template <class T>
class Var;

/// A value on the tape: a pointer into the arena (or a parameter) and a shape. Immutable once written.
template <class T>
struct Ref {
    T* data = nullptr;
    Shape shape{};
    std::size_t size() const noexcept { return shape.numel(); }
};

/// A value computed by the eager backward pass: arena data, no node. Backward rules are written
/// once over the value type V (Var<T> or Eager<T>) and every op accepts both.
template <class T>
struct Eager {
    Ref<T> r;  // first, where a Ref is copied from, so that copies move whole 16-byte words
    Tape<T>* t;
    const Shape& shape() const noexcept { return r.shape; }
    std::size_t size() const noexcept { return r.shape.numel(); }
};

namespace detail {
template <class T>
struct EagerContext;
template <class T>
struct RecordContext;
} // namespace detail
template <class T>
struct Node;

/// An op's identity: its name and the two instantiations of its backward rule (eager values for
/// the first-order pass, recorded values for create_graph). Defined by TAPIR_OP beside the op;
/// a node points to its op's descriptor, so the tape needs no list of ops.
template <class T>
struct OpDef {
    const char* name;
    void (*eager)(detail::EagerContext<T>&, const Node<T>&, const Eager<T>&);
    void (*record)(detail::RecordContext<T>&, const Node<T>&, const Var<T>&);
};

/// Leaves: constants and variables (data in the arena or the user's), and parameters (gradient
/// accumulates into Parameter::grad). They have no rule: the backward pass ends at them.
template <class T>
inline constexpr OpDef<T> op_leaf{"leaf", nullptr, nullptr};
template <class T>
inline constexpr OpDef<T> op_param{"param", nullptr, nullptr};

template <class T>
struct Node {
    Ref<T> out;
    std::int32_t in[3] = {-1, -1, -1};
    const OpDef<T>* op = &op_leaf<T>;
    bool requires_grad = false;
    std::uint8_t flags = 0;  // matmul: bit0 = transpose a, bit1 = transpose b; sum: keepdim; dense: has bias
    std::uint8_t act = 0;    // dense: Activation
    std::int32_t axis = 0;
    T a0 = T(0), a1 = T(0);  // scalar attributes (exponent, alpha, bounds, offsets)
    std::size_t i0 = 0;  // integer attribute (slice and pad offset)
    Parameter<T>* param = nullptr;
    const std::int64_t* index = nullptr;  // gather/scatter row indices (in the arena)
};

namespace detail {
[[noreturn]] inline void throw_stale_var() {
    throw tape_error("Var used after its tape was cleared (or on a different tape generation)");
}
} // namespace detail

template <class T>
class Var {
public:
    using value_type = T;
    Var() = default;
    Var(Tape<T>* t, std::int32_t idx, std::uint32_t gen) noexcept : tape_(t), idx_(idx), gen_(gen) {}

    bool valid() const noexcept { return tape_ != nullptr; }
    Tape<T>& tape() const {
        check();
        return *tape_;
    }
    std::int32_t index() const noexcept { return idx_; }
    const Node<T>& node() const {
        check();
        return tape_->node(idx_);
    }
    const Ref<T>& ref() const { return node().out; }  ///< valid until the next op is recorded
    Shape shape() const { return ref().shape; }       ///< a copy: recording moves the node storage
    std::size_t size() const { return ref().shape.numel(); }
    const T* data() const { return ref().data; }
    bool requires_grad() const { return node().requires_grad; }
    T item() const {
        const Ref<T>& r = ref();
        if (r.shape.numel() != 1) throw shape_error("Var::item: value of shape " + r.shape.str() + " is not a single value");
        return r.data[0];
    }
    T operator[](std::size_t i) const { return ref().data[i]; }
    /// Copy of the value as a Tensor.
    Tensor<T> value() const {
        const Ref<T>& r = ref();
        return Tensor<T>(r.shape, r.data, r.shape.numel());
    }
    /// Gradient left by the last backward() on a leaf variable (grad() calls do not touch it).
    Tensor<T> grad() const { return tape().leaf_grad(idx_); }

private:
    void check() const {
        if (TAPIR_UNLIKELY(tape_ == nullptr)) throw tape_error("Var: empty handle");
        if (TAPIR_UNLIKELY(gen_ != tape_->generation())) detail::throw_stale_var();
    }
    Tape<T>* tape_ = nullptr;
    std::int32_t idx_ = -1;
    std::uint32_t gen_ = 0;
};

template <class T>
class Tape {
public:
    using value_type = T;

    Tape() { nodes_.reserve(256); }
    Tape(const Tape&) = delete;
    Tape& operator=(const Tape&) = delete;

    // ---- leaves ----------------------------------------------------------------------------
    /// A constant copied into the arena (no gradient).
    Var<T> constant(const Tensor<T>& t) { return constant(t.data(), t.shape()); }
    Var<T> constant(const T* data, const Shape& s) {
        Ref<T> r = alloc(s);
        const std::size_t n = s.numel();
        for (std::size_t i = 0; i < n; ++i) r.data[i] = data[i];
        return leaf(r, false);
    }
    Var<T> scalar(T v) { return full(Shape{}, v); }
    Var<T> full(const Shape& s, T v) {
        Ref<T> r = alloc(s);
        const std::size_t n = s.numel();
        for (std::size_t i = 0; i < n; ++i) r.data[i] = v;
        return leaf(r, false);
    }
    /// A constant that aliases the caller's storage: no copy; the tensor must outlive the step.
    Var<T> view(const Tensor<T>& t) { return leaf(Ref<T>{const_cast<T*>(t.data()), t.shape()}, false); }
    /// A leaf that requires a gradient (copied into the arena); read it with Var::grad().
    Var<T> variable(const Tensor<T>& t) {
        Var<T> v = constant(t);
        nodes_[static_cast<std::size_t>(v.index())].requires_grad = grad_enabled_;
        return v;
    }
    /// A parameter's storage as a leaf; gradients accumulate into p.grad.
    Var<T> param(Parameter<T>& p) {
        Node<T> n;
        n.out = Ref<T>{p.value.data(), p.value.shape()};
        n.op = &op_param<T>;
        n.requires_grad = p.requires_grad && grad_enabled_;
        n.param = &p;
        return push_node(n);
    }

    /// Drop every node and arena value; keeps capacity so the next step does not allocate.
    void clear() noexcept {
        nodes_.clear();
        labels_.clear();
        arena_.reset();
        ++generation_;
    }

    std::size_t size() const noexcept { return nodes_.size(); }
    std::uint32_t generation() const noexcept { return generation_; }
    const Node<T>& node(std::int32_t i) const noexcept { return nodes_[static_cast<std::size_t>(i)]; }
    Node<T>& node_mut(std::int32_t i) noexcept { return nodes_[static_cast<std::size_t>(i)]; }
    Var<T> var(std::int32_t i) noexcept { return Var<T>(this, i, generation_); }
    Arena& arena() noexcept { return arena_; }

    bool grad_enabled() const noexcept { return grad_enabled_; }
    void set_grad_enabled(bool on) noexcept { grad_enabled_ = on; }

    /// Anomaly mode: the first op whose forward or backward value is not finite throws anomaly_error.
    void set_detect_anomaly(bool on) noexcept { detect_anomaly_ = on; }
    bool detect_anomaly() const noexcept { return detect_anomaly_; }
    /// A label recorded with subsequent nodes, named by anomaly errors (e.g. the layer name).
    void set_label(const char* label) noexcept { label_ = label; }
    const char* label() const noexcept { return label_; }

    // ---- recording (used by ops) ------------------------------------------------------------
    Ref<T> alloc(const Shape& s) { return Ref<T>{arena_.allocate_array<T>(s.numel()), s}; }

    Var<T> push_node(const Node<T>& n) {
        if (TAPIR_UNLIKELY(detect_anomaly_)) note_forward(*n.op, n.out);
        nodes_.push_back(n);
        return Var<T>(this, static_cast<std::int32_t>(nodes_.size() - 1), generation_);
    }

    /// Records an op with up to three inputs; requires_grad follows its inputs.
    Var<T> record(const OpDef<T>& op, const Ref<T>& out, std::int32_t a, std::int32_t b = -1, std::int32_t c = -1) {
        const Node<T>* nd = nodes_.data();
        const bool rg = grad_enabled_ && ((a >= 0 && nd[a].requires_grad) || (b >= 0 && nd[b].requires_grad) ||
                                          (c >= 0 && nd[c].requires_grad));
        if (TAPIR_UNLIKELY(detect_anomaly_)) note_forward(op, out);
        Node<T>& n = nodes_.emplace_back();
        n.out = out;
        n.op = &op;
        n.in[0] = a;
        n.in[1] = b;
        n.in[2] = c;
        n.requires_grad = rg;
        return Var<T>(this, static_cast<std::int32_t>(nodes_.size() - 1), generation_);
    }
    Var<T> leaf(const Ref<T>& r, bool requires_grad) {
        Node<T> n;
        n.out = r;
        n.requires_grad = requires_grad;
        return push_node(n);
    }

    /// Backward scratch, kept here so that its capacity survives between steps: grad_refs for
    /// backward() (read by Var::grad() until the next backward), grad_scratch for grad().
    std::vector<Ref<T>>& grad_refs() noexcept { return grad_refs_; }
    std::vector<Ref<T>>& grad_scratch() noexcept { return grad_scratch_; }
    std::vector<std::int32_t>& grad_vars() noexcept { return grad_vars_; }

    Tensor<T> leaf_grad(std::int32_t i) const {
        const auto k = static_cast<std::size_t>(i);
        if (k >= grad_refs_.size() || grad_refs_[k].data == nullptr) {
            if (!nodes_[k].requires_grad) throw tape_error("Var::grad: this value does not require a gradient");
            return Tensor<T>(nodes_[k].out.shape);
        }
        return Tensor<T>(grad_refs_[k].shape, grad_refs_[k].data, grad_refs_[k].shape.numel());
    }

    /// Anomaly check of one value produced by node `index` (its output, or a gradient its rule made).
    void check_finite(std::size_t index, const OpDef<T>& op, const char* phase, const Ref<T>& r) const {
        const std::size_t m = r.shape.numel();
        for (std::size_t i = 0; i < m; ++i) {
            const T v = r.data[i];
            if (v - v == v - v) continue;  // finite
            std::string where = "node #" + std::to_string(index);
            const char* lab = index < labels_.size() ? labels_[index] : label_;
            if (lab && *lab) where += std::string(" in '") + lab + "'";
            throw anomaly_error(std::string("anomaly: ") + phase + " of op '" + op.name + "' (" + where + ", " +
                                (phase[0] == 'f' ? "output" : "gradient") + " shape " + r.shape.str() + ") produced " +
                                (v != v ? "NaN" : (v > 0 ? "+inf" : "-inf")) + " at element " + std::to_string(i));
        }
    }

private:
    void note_forward(const OpDef<T>& op, const Ref<T>& out) {
        check_finite(nodes_.size(), op, "forward", out);
        labels_.resize(nodes_.size() + 1, nullptr);
        labels_.back() = label_;
    }
    std::vector<Node<T>> nodes_;
    Arena arena_;
    std::vector<Ref<T>> grad_refs_, grad_scratch_;
    std::vector<std::int32_t> grad_vars_;
    std::vector<const char*> labels_;
    const char* label_ = nullptr;
    std::uint32_t generation_ = 1;
    bool grad_enabled_ = true;
    bool detect_anomaly_ = false;
};

/// Disables gradient recording on a tape for its lifetime (inference, target networks).
template <class T>
class NoGradGuard {
public:
    explicit NoGradGuard(Tape<T>& t) noexcept : tape_(t), prev_(t.grad_enabled()) { t.set_grad_enabled(false); }
    ~NoGradGuard() { tape_.set_grad_enabled(prev_); }
    NoGradGuard(const NoGradGuard&) = delete;
    NoGradGuard& operator=(const NoGradGuard&) = delete;

private:
    Tape<T>& tape_;
    bool prev_;
};

} // namespace tapir
// ---- end tapir/autodiff/tape.hpp ----

namespace tapir {
namespace detail {

inline void dims4(const Shape& s, std::size_t d[4]) noexcept {
    const std::size_t r = s.rank();
    for (std::size_t i = 0; i < 4; ++i) d[i] = i + r >= 4 ? s[i + r - 4] : 1;
}
/// Strides of s read as the broadcast shape od (0 along stretched axes).
inline void broadcast_strides(const Shape& s, const std::size_t od[4], std::size_t st[4]) noexcept {
    std::size_t d[4];
    dims4(s, d);
    std::size_t acc = 1;
    for (std::size_t i = 4; i-- > 0;) {
        st[i] = (d[i] == 1 && od[i] != 1) ? 0 : acc;
        acc *= d[i];
    }
}

inline std::size_t normalize_axis(std::int64_t axis, const Shape& s, const char* op) {
    const auto r = static_cast<std::int64_t>(s.rank());
    const std::int64_t a = axis < 0 ? axis + r : axis;
    if (r == 0 || a < 0 || a >= r)
        throw shape_error(std::string(op) + ": axis " + std::to_string(axis) + " is out of range for shape " + s.str());
    return static_cast<std::size_t>(a);
}

/// (outer, len, inner) view of a shape around one axis.
struct AxisSplit {
    std::size_t outer = 1, len = 1, inner = 1;
};
inline AxisSplit split_axis(const Shape& s, std::size_t axis) noexcept {
    AxisSplit a;
    for (std::size_t i = 0; i < s.rank(); ++i) {
        if (i < axis) a.outer *= s[i];
        else if (i == axis) a.len = s[i];
        else a.inner *= s[i];
    }
    return a;
}
inline Shape reduced_shape(const Shape& s, std::size_t axis, bool keepdim) {
    Shape out;
    for (std::size_t i = 0; i < s.rank(); ++i) {
        if (i != axis) out.push_back(s[i]);
        else if (keepdim) out.push_back(1);
    }
    return out;
}

template <class T>
T stable_sigmoid(T x) noexcept {
    if (x >= T(0)) return T(1) / (T(1) + std::exp(-x));
    const T e = std::exp(x);
    return e / (T(1) + e);
}
template <class T>
T stable_softplus(T x) noexcept {
    return (x > T(0) ? x : T(0)) + std::log1p(std::exp(-std::abs(x)));
}

// ---- elementwise --------------------------------------------------------------------------

template <class T, class F>
Ref<T> k_unary(Tape<T>& t, const Ref<T>& a, F f) {
    Ref<T> out = t.alloc(a.shape);
    const std::size_t n = a.size();
    const T* TAPIR_RESTRICT x = a.data;
    T* TAPIR_RESTRICT y = out.data;
    for (std::size_t i = 0; i < n; ++i) y[i] = f(x[i]);
    return out;
}

template <class T, class F>
Ref<T> k_binary(Tape<T>& t, const Ref<T>& a, const Ref<T>& b, F f, const char* op) {
    if (a.shape == b.shape) {
        Ref<T> out = t.alloc(a.shape);
        const std::size_t n = a.size();
        for (std::size_t i = 0; i < n; ++i) out.data[i] = f(a.data[i], b.data[i]);
        return out;
    }
    const Shape os = broadcast_shapes(a.shape, b.shape, op);
    Ref<T> out = t.alloc(os);
    const std::size_t n = os.numel();
    if (os == a.shape && b.size() == 1) {
        const T s = b.data[0];
        for (std::size_t i = 0; i < n; ++i) out.data[i] = f(a.data[i], s);
        return out;
    }
    if (os == b.shape && a.size() == 1) {
        const T s = a.data[0];
        for (std::size_t i = 0; i < n; ++i) out.data[i] = f(s, b.data[i]);
        return out;
    }
    const std::size_t cols = os.cols();
    if (os == a.shape && b.size() == cols && b.shape.cols() == cols) {  // row vector over a batch
        for (std::size_t r = 0, rows = n / (cols ? cols : 1); r < rows; ++r)
            for (std::size_t j = 0; j < cols; ++j) out.data[r * cols + j] = f(a.data[r * cols + j], b.data[j]);
        return out;
    }
    std::size_t od[4], sa[4], sb[4];
    dims4(os, od);
    broadcast_strides(a.shape, od, sa);
    broadcast_strides(b.shape, od, sb);
    std::size_t o = 0;
    for (std::size_t i0 = 0; i0 < od[0]; ++i0)
        for (std::size_t i1 = 0; i1 < od[1]; ++i1)
            for (std::size_t i2 = 0; i2 < od[2]; ++i2) {
                const std::size_t ba = i0 * sa[0] + i1 * sa[1] + i2 * sa[2];
                const std::size_t bb = i0 * sb[0] + i1 * sb[1] + i2 * sb[2];
                for (std::size_t i3 = 0; i3 < od[3]; ++i3) out.data[o++] = f(a.data[ba + i3 * sa[3]], b.data[bb + i3 * sb[3]]);
            }
    return out;
}

/// Below this many elements a plain loop beats the dispatch to a vector kernel.
constexpr std::size_t small_size = 16;

/// Same shapes: a plain loop when small, else the vector kernel vec (both compute f lane by lane);
/// other shapes broadcast through k_binary.
template <class T, class F, class G>
TAPIR_ALWAYS_INLINE Ref<T> k_lanewise(Tape<T>& t, const Ref<T>& a, const Ref<T>& b, F f, G vec, const char* name) {
    if (TAPIR_LIKELY(a.shape == b.shape)) {
        Ref<T> out = t.alloc(a.shape);
        const std::size_t n = a.size();
        if (n <= small_size)
            for (std::size_t i = 0; i < n; ++i) out.data[i] = f(a.data[i], b.data[i]);
        else
            vec(a.data, b.data, out.data, n);
        return out;
    }
    return k_binary(t, a, b, f, name);
}
template <class T>
TAPIR_ALWAYS_INLINE Ref<T> k_add(Tape<T>& t, const Ref<T>& a, const Ref<T>& b) {
    return k_lanewise(
        t, a, b, [](T x, T y) { return x + y; },
        [](const T* x, const T* y, T* o, std::size_t n) { simd::add(x, y, o, n); }, "add");
}
template <class T>
Ref<T> k_sub(Tape<T>& t, const Ref<T>& a, const Ref<T>& b) {
    return k_binary(t, a, b, [](T x, T y) { return x - y; }, "sub");
}
template <class T>
TAPIR_ALWAYS_INLINE Ref<T> k_mul(Tape<T>& t, const Ref<T>& a, const Ref<T>& b) {
    return k_lanewise(
        t, a, b, [](T x, T y) { return x * y; },
        [](const T* x, const T* y, T* o, std::size_t n) { simd::mul(x, y, o, n); }, "mul");
}
template <class T>
Ref<T> k_div(Tape<T>& t, const Ref<T>& a, const Ref<T>& b) {
    return k_binary(t, a, b, [](T x, T y) { return x / y; }, "div");
}

/// out = cond ? a : b with all three broadcast together; cond holds 0 or 1.
template <class T>
Ref<T> k_where(Tape<T>& t, const Ref<T>& c, const Ref<T>& a, const Ref<T>& b) {
    const Shape os = broadcast_shapes(c.shape, broadcast_shapes(a.shape, b.shape, "where"), "where");
    Ref<T> out = t.alloc(os);
    std::size_t od[4], sc[4], sa[4], sb[4];
    dims4(os, od);
    broadcast_strides(c.shape, od, sc);
    broadcast_strides(a.shape, od, sa);
    broadcast_strides(b.shape, od, sb);
    std::size_t o = 0;
    for (std::size_t i0 = 0; i0 < od[0]; ++i0)
        for (std::size_t i1 = 0; i1 < od[1]; ++i1)
            for (std::size_t i2 = 0; i2 < od[2]; ++i2)
                for (std::size_t i3 = 0; i3 < od[3]; ++i3) {
                    const std::size_t kc = i0 * sc[0] + i1 * sc[1] + i2 * sc[2] + i3 * sc[3];
                    const std::size_t ka = i0 * sa[0] + i1 * sa[1] + i2 * sa[2] + i3 * sa[3];
                    const std::size_t kb = i0 * sb[0] + i1 * sb[1] + i2 * sb[2] + i3 * sb[3];
                    out.data[o++] = c.data[kc] != T(0) ? a.data[ka] : b.data[kb];
                }
    return out;
}

// ---- shape ops ----------------------------------------------------------------------------

template <class T>
Ref<T> k_broadcast_to(Tape<T>& t, const Ref<T>& a, const Shape& s) {
    if (a.shape == s) return a;
    if (broadcast_shapes(a.shape, s, "broadcast_to") != s) throw_shape("broadcast_to", a.shape, s, "cannot broadcast");
    Ref<T> out = t.alloc(s);
    const std::size_t n = s.numel();
    if (a.size() == 1) {
        for (std::size_t i = 0; i < n; ++i) out.data[i] = a.data[0];
        return out;
    }
    std::size_t od[4], sa[4];
    dims4(s, od);
    broadcast_strides(a.shape, od, sa);
    std::size_t o = 0;
    for (std::size_t i0 = 0; i0 < od[0]; ++i0)
        for (std::size_t i1 = 0; i1 < od[1]; ++i1)
            for (std::size_t i2 = 0; i2 < od[2]; ++i2)
                for (std::size_t i3 = 0; i3 < od[3]; ++i3)
                    out.data[o++] = a.data[i0 * sa[0] + i1 * sa[1] + i2 * sa[2] + i3 * sa[3]];
    return out;
}

/// Sums a over the axes along which s was broadcast to a's shape (the adjoint of broadcast_to).
template <class T>
Ref<T> k_sum_to_reduce(Tape<T>& t, const Ref<T>& a, const Shape& s) {
    if (broadcast_shapes(s, a.shape, "sum_to") != a.shape) throw_shape("sum_to", a.shape, s, "cannot reduce");
    Ref<T> out = t.alloc(s);
    const std::size_t m = s.numel(), n = a.size();
    if (m == 1) {
        out.data[0] = simd::sum(a.data, n);
        return out;
    }
    const std::size_t cols = a.shape.cols();
    if (m == cols && s.cols() == cols) {  // column sums of a batch
        simd::sum_rows(a.data, n / cols, cols, cols, out.data);
        return out;
    }
    for (std::size_t i = 0; i < m; ++i) out.data[i] = T(0);
    std::size_t od[4], so[4];
    dims4(a.shape, od);
    broadcast_strides(s, od, so);
    std::size_t k = 0;
    for (std::size_t i0 = 0; i0 < od[0]; ++i0)
        for (std::size_t i1 = 0; i1 < od[1]; ++i1)
            for (std::size_t i2 = 0; i2 < od[2]; ++i2)
                for (std::size_t i3 = 0; i3 < od[3]; ++i3)
                    out.data[i0 * so[0] + i1 * so[1] + i2 * so[2] + i3 * so[3]] += a.data[k++];
    return out;
}
template <class T>
TAPIR_ALWAYS_INLINE Ref<T> k_sum_to(Tape<T>& t, const Ref<T>& a, const Shape& s) {
    if (TAPIR_LIKELY(a.shape == s)) return a;
    return k_sum_to_reduce(t, a, s);
}

template <class T>
Ref<T> k_reshape(const Ref<T>& a, const Shape& s) {
    if (s.numel() != a.size()) throw_shape("reshape", a.shape, s, "element counts differ");
    return Ref<T>{a.data, s};
}

template <class T>
Ref<T> k_transpose(Tape<T>& t, const Ref<T>& a) {
    if (a.shape.rank() != 2) throw shape_error("transpose: expects a 2-D value, got shape " + a.shape.str());
    const std::size_t r = a.shape[0], c = a.shape[1];
    Ref<T> out = t.alloc(Shape{c, r});
    for (std::size_t i = 0; i < r; ++i)
        for (std::size_t j = 0; j < c; ++j) out.data[j * r + i] = a.data[i * c + j];
    return out;
}

template <class T>
Ref<T> k_matmul(Tape<T>& t, const Ref<T>& a, const Ref<T>& b, bool ta, bool tb) {
    if (a.shape.rank() != 2 || b.shape.rank() != 2)
        throw_shape("matmul", a.shape, b.shape, "expects 2-D operands");
    const std::size_t m = ta ? a.shape[1] : a.shape[0];
    const std::size_t k = ta ? a.shape[0] : a.shape[1];
    const std::size_t kb = tb ? b.shape[1] : b.shape[0];
    const std::size_t n = tb ? b.shape[0] : b.shape[1];
    if (k != kb) {
        throw shape_error(std::string("matmul: inner dimensions differ: ") + a.shape.str() + (ta ? "^T" : "") + " x " +
                          b.shape.str() + (tb ? "^T" : ""));
    }
    Ref<T> out = t.alloc(Shape{m, n});
    simd::gemm<T>(ta, tb, m, n, k, T(1), a.data, a.shape[1], b.data, b.shape[1], T(0), out.data, n);
    return out;
}

template <class T>
Ref<T> k_sum_axis(Tape<T>& t, const Ref<T>& a, std::size_t axis, bool keepdim) {
    const AxisSplit s = split_axis(a.shape, axis);
    Ref<T> out = t.alloc(reduced_shape(a.shape, axis, keepdim));
    for (std::size_t o = 0; o < s.outer; ++o) {
        T* dst = out.data + o * s.inner;
        for (std::size_t i = 0; i < s.inner; ++i) dst[i] = T(0);
        for (std::size_t l = 0; l < s.len; ++l) {
            const T* src = a.data + (o * s.len + l) * s.inner;
            for (std::size_t i = 0; i < s.inner; ++i) dst[i] += src[i];
        }
    }
    return out;
}

template <class T>
Ref<T> k_extreme_axis(Tape<T>& t, const Ref<T>& a, std::size_t axis, bool keepdim, bool is_max) {
    const AxisSplit s = split_axis(a.shape, axis);
    if (s.len == 0) throw shape_error(std::string(is_max ? "max" : "min") + ": empty axis in shape " + a.shape.str());
    Ref<T> out = t.alloc(reduced_shape(a.shape, axis, keepdim));
    for (std::size_t o = 0; o < s.outer; ++o)
        for (std::size_t i = 0; i < s.inner; ++i) {
            T best = a.data[o * s.len * s.inner + i];
            for (std::size_t l = 1; l < s.len; ++l) {
                const T v = a.data[(o * s.len + l) * s.inner + i];
                if (is_max ? v > best : v < best) best = v;
            }
            out.data[o * s.inner + i] = best;
        }
    return out;
}

/// One-hot mask of the first maximum (or minimum) along an axis: where max/min send the gradient.
template <class T>
Ref<T> k_extreme_mask(Tape<T>& t, const Ref<T>& a, std::size_t axis, bool is_max) {
    const AxisSplit s = split_axis(a.shape, axis);
    Ref<T> out = t.alloc(a.shape);
    for (std::size_t j = 0; j < a.size(); ++j) out.data[j] = T(0);
    for (std::size_t o = 0; o < s.outer; ++o)
        for (std::size_t i = 0; i < s.inner; ++i) {
            std::size_t arg = 0;
            T best = a.data[o * s.len * s.inner + i];
            for (std::size_t l = 1; l < s.len; ++l) {
                const T v = a.data[(o * s.len + l) * s.inner + i];
                if (is_max ? v > best : v < best) best = v, arg = l;
            }
            out.data[(o * s.len + arg) * s.inner + i] = T(1);
        }
    return out;
}

enum class SoftmaxKind { softmax, log_softmax, logsumexp };

template <class T>
Ref<T> k_softmax_family(Tape<T>& t, const Ref<T>& a, std::size_t axis, SoftmaxKind kind, bool keepdim) {
    const AxisSplit s = split_axis(a.shape, axis);
    Ref<T> out = t.alloc(kind == SoftmaxKind::logsumexp ? reduced_shape(a.shape, axis, keepdim) : a.shape);
    for (std::size_t o = 0; o < s.outer; ++o)
        for (std::size_t i = 0; i < s.inner; ++i) {
            const T* x = a.data + o * s.len * s.inner + i;
            T m = -std::numeric_limits<T>::infinity();
            for (std::size_t l = 0; l < s.len; ++l) m = x[l * s.inner] > m ? x[l * s.inner] : m;
            if (!(m > -std::numeric_limits<T>::infinity() && m < std::numeric_limits<T>::infinity())) m = T(0);
            T sum = T(0);
            for (std::size_t l = 0; l < s.len; ++l) sum += std::exp(x[l * s.inner] - m);
            if (kind == SoftmaxKind::logsumexp) {
                out.data[o * s.inner + i] = m + std::log(sum);
                continue;
            }
            T* y = out.data + o * s.len * s.inner + i;
            if (kind == SoftmaxKind::softmax) {
                const T inv = T(1) / sum;
                for (std::size_t l = 0; l < s.len; ++l) y[l * s.inner] = std::exp(x[l * s.inner] - m) * inv;
            } else {
                const T lse = m + std::log(sum);
                for (std::size_t l = 0; l < s.len; ++l) y[l * s.inner] = x[l * s.inner] - lse;
            }
        }
    return out;
}

template <class T>
Ref<T> k_concat(Tape<T>& t, const Ref<T>& a, const Ref<T>& b, std::size_t axis) {
    if (a.shape.rank() != b.shape.rank()) throw_shape("concat", a.shape, b.shape, "ranks differ");
    Shape os = a.shape;
    for (std::size_t i = 0; i < a.shape.rank(); ++i)
        if (i != axis && a.shape[i] != b.shape[i]) throw_shape("concat", a.shape, b.shape, "shapes differ off the concatenation axis");
    os[axis] = a.shape[axis] + b.shape[axis];
    Ref<T> out = t.alloc(os);
    const AxisSplit sa = split_axis(a.shape, axis), sb = split_axis(b.shape, axis);
    const std::size_t na = sa.len * sa.inner, nb = sb.len * sb.inner;
    for (std::size_t o = 0; o < sa.outer; ++o) {
        T* dst = out.data + o * (na + nb);
        for (std::size_t j = 0; j < na; ++j) dst[j] = a.data[o * na + j];
        for (std::size_t j = 0; j < nb; ++j) dst[na + j] = b.data[o * nb + j];
    }
    return out;
}

template <class T>
Ref<T> k_slice(Tape<T>& t, const Ref<T>& a, std::size_t axis, std::size_t start, std::size_t len) {
    if (start + len > a.shape[axis])
        throw shape_error("slice: range [" + std::to_string(start) + ", " + std::to_string(start + len) +
                          ") exceeds axis " + std::to_string(axis) + " of shape " + a.shape.str());
    Shape os = a.shape;
    os[axis] = len;
    Ref<T> out = t.alloc(os);
    const AxisSplit s = split_axis(a.shape, axis);
    for (std::size_t o = 0; o < s.outer; ++o)
        for (std::size_t j = 0; j < len * s.inner; ++j)
            out.data[o * len * s.inner + j] = a.data[(o * s.len + start) * s.inner + j];
    return out;
}

/// The adjoint of slice: a placed at [start, start+len) of an axis of length total, zeros elsewhere.
template <class T>
Ref<T> k_pad(Tape<T>& t, const Ref<T>& a, std::size_t axis, std::size_t start, std::size_t total) {
    Shape os = a.shape;
    os[axis] = total;
    Ref<T> out = t.alloc(os);
    for (std::size_t j = 0; j < os.numel(); ++j) out.data[j] = T(0);
    const AxisSplit s = split_axis(a.shape, axis);
    for (std::size_t o = 0; o < s.outer; ++o)
        for (std::size_t j = 0; j < s.len * s.inner; ++j)
            out.data[(o * total + start) * s.inner + j] = a.data[o * s.len * s.inner + j];
    return out;
}

template <class T>
Ref<T> k_gather_rows(Tape<T>& t, const Ref<T>& a, const std::int64_t* idx, std::size_t n) {
    Shape os = a.shape;
    os[0] = n;
    const std::size_t row = a.shape[0] ? a.size() / a.shape[0] : 0;
    Ref<T> out = t.alloc(os);
    for (std::size_t r = 0; r < n; ++r)
        for (std::size_t j = 0; j < row; ++j) out.data[r * row + j] = a.data[static_cast<std::size_t>(idx[r]) * row + j];
    return out;
}

/// The adjoint of gather_rows: rows of g added into a zero tensor of nrows rows at idx.
template <class T>
Ref<T> k_scatter_rows(Tape<T>& t, const Ref<T>& g, const std::int64_t* idx, std::size_t nrows) {
    Shape os = g.shape;
    os[0] = nrows;
    const std::size_t n = g.shape[0];
    const std::size_t row = n ? g.size() / n : 0;
    Ref<T> out = t.alloc(os);
    for (std::size_t j = 0; j < os.numel(); ++j) out.data[j] = T(0);
    for (std::size_t r = 0; r < n; ++r)
        for (std::size_t j = 0; j < row; ++j) out.data[static_cast<std::size_t>(idx[r]) * row + j] += g.data[r * row + j];
    return out;
}

/// act(z) for one value: simd/activation.hpp's definition on the scalar kernel family.
template <class T>
T apply_activation(Activation act, T z, T alpha) noexcept {
    return simd::activation_scalar<T>(act, z, alpha);
}

/// act(x W + b): x (batch, in), W (in, out), b (out,) or absent.
template <class T>
Ref<T> k_dense(Tape<T>& t, const Ref<T>& x, const Ref<T>& w, const Ref<T>* b, Activation act, T alpha) {
    if (x.shape.rank() != 2 || w.shape.rank() != 2 || x.shape[1] != w.shape[0])
        throw_shape("dense", x.shape, w.shape, "input features do not match the weight rows");
    const std::size_t m = x.shape[0], k = x.shape[1], n = w.shape[1];
    if (b && b->size() != n) throw_shape("dense", w.shape, b->shape, "bias length does not match the weight columns");
    Ref<T> out = t.alloc(Shape{m, n});
    if (b && (act == Activation::none || act == Activation::relu) &&
        simd::gemm_bias_act<T>(m, n, k, x.data, k, w.data, n, b->data, act == Activation::relu, out.data, n))
        return out;
    simd::gemm<T>(false, false, m, n, k, T(1), x.data, k, w.data, n, T(0), out.data, n);
    if (b) simd::add_row(out.data, m, n, n, b->data);
    if (act != Activation::none) simd::activate_on(simd::active_isa(), act, out.data, out.data, m * n, alpha);
    return out;
}

/// g * act'(z), written with the activation's output y (and for softplus its output too).
template <class T>
Ref<T> k_act_grad(Tape<T>& t, const Ref<T>& g, const Ref<T>& y, Activation act, T alpha) {
    Ref<T> out = t.alloc(g.shape);
    simd::activation_backward_on(simd::active_isa(), act, g.data, y.data, out.data, g.size(), alpha);
    return out;
}

} // namespace detail
} // namespace tapir
// ---- end tapir/autodiff/kernels.hpp ----

namespace tapir {
namespace detail {

/// The eager first-order pass: values in the arena, gradients in grads[node].
template <class T>
struct EagerContext {
    using value = Eager<T>;
    Tape<T>& t;
    std::vector<Ref<T>>& grads;

    Eager<T> in(const Node<T>& n, int k) const { return Eager<T>{t.node(n.in[k]).out, &t}; }
    Eager<T> out(const Node<T>& n) const { return Eager<T>{n.out, &t}; }
    const Shape& shape(const Node<T>& n, int k) const { return t.node(n.in[k]).out.shape; }
    bool needs(const Node<T>& n, int k) const { return n.in[k] >= 0 && t.node(n.in[k]).requires_grad; }
    void acc(const Node<T>& n, int k, const Eager<T>& v) {
        Ref<T>& g = grads[static_cast<std::size_t>(n.in[k])];
        if (g.data) g = k_add(t, g, v.r);  // out of place: gradient buffers may be shared
        else g = v.r;
    }
};

/// The recorded pass: every step is a node, so the gradients it produces are differentiable.
template <class T>
struct RecordContext {
    using value = Var<T>;
    Tape<T>& t;
    std::vector<std::int32_t>& grads;
    std::int32_t current = -1;

    Var<T> in(const Node<T>& n, int k) const { return t.var(n.in[k]); }
    Var<T> out(const Node<T>&) const { return t.var(current); }
    /// By value: the rule records nodes while it holds the shape, and the node storage may move.
    Shape shape(const Node<T>& n, int k) const { return t.node(n.in[k]).out.shape; }
    bool needs(const Node<T>& n, int k) const { return n.in[k] >= 0 && t.node(n.in[k]).requires_grad; }
    void acc(const Node<T>& n, int k, const Var<T>& v) {
        std::int32_t& g = grads[static_cast<std::size_t>(n.in[k])];
        g = g >= 0 ? add(t.var(g), v).index() : v.index();  // tapir::add, found by argument-dependent lookup
    }
};

template <class T>
std::int32_t max_index(const Var<T>* vs, std::size_t n) {
    std::int32_t m = -1;
    for (std::size_t i = 0; i < n; ++i) m = vs[i].index() > m ? vs[i].index() : m;
    return m;
}

/// Without seeds every output must be a single value (as backward() and PyTorch require).
template <class T>
void check_seeds(const char* who, const Var<T>* outputs, std::size_t n, const Var<T>* seeds) {
    for (std::size_t k = 0; k < n; ++k) {
        if (seeds && seeds[k].shape() != outputs[k].shape())
            throw_shape((std::string(who) + ": gradient for output").c_str(), outputs[k].shape(), seeds[k].shape());
        if (!seeds && outputs[k].size() != 1)
            throw shape_error(std::string(who) + ": output of shape " + outputs[k].shape().str() + " is not a single value; pass its gradient: " +
                              who + (who[0] == 'b' ? "(output, gradient)" : "(outputs, inputs, grad_outputs)"));
    }
}

/// First-order pass: grads[i] holds the gradient of node i afterwards.
template <class T>
void run_eager(Tape<T>& t, std::vector<Ref<T>>& grads, const Var<T>* outputs, std::size_t n_outputs, const Var<T>* seeds,
               bool into_params) {
    grads.assign(t.size(), Ref<T>{});
    EagerContext<T> ctx{t, grads};
    for (std::size_t k = 0; k < n_outputs; ++k) {
        const Ref<T> seed = seeds ? seeds[k].ref() : t.alloc(outputs[k].shape());
        for (std::size_t i = 0; !seeds && i < seed.size(); ++i) seed.data[i] = T(1);
        Ref<T>& g = grads[static_cast<std::size_t>(outputs[k].index())];
        g = g.data ? k_add(t, g, seed) : seed;
    }
    const bool anomaly = t.detect_anomaly();
    for (std::int32_t i = max_index(outputs, n_outputs); i >= 0; --i) {
        const Node<T>& n = t.node(i);
        const Ref<T>& g = grads[static_cast<std::size_t>(i)];
        if (!n.requires_grad || g.data == nullptr) continue;
        if (n.op == &op_param<T>) {
            if (into_params) {
                Tensor<T>& pg = n.param->grad;
                if (pg.shape() != n.out.shape) pg = Tensor<T>(n.out.shape);
                simd::add(pg.data(), g.data, pg.data(), g.size());
            }
            continue;
        }
        if (n.op->eager == nullptr) continue;
        n.op->eager(ctx, n, Eager<T>{g, &t});
        if (TAPIR_UNLIKELY(anomaly)) {
            for (int k = 0; k < 3; ++k)
                if (n.in[k] >= 0 && grads[static_cast<std::size_t>(n.in[k])].data)
                    t.check_finite(static_cast<std::size_t>(i), *n.op, "backward", grads[static_cast<std::size_t>(n.in[k])]);
        }
    }
}

} // namespace detail

/// Backpropagates a single-valued output; parameter gradients accumulate into Parameter::grad and
/// leaf variables' gradients are read with Var::grad().
template <class T>
void backward(const Var<T>& output) {
    detail::check_seeds<T>("backward", &output, 1, nullptr);
    detail::run_eager<T>(output.tape(), output.tape().grad_refs(), &output, 1, nullptr, true);
}
template <class T>
void backward(const Var<T>& output, const Var<T>& gradient) {
    detail::check_seeds<T>("backward", &output, 1, &gradient);
    detail::run_eager<T>(output.tape(), output.tape().grad_refs(), &output, 1, &gradient, true);
}

namespace detail {
/// grad() on arrays: result[k] for inputs[k]. No heap allocation of its own in steady state (the
/// tape's buffers are reused), so a training step that calls the one-input grad() allocates nothing.
template <class T>
void grad_into(const Var<T>* outputs, std::size_t n_out, const Var<T>* inputs, std::size_t n_in, const Var<T>* seeds,
               bool create_graph, bool allow_unused, Var<T>* result) {
    if (n_out == 0) throw tape_error("grad: no outputs given");
    Tape<T>& t = outputs[0].tape();
    for (std::size_t k = 0; k < n_in; ++k) {
        if (&inputs[k].tape() != &t) throw tape_error("grad: input #" + std::to_string(k) + " is on a different tape");
        if (!inputs[k].requires_grad())
            throw tape_error("grad: input #" + std::to_string(k) + " does not require a gradient (a constant or detached value)");
    }
    check_seeds("grad", outputs, n_out, seeds);
    const auto unused = [&](std::size_t k) {
        if (!allow_unused)
            throw tape_error("grad: input #" + std::to_string(k) + " (shape " + inputs[k].shape().str() +
                             ") is not used to compute the outputs; pass allow_unused = true for a zero gradient");
        return t.full(inputs[k].shape(), T(0));
    };
    if (!create_graph) {
        auto& gs = t.grad_scratch();
        run_eager<T>(t, gs, outputs, n_out, seeds, false);
        for (std::size_t k = 0; k < n_in; ++k) {
            const Ref<T> g = gs[static_cast<std::size_t>(inputs[k].index())];
            result[k] = g.data ? t.leaf(g, false) : unused(k);
        }
        return;
    }
    struct EnableGrad {
        Tape<T>& tape;
        bool was;
        ~EnableGrad() { tape.set_grad_enabled(was); }
    } restore{t, t.grad_enabled()};
    t.set_grad_enabled(true);
    auto& gv = t.grad_vars();
    gv.assign(t.size(), -1);
    RecordContext<T> ctx{t, gv, -1};
    for (std::size_t o = 0; o < n_out; ++o) {
        const Var<T> seed = seeds ? seeds[o] : t.full(outputs[o].shape(), T(1));
        std::int32_t& g = gv[static_cast<std::size_t>(outputs[o].index())];
        g = g >= 0 ? add(t.var(g), seed).index() : seed.index();
    }
    for (std::int32_t i = max_index(outputs, n_out); i >= 0; --i) {
        const std::int32_t gi = gv[static_cast<std::size_t>(i)];
        if (gi < 0) continue;
        const Node<T> n = t.node(i);  // a copy: rules append nodes, which may move the node storage
        if (!n.requires_grad || n.op->record == nullptr) continue;
        ctx.current = i;
        n.op->record(ctx, n, t.var(gi));
    }
    for (std::size_t k = 0; k < n_in; ++k) {
        const std::int32_t gi = gv[static_cast<std::size_t>(inputs[k].index())];
        result[k] = gi >= 0 ? t.var(gi) : unused(k);
    }
}
} // namespace detail

/// Gradients of the sum of `outputs` (each a single value) with respect to `inputs`, as values
/// on the same tape (PyTorch's torch.autograd.grad; functional.hpp adds grad_outputs for outputs
/// of any shape). With create_graph the backward pass is recorded, so the results can be
/// differentiated again (gradient penalties, Hessians). An input the outputs do not depend on is
/// an error unless allow_unused (then its gradient is zero). Parameter::grad and Var::grad() are
/// left untouched.
template <class T>
std::vector<Var<T>> grad(const std::vector<Var<T>>& outputs, const std::vector<Var<T>>& inputs, bool create_graph = false,
                         bool allow_unused = false) {
    std::vector<Var<T>> result(inputs.size());
    detail::grad_into<T>(outputs.data(), outputs.size(), inputs.data(), inputs.size(), nullptr, create_graph, allow_unused, result.data());
    return result;
}
template <class T>
std::vector<Var<T>> grad(const Var<T>& output, const std::vector<Var<T>>& inputs, bool create_graph = false, bool allow_unused = false) {
    std::vector<Var<T>> result(inputs.size());
    detail::grad_into<T>(&output, 1, inputs.data(), inputs.size(), nullptr, create_graph, allow_unused, result.data());
    return result;
}
/// A braced list of inputs, even of one, gives a vector: grad(f, {a})[0] is a's gradient.
template <class T>
std::vector<Var<T>> grad(const Var<T>& output, std::initializer_list<Var<T>> inputs, bool create_graph = false, bool allow_unused = false) {
    std::vector<Var<T>> result(inputs.size());
    detail::grad_into<T>(&output, 1, inputs.begin(), inputs.size(), nullptr, create_graph, allow_unused, result.data());
    return result;
}
/// One output, one input: allocates nothing (the gradient penalty's case, five times per WGAN step).
template <class T>
Var<T> grad(const Var<T>& output, const Var<T>& input, bool create_graph = false, bool allow_unused = false) {
    Var<T> result;
    detail::grad_into<T>(&output, 1, &input, 1, nullptr, create_graph, allow_unused, &result);
    return result;
}
} // namespace tapir
// ---- end tapir/autodiff/backward.hpp ----
// ---- begin tapir/autodiff/functional.hpp ----
/// Derivatives built on grad(): vector-Jacobian products (grad with grad_outputs), Jacobians,
/// Hessians and Hessian-vector products, as PyTorch's torch.autograd.grad and
/// torch.autograd.functional offer them, on the tape's values.

#include <cstddef>
#include <vector>


namespace tapir {

/// Gradients of sum_k <outputs[k], grad_outputs[k]> with respect to inputs (a vector-Jacobian
/// product): outputs may have any shape, grad_outputs[k] has the shape of outputs[k].
template <class T>
std::vector<Var<T>> grad(const std::vector<Var<T>>& outputs, const std::vector<Var<T>>& inputs, const std::vector<Var<T>>& grad_outputs,
                         bool create_graph = false, bool allow_unused = false) {
    if (grad_outputs.size() != outputs.size())
        throw value_error("grad: " + std::to_string(grad_outputs.size()) + " grad_outputs for " + std::to_string(outputs.size()) + " outputs");
    std::vector<Var<T>> result(inputs.size());
    detail::grad_into<T>(outputs.data(), outputs.size(), inputs.data(), inputs.size(), grad_outputs.data(), create_graph, allow_unused,
                         result.data());
    return result;
}
/// One output with its gradient, one input: the vector-Jacobian product <grad_output, d output / d input>.
template <class T>
Var<T> grad(const Var<T>& output, const Var<T>& input, const Var<T>& grad_output, bool create_graph = false, bool allow_unused = false) {
    Var<T> result;
    detail::grad_into<T>(&output, 1, &input, 1, &grad_output, create_graph, allow_unused, &result);
    return result;
}

/// d output / d input as an (output.size(), input.size()) matrix of flat indices, one backward
/// pass per output element. Elements the output does not depend on are zero.
template <class T>
Tensor<T> jacobian(const Var<T>& output, const Var<T>& input) {
    Tape<T>& t = output.tape();
    const std::size_t m = output.size(), n = input.size();
    Tensor<T> jac(Shape{m, n});
    Tensor<T> seed(output.shape());
    for (std::size_t i = 0; i < m; ++i) {
        seed.fill(T(0));
        seed[i] = T(1);
        const Var<T> row = grad(output, input, t.constant(seed), false, /*allow_unused=*/true);
        for (std::size_t j = 0; j < n; ++j) jac(i, j) = row[j];
    }
    return jac;
}

/// The Hessian of a single-valued output with respect to input, as an (input.size(),
/// input.size()) matrix: the Jacobian of the recorded gradient.
template <class T>
Tensor<T> hessian(const Var<T>& output, const Var<T>& input) {
    return jacobian(grad(output, input, /*create_graph=*/true, /*allow_unused=*/true), input);
}

/// The Hessian of a single-valued output times v (v has input's shape), without forming the
/// Hessian: the gradient of <grad(output), v>, two backward passes. With create_graph the result
/// can be differentiated again.
template <class T>
Var<T> hvp(const Var<T>& output, const Var<T>& input, const Var<T>& v, bool create_graph = false) {
    const Var<T> g = grad(output, input, /*create_graph=*/true, /*allow_unused=*/true);
    return grad(g, input, v, create_graph, /*allow_unused=*/true);
}

} // namespace tapir
// ---- end tapir/autodiff/functional.hpp ----
// ---- begin tapir/autodiff/gradcheck.hpp ----
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

// ---- begin tapir/autodiff/ops.hpp ----
/// Differentiable operations. Each op is written in one place: its backward rule, its descriptor
/// (TAPIR_OP: the name and the rule's two instantiations, which the tape's nodes point to) and
/// its forward (a kernel from kernels.hpp plus a node). Nothing else lists the ops.
///
/// Every op takes Var<T> (records a node) and, for the eager backward pass, Eager<T> (computes
/// into the arena, records nothing). A backward rule is a template over its context `o` and the
/// value type V and computes with the ordinary ops, so one rule serves the fast first-order pass
/// and the recorded pass of grad(..., create_graph) alike. In a rule, `o.in(n, k)` is the k-th
/// input's value, `o.out(n)` the node's value, `o.shape(n, k)` the input's shape, `o.needs(n, k)`
/// tells whether input k wants a gradient, and `o.acc(n, k, v)` adds v to its gradient.
/// README.md, "Adding an op", walks through one.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>


/// Declares `op_<id><T>`, the descriptor of the op called `name` whose backward rule is the function
/// template `rule(o, node, g)`.
#define TAPIR_OP(id, name, rule)                                                                                                 \
    template <class T>                                                                                                             \
    inline constexpr OpDef<T> op_##id {                                                                                            \
        name, &rule<detail::EagerContext<T>, T, Eager<T>>, &rule<detail::RecordContext<T>, T, Var<T>>                                \
    }
/// An op that passes no gradient (the masks rules multiply by).
#define TAPIR_OP_NO_GRAD(id, name)                                                                                               \
    template <class T>                                                                                                             \
    inline constexpr OpDef<T> op_##id { name, nullptr, nullptr }

namespace tapir {

namespace detail {
template <class V>
struct is_value : std::false_type {};
template <class T>
struct is_value<Var<T>> : std::true_type {};
template <class T>
struct is_value<Eager<T>> : std::true_type {};
/// V<T> for the two value types an op takes (Var, Eager); no overload for anything else.
template <template <class> class V, class T>
using val = std::enable_if_t<is_value<V<T>>::value, V<T>>;
/// Scalar arguments of any arithmetic type, converted to T: pow(x, 3), x * 2, 1 - x.
template <class S>
using if_scalar = std::enable_if_t<std::is_arithmetic<S>::value, int>;

template <class T>
Tape<T>& tape_of(const Var<T>& v) { return v.tape(); }
template <class T>
Tape<T>& tape_of(const Eager<T>& v) noexcept { return *v.t; }
template <class T>
const Ref<T>& ref(const Var<T>& v) { return v.ref(); }
template <class T>
const Ref<T>& ref(const Eager<T>& v) noexcept { return v.r; }
/// The value of an input already checked against tape t.
template <class T>
const Ref<T>& ref(const Tape<T>& t, const Var<T>& v) noexcept { return t.node(v.index()).out; }
template <class T>
const Ref<T>& ref(const Tape<T>&, const Eager<T>& v) noexcept { return v.r; }

template <class T>
Tape<T>& same_tape(const Var<T>& a, const Var<T>& b, const char* op) {
    Tape<T>& t = a.tape();
    if (&b.tape() != &t) throw tape_error(std::string(op) + ": operands are recorded on different tapes");
    return t;
}
template <class T>
Tape<T>& same_tape(const Eager<T>& a, const Eager<T>&, const char*) noexcept { return *a.t; }

struct no_attrs {
    template <class N>
    void operator()(N&) const noexcept {}
};

/// An op's result: for Var inputs a node of `op` (set writes its attributes), for Eager ones the value.
template <class T, class Set, class... In>
Var<T> emit(Tape<T>& t, const OpDef<T>& op, const Ref<T>& out, Set set, const Var<T>& a, const In&... in) {
    Var<T> v = t.record(op, out, a.index(), in.index()...);
    set(t.node_mut(v.index()));
    return v;
}
template <class T, class Set, class... In>
Eager<T> emit(Tape<T>& t, const OpDef<T>&, const Ref<T>& out, Set, const Eager<T>&, const In&...) noexcept {
    return Eager<T>{out, &t};
}
template <class T>
auto set_a(T a0, T a1 = T(0)) {
    return [a0, a1](Node<T>& n) {
        n.a0 = a0;
        n.a1 = a1;
    };
}
template <class T>
auto set_axis(std::size_t axis, bool keepdim) {
    return [axis, keepdim](Node<T>& n) {
        n.axis = static_cast<std::int32_t>(axis);
        n.flags = keepdim ? 1 : 0;
    };
}
/// Shape of a reduced value with the reduced axis kept as 1, for broadcasting a gradient back.
inline Shape keepdim_shape(const Shape& in, std::int32_t axis) { return reduced_shape(in, static_cast<std::size_t>(axis), true); }
} // namespace detail

// ---- add, sub, mul, div: broadcasting binary ops ---------------------------------------------

template <class O, class T, class V>
void backward_add(O& o, const Node<T>& n, const V& g) {
    if (o.needs(n, 0)) o.acc(n, 0, sum_to(g, o.shape(n, 0)));
    if (o.needs(n, 1)) o.acc(n, 1, sum_to(g, o.shape(n, 1)));
}
TAPIR_OP(add, "add", backward_add);
template <class T, template <class> class V>
TAPIR_ALWAYS_INLINE detail::val<V, T> add(const V<T>& a, const V<T>& b) {
    Tape<T>& t = detail::same_tape(a, b, "add");
    return detail::emit(t, op_add<T>, detail::k_add(t, detail::ref(t, a), detail::ref(t, b)), detail::no_attrs{}, a, b);
}

template <class O, class T, class V>
void backward_sub(O& o, const Node<T>& n, const V& g) {
    if (o.needs(n, 0)) o.acc(n, 0, sum_to(g, o.shape(n, 0)));
    if (o.needs(n, 1)) o.acc(n, 1, sum_to(neg(g), o.shape(n, 1)));
}
TAPIR_OP(sub, "sub", backward_sub);
template <class T, template <class> class V>
detail::val<V, T> sub(const V<T>& a, const V<T>& b) {
    Tape<T>& t = detail::same_tape(a, b, "sub");
    return detail::emit(t, op_sub<T>, detail::k_sub(t, detail::ref(t, a), detail::ref(t, b)), detail::no_attrs{}, a, b);
}

template <class O, class T, class V>
void backward_mul(O& o, const Node<T>& n, const V& g) {
    if (o.needs(n, 0)) o.acc(n, 0, sum_to(mul(g, o.in(n, 1)), o.shape(n, 0)));
    if (o.needs(n, 1)) o.acc(n, 1, sum_to(mul(g, o.in(n, 0)), o.shape(n, 1)));
}
TAPIR_OP(mul, "mul", backward_mul);
template <class T, template <class> class V>
TAPIR_ALWAYS_INLINE detail::val<V, T> mul(const V<T>& a, const V<T>& b) {
    Tape<T>& t = detail::same_tape(a, b, "mul");
    return detail::emit(t, op_mul<T>, detail::k_mul(t, detail::ref(t, a), detail::ref(t, b)), detail::no_attrs{}, a, b);
}

template <class O, class T, class V>
void backward_div(O& o, const Node<T>& n, const V& g) {
    const V gb = div(g, o.in(n, 1));  // d(a/b)/da = 1/b, d(a/b)/db = -(a/b)/b
    if (o.needs(n, 0)) o.acc(n, 0, sum_to(gb, o.shape(n, 0)));
    if (o.needs(n, 1)) o.acc(n, 1, sum_to(neg(mul(gb, o.out(n))), o.shape(n, 1)));
}
TAPIR_OP(div, "div", backward_div);
template <class T, template <class> class V>
detail::val<V, T> div(const V<T>& a, const V<T>& b) {
    Tape<T>& t = detail::same_tape(a, b, "div");
    return detail::emit(t, op_div<T>, detail::k_div(t, detail::ref(t, a), detail::ref(t, b)), detail::no_attrs{}, a, b);
}

// ---- scalar ops ---------------------------------------------------------------------------

template <class O, class T, class V>
void backward_neg(O& o, const Node<T>& n, const V& g) {
    o.acc(n, 0, neg(g));
}
TAPIR_OP(neg, "neg", backward_neg);
template <class T, template <class> class V>
detail::val<V, T> neg(const V<T>& a) {
    Tape<T>& t = detail::tape_of(a);
    return detail::emit(t, op_neg<T>, detail::k_unary(t, detail::ref(a), [](T x) { return -x; }), detail::no_attrs{}, a);
}

template <class O, class T, class V>
void backward_scale(O& o, const Node<T>& n, const V& g) {
    o.acc(n, 0, scale(g, n.a0));
}
TAPIR_OP(scale, "scale", backward_scale);
/// a * c for a constant c.
template <class T, template <class> class V, class S, detail::if_scalar<S> = 0>
detail::val<V, T> scale(const V<T>& a, S s) {
    const T c = static_cast<T>(s);
    Tape<T>& t = detail::tape_of(a);
    return detail::emit(t, op_scale<T>, detail::k_unary(t, detail::ref(a), [c](T x) { return x * c; }), detail::set_a(c), a);
}

template <class O, class T, class V>
void backward_add_scalar(O& o, const Node<T>& n, const V& g) {
    o.acc(n, 0, g);
}
TAPIR_OP(add_scalar, "add_scalar", backward_add_scalar);
/// a + c for a constant c.
template <class T, template <class> class V, class S, detail::if_scalar<S> = 0>
detail::val<V, T> add_scalar(const V<T>& a, S s) {
    const T c = static_cast<T>(s);
    Tape<T>& t = detail::tape_of(a);
    return detail::emit(t, op_add_scalar<T>, detail::k_unary(t, detail::ref(a), [c](T x) { return x + c; }), detail::set_a(c), a);
}

template <class O, class T, class V>
void backward_rdiv_scalar(O& o, const Node<T>& n, const V& g) {
    o.acc(n, 0, neg(div(mul(g, o.out(n)), o.in(n, 0))));  // d(c/a)/da = -(c/a)/a
}
TAPIR_OP(rdiv_scalar, "rdiv_scalar", backward_rdiv_scalar);
/// c / a for a constant c.
template <class S, class T, template <class> class V, detail::if_scalar<S> = 0>
detail::val<V, T> rdiv_scalar(S s, const V<T>& a) {
    const T c = static_cast<T>(s);
    Tape<T>& t = detail::tape_of(a);
    return detail::emit(t, op_rdiv_scalar<T>, detail::k_unary(t, detail::ref(a), [c](T x) { return c / x; }), detail::set_a(c), a);
}

// ---- linear algebra and shapes --------------------------------------------------------------

template <class O, class T, class V>
void backward_matmul(O& o, const Node<T>& n, const V& g) {
    const bool ta = n.flags & 1, tb = (n.flags & 2) != 0;
    const V a = o.in(n, 0), b = o.in(n, 1);
    // C = op(A) op(B): dop(A) = G op(B)^T, dop(B) = op(A)^T G, then undo the op on each side.
    if (o.needs(n, 0)) o.acc(n, 0, ta ? matmul(b, g, tb, true) : matmul(g, b, false, !tb));
    if (o.needs(n, 1)) o.acc(n, 1, tb ? matmul(g, a, true, ta) : matmul(a, g, !ta, false));
}
TAPIR_OP(matmul, "matmul", backward_matmul);
/// op(a) * op(b) for 2-D values; op transposes when the flag is set (by packing, not copying).
template <class T, template <class> class V>
detail::val<V, T> matmul(const V<T>& a, const V<T>& b, bool transpose_a = false, bool transpose_b = false) {
    Tape<T>& t = detail::same_tape(a, b, "matmul");
    const auto flags = static_cast<std::uint8_t>((transpose_a ? 1 : 0) | (transpose_b ? 2 : 0));
    return detail::emit(t, op_matmul<T>, detail::k_matmul(t, detail::ref(a), detail::ref(b), transpose_a, transpose_b),
                        [flags](Node<T>& n) { n.flags = flags; }, a, b);
}

template <class O, class T, class V>
void backward_transpose(O& o, const Node<T>& n, const V& g) {
    o.acc(n, 0, transpose(g));
}
TAPIR_OP(transpose, "transpose", backward_transpose);
template <class T, template <class> class V>
detail::val<V, T> transpose(const V<T>& a) {
    Tape<T>& t = detail::tape_of(a);
    return detail::emit(t, op_transpose<T>, detail::k_transpose(t, detail::ref(a)), detail::no_attrs{}, a);
}

template <class O, class T, class V>
void backward_reshape(O& o, const Node<T>& n, const V& g) {
    o.acc(n, 0, reshape(g, o.shape(n, 0)));
}
TAPIR_OP(reshape, "reshape", backward_reshape);
template <class T, template <class> class V>
detail::val<V, T> reshape(const V<T>& a, const Shape& s) {
    Tape<T>& t = detail::tape_of(a);
    return detail::emit(t, op_reshape<T>, detail::k_reshape(detail::ref(a), s), detail::no_attrs{}, a);
}

template <class O, class T, class V>
void backward_broadcast_to(O& o, const Node<T>& n, const V& g) {
    o.acc(n, 0, sum_to(g, o.shape(n, 0)));
}
TAPIR_OP(broadcast_to, "broadcast_to", backward_broadcast_to);
template <class T, template <class> class V>
detail::val<V, T> broadcast_to(const V<T>& a, const Shape& s) {
    Tape<T>& t = detail::tape_of(a);
    return detail::emit(t, op_broadcast_to<T>, detail::k_broadcast_to(t, detail::ref(a), s), detail::no_attrs{}, a);
}

template <class O, class T, class V>
void backward_sum_to(O& o, const Node<T>& n, const V& g) {
    o.acc(n, 0, broadcast_to(g, o.shape(n, 0)));
}
TAPIR_OP(sum_to, "sum_to", backward_sum_to);
/// Sums over the axes along which `s` broadcasts to a's shape; sum_to(a, Shape{}) sums everything.
/// A value that already has shape s is returned as it is.
template <class T, template <class> class V>
detail::val<V, T> sum_to(const V<T>& a, const Shape& s) {
    if (a.shape() == s) return a;
    Tape<T>& t = detail::tape_of(a);
    return detail::emit(t, op_sum_to<T>, detail::k_sum_to(t, detail::ref(a), s), detail::no_attrs{}, a);
}

// ---- reductions -----------------------------------------------------------------------------

/// Sum of all elements (a scalar of shape ()).
template <class T, template <class> class V>
detail::val<V, T> sum(const V<T>& a) { return sum_to(a, Shape{}); }

template <class O, class T, class V>
void backward_sum_axis(O& o, const Node<T>& n, const V& g) {
    const Shape& in = o.shape(n, 0);
    o.acc(n, 0, broadcast_to(reshape(g, detail::keepdim_shape(in, n.axis)), in));
}
TAPIR_OP(sum_axis, "sum", backward_sum_axis);
template <class T, template <class> class V>
detail::val<V, T> sum(const V<T>& a, std::int64_t axis, bool keepdim = false) {
    Tape<T>& t = detail::tape_of(a);
    const std::size_t ax = detail::normalize_axis(axis, a.shape(), "sum");
    return detail::emit(t, op_sum_axis<T>, detail::k_sum_axis(t, detail::ref(a), ax, keepdim), detail::set_axis<T>(ax, keepdim), a);
}

template <class T>
Var<T> mean(const Var<T>& a) {
    const std::size_t n = a.size();
    if (n == 0) throw shape_error("mean: empty value of shape " + a.shape().str());
    return scale(sum(a), T(1) / static_cast<T>(n));
}
template <class T>
Var<T> mean(const Var<T>& a, std::int64_t axis, bool keepdim = false) {
    const std::size_t ax = detail::normalize_axis(axis, a.shape(), "mean");
    const std::size_t len = a.shape()[ax];
    if (len == 0) throw shape_error("mean: empty axis in shape " + a.shape().str());
    return scale(sum(a, axis, keepdim), T(1) / static_cast<T>(len));
}

/// The gradient goes to the first extreme element along the axis (as PyTorch's max(dim)).
template <class O, class T, class V>
void backward_extreme_axis(O& o, const Node<T>& n, const V& g);
TAPIR_OP(max_axis, "max", backward_extreme_axis);
TAPIR_OP(min_axis, "min", backward_extreme_axis);
template <class O, class T, class V>
void backward_extreme_axis(O& o, const Node<T>& n, const V& g) {
    const Shape& in = o.shape(n, 0);
    const V mask = extreme_mask(o.in(n, 0), n.axis, n.op == &op_max_axis<T>);
    o.acc(n, 0, mul(mask, broadcast_to(reshape(g, detail::keepdim_shape(in, n.axis)), in)));
}
template <class T, template <class> class V>
detail::val<V, T> max(const V<T>& a, std::int64_t axis, bool keepdim = false) {
    Tape<T>& t = detail::tape_of(a);
    const std::size_t ax = detail::normalize_axis(axis, a.shape(), "max");
    return detail::emit(t, op_max_axis<T>, detail::k_extreme_axis(t, detail::ref(a), ax, keepdim, true), detail::set_axis<T>(ax, keepdim), a);
}
template <class T, template <class> class V>
detail::val<V, T> min(const V<T>& a, std::int64_t axis, bool keepdim = false) {
    Tape<T>& t = detail::tape_of(a);
    const std::size_t ax = detail::normalize_axis(axis, a.shape(), "min");
    return detail::emit(t, op_min_axis<T>, detail::k_extreme_axis(t, detail::ref(a), ax, keepdim, false), detail::set_axis<T>(ax, keepdim), a);
}

// ---- elementwise math -------------------------------------------------------------------------

template <class O, class T, class V>
void backward_exp(O& o, const Node<T>& n, const V& g) {
    o.acc(n, 0, mul(g, o.out(n)));
}
TAPIR_OP(exp, "exp", backward_exp);
template <class T, template <class> class V>
detail::val<V, T> exp(const V<T>& a) {
    Tape<T>& t = detail::tape_of(a);
    const Ref<T>& x = detail::ref(a);
    Ref<T> out = t.alloc(x.shape);
    simd::exp(x.data, out.data, x.size());
    return detail::emit(t, op_exp<T>, out, detail::no_attrs{}, a);
}

template <class O, class T, class V>
void backward_log(O& o, const Node<T>& n, const V& g) {
    o.acc(n, 0, div(g, o.in(n, 0)));
}
TAPIR_OP(log, "log", backward_log);
template <class T, template <class> class V>
detail::val<V, T> log(const V<T>& a) {
    Tape<T>& t = detail::tape_of(a);
    const Ref<T>& x = detail::ref(a);
    Ref<T> out = t.alloc(x.shape);
    simd::log(x.data, out.data, x.size());
    return detail::emit(t, op_log<T>, out, detail::no_attrs{}, a);
}

template <class O, class T, class V>
void backward_log1p(O& o, const Node<T>& n, const V& g) {
    o.acc(n, 0, div(g, add_scalar(o.in(n, 0), T(1))));
}
TAPIR_OP(log1p, "log1p", backward_log1p);
template <class T, template <class> class V>
detail::val<V, T> log1p(const V<T>& a) {
    Tape<T>& t = detail::tape_of(a);
    return detail::emit(t, op_log1p<T>, detail::k_unary(t, detail::ref(a), [](T x) { return std::log1p(x); }), detail::no_attrs{}, a);
}

template <class O, class T, class V>
void backward_sqrt(O& o, const Node<T>& n, const V& g) {
    o.acc(n, 0, div(scale(g, T(0.5)), o.out(n)));
}
TAPIR_OP(sqrt, "sqrt", backward_sqrt);
template <class T, template <class> class V>
detail::val<V, T> sqrt(const V<T>& a) {
    Tape<T>& t = detail::tape_of(a);
    return detail::emit(t, op_sqrt<T>, detail::k_unary(t, detail::ref(a), [](T x) { return std::sqrt(x); }), detail::no_attrs{}, a);
}

template <class O, class T, class V>
void backward_pow(O& o, const Node<T>& n, const V& g) {
    if (n.a0 == T(0)) return;
    const V d = n.a0 == T(1) ? g : mul(g, scale(pow(o.in(n, 0), n.a0 - T(1)), n.a0));
    o.acc(n, 0, d);
}
TAPIR_OP(pow, "pow", backward_pow);
/// a^p for a constant exponent p.
template <class T, template <class> class V, class S, detail::if_scalar<S> = 0>
detail::val<V, T> pow(const V<T>& a, S exponent) {
    const T p = static_cast<T>(exponent);
    Tape<T>& t = detail::tape_of(a);
    return detail::emit(t, op_pow<T>, detail::k_unary(t, detail::ref(a), [p](T x) { return std::pow(x, p); }), detail::set_a(p), a);
}

template <class O, class T, class V>
void backward_abs(O& o, const Node<T>& n, const V& g) {
    o.acc(n, 0, mul(g, sign(o.in(n, 0))));
}
TAPIR_OP(abs, "abs", backward_abs);
template <class T, template <class> class V>
detail::val<V, T> abs(const V<T>& a) {
    Tape<T>& t = detail::tape_of(a);
    return detail::emit(t, op_abs<T>, detail::k_unary(t, detail::ref(a), [](T x) { return std::abs(x); }), detail::no_attrs{}, a);
}

template <class O, class T, class V>
void backward_square(O& o, const Node<T>& n, const V& g) {
    o.acc(n, 0, scale(mul(g, o.in(n, 0)), T(2)));
}
TAPIR_OP(square, "square", backward_square);
template <class T, template <class> class V>
detail::val<V, T> square(const V<T>& a) {
    Tape<T>& t = detail::tape_of(a);
    return detail::emit(t, op_square<T>, detail::k_unary(t, detail::ref(a), [](T x) { return x * x; }), detail::no_attrs{}, a);
}

template <class O, class T, class V>
void backward_clamp(O& o, const Node<T>& n, const V& g) {
    o.acc(n, 0, mul(g, inrange_mask(o.in(n, 0), n.a0, n.a1)));
}
TAPIR_OP(clamp, "clamp", backward_clamp);
/// Clamp to [lo, hi]; the gradient passes where lo <= a <= hi.
template <class T, template <class> class V, class S1, class S2, detail::if_scalar<S1> = 0, detail::if_scalar<S2> = 0>
detail::val<V, T> clamp(const V<T>& a, S1 lower, S2 upper) {
    const T lo = static_cast<T>(lower), hi = static_cast<T>(upper);
    if (!(lo <= hi)) throw value_error("clamp: lower bound " + std::to_string(lo) + " exceeds upper bound " + std::to_string(hi));
    Tape<T>& t = detail::tape_of(a);
    return detail::emit(t, op_clamp<T>, detail::k_unary(t, detail::ref(a), [lo, hi](T x) { return x < lo ? lo : (x > hi ? hi : x); }),
                        detail::set_a(lo, hi), a);
}

template <class O, class T, class V>
void backward_where(O& o, const Node<T>& n, const V& g) {
    const V c = o.in(n, 2);
    if (o.needs(n, 0)) o.acc(n, 0, sum_to(mul(g, c), o.shape(n, 0)));
    if (o.needs(n, 1)) o.acc(n, 1, sum_to(sub(g, mul(g, c)), o.shape(n, 1)));
}
TAPIR_OP(where, "where", backward_where);
/// cond ? a : b elementwise (cond is a constant of 0s and 1s, e.g. from a comparison).
template <class T>
Var<T> where(const Var<T>& cond, const Var<T>& a, const Var<T>& b) {
    Tape<T>& t = detail::same_tape(a, b, "where");
    detail::same_tape(cond, a, "where");
    return t.record(op_where<T>, detail::k_where(t, cond.ref(), a.ref(), b.ref()), a.index(), b.index(), cond.index());
}

// The standalone activations keep rules of their own rather than act_grad's: their first-order
// bits (g - g y^2 for tanh, g (y - y^2) for sigmoid, ...) round differently from the SIMD
// derivative, and the README's example figures (e.g. higgs's adversary through sigmoid) rest on them.

template <class O, class T, class V>
void backward_tanh(O& o, const Node<T>& n, const V& g) {
    const V y = o.out(n);
    o.acc(n, 0, sub(g, mul(g, mul(y, y))));
}
TAPIR_OP(tanh, "tanh", backward_tanh);
template <class T, template <class> class V>
detail::val<V, T> tanh(const V<T>& a) {
    Tape<T>& t = detail::tape_of(a);
    const Ref<T>& x = detail::ref(a);
    Ref<T> out = t.alloc(x.shape);
    simd::tanh(x.data, out.data, x.size());
    return detail::emit(t, op_tanh<T>, out, detail::no_attrs{}, a);
}

template <class O, class T, class V>
void backward_sigmoid(O& o, const Node<T>& n, const V& g) {
    const V y = o.out(n);
    o.acc(n, 0, mul(g, sub(y, mul(y, y))));
}
TAPIR_OP(sigmoid, "sigmoid", backward_sigmoid);
template <class T, template <class> class V>
detail::val<V, T> sigmoid(const V<T>& a) {
    Tape<T>& t = detail::tape_of(a);
    const Ref<T>& x = detail::ref(a);
    Ref<T> out = t.alloc(x.shape);
    simd::sigmoid(x.data, out.data, x.size());
    return detail::emit(t, op_sigmoid<T>, out, detail::no_attrs{}, a);
}

template <class O, class T, class V>
void backward_relu(O& o, const Node<T>& n, const V& g) {
    o.acc(n, 0, mul(g, positive_mask(o.in(n, 0))));
}
TAPIR_OP(relu, "relu", backward_relu);
template <class T, template <class> class V>
detail::val<V, T> relu(const V<T>& a) {
    Tape<T>& t = detail::tape_of(a);
    const Ref<T>& x = detail::ref(a);
    Ref<T> out = t.alloc(x.shape);
    simd::relu(x.data, out.data, x.size());
    return detail::emit(t, op_relu<T>, out, detail::no_attrs{}, a);
}

template <class O, class T, class V>
void backward_leaky_relu(O& o, const Node<T>& n, const V& g) {
    o.acc(n, 0, mul(g, leaky_slope(o.in(n, 0), n.a0)));
}
TAPIR_OP(leaky_relu, "leaky_relu", backward_leaky_relu);
template <class T, template <class> class V, class S = T, detail::if_scalar<S> = 0>
detail::val<V, T> leaky_relu(const V<T>& a, S slope = S(0.01)) {
    const T alpha = static_cast<T>(slope);
    Tape<T>& t = detail::tape_of(a);
    return detail::emit(t, op_leaky_relu<T>, detail::k_unary(t, detail::ref(a), [alpha](T x) { return x > T(0) ? x : alpha * x; }),
                        detail::set_a(alpha), a);
}

template <class O, class T, class V>
void backward_elu(O& o, const Node<T>& n, const V& g) {
    // elu'(x) = 1 for x > 0, alpha*exp(x) = elu(x) + alpha otherwise.
    const V pos = positive_mask(o.in(n, 0));
    const V slope = add(pos, mul(add_scalar(neg(pos), T(1)), add_scalar(o.out(n), n.a0)));
    o.acc(n, 0, mul(g, slope));
}
TAPIR_OP(elu, "elu", backward_elu);
template <class T, template <class> class V, class S = T, detail::if_scalar<S> = 0>
detail::val<V, T> elu(const V<T>& a, S scale_alpha = S(1)) {
    const T alpha = static_cast<T>(scale_alpha);
    Tape<T>& t = detail::tape_of(a);
    return detail::emit(t, op_elu<T>, detail::k_unary(t, detail::ref(a), [alpha](T x) { return x > T(0) ? x : alpha * std::expm1(x); }),
                        detail::set_a(alpha), a);
}

template <class O, class T, class V>
void backward_softplus(O& o, const Node<T>& n, const V& g) {
    o.acc(n, 0, mul(g, sigmoid(o.in(n, 0))));
}
TAPIR_OP(softplus, "softplus", backward_softplus);
/// log(1 + exp(a)), exact for large |a|.
template <class T, template <class> class V>
detail::val<V, T> softplus(const V<T>& a) {
    Tape<T>& t = detail::tape_of(a);
    return detail::emit(t, op_softplus<T>, detail::k_unary(t, detail::ref(a), [](T x) { return detail::stable_softplus(x); }),
                        detail::no_attrs{}, a);
}

template <class O, class T, class V>
void backward_log_sigmoid(O& o, const Node<T>& n, const V& g) {
    o.acc(n, 0, mul(g, sigmoid(neg(o.in(n, 0)))));
}
TAPIR_OP(log_sigmoid, "log_sigmoid", backward_log_sigmoid);
/// log(sigmoid(a)) = -softplus(-a), finite for all a.
template <class T, template <class> class V>
detail::val<V, T> log_sigmoid(const V<T>& a) {
    Tape<T>& t = detail::tape_of(a);
    return detail::emit(t, op_log_sigmoid<T>, detail::k_unary(t, detail::ref(a), [](T x) { return -detail::stable_softplus(-x); }),
                        detail::no_attrs{}, a);
}

template <class O, class T, class V>
void backward_erf(O& o, const Node<T>& n, const V& g) {
    const V x = o.in(n, 0);
    o.acc(n, 0, mul(g, scale(exp(neg(mul(x, x))), T(1.1283791670955126))));  // 2/sqrt(pi)
}
TAPIR_OP(erf, "erf", backward_erf);
template <class T, template <class> class V>
detail::val<V, T> erf(const V<T>& a) {
    Tape<T>& t = detail::tape_of(a);
    return detail::emit(t, op_erf<T>, detail::k_unary(t, detail::ref(a), [](T x) { return std::erf(x); }), detail::no_attrs{}, a);
}

template <class O, class T, class V>
void backward_atan(O& o, const Node<T>& n, const V& g) {
    const V x = o.in(n, 0);
    o.acc(n, 0, div(g, add_scalar(mul(x, x), T(1))));  // d atan(x)/dx = 1 / (1 + x^2)
}
TAPIR_OP(atan, "atan", backward_atan);
template <class T, template <class> class V>
detail::val<V, T> atan(const V<T>& a) {
    Tape<T>& t = detail::tape_of(a);
    return detail::emit(t, op_atan<T>, detail::k_unary(t, detail::ref(a), [](T x) { return std::atan(x); }), detail::no_attrs{}, a);
}

// ---- softmax family ------------------------------------------------------------------------

template <class O, class T, class V>
void backward_softmax(O& o, const Node<T>& n, const V& g) {
    const V y = o.out(n);
    o.acc(n, 0, mul(y, sub(g, sum(mul(g, y), n.axis, true))));
}
TAPIR_OP(softmax, "softmax", backward_softmax);
template <class T, template <class> class V>
detail::val<V, T> softmax(const V<T>& a, std::int64_t axis = -1) {
    Tape<T>& t = detail::tape_of(a);
    const std::size_t ax = detail::normalize_axis(axis, a.shape(), "softmax");
    return detail::emit(t, op_softmax<T>, detail::k_softmax_family(t, detail::ref(a), ax, detail::SoftmaxKind::softmax, false),
                        detail::set_axis<T>(ax, false), a);
}

template <class O, class T, class V>
void backward_log_softmax(O& o, const Node<T>& n, const V& g) {
    o.acc(n, 0, sub(g, mul(exp(o.out(n)), sum(g, n.axis, true))));
}
TAPIR_OP(log_softmax, "log_softmax", backward_log_softmax);
template <class T, template <class> class V>
detail::val<V, T> log_softmax(const V<T>& a, std::int64_t axis = -1) {
    Tape<T>& t = detail::tape_of(a);
    const std::size_t ax = detail::normalize_axis(axis, a.shape(), "log_softmax");
    return detail::emit(t, op_log_softmax<T>, detail::k_softmax_family(t, detail::ref(a), ax, detail::SoftmaxKind::log_softmax, false),
                        detail::set_axis<T>(ax, false), a);
}

template <class O, class T, class V>
void backward_logsumexp(O& o, const Node<T>& n, const V& g) {
    const Shape& in = o.shape(n, 0);
    const Shape keep = detail::keepdim_shape(in, n.axis);
    const V p = exp(sub(o.in(n, 0), reshape(o.out(n), keep)));  // softmax of the input
    o.acc(n, 0, mul(p, reshape(g, keep)));
}
TAPIR_OP(logsumexp, "logsumexp", backward_logsumexp);
template <class T, template <class> class V>
detail::val<V, T> logsumexp(const V<T>& a, std::int64_t axis = -1, bool keepdim = false) {
    Tape<T>& t = detail::tape_of(a);
    const std::size_t ax = detail::normalize_axis(axis, a.shape(), "logsumexp");
    return detail::emit(t, op_logsumexp<T>, detail::k_softmax_family(t, detail::ref(a), ax, detail::SoftmaxKind::logsumexp, keepdim),
                        detail::set_axis<T>(ax, keepdim), a);
}

// ---- joining and indexing ------------------------------------------------------------------

template <class O, class T, class V>
void backward_concat(O& o, const Node<T>& n, const V& g) {
    const auto ax = static_cast<std::int64_t>(n.axis);
    const auto k = static_cast<std::size_t>(n.axis);
    const std::size_t la = o.shape(n, 0)[k], lb = o.shape(n, 1)[k];
    if (o.needs(n, 0)) o.acc(n, 0, slice(g, ax, 0, la));
    if (o.needs(n, 1)) o.acc(n, 1, slice(g, ax, la, lb));
}
TAPIR_OP(concat, "concat", backward_concat);
template <class T, template <class> class V>
detail::val<V, T> concat(const V<T>& a, const V<T>& b, std::int64_t axis = 0) {
    Tape<T>& t = detail::same_tape(a, b, "concat");
    const std::size_t ax = detail::normalize_axis(axis, a.shape(), "concat");
    return detail::emit(t, op_concat<T>, detail::k_concat(t, detail::ref(a), detail::ref(b), ax), detail::set_axis<T>(ax, false), a, b);
}
template <class T>
Var<T> concat(const std::vector<Var<T>>& parts, std::int64_t axis = 0) {
    if (parts.empty()) throw value_error("concat: no values given");
    Var<T> out = parts[0];
    for (std::size_t i = 1; i < parts.size(); ++i) out = concat(out, parts[i], axis);
    return out;
}

template <class O, class T, class V>
void backward_slice(O& o, const Node<T>& n, const V& g) {
    o.acc(n, 0, pad(g, static_cast<std::int64_t>(n.axis), n.i0, o.shape(n, 0)[static_cast<std::size_t>(n.axis)]));
}
TAPIR_OP(slice, "slice", backward_slice);
/// Elements [start, start+len) along an axis.
template <class T, template <class> class V>
detail::val<V, T> slice(const V<T>& a, std::int64_t axis, std::size_t start, std::size_t len) {
    Tape<T>& t = detail::tape_of(a);
    const std::size_t ax = detail::normalize_axis(axis, a.shape(), "slice");
    return detail::emit(t, op_slice<T>, detail::k_slice(t, detail::ref(a), ax, start, len), [ax, start](Node<T>& n) {
        n.axis = static_cast<std::int32_t>(ax);
        n.i0 = start;
    }, a);
}

template <class O, class T, class V>
void backward_pad(O& o, const Node<T>& n, const V& g) {
    o.acc(n, 0, slice(g, static_cast<std::int64_t>(n.axis), n.i0, o.shape(n, 0)[static_cast<std::size_t>(n.axis)]));
}
TAPIR_OP(pad, "pad", backward_pad);
/// The adjoint of slice: a placed at offset `start` of an axis of length `total`, zeros elsewhere.
template <class T, template <class> class V>
detail::val<V, T> pad(const V<T>& a, std::int64_t axis, std::size_t start, std::size_t total) {
    Tape<T>& t = detail::tape_of(a);
    const std::size_t ax = detail::normalize_axis(axis, a.shape(), "pad");
    if (start + a.shape()[ax] > total)
        throw shape_error("pad: value of shape " + a.shape().str() + " does not fit at offset " + std::to_string(start) +
                          " of an axis of length " + std::to_string(total));
    return detail::emit(t, op_pad<T>, detail::k_pad(t, detail::ref(a), ax, start, total), [ax, start](Node<T>& n) {
        n.axis = static_cast<std::int32_t>(ax);
        n.i0 = start;
    }, a);
}

namespace detail {
template <class T>
const std::int64_t* copy_indices(Tape<T>& t, const std::vector<std::size_t>& idx, std::size_t limit, const char* op) {
    auto* p = static_cast<std::int64_t*>(t.arena().allocate(idx.size() * sizeof(std::int64_t) + 1));
    for (std::size_t i = 0; i < idx.size(); ++i) {
        if (idx[i] >= limit)
            throw value_error(std::string(op) + ": index " + std::to_string(idx[i]) + " at position " + std::to_string(i) +
                              " is out of range for " + std::to_string(limit) + " rows");
        p[i] = static_cast<std::int64_t>(idx[i]);
    }
    return p;
}
} // namespace detail

template <class O, class T, class V>
void backward_gather_rows(O& o, const Node<T>& n, const V& g) {
    o.acc(n, 0, scatter_rows_raw(g, n.index, o.shape(n, 0)[0]));
}
TAPIR_OP(gather_rows, "gather_rows", backward_gather_rows);
/// Rows of a (first axis) at p[0..n), unchecked: the indices live in the arena.
template <class T, template <class> class V>
detail::val<V, T> gather_rows_raw(const V<T>& a, const std::int64_t* p, std::size_t n) {
    Tape<T>& t = detail::tape_of(a);
    return detail::emit(t, op_gather_rows<T>, detail::k_gather_rows(t, detail::ref(a), p, n), [p](Node<T>& nd) { nd.index = p; }, a);
}
/// Rows of a (first axis) at the given indices, in order; indices may repeat.
template <class T>
Var<T> gather_rows(const Var<T>& a, const std::vector<std::size_t>& idx) {
    Tape<T>& t = a.tape();
    if (a.shape().rank() == 0) throw shape_error("gather_rows: expects at least 1-D, got shape " + a.shape().str());
    return gather_rows_raw(a, detail::copy_indices(t, idx, a.shape()[0], "gather_rows"), idx.size());
}

template <class O, class T, class V>
void backward_scatter_rows(O& o, const Node<T>& n, const V& g) {
    o.acc(n, 0, gather_rows_raw(g, n.index, o.shape(n, 0)[0]));
}
TAPIR_OP(scatter_rows, "scatter_rows", backward_scatter_rows);
/// The adjoint of gather_rows_raw: rows of g added into nrows zero rows at p.
template <class T, template <class> class V>
detail::val<V, T> scatter_rows_raw(const V<T>& g, const std::int64_t* p, std::size_t nrows) {
    Tape<T>& t = detail::tape_of(g);
    return detail::emit(t, op_scatter_rows<T>, detail::k_scatter_rows(t, detail::ref(g), p, nrows), [p](Node<T>& nd) { nd.index = p; }, g);
}

// ---- adversarial training helpers ------------------------------------------------------------

template <class O, class T, class V>
void backward_grad_reverse(O& o, const Node<T>& n, const V& g) {
    o.acc(n, 0, scale(g, -n.a0));
}
TAPIR_OP(grad_reverse, "grad_reverse", backward_grad_reverse);
/// Identity forward, gradient times -lambda backward (Ganin & Lempitsky): the classifier
/// maximises what the adversary after this layer minimises.
template <class T, class S = T, detail::if_scalar<S> = 0>
Var<T> grad_reverse(const Var<T>& a, S factor = S(1)) {
    const T lambda = static_cast<T>(factor);
    return detail::emit(a.tape(), op_grad_reverse<T>, a.ref(), detail::set_a(lambda), a);
}

/// The same value, cut from the graph.
template <class T>
Var<T> detach(const Var<T>& a) {
    return a.tape().leaf(a.ref(), false);
}

// ---- fused dense layer ------------------------------------------------------------------------

/// g * act'(z) from the activation's output y = act(z), the fused dense op's activation step. Its
/// forward is simd/activation.hpp's activation_grad (k_act_grad) in both passes, so the recorded
/// first-order gradient equals the eager one bit for bit. The rule writes the derivative as
/// D(y) = act'(z) seen as a function of the output: d(g D(y))/dg = D(y), the op again, and
/// d(g D(y))/dy = g D'(y), with D' in ordinary ops so every higher order follows.
template <class O, class T, class V>
void backward_act_grad(O& o, const Node<T>& n, const V& gbar) {
    const auto act = static_cast<Activation>(n.act);
    const V y = o.in(n, 1);
    if (o.needs(n, 0)) o.acc(n, 0, act_grad(gbar, y, act, n.a0));
    // relu, leaky_relu: D is piecewise constant in y, so nothing flows into y.
    if (!o.needs(n, 1) || act == Activation::none || act == Activation::relu || act == Activation::leaky_relu) return;
    const V gg = mul(gbar, o.in(n, 0));
    switch (act) {
    case Activation::elu: o.acc(n, 1, mul(gg, add_scalar(neg(positive_mask(y)), T(1)))); break;  // D = y + alpha for y <= 0
    case Activation::tanh: o.acc(n, 1, mul(gg, scale(y, T(-2)))); break;                          // D = 1 - y^2
    case Activation::sigmoid: o.acc(n, 1, mul(gg, add_scalar(scale(y, T(-2)), T(1)))); break;     // D = y (1 - y)
    case Activation::softplus: o.acc(n, 1, mul(gg, exp(neg(y)))); break;                          // D = 1 - e^-y
    default: break;
    }
}
TAPIR_OP(act_grad, "act_grad", backward_act_grad);
/// The eager pass computes it straight into the arena, recording nothing ...
template <class T>
Eager<T> act_grad(const Eager<T>& g, const Eager<T>& y, Activation act, T alpha) {
    return Eager<T>{detail::k_act_grad(*g.t, g.r, y.r, act, alpha), g.t};
}
/// ... the recorded one with the same kernel, as one node (none passes g on unchanged).
template <class T>
Var<T> act_grad(const Var<T>& g, const Var<T>& y, Activation act, T alpha) {
    if (act == Activation::none) return g;
    Tape<T>& t = detail::same_tape(g, y, "act_grad");
    return detail::emit(t, op_act_grad<T>, detail::k_act_grad(t, detail::ref(t, g), detail::ref(t, y), act, alpha),
                        [act, alpha](Node<T>& n) {
                            n.act = static_cast<std::uint8_t>(act);
                            n.a0 = alpha;
                        },
                        g, y);
}

template <class O, class T, class V>
void backward_dense(O& o, const Node<T>& n, const V& g) {
    const V gz = act_grad(g, o.out(n), static_cast<Activation>(n.act), n.a0);
    if (o.needs(n, 0)) o.acc(n, 0, matmul(gz, o.in(n, 1), false, true));
    if (o.needs(n, 1)) o.acc(n, 1, matmul(o.in(n, 0), gz, true, false));
    if (n.in[2] >= 0 && o.needs(n, 2)) o.acc(n, 2, sum_to(gz, o.shape(n, 2)));
}
TAPIR_OP(dense, "dense", backward_dense);
/// act(x W + b) as one node: x (batch, in), W (in, out), b (out,) optional.
template <class T>
Var<T> dense(const Var<T>& x, const Var<T>& w, const Var<T>* b, Activation act = Activation::none, T alpha = T(0.01)) {
    Tape<T>& t = detail::same_tape(x, w, "dense");
    if (b) detail::same_tape(x, *b, "dense");
    const Ref<T> bref = b ? b->ref() : Ref<T>{};
    Var<T> v = t.record(op_dense<T>, detail::k_dense(t, x.ref(), w.ref(), b ? &bref : nullptr, act, alpha), x.index(), w.index(),
                        b ? b->index() : -1);
    Node<T>& n = t.node_mut(v.index());
    n.act = static_cast<std::uint8_t>(act);
    n.a0 = alpha;
    return v;
}
template <class T>
Var<T> dense(const Var<T>& x, const Var<T>& w, const Var<T>& b, Activation act = Activation::none, T alpha = T(0.01)) {
    return dense(x, w, &b, act, alpha);
}
template <class T>
Var<T> dense(const Var<T>& x, const Var<T>& w, std::nullptr_t, Activation act = Activation::none, T alpha = T(0.01)) {
    return dense(x, w, static_cast<const Var<T>*>(nullptr), act, alpha);
}

// ---- fused binary cross-entropy from logits ------------------------------------------------

template <class O, class T, class V>
void backward_bce_logits(O& o, const Node<T>& n, const V& g) {
    const V z = o.in(n, 0), y = o.in(n, 1);
    const auto weighted = [&](const V& v) {
        const V scaled = scale(reshape(v, o.shape(n, 0)), n.a0);
        return n.in[2] >= 0 ? mul(scaled, reshape(o.in(n, 2), o.shape(n, 0))) : scaled;
    };
    if (o.needs(n, 0)) o.acc(n, 0, mul(g, weighted(sub(sigmoid(z), reshape(y, o.shape(n, 0))))));
    if (o.needs(n, 1)) o.acc(n, 1, reshape(mul(g, weighted(neg(z))), o.shape(n, 1)));
}
TAPIR_OP(bce_logits, "bce_with_logits", backward_bce_logits);
/// sum_i w_i (softplus(z_i) - y_i z_i) / sum_i w_i as one node (the mean when w is absent).
/// Never forms log(sigmoid(z)), so it is finite for any logit. Weights may be negative (Monte
/// Carlo weights) but must not sum to zero; they are constants (no gradient flows into them).
template <class T>
Var<T> bce_with_logits(const Var<T>& logits, const Var<T>& targets, const Var<T>* weights = nullptr) {
    Tape<T>& t = detail::same_tape(logits, targets, "bce_with_logits");
    if (logits.size() != targets.size())
        detail::throw_shape("bce_with_logits: logits vs targets", logits.shape(), targets.shape());
    if (logits.size() == 0) throw shape_error("bce_with_logits: empty batch (logits of shape " + logits.shape().str() + ")");
    const T* z = logits.data();
    const T* y = targets.data();
    const T* w = nullptr;
    const std::size_t n = logits.size();
    T norm = static_cast<T>(n);
    if (weights) {
        detail::same_tape(logits, *weights, "bce_with_logits");
        if (weights->size() != n) detail::throw_shape("bce_with_logits: logits vs weights", logits.shape(), weights->shape());
        w = weights->data();
        norm = T(0);
        for (std::size_t i = 0; i < n; ++i) norm += w[i];
        if (norm == T(0)) throw value_error("bce_with_logits: the event weights sum to zero");
    }
    T acc = T(0);
    for (std::size_t i = 0; i < n; ++i) acc += (w ? w[i] : T(1)) * (detail::stable_softplus(z[i]) - y[i] * z[i]);
    Ref<T> out = t.alloc(Shape{});
    out.data[0] = acc / norm;
    Var<T> v = t.record(op_bce_logits<T>, out, logits.index(), targets.index(), weights ? weights->index() : -1);
    Node<T>& nd = t.node_mut(v.index());
    nd.a0 = T(1) / norm;
    if (weights && weights->requires_grad()) nd.requires_grad = logits.requires_grad() || targets.requires_grad();
    return v;
}
template <class T>
Var<T> bce_with_logits(const Var<T>& logits, const Var<T>& targets, const Var<T>& weights) {
    return bce_with_logits(logits, targets, &weights);
}

// ---- non-differentiable masks used by backward rules ------------------------------------------

namespace detail {
/// A mask: recorded without a gradient (rules multiply by it; nothing flows through it).
template <class T, class Set>
Var<T> emit_mask(Tape<T>& t, const OpDef<T>& op, const Ref<T>& out, Set set, const Var<T>& a) {
    Var<T> v = emit(t, op, out, set, a);
    t.node_mut(v.index()).requires_grad = false;
    return v;
}
template <class T, class Set>
Eager<T> emit_mask(Tape<T>& t, const OpDef<T>&, const Ref<T>& out, Set, const Eager<T>&) noexcept {
    return Eager<T>{out, &t};
}
} // namespace detail

TAPIR_OP_NO_GRAD(positive_mask, "positive_mask");
template <class T, template <class> class V>
detail::val<V, T> positive_mask(const V<T>& a) {
    Tape<T>& t = detail::tape_of(a);
    return detail::emit_mask(t, op_positive_mask<T>, detail::k_unary(t, detail::ref(a), [](T x) { return x > T(0) ? T(1) : T(0); }),
                             detail::no_attrs{}, a);
}
TAPIR_OP_NO_GRAD(sign, "sign");
template <class T, template <class> class V>
detail::val<V, T> sign(const V<T>& a) {
    Tape<T>& t = detail::tape_of(a);
    return detail::emit_mask(t, op_sign<T>,
                             detail::k_unary(t, detail::ref(a), [](T x) { return x > T(0) ? T(1) : (x < T(0) ? T(-1) : T(0)); }),
                             detail::no_attrs{}, a);
}
TAPIR_OP_NO_GRAD(inrange_mask, "inrange_mask");
template <class T, template <class> class V>
detail::val<V, T> inrange_mask(const V<T>& a, T lo, T hi) {
    Tape<T>& t = detail::tape_of(a);
    return detail::emit_mask(t, op_inrange_mask<T>,
                             detail::k_unary(t, detail::ref(a), [lo, hi](T x) { return x >= lo && x <= hi ? T(1) : T(0); }),
                             detail::set_a(lo, hi), a);
}
TAPIR_OP_NO_GRAD(leaky_slope, "leaky_slope");
template <class T, template <class> class V>
detail::val<V, T> leaky_slope(const V<T>& a, T alpha) {
    Tape<T>& t = detail::tape_of(a);
    return detail::emit_mask(t, op_leaky_slope<T>, detail::k_unary(t, detail::ref(a), [alpha](T x) { return x > T(0) ? T(1) : alpha; }),
                             detail::set_a(alpha), a);
}
TAPIR_OP_NO_GRAD(extreme_mask, "extreme_mask");
template <class T, template <class> class V>
detail::val<V, T> extreme_mask(const V<T>& a, std::int32_t axis, bool is_max) {
    Tape<T>& t = detail::tape_of(a);
    const auto ax = static_cast<std::size_t>(axis);
    return detail::emit_mask(t, op_extreme_mask<T>, detail::k_extreme_mask(t, detail::ref(a), ax, is_max), detail::set_axis<T>(ax, false), a);
}

// ---- operators: Var with Var, or with a scalar of any arithmetic type (converted to T) ----------

template <class T> Var<T> operator+(const Var<T>& a, const Var<T>& b) { return add(a, b); }
template <class T> Var<T> operator-(const Var<T>& a, const Var<T>& b) { return sub(a, b); }
template <class T> Var<T> operator*(const Var<T>& a, const Var<T>& b) { return mul(a, b); }
template <class T> Var<T> operator/(const Var<T>& a, const Var<T>& b) { return div(a, b); }
template <class T> Var<T> operator-(const Var<T>& a) { return neg(a); }
template <class T, class S, detail::if_scalar<S> = 0> Var<T> operator+(const Var<T>& a, S c) { return add_scalar(a, static_cast<T>(c)); }
template <class T, class S, detail::if_scalar<S> = 0> Var<T> operator+(S c, const Var<T>& a) { return add_scalar(a, static_cast<T>(c)); }
template <class T, class S, detail::if_scalar<S> = 0> Var<T> operator-(const Var<T>& a, S c) { return add_scalar(a, -static_cast<T>(c)); }
template <class T, class S, detail::if_scalar<S> = 0> Var<T> operator-(S c, const Var<T>& a) { return add_scalar(neg(a), static_cast<T>(c)); }
template <class T, class S, detail::if_scalar<S> = 0> Var<T> operator*(const Var<T>& a, S c) { return scale(a, static_cast<T>(c)); }
template <class T, class S, detail::if_scalar<S> = 0> Var<T> operator*(S c, const Var<T>& a) { return scale(a, static_cast<T>(c)); }
template <class T, class S, detail::if_scalar<S> = 0> Var<T> operator/(const Var<T>& a, S c) { return scale(a, T(1) / static_cast<T>(c)); }
template <class T, class S, detail::if_scalar<S> = 0> Var<T> operator/(S c, const Var<T>& a) { return rdiv_scalar(static_cast<T>(c), a); }

} // namespace tapir
// ---- end tapir/autodiff/ops.hpp ----

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
// ---- end tapir/autodiff/gradcheck.hpp ----
// ---- begin tapir/nn/callbacks.hpp ----
/// What fit() reports and calls back: the per-epoch History, epoch metrics (accuracy, AUC), the
/// EpochEnd record handed to callbacks, and Keras' reduce_lr_on_plateau (checkpoint_best, which
/// writes model files, is in checkpoint.hpp: the training loop itself does not depend on io/).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <fstream>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

// ---- begin tapir/metrics/roc.hpp ----
/// ROC curve, weighted AUC, background rejection at a signal efficiency, and the score cut
/// that keeps a given signal efficiency.
///
/// Convention: an event passes a cut t when score >= t. Signal = label 1, background = label 0.
/// Weights may be negative (MC weights) but each class total must be positive.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

// ---- begin tapir/metrics/common.hpp ----
/// Input view and argument checks shared by the metrics.

#include <cmath>
#include <cstddef>
#include <initializer_list>
#include <iterator>
#include <string>
#include <vector>


namespace tapir::metrics {

/// A non-owning read-only view of float or double values: a std::vector, a Tensor (all its
/// elements), a pointer and a size, or a braced list. For function parameters only (a view
/// of a temporary must not outlive the call). Default-constructed = empty (e.g. "no weights").
class ValueView {
public:
    ValueView() = default;
    ValueView(const std::vector<double>& v) noexcept : d_(v.data()), n_(v.size()) {}
    ValueView(const std::vector<float>& v) noexcept : f_(v.data()), n_(v.size()) {}
    ValueView(std::initializer_list<double> v) noexcept : n_(v.size()) { d_ = std::data(v); }
    ValueView(const double* p, std::size_t n) noexcept : d_(p), n_(n) {}
    ValueView(const float* p, std::size_t n) noexcept : f_(p), n_(n) {}
    ValueView(const Tensor<double>& t) noexcept : d_(t.data()), n_(t.size()) {}
    ValueView(const Tensor<float>& t) noexcept : f_(t.data()), n_(t.size()) {}

    std::size_t size() const noexcept { return n_; }
    bool empty() const noexcept { return n_ == 0; }
    double operator[](std::size_t i) const noexcept { return f_ ? static_cast<double>(f_[i]) : d_[i]; }
    std::vector<double> to_vector() const {
        std::vector<double> v(n_);
        for (std::size_t i = 0; i < n_; ++i) v[i] = (*this)[i];
        return v;
    }

private:
    const double* d_ = nullptr;
    const float* f_ = nullptr;
    std::size_t n_ = 0;
};

namespace detail {

using tapir::detail::error_number;

/// Equal non-zero sizes (both named in the error), finite values.
inline void metric_check_same_size(const char* fn, const char* what_a, const ValueView& a, const char* what_b,
                                   const ValueView& b) {
    if (a.size() != b.size())
        throw value_error(std::string(fn) + ": " + std::to_string(a.size()) + " " + what_a + " but " +
                          std::to_string(b.size()) + " " + what_b);
}
inline void metric_check_finite(const char* fn, const char* what, const ValueView& v) {
    for (std::size_t i = 0; i < v.size(); ++i)
        if (!std::isfinite(v[i]))
            throw value_error(std::string(fn) + ": non-finite " + what + " " + error_number(v[i]) + " at index " +
                              std::to_string(i));
}
inline void metric_check_labels(const char* fn, const ValueView& labels) {
    for (std::size_t i = 0; i < labels.size(); ++i)
        if (labels[i] != 0.0 && labels[i] != 1.0)
            throw value_error(std::string(fn) + ": label " + error_number(labels[i]) + " at index " + std::to_string(i) +
                              " is not 0 or 1");
}
/// scores/labels/weights of a binary classification metric; empty weights = all 1.
inline void metric_check(const char* fn, const ValueView& scores, const ValueView& labels, const ValueView& weights) {
    metric_check_same_size(fn, "scores", scores, "labels", labels);
    if (scores.empty()) throw value_error(std::string(fn) + ": empty input");
    if (!weights.empty()) metric_check_same_size(fn, "scores", scores, "weights", weights);
    metric_check_labels(fn, labels);
    metric_check_finite(fn, "score", scores);
    metric_check_finite(fn, "weight", weights);
}
inline double metric_weight(const ValueView& w, std::size_t i) noexcept { return w.empty() ? 1.0 : w[i]; }

} // namespace detail
} // namespace tapir::metrics
// ---- end tapir/metrics/common.hpp ----

namespace tapir::metrics {

/// One point per distinct score, from the tightest cut to the loosest: the first point is
/// (0, 0) at threshold +inf, the last (1, 1) at the lowest score. Tied scores form one step,
/// so the trapezoid between two points counts a tie as half a correct ordering.
struct RocCurve {
    std::vector<double> fpr;        ///< background efficiency eps_B at each threshold
    std::vector<double> tpr;        ///< signal efficiency eps_S at each threshold
    std::vector<double> thresholds; ///< cut on the score (pass: score >= threshold)

    /// Trapezoidal area: the weighted probability that a signal event outscores a background
    /// event, ties counting 1/2.
    double auc() const {
        double a = 0.0;
        for (std::size_t k = 1; k < fpr.size(); ++k) a += (fpr[k] - fpr[k - 1]) * (tpr[k] + tpr[k - 1]);
        return 0.5 * a;
    }

    /// eps_B at signal efficiency eps_s, linearly interpolated between the two ROC points
    /// around it (the first crossing, walking from the tightest cut). The interpolation is exact
    /// for a cut that accepts part of the events tied at the next score, chosen at random.
    double background_efficiency(double eps_s) const {
        if (!(eps_s > 0.0 && eps_s <= 1.0))
            throw value_error("background_efficiency: signal efficiency must be in (0, 1], got " +
                              detail::error_number(eps_s));
        if (tpr.size() < 2) throw value_error("background_efficiency: empty ROC curve");
        for (std::size_t k = 1; k < tpr.size(); ++k) {
            if (tpr[k] >= eps_s) {
                if (tpr[k - 1] >= eps_s) return fpr[k - 1];
                const double t = (eps_s - tpr[k - 1]) / (tpr[k] - tpr[k - 1]);
                return fpr[k - 1] + t * (fpr[k] - fpr[k - 1]);
            }
        }
        return fpr.back();
    }

    /// Background rejection 1/eps_B at signal efficiency eps_s (R50: eps_s = 0.5); +infinity
    /// when no background passes.
    double rejection(double eps_s) const {
        const double eb = background_efficiency(eps_s);
        if (eb < 0.0)
            throw value_error("rejection: background efficiency " + detail::error_number(eb) +
                              " is negative at signal efficiency " + detail::error_number(eps_s) +
                              " (negative weights)");
        return eb == 0.0 ? std::numeric_limits<double>::infinity() : 1.0 / eb;
    }
};

namespace detail {
/// Indices sorted by decreasing score, and the class totals (checked positive).
inline std::vector<std::size_t> roc_order(const char* fn, const ValueView& scores, const ValueView& labels,
                                          const ValueView& weights, double& wpos, double& wneg) {
    metric_check(fn, scores, labels, weights);
    wpos = 0.0;
    wneg = 0.0;
    for (std::size_t i = 0; i < scores.size(); ++i) (labels[i] == 1.0 ? wpos : wneg) += metric_weight(weights, i);
    if (!(wpos > 0.0))
        throw value_error(std::string(fn) + ": the signal (label 1) weights sum to " + error_number(wpos) +
                          " (need a positive total)");
    if (!(wneg > 0.0))
        throw value_error(std::string(fn) + ": the background (label 0) weights sum to " + error_number(wneg) +
                          " (need a positive total)");
    std::vector<std::size_t> order(scores.size());
    std::iota(order.begin(), order.end(), std::size_t(0));
    std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return scores[a] > scores[b]; });
    return order;
}
} // namespace detail

/// ROC curve of a binary classifier; empty weights = all 1.
inline RocCurve roc_curve(const ValueView& scores, const ValueView& labels, const ValueView& weights = {}) {
    double wpos, wneg;
    const auto order = detail::roc_order("roc_curve", scores, labels, weights, wpos, wneg);
    RocCurve r;
    r.fpr.push_back(0.0);
    r.tpr.push_back(0.0);
    r.thresholds.push_back(std::numeric_limits<double>::infinity());
    double tp = 0.0, fp = 0.0;
    for (std::size_t k = 0; k < order.size();) {
        const double s = scores[order[k]];
        for (; k < order.size() && scores[order[k]] == s; ++k) {
            const std::size_t i = order[k];
            (labels[i] == 1.0 ? tp : fp) += detail::metric_weight(weights, i);
        }
        r.fpr.push_back(fp / wneg);
        r.tpr.push_back(tp / wpos);
        r.thresholds.push_back(s);
    }
    // The loosest cut accepts everything: exactly (1, 1), free of summation rounding.
    r.fpr.back() = 1.0;
    r.tpr.back() = 1.0;
    return r;
}

/// Weighted area under the ROC curve: sum over (signal i, background j) of
/// w_i w_j ([s_i > s_j] + [s_i == s_j]/2), divided by the product of the class totals.
inline double roc_auc(const ValueView& scores, const ValueView& labels, const ValueView& weights = {}) {
    double wpos, wneg;
    const auto order = detail::roc_order("roc_auc", scores, labels, weights, wpos, wneg);
    double tp = 0.0, area = 0.0;
    for (std::size_t k = 0; k < order.size();) {
        const double s = scores[order[k]];
        double gp = 0.0, gn = 0.0;
        for (; k < order.size() && scores[order[k]] == s; ++k) {
            const std::size_t i = order[k];
            (labels[i] == 1.0 ? gp : gn) += detail::metric_weight(weights, i);
        }
        area += gn * (tp + 0.5 * gp);
        tp += gp;
    }
    return area / (wpos * wneg);
}

/// Background rejection 1/eps_B at signal efficiency eps_s (see RocCurve::background_efficiency
/// for the interpolation); +infinity when no background passes.
inline double background_rejection(const ValueView& scores, const ValueView& labels, const ValueView& weights = {},
                                   double signal_efficiency = 0.5) {
    return roc_curve(scores, labels, weights).rejection(signal_efficiency);
}

/// The score cut t that keeps signal efficiency eps_s: the highest signal score at which the
/// weighted signal passing (score >= t) first reaches eps_s of the signal total (up to 1e-12
/// relative rounding). With unit weights and no ties it keeps ceil(eps_s * N_S) signal events.
/// Tied scores pass together.
inline double efficiency_threshold(const ValueView& scores, const ValueView& labels, const ValueView& weights = {},
                                   double signal_efficiency = 0.5) {
    if (!(signal_efficiency > 0.0 && signal_efficiency <= 1.0))
        throw value_error("efficiency_threshold: signal efficiency must be in (0, 1], got " +
                          detail::error_number(signal_efficiency));
    detail::metric_check("efficiency_threshold", scores, labels, weights);
    std::vector<std::size_t> sig;
    double wpos = 0.0, wabs = 0.0;
    for (std::size_t i = 0; i < scores.size(); ++i) {
        if (labels[i] != 1.0) continue;
        sig.push_back(i);
        wpos += detail::metric_weight(weights, i);
        wabs += std::abs(detail::metric_weight(weights, i));
    }
    if (!(wpos > 0.0))
        throw value_error("efficiency_threshold: the signal (label 1) weights sum to " + detail::error_number(wpos) +
                          " (need a positive total)");
    std::sort(sig.begin(), sig.end(), [&](std::size_t a, std::size_t b) { return scores[a] > scores[b]; });
    const double target = signal_efficiency * wpos - 1e-12 * wabs;
    double cum = 0.0;
    for (std::size_t k = 0; k < sig.size();) {
        const double s = scores[sig[k]];
        for (; k < sig.size() && scores[sig[k]] == s; ++k) cum += detail::metric_weight(weights, sig[k]);
        if (cum >= target) return s;
    }
    return scores[sig.back()];
}

} // namespace tapir::metrics
// ---- end tapir/metrics/roc.hpp ----
// ---- begin tapir/optim/optimizer.hpp ----
/// The optimiser interface: a list of parameters, a learning rate, step() and zero_grad(),
/// and named state tensors so that a run can be saved and resumed bit for bit.

#include <cmath>
#include <cstddef>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>


namespace tapir {
namespace optim {

namespace detail {
/// A number for an error message: shortest readable form, "NaN" and "inf" spelled out.
inline std::string fmt_number(double v) {
    if (v != v) return "NaN";
    if (v == HUGE_VAL) return "inf";
    if (v == -HUGE_VAL) return "-inf";
    char buf[40];
    std::snprintf(buf, sizeof buf, "%.9g", v);
    return buf;
}

/// Throws value_error unless lo <= v <= hi (lo < v with open_lo, v < hi with open_hi) and v is finite.
inline void check_hyper(const char* kind, const char* what, double v, double lo, bool open_lo, double hi, bool open_hi) {
    const bool ok = std::isfinite(v) && (open_lo ? v > lo : v >= lo) && (open_hi ? v < hi : v <= hi);
    if (ok) return;
    std::string range = std::string(open_lo ? "(" : "[") + fmt_number(lo) + ", " + fmt_number(hi) + (open_hi ? ")" : "]");
    throw value_error(std::string(kind) + ": " + what + " must be in " + range + ", got " + fmt_number(v));
}
} // namespace detail

template <class T>
class Optimizer {
public:
    Optimizer(std::vector<Parameter<T>*> params, T lr) : Optimizer(std::move(params), lr, "optimizer") {}
    virtual ~Optimizer() = default;
    Optimizer(const Optimizer&) = delete;
    Optimizer& operator=(const Optimizer&) = delete;

    /// One update from the gradients in Parameter::grad. Parameters with requires_grad == false
    /// are skipped; the iteration count advances once per call.
    virtual void step() = 0;
    virtual std::string name() const = 0;

    void zero_grad() noexcept {
        for (Parameter<T>* p : params_) p->zero_grad();
    }

    T learning_rate() const noexcept { return lr_; }
    /// Rejects zero, negative and non-finite rates: they silently stall or wreck a run.
    void set_learning_rate(T lr) {
        if (!(lr > T(0)) || !std::isfinite(lr))
            throw value_error(name_or_optimizer() + ": learning rate must be positive and finite, got " +
                              detail::fmt_number(static_cast<double>(lr)));
        lr_ = lr;
    }
    /// For schedules: like set_learning_rate, but 0 is allowed (the end of a cosine annealing).
    void set_scheduled_learning_rate(T lr) {
        if (!(lr >= T(0)) || !std::isfinite(lr))
            throw value_error(name_or_optimizer() + ": scheduled learning rate must be non-negative and finite, got " +
                              detail::fmt_number(static_cast<double>(lr)));
        lr_ = lr;
    }
    std::size_t iterations() const noexcept { return iterations_; }
    const std::vector<Parameter<T>*>& parameters() const noexcept { return params_; }

    /// Named state tensors (moments, step counts) for saving and restoring; the iteration count is
    /// stored by the model file alongside. Allocates the state on first use, so that a fresh
    /// optimiser can receive a saved state before its first step.
    virtual std::vector<std::pair<std::string, Tensor<T>*>> state() { return {}; }
    void set_iterations(std::size_t n) noexcept { iterations_ = n; }

    /// Debug aid: step() first checks every gradient and throws value_error naming the parameter
    /// and element of the first NaN or infinity (off by default: it costs a pass over the gradients).
    void set_check_finite(bool on) noexcept { check_finite_ = on; }
    bool check_finite() const noexcept { return check_finite_; }

protected:
    /// kind names the optimiser in error messages (name() is not callable from a constructor).
    Optimizer(std::vector<Parameter<T>*> params, T lr, const char* kind) : params_(std::move(params)), kind_(kind) {
        set_learning_rate(lr);
        for (std::size_t i = 0; i < params_.size(); ++i) {
            if (params_[i] == nullptr)
                throw value_error(name_or_optimizer() + ": parameter #" + std::to_string(i) + " is a null pointer");
            for (std::size_t j = 0; j < i; ++j)
                if (params_[j] == params_[i])
                    throw value_error(name_or_optimizer() + ": parameter '" + params_[i]->name + "' is listed twice (#" +
                                      std::to_string(j) + " and #" + std::to_string(i) + "); it would be updated twice");
        }
    }

    std::string name_or_optimizer() const { return kind_ ? std::string(kind_) : std::string("optimizer"); }

    /// Every trainable parameter's gradient must match its value; checked for all parameters
    /// before any is updated, so a failing step changes nothing.
    void check_gradients() const {
        for (std::size_t i = 0; i < params_.size(); ++i) {
            const Parameter<T>& p = *params_[i];
            if (!p.requires_grad) continue;
            if (TAPIR_UNLIKELY(p.grad.shape() != p.value.shape()))
                throw shape_error(name_or_optimizer() + ": parameter '" + p.name + "' (#" + std::to_string(i) +
                                  ") has a gradient of shape " + p.grad.shape().str() + " but a value of shape " +
                                  p.value.shape().str());
            if (check_finite_) {
                const T* g = p.grad.data();
                for (std::size_t k = 0; k < p.grad.size(); ++k) {
                    if (g[k] - g[k] == T(0)) continue;
                    throw value_error(name_or_optimizer() + ": gradient of parameter '" + p.name + "' is " +
                                      (g[k] != g[k] ? "NaN" : (g[k] > T(0) ? "+inf" : "-inf")) + " at element " +
                                      std::to_string(k));
                }
            }
        }
    }

    /// One update pass: points a.p, a.g and a.n at every trainable parameter i in turn and calls
    /// update(i) (which sets i's state pointers and runs the kernel); then counts the iteration.
    template <class Args, class F>
    void update_each(Args& a, F update) {
        for (std::size_t i = 0; i < params_.size(); ++i) {
            Parameter<T>& p = *params_[i];
            if (!p.requires_grad) continue;
            a.p = p.value.data();
            a.g = p.grad.data();
            a.n = p.value.size();
            update(i);
        }
        ++iterations_;
    }

    /// State tensors shaped like every parameter, allocated once and filled with `init`.
    void allocate_like_params(std::vector<Tensor<T>>& s, T init) const {
        if (s.size() == params_.size()) return;
        s.clear();
        s.reserve(params_.size());
        for (const Parameter<T>* p : params_) s.emplace_back(p->value.shape(), init);
    }
    /// Appends {prefix[i], &s[i]} for every parameter i.
    static void name_state(std::vector<std::pair<std::string, Tensor<T>*>>& out, const char* prefix, std::vector<Tensor<T>>& s) {
        for (std::size_t i = 0; i < s.size(); ++i)
            out.emplace_back(std::string(prefix) + "[" + std::to_string(i) + "]", &s[i]);
    }

    std::vector<Parameter<T>*> params_;
    T lr_ = T(0);
    std::size_t iterations_ = 0;
    const char* kind_ = nullptr;
    bool check_finite_ = false;
};

} // namespace optim
} // namespace tapir
// ---- end tapir/optim/optimizer.hpp ----
// ---- begin tapir/nn/module.hpp ----
/// The module base: a tree of layers with named parameters, train/eval modes, parameter counts
/// and a Keras-like summary().
///
/// A module lists its own parameters, buffers and children through virtual collectors instead
/// of storing pointers to its members, so layers stay copyable (clone()) without dangling
/// registrations. Forward passes record on the tape of their input; parameters enter the tape
/// through use(), which is tape.param(p) unless functional_call() has bound a Var in its place.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>


namespace tapir {
namespace nn {

/// What a layer is, for code that walks a model (export to fixed-size inference, printing).
/// A module reporting `dense` is a Dense<T>, `activation` an ActivationLayer<T>, `softmax` a
/// Softmax<T>, `dropout` a Dropout<T>, `batch_norm` a BatchNorm<T>, `layer_norm` a LayerNorm<T>,
/// `sequential` a Sequential<T>: a static_cast to that type is safe.
enum class LayerKind : std::uint8_t { dense, activation, softmax, dropout, batch_norm, layer_norm, sequential, custom };

inline const char* layer_kind_name(LayerKind k) noexcept {
    switch (k) {
    case LayerKind::dense: return "dense";
    case LayerKind::activation: return "activation";
    case LayerKind::softmax: return "softmax";
    case LayerKind::dropout: return "dropout";
    case LayerKind::batch_norm: return "batch_norm";
    case LayerKind::layer_norm: return "layer_norm";
    case LayerKind::sequential: return "sequential";
    case LayerKind::custom: return "custom";
    }
    return "?";
}

template <class T>
class Module;

template <class T>
using NamedParameter = std::pair<std::string, Parameter<T>*>;
template <class T>
using NamedBuffer = std::pair<std::string, Tensor<T>*>;
template <class T>
using NamedModule = std::pair<std::string, Module<T>*>;

/// One line of summary(): "name (type)", output shape, parameter count.
struct SummaryRow {
    std::string name;
    std::string type;
    Shape output;
    std::size_t params = 0;
};

namespace detail {
/// Parameters replaced by Vars for the duration of a functional_call (per thread).
template <class T>
struct ParamBinding {
    const Parameter<T>* param;
    Var<T> var;
};
template <class T>
struct BindingState {
    static thread_local const std::vector<ParamBinding<T>>* current;
};
template <class T>
thread_local const std::vector<ParamBinding<T>>* BindingState<T>::current = nullptr;

inline std::string join_name(const std::string& prefix, const std::string& name) {
    return prefix.empty() ? name : (name.empty() ? prefix : prefix + "." + name);
}
inline std::string pad_right(const std::string& s, std::size_t w) { return s.size() >= w ? s : s + std::string(w - s.size(), ' '); }
inline std::string pad_left(const std::string& s, std::size_t w) { return s.size() >= w ? s : std::string(w - s.size(), ' ') + s; }
} // namespace detail

template <class T>
class Module {
public:
    using value_type = T;
    virtual ~Module() = default;

    /// Records the layer on x's tape and returns its output.
    virtual Var<T> forward(const Var<T>& x) = 0;
    Var<T> operator()(const Var<T>& x) { return forward(x); }

    /// Class name as shown by summary(): "Dense", "ReLU", ...
    virtual std::string type_name() const = 0;
    /// Type with its defining hyper-parameters ("Dense(relu)", "Dropout(0.2)").
    virtual std::string describe() const { return type_name(); }
    virtual LayerKind kind() const { return LayerKind::custom; }
    /// A deep copy (parameters, buffers, mode) of the same dynamic type.
    virtual std::unique_ptr<Module> clone() const = 0;

    /// Output shape for an input shape, checking the input as forward() would. The default runs
    /// forward() in eval mode on a scratch tape without gradients; layers override it.
    virtual Shape output_shape(const Shape& input) const {
        Module& self = const_cast<Module&>(*this);
        const std::vector<bool> modes = self.training_modes();
        self.eval();
        Tape<T> t;
        NoGradGuard<T> guard(t);
        Shape out;
        try {
            out = self.forward(t.constant(Tensor<T>(input))).shape();
        } catch (...) {
            self.set_training_modes(modes);
            throw;
        }
        self.set_training_modes(modes);
        return out;
    }

    /// Fusion hooks for Sequential: an activation layer reports its activation here; a layer that
    /// can apply an activation inside its own node says so and implements forward_fused().
    virtual Activation fusable_activation() const noexcept { return Activation::none; }
    virtual T activation_alpha() const noexcept { return T(0); }
    virtual bool can_fuse_activation() const noexcept { return false; }
    virtual Var<T> forward_fused(const Var<T>& x, Activation, T) { return forward(x); }

    // ---- modes ---------------------------------------------------------------------------------
    /// Training mode (the default) for this module and all below it; eval() for inference.
    void train(bool on = true) {
        training_ = on;
        for (auto& c : named_children()) c.second->train(on);
    }
    void eval() { train(false); }
    bool is_training() const noexcept { return training_; }
    /// This module's own flag only (children keep theirs), e.g. to freeze one BatchNorm.
    void set_training_flag(bool on) noexcept { training_ = on; }

    /// Mode flags of every module, depth first; set_training_modes() puts them back.
    std::vector<bool> training_modes() {
        std::vector<bool> out;
        for (Module* m : modules()) out.push_back(m->training_);
        return out;
    }
    void set_training_modes(const std::vector<bool>& modes) {
        const std::vector<Module*> ms = modules();
        if (ms.size() != modes.size())
            throw value_error("Module::set_training_modes: " + std::to_string(modes.size()) + " flags given for " +
                              std::to_string(ms.size()) + " modules");
        for (std::size_t i = 0; i < ms.size(); ++i) ms[i]->training_ = modes[i];
    }

    // ---- the tree ------------------------------------------------------------------------------
    std::vector<NamedModule<T>> named_children() {
        std::vector<NamedModule<T>> out;
        collect_children(out);
        return out;
    }
    /// This module and every module below it, depth first (this one first).
    std::vector<Module*> modules() {
        std::vector<Module*> out;
        add_modules(out);
        return out;
    }
    /// Parameters with dotted paths, PyTorch style: "0.weight", "2.bias", "encoder.0.weight".
    std::vector<NamedParameter<T>> named_parameters(const std::string& prefix = "") {
        std::vector<NamedParameter<T>> out;
        add_named_parameters(prefix, out);
        return out;
    }
    std::vector<Parameter<T>*> parameters() {
        std::vector<Parameter<T>*> out;
        for (auto& p : named_parameters()) out.push_back(p.second);
        return out;
    }
    /// Non-trained state (BatchNorm running statistics), to be saved with the parameters.
    std::vector<NamedBuffer<T>> named_buffers(const std::string& prefix = "") {
        std::vector<NamedBuffer<T>> out;
        add_named_buffers(prefix, out);
        return out;
    }

    std::size_t num_parameters() const {
        std::size_t n = 0;
        for (auto& p : mut().named_parameters()) n += p.second->size();
        return n;
    }
    std::size_t num_trainable_parameters() const {
        std::size_t n = 0;
        for (auto& p : mut().named_parameters())
            if (p.second->requires_grad) n += p.second->size();
        return n;
    }
    std::size_t num_buffer_elements() const {
        std::size_t n = 0;
        for (auto& b : mut().named_buffers()) n += b.second->size();
        return n;
    }

    void zero_grad() {
        for (auto& p : named_parameters()) p.second->zero_grad();
    }

    /// Sets every Parameter::name to its path from this module ("0.weight"), so that optimiser
    /// state and anomaly messages name parameters the way named_parameters() does.
    void update_parameter_names() {
        for (auto& p : named_parameters()) p.second->name = p.first;
    }

    // ---- summary -------------------------------------------------------------------------------
    /// Rows of summary() for this module; containers list their layers.
    virtual void summary_rows(const Shape& input, std::vector<SummaryRow>& rows) const {
        rows.push_back(SummaryRow{"model", describe(), output_shape(input), num_parameters()});
    }

    /// Keras-like table of layers, output shapes and parameter counts for an input shape that
    /// includes the batch axis, e.g. summary(Shape{32, 8}).
    std::string summary(const Shape& input) const {
        std::vector<SummaryRow> rows;
        summary_rows(input, rows);
        std::vector<std::string> c0, c1, c2;
        const std::string h0 = "Layer (type)", h1 = "Output shape", h2 = "Param #";
        std::size_t w0 = h0.size(), w1 = h1.size(), w2 = h2.size();
        for (const auto& r : rows) {
            c0.push_back(r.name + " (" + r.type + ")");
            c1.push_back(r.output.str());
            c2.push_back(std::to_string(r.params));
            w0 = c0.back().size() > w0 ? c0.back().size() : w0;
            w1 = c1.back().size() > w1 ? c1.back().size() : w1;
            w2 = c2.back().size() > w2 ? c2.back().size() : w2;
        }
        w0 += 2;
        w1 += 2;
        const std::string rule(w0 + w1 + w2, '=');
        std::string s = "Model: " + describe() + ", input shape " + input.str() + "\n";
        s += detail::pad_right(h0, w0) + detail::pad_right(h1, w1) + detail::pad_left(h2, w2) + "\n" + rule + "\n";
        for (std::size_t i = 0; i < rows.size(); ++i)
            s += detail::pad_right(c0[i], w0) + detail::pad_right(c1[i], w1) + detail::pad_left(c2[i], w2) + "\n";
        const std::size_t total = num_parameters(), trainable = num_trainable_parameters();
        s += rule + "\n";
        s += "Total params: " + std::to_string(total) + "\n";
        s += "Trainable params: " + std::to_string(trainable) + "\n";
        s += "Non-trainable params: " + std::to_string(total - trainable) + "\n";
        const std::size_t nb = num_buffer_elements();
        if (nb) s += "Buffers (running statistics, not parameters): " + std::to_string(nb) + "\n";
        return s;
    }

protected:
    Module() = default;
    Module(const Module&) = default;
    Module& operator=(const Module&) = default;

    /// Overridden by layers and user modules: own parameters and buffers (local names) and
    /// direct children.
    virtual void collect_parameters(std::vector<NamedParameter<T>>&) {}
    virtual void collect_buffers(std::vector<NamedBuffer<T>>&) {}
    virtual void collect_children(std::vector<NamedModule<T>>&) {}

    /// A parameter as a value on tape t: tape.param(p), or the Var bound by functional_call().
    Var<T> use(Tape<T>& t, Parameter<T>& p) const {
        if (TAPIR_UNLIKELY(detail::BindingState<T>::current != nullptr)) {
            for (const auto& b : *detail::BindingState<T>::current)
                if (b.param == &p) return b.var;
        }
        return t.param(p);
    }

private:
    Module& mut() const { return const_cast<Module&>(*this); }
    void add_modules(std::vector<Module*>& out) {
        out.push_back(this);
        for (auto& c : named_children()) c.second->add_modules(out);
    }
    void add_named_parameters(const std::string& prefix, std::vector<NamedParameter<T>>& out) {
        std::vector<NamedParameter<T>> own;
        collect_parameters(own);
        for (auto& p : own) out.emplace_back(detail::join_name(prefix, p.first), p.second);
        for (auto& c : named_children()) c.second->add_named_parameters(detail::join_name(prefix, c.first), out);
    }
    void add_named_buffers(const std::string& prefix, std::vector<NamedBuffer<T>>& out) {
        std::vector<NamedBuffer<T>> own;
        collect_buffers(own);
        for (auto& b : own) out.emplace_back(detail::join_name(prefix, b.first), b.second);
        for (auto& c : named_children()) c.second->add_named_buffers(detail::join_name(prefix, c.first), out);
    }

    bool training_ = true;
};

/// Runs m on x with its parameters replaced by the given Vars (in parameters() order), like
/// torch.func.functional_call: gradients then flow into those Vars instead of Parameter::grad.
/// Used to gradcheck layers with respect to their weights, and for meta-learning.
template <class T>
Var<T> functional_call(Module<T>& m, const Var<T>& x, const std::vector<Var<T>>& params) {
    const std::vector<NamedParameter<T>> named = m.named_parameters();
    if (named.size() != params.size())
        throw value_error("functional_call: " + std::to_string(params.size()) + " values given for " +
                          std::to_string(named.size()) + " parameters of " + m.describe());
    std::vector<detail::ParamBinding<T>> bindings;
    for (std::size_t i = 0; i < named.size(); ++i) {
        if (params[i].shape() != named[i].second->shape())
            tapir::detail::throw_shape(("functional_call: parameter '" + named[i].first + "' vs value given").c_str(),
                                named[i].second->shape(), params[i].shape());
        bindings.push_back(detail::ParamBinding<T>{named[i].second, params[i]});
    }
    struct Restore {
        const std::vector<detail::ParamBinding<T>>* prev;
        ~Restore() { detail::BindingState<T>::current = prev; }
    } restore{detail::BindingState<T>::current};
    detail::BindingState<T>::current = &bindings;
    return m(x);
}

} // namespace nn
} // namespace tapir
// ---- end tapir/nn/module.hpp ----

namespace tapir {
namespace metrics {}  // roc_auc: tapir:: today, tapir::metrics:: under the one namespace rule
namespace nn {

// ---- history --------------------------------------------------------------------------------

/// Per-epoch values ("loss", metrics, "val_loss", "val_<metric>"), Keras' History.history.
class History {
public:
    std::size_t epochs() const noexcept { return epochs_; }
    /// Column names in order (the CSV adds a leading "epoch").
    const std::vector<std::string>& columns() const noexcept { return names_; }
    bool has(const std::string& name) const { return find(name) < names_.size(); }
    const std::vector<double>& operator[](const std::string& name) const {
        const std::size_t i = find(name);
        if (i == names_.size()) {
            std::string known;
            for (const auto& n : names_) known += (known.empty() ? "" : ", ") + n;
            throw value_error("History: no column '" + name + "' (columns: " + known + ")");
        }
        return values_[i];
    }

    /// Early stopping outcome: the monitored column, its best value and epoch (1-based; 0 when
    /// nothing was monitored), and whether training stopped before the last epoch.
    std::string monitor;
    double best_value = std::numeric_limits<double>::quiet_NaN();
    std::size_t best_epoch = 0;
    bool stopped_early = false;

    void add_column(const std::string& name) {
        if (has(name)) throw value_error("History: duplicate column '" + name + "'");
        if (epochs_ != 0) throw value_error("History: columns must be added before the first epoch");
        names_.push_back(name);
        values_.emplace_back();
    }
    /// One epoch's values, in column order.
    void append(const std::vector<double>& row) {
        if (row.size() != names_.size())
            throw value_error("History::append: " + std::to_string(row.size()) + " values for " + std::to_string(names_.size()) + " columns");
        for (std::size_t i = 0; i < row.size(); ++i) values_[i].push_back(row[i]);
        ++epochs_;
    }

    /// "epoch,<columns>" then one line per epoch (epochs counted from 1), values with 10
    /// significant digits.
    std::string to_csv() const {
        std::string s = "epoch";
        for (const auto& n : names_) s += "," + n;
        s += "\n";
        char buf[40];
        for (std::size_t e = 0; e < epochs_; ++e) {
            s += std::to_string(e + 1);
            for (const auto& col : values_) {
                std::snprintf(buf, sizeof buf, ",%.10g", col[e]);
                s += buf;
            }
            s += "\n";
        }
        return s;
    }
    void write_csv(const std::string& path) const {
        std::ofstream f(path, std::ios::binary);
        if (!f) throw value_error("History::write_csv: cannot open '" + path + "' for writing");
        const std::string s = to_csv();
        f.write(s.data(), static_cast<std::streamsize>(s.size()));
        if (!f) throw value_error("History::write_csv: writing '" + path + "' failed");
    }

private:
    std::size_t find(const std::string& name) const {
        std::size_t i = 0;
        while (i < names_.size() && names_[i] != name) ++i;
        return i;
    }
    std::vector<std::string> names_;
    std::vector<std::vector<double>> values_;
    std::size_t epochs_ = 0;
};

// ---- metrics ------------------------------------------------------------------------------------

/// An epoch metric over all predictions of a set: fn(pred (n, k), target (n, k), weight (n, 1) or null).
template <class T>
struct Metric {
    std::string name;
    std::function<double(const Tensor<T>& pred, const Tensor<T>& target, const Tensor<T>* weight)> fn;
};

/// Weighted fraction of outputs with (pred > threshold) == (target > 0.5). The default threshold
/// 0 reads the outputs as logits (probability 0.5); use 0.5 for probabilities.
template <class T>
Metric<T> binary_accuracy(double threshold = 0.0, std::string name = "accuracy") {
    return Metric<T>{std::move(name), [threshold](const Tensor<T>& pred, const Tensor<T>& target, const Tensor<T>* w) {
                         const std::size_t n = pred.size();
                         const std::size_t rows = pred.rank() ? pred.shape()[0] : 1;
                         const std::size_t k = rows ? n / rows : 1;
                         double good = 0.0, total = 0.0;
                         for (std::size_t i = 0; i < n; ++i) {
                             const double wi = w ? static_cast<double>((*w)[i / k]) : 1.0;
                             total += wi;
                             if ((static_cast<double>(pred[i]) > threshold) == (target[i] > T(0.5))) good += wi;
                         }
                         return total != 0.0 ? good / total : std::numeric_limits<double>::quiet_NaN();
                     }};
}

/// Weighted area under the ROC curve of a one-output model (logits or probabilities: the AUC
/// depends on the order only), Keras' AUC metric computed exactly. Labels must be 0 or 1.
template <class T>
Metric<T> binary_auc(std::string name = "auc") {
    return Metric<T>{std::move(name), [](const Tensor<T>& pred, const Tensor<T>& target, const Tensor<T>* w) {
                         if (pred.size() != target.size() || (pred.rank() == 2 && pred.shape()[1] != 1))
                             throw shape_error("binary_auc: needs one output per event, got predictions of shape " + pred.shape().str());
                         using namespace tapir::metrics;
                         return w ? roc_auc(pred, target, *w) : roc_auc(pred, target);
                     }};
}

// ---- callbacks ----------------------------------------------------------------------------------

/// Passed to callbacks after each epoch; set stop_training to end training (Keras'
/// model.stop_training). The optimiser is there for learning-rate schedules.
template <class T>
struct EpochEnd {
    std::size_t epoch;   ///< 1-based
    std::size_t epochs;  ///< requested
    const History& history;
    Module<T>& model;
    optim::Optimizer<T>& optimizer;
    bool stop_training = false;
};
template <class T>
using Callback = std::function<void(EpochEnd<T>&)>;

/// automatic: minimise a monitored name ending in "loss", maximise anything else.
enum class MonitorMode { automatic, min, max };

namespace detail {

inline bool monitor_minimises(const std::string& mon, MonitorMode mode) {
    return mode == MonitorMode::min || (mode == MonitorMode::automatic && mon.size() >= 4 && mon.compare(mon.size() - 4, 4, "loss") == 0);
}

/// The best value of a monitored History column so far (shared by the callbacks below).
struct MonitorState {
    std::string monitor;  ///< empty: "val_loss" with validation data, else "loss"
    MonitorMode mode = MonitorMode::automatic;
    double min_delta = 0.0;
    bool minimise = true;
    bool started = false;
    double best = 0.0;

    /// Whether this epoch's value improves on the best (and records it if so). NaN never does.
    bool improved(const History& h) {
        if (monitor.empty()) monitor = h.has("val_loss") ? "val_loss" : "loss";
        const double v = h[monitor].back();  // names the columns if the monitor is unknown
        if (!started) {
            minimise = monitor_minimises(monitor, mode);
            if (v != v) return false;
            started = true;
            best = v;
            return true;
        }
        const bool better = minimise ? v < best - min_delta : v > best + min_delta;
        if (better) best = v;
        return better;
    }
};

} // namespace detail

struct ReduceLROnPlateauOptions {
    std::string monitor;  ///< default: "val_loss" with validation data, else "loss"
    double factor = 0.1;  ///< new rate = max(rate * factor, min_lr), 0 < factor < 1
    std::size_t patience = 10;  ///< epochs without improvement before a reduction
    double min_delta = 1e-4;    ///< an improvement must beat the best by more than this
    std::size_t cooldown = 0;   ///< epochs after a reduction before counting again
    double min_lr = 0.0;
    MonitorMode mode = MonitorMode::automatic;
};

/// Keras' ReduceLROnPlateau: multiplies the optimiser's learning rate by `factor` (not below
/// min_lr) after `patience` epochs in which the monitored value did not improve.
template <class T>
Callback<T> reduce_lr_on_plateau(const ReduceLROnPlateauOptions& o = ReduceLROnPlateauOptions{}) {
    if (!(o.factor > 0.0 && o.factor < 1.0))
        throw value_error("reduce_lr_on_plateau: factor must be in (0, 1), got " + std::to_string(o.factor));
    if (o.patience == 0) throw value_error("reduce_lr_on_plateau: patience must be at least 1 epoch");
    if (!(o.min_lr >= 0.0) || !std::isfinite(o.min_lr))
        throw value_error("reduce_lr_on_plateau: min_lr must be finite and >= 0, got " + std::to_string(o.min_lr));
    struct State {
        detail::MonitorState mon;
        std::size_t wait = 0, cooldown = 0;
    };
    auto st = std::make_shared<State>();
    st->mon.monitor = o.monitor;
    st->mon.mode = o.mode;
    st->mon.min_delta = o.min_delta;
    return [st, o](EpochEnd<T>& e) {
        const bool better = st->mon.improved(e.history);
        if (st->cooldown > 0) --st->cooldown;  // epochs after a reduction: no counting
        else if (better) st->wait = 0;
        else if (++st->wait >= o.patience) {
            const double lr = static_cast<double>(e.optimizer.learning_rate());
            if (lr > o.min_lr) {
                const double next = std::max(lr * o.factor, o.min_lr);
                if (next > 0.0) e.optimizer.set_learning_rate(static_cast<T>(next));
                else e.optimizer.set_scheduled_learning_rate(T(0));
            }
            st->wait = 0;
            st->cooldown = o.cooldown;
        }
    };
}

} // namespace nn
} // namespace tapir
// ---- end tapir/nn/callbacks.hpp ----
// ---- begin tapir/nn/checkpoint.hpp ----
/// Keras' ModelCheckpoint(save_best_only=True) as a fit() callback. Apart from callbacks.hpp so
/// that the training loop does not depend on io/.

#include <memory>
#include <string>

// ---- begin tapir/io/model_file.hpp ----
/// Model files: a model's named parameters and, optionally, an optimiser's state in a versioned,
/// portable binary format with a CRC-32. Loading validates the whole file against the model
/// before it changes anything (all or nothing); every failure is a format_error naming the file
/// and the problem.
///
/// io/ knows no optimiser: an optimiser's section is an OptimizerState (name, iteration count,
/// learning rate, named tensors) that optim/model_file.hpp fills from an optimiser and applies
/// back to it (optim::save_model(path, params, &adam), found by argument lookup).
///
/// Format version 1, all integers and floats little-endian (IEEE-754 binary32/binary64):
///   offset  size
///        0     6  magic "TAPIR\0"
///        6     4  u32 format version (1)
///       10     1  u8 dtype: 1 = float32, 2 = float64
///       11     8  u64 total file size in bytes, CRC included
///       19     8  u64 parameter count, then that many tensor records
///                 u8 optimiser flag: 0 = none, 1 = an optimiser section follows:
///                    string name, u64 iteration count, f64 learning rate,
///                    u64 state tensor count, then that many tensor records
///   size-4     4  u32 CRC-32/ISO-HDLC of bytes [0, size - 4)
/// tensor record: string name, u8 rank (0..4), rank x u64 dimensions, numel x dtype values.
/// string: u32 byte length, then the bytes (no terminator).

#include <cerrno>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <stdexcept>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

// ---- begin tapir/io/crc32.hpp ----
/// CRC-32/ISO-HDLC (the zlib, PNG and gzip CRC): reflected polynomial 0xEDB88320, initial value
/// and final xor 0xFFFFFFFF; crc32("123456789") = 0xCBF43926. Slicing by 8 bytes.

#include <array>
#include <cstddef>
#include <cstdint>

namespace tapir {
namespace io {

namespace detail {
struct Crc32Tables {
    std::uint32_t t[8][256];
};

constexpr Crc32Tables make_crc32_tables() {
    Crc32Tables tab{};
    for (std::uint32_t i = 0; i < 256; ++i) {
        std::uint32_t c = i;
        for (int k = 0; k < 8; ++k) c = (c & 1u) ? (0xEDB88320u ^ (c >> 1)) : (c >> 1);
        tab.t[0][i] = c;
    }
    for (std::uint32_t i = 0; i < 256; ++i)
        for (int s = 1; s < 8; ++s) tab.t[s][i] = (tab.t[s - 1][i] >> 8) ^ tab.t[0][tab.t[s - 1][i] & 0xFFu];
    return tab;
}

inline const Crc32Tables& crc32_tables() noexcept {
    static constexpr Crc32Tables tab = make_crc32_tables();
    return tab;
}
} // namespace detail

/// Continues a CRC: crc32_update(crc32_update(0, a), b) == crc32(a ++ b). Start from 0.
inline std::uint32_t crc32_update(std::uint32_t crc, const void* data, std::size_t n) noexcept {
    const auto& t = detail::crc32_tables().t;
    const auto* p = static_cast<const unsigned char*>(data);
    std::uint32_t c = ~crc;
    for (; n >= 8; n -= 8, p += 8) {
        // Bytes assembled explicitly: the result does not depend on the host's byte order.
        const std::uint32_t lo = c ^ (static_cast<std::uint32_t>(p[0]) | static_cast<std::uint32_t>(p[1]) << 8 |
                                      static_cast<std::uint32_t>(p[2]) << 16 | static_cast<std::uint32_t>(p[3]) << 24);
        c = t[7][lo & 0xFFu] ^ t[6][(lo >> 8) & 0xFFu] ^ t[5][(lo >> 16) & 0xFFu] ^ t[4][lo >> 24] ^ t[3][p[4]] ^
            t[2][p[5]] ^ t[1][p[6]] ^ t[0][p[7]];
    }
    for (; n > 0; --n, ++p) c = t[0][(c ^ *p) & 0xFFu] ^ (c >> 8);
    return ~c;
}

inline std::uint32_t crc32(const void* data, std::size_t n) noexcept { return crc32_update(0u, data, n); }

} // namespace io
} // namespace tapir
// ---- end tapir/io/crc32.hpp ----

namespace tapir {
namespace io {

/// (name, parameter) pairs in model order, as returned by nn models' named_parameters().
template <class T>
using NamedParameters = std::vector<std::pair<std::string, Parameter<T>*>>;

constexpr std::uint32_t model_format_version = 1;

/// An optimiser's section of a model file. Saving writes name, iterations, learning_rate and
/// the tensors; loading checks the file's name and tensors (names, order, shapes) against these,
/// fills the tensors and sets iterations and learning_rate from the file.
template <class T>
struct OptimizerState {
    std::string name;
    std::uint64_t iterations = 0;
    double learning_rate = 0.0;
    std::vector<std::pair<std::string, Tensor<T>*>> tensors;
};

/// What a model file holds, without a model to compare it with (tools, fuzzing).
struct ModelFileInfo {
    std::uint32_t version = 0;
    std::string dtype;  // "float32" or "float64"
    std::vector<std::pair<std::string, Shape>> parameters;
    bool has_optimizer = false;
    std::string optimizer;
    std::uint64_t iterations = 0;
    double learning_rate = 0.0;
    std::vector<std::pair<std::string, Shape>> optimizer_state;
};

namespace detail {

template <class U>
struct model_type_identity {
    using type = U;
};

constexpr unsigned char model_magic[6] = {'T', 'A', 'P', 'I', 'R', '\0'};
constexpr std::size_t model_header_size = 27;

template <class T>
constexpr std::uint8_t dtype_code() {
    return sizeof(T) == 4 ? 1 : 2;
}
inline const char* dtype_name(std::uint8_t code) { return code == 1 ? "float32" : code == 2 ? "float64" : "unknown"; }

/// A number for a message: shortest readable form, "NaN" and "inf" spelled out.
inline std::string model_number(double v) {
    if (v != v) return "NaN";
    if (v == HUGE_VAL || v == -HUGE_VAL) return v > 0 ? "inf" : "-inf";
    char buf[40];
    std::snprintf(buf, sizeof buf, "%.9g", v);
    return buf;
}

/// A name from the file as it may appear in a message: control bytes replaced, long names cut.
inline std::string model_printable(const std::string& s) {
    std::string out;
    const std::size_t n = s.size() < 80 ? s.size() : 80;
    for (std::size_t i = 0; i < n; ++i) {
        const unsigned char c = static_cast<unsigned char>(s[i]);
        out += (c < 0x20 || c == 0x7F) ? '?' : s[i];
    }
    if (n < s.size()) out += "...";
    return out;
}

// ---- writing -----------------------------------------------------------------------------------
class ModelWriter {
public:
    explicit ModelWriter(std::size_t reserve) { buf_.reserve(reserve); }
    void u8(std::uint8_t v) { buf_.push_back(static_cast<char>(v)); }
    void u32(std::uint32_t v) {
        for (int k = 0; k < 4; ++k) buf_.push_back(static_cast<char>(static_cast<unsigned char>(v >> (8 * k))));
    }
    void u64(std::uint64_t v) {
        for (int k = 0; k < 8; ++k) buf_.push_back(static_cast<char>(static_cast<unsigned char>(v >> (8 * k))));
    }
    void f64(double v) {
        std::uint64_t u;
        std::memcpy(&u, &v, sizeof u);
        u64(u);
    }
    void str(const std::string& s) {
        u32(static_cast<std::uint32_t>(s.size()));
        buf_.append(s);
    }
    void bytes(const void* p, std::size_t n) { buf_.append(static_cast<const char*>(p), n); }
    template <class T>
    void values(const T* p, std::size_t n) {
        using U = typename std::conditional<sizeof(T) == 4, std::uint32_t, std::uint64_t>::type;
        const std::size_t at = buf_.size();
        buf_.resize(at + n * sizeof(T));
        auto* out = reinterpret_cast<unsigned char*>(&buf_[at]);
        for (std::size_t i = 0; i < n; ++i) {
            U u;
            std::memcpy(&u, p + i, sizeof u);
            for (std::size_t k = 0; k < sizeof(U); ++k) out[i * sizeof(U) + k] = static_cast<unsigned char>(u >> (8 * k));
        }
    }
    void patch_u64(std::size_t at, std::uint64_t v) {
        for (int k = 0; k < 8; ++k) buf_[at + static_cast<std::size_t>(k)] = static_cast<char>(static_cast<unsigned char>(v >> (8 * k)));
    }
    std::string& buffer() noexcept { return buf_; }

private:
    std::string buf_;
};

template <class T>
std::size_t model_record_size(const std::string& name, const Tensor<T>& t) {
    return 4 + name.size() + 1 + 8 * t.rank() + t.size() * sizeof(T);
}

template <class T>
void write_model_record(ModelWriter& w, const std::string& name, const Tensor<T>& t) {
    if (name.size() > 0xFFFFFFFFu) throw value_error("save_model: tensor name longer than 4 GiB");
    w.str(name);
    w.u8(static_cast<std::uint8_t>(t.rank()));
    for (std::size_t d = 0; d < t.rank(); ++d) w.u64(static_cast<std::uint64_t>(t.dim(d)));
    w.values(t.data(), t.size());
}

template <class T>
void check_named_parameters(const NamedParameters<T>& params, const char* fn) {
    for (std::size_t i = 0; i < params.size(); ++i) {
        if (params[i].second == nullptr)
            throw value_error(std::string(fn) + ": parameter #" + std::to_string(i) + " ('" + params[i].first + "') is a null pointer");
        for (std::size_t j = 0; j < i; ++j)
            if (params[j].first == params[i].first)
                throw value_error(std::string(fn) + ": parameter name '" + params[i].first + "' is used twice (#" +
                                  std::to_string(j) + " and #" + std::to_string(i) + ")");
    }
}

template <class T>
std::string serialise_model(const NamedParameters<T>& params, const OptimizerState<T>* opt) {
    check_named_parameters(params, "save_model");
    std::vector<std::pair<std::string, Tensor<T>*>> st;
    std::string opt_name;
    std::size_t total = model_header_size + 1 + 4;
    for (const auto& np : params) total += model_record_size(np.first, np.second->value);
    if (opt) {
        st = opt->tensors;
        opt_name = opt->name;
        total += 4 + opt_name.size() + 8 + 8 + 8;
        for (const auto& s : st) total += model_record_size(s.first, *s.second);
    }
    ModelWriter w(total);
    w.bytes(model_magic, sizeof model_magic);
    w.u32(model_format_version);
    w.u8(dtype_code<T>());
    w.u64(total);
    w.u64(params.size());
    for (const auto& np : params) write_model_record(w, np.first, np.second->value);
    w.u8(opt ? 1 : 0);
    if (opt) {
        w.str(opt_name);
        w.u64(opt->iterations);
        w.f64(opt->learning_rate);
        w.u64(st.size());
        for (const auto& s : st) write_model_record(w, s.first, *s.second);
    }
    std::string& b = w.buffer();
    w.u32(crc32(b.data(), b.size()));
    if (b.size() != total) throw std::logic_error("save_model: internal error: size " + std::to_string(b.size()) + " != " + std::to_string(total));
    return std::move(b);
}

// ---- reading -----------------------------------------------------------------------------------
struct ModelRecord {
    std::string name;
    Shape shape;
    std::size_t offset = 0;  // of the data
};

struct ParsedModelFile {
    std::uint32_t version = 0;
    std::uint8_t dtype = 0;
    std::uint64_t declared_size = 0;
    std::vector<ModelRecord> params;
    bool has_opt = false;
    std::string opt_name;
    std::uint64_t iterations = 0;
    double lr = 0.0;
    std::vector<ModelRecord> state;
};

class ModelReader {
public:
    ModelReader(const unsigned char* p, std::size_t n, const std::string& src) : p_(p), n_(n), src_(src) {}
    [[noreturn]] void fail(const std::string& what) const { throw format_error(src_ + ": " + what); }
    [[noreturn]] void truncated(const std::string& where) const {
        fail("truncated: file ends inside " + where + ", after " + std::to_string(n_) + " bytes");
    }
    std::size_t pos() const noexcept { return pos_; }
    std::size_t left() const noexcept { return n_ - pos_; }
    void need(std::size_t k, const std::string& where) const {
        if (left() < k) truncated(where);
    }
    std::uint8_t u8(const std::string& where) {
        need(1, where);
        return p_[pos_++];
    }
    std::uint32_t u32(const std::string& where) { return little_endian<std::uint32_t>(where); }
    std::uint64_t u64(const std::string& where) { return little_endian<std::uint64_t>(where); }
    /// An unsigned integer stored little-endian (the file's byte order on every host).
    template <class U>
    U little_endian(const std::string& where) {
        need(sizeof(U), where);
        U v = 0;
        for (std::size_t k = 0; k < sizeof(U); ++k) v |= static_cast<U>(static_cast<U>(p_[pos_ + k]) << (8 * k));
        pos_ += sizeof(U);
        return v;
    }
    double f64(const std::string& where) {
        const std::uint64_t u = u64(where);
        double d;
        std::memcpy(&d, &u, sizeof d);
        return d;
    }
    std::string str(const std::string& where) {
        const std::uint32_t len = u32(where);
        need(len, where);
        std::string s(reinterpret_cast<const char*>(p_ + pos_), len);
        pos_ += len;
        return s;
    }
    void skip(std::size_t k) { pos_ += k; }

private:
    const unsigned char* p_;
    std::size_t n_;
    const std::string& src_;
    std::size_t pos_ = 0;
};

/// One tensor record; `what` is "tensor" or "optimizer state tensor", `index` its position.
inline ModelRecord read_model_record(ModelReader& r, std::size_t elem, const char* what, std::size_t index) {
    ModelRecord rec;
    const std::string num = std::string(what) + " #" + std::to_string(index);
    rec.name = r.str("the name of " + num);
    const std::string label = std::string(what) + " '" + model_printable(rec.name) + "'";
    const std::uint8_t rank = r.u8("the shape of " + label);
    if (rank > max_rank)
        r.fail(label + " has rank " + std::to_string(rank) + "; the maximum rank is " + std::to_string(max_rank));
    std::size_t numel = 1;
    bool overflow = false;
    for (std::uint8_t d = 0; d < rank; ++d) {
        const std::uint64_t dim = r.u64("the shape of " + label);
        if (dim > static_cast<std::uint64_t>(SIZE_MAX)) overflow = true;
        const auto sd = static_cast<std::size_t>(dim);
        rec.shape.push_back(sd);
        if (sd != 0 && numel > SIZE_MAX / elem / sd) overflow = true;
        numel *= sd;
    }
    if (overflow) r.fail(label + " has shape " + rec.shape.str() + ", too large for this machine");
    const std::size_t bytes = rec.shape.numel() * elem;
    if (r.left() < bytes)
        r.fail("truncated: expected " + std::to_string(bytes) + " bytes of data for " + label + ", file ends after " +
               std::to_string(r.left()));
    rec.offset = r.pos();
    r.skip(bytes);
    return rec;
}

/// Everything after the header, bounds-checked; on success r stands before the CRC.
inline void parse_model_body(ModelReader& r, ParsedModelFile& out) {
    const std::size_t elem = out.dtype == 1 ? 4 : 8;
    const std::uint64_t count = r.u64("the parameter count");
    for (std::uint64_t i = 0; i < count; ++i)
        out.params.push_back(read_model_record(r, elem, "tensor", static_cast<std::size_t>(i)));
    const std::uint8_t flag = r.u8("the optimizer section flag");
    if (flag > 1) r.fail("invalid optimizer section flag " + std::to_string(flag) + " (expected 0 or 1)");
    out.has_opt = flag == 1;
    if (out.has_opt) {
        out.opt_name = r.str("the optimizer name");
        out.iterations = r.u64("the optimizer iteration count");
        out.lr = r.f64("the optimizer learning rate");
        const std::uint64_t ns = r.u64("the optimizer state count");
        for (std::uint64_t i = 0; i < ns; ++i)
            out.state.push_back(read_model_record(r, elem, "optimizer state tensor", static_cast<std::size_t>(i)));
    }
}

inline std::uint32_t model_stored_crc(const unsigned char* p) {
    return static_cast<std::uint32_t>(p[0]) | static_cast<std::uint32_t>(p[1]) << 8 | static_cast<std::uint32_t>(p[2]) << 16 |
           static_cast<std::uint32_t>(p[3]) << 24;
}

/// Header, integrity (size, CRC) and structure; nothing about any model.
inline ParsedModelFile parse_model_file(const unsigned char* data, std::size_t n, const std::string& src) {
    ModelReader r(data, n, src);
    if (n == 0) r.fail("not a tapir model file (the file is empty)");
    const std::size_t m = n < sizeof model_magic ? n : sizeof model_magic;
    if (std::memcmp(data, model_magic, m) != 0) r.fail("not a tapir model file (no \"TAPIR\" magic at the start)");
    if (n < model_header_size) r.truncated("the " + std::to_string(model_header_size) + "-byte header");
    r.skip(sizeof model_magic);
    ParsedModelFile out;
    out.version = r.u32("the header");
    if (out.version != model_format_version)
        r.fail("unsupported format version " + std::to_string(out.version) + " (this build of tapir reads version " +
               std::to_string(model_format_version) + ")");
    out.dtype = r.u8("the header");
    out.declared_size = r.u64("the header");
    const std::size_t body = r.pos();
    const bool dtype_ok = out.dtype == 1 || out.dtype == 2;
    const std::string crc_msg = "CRC mismatch (file is corrupted)";

    if (out.declared_size > n) {
        // Short file: report the first element that is cut off.
        if (!dtype_ok) r.fail("truncated: the header declares " + std::to_string(out.declared_size) + " bytes, the file has " + std::to_string(n));
        parse_model_body(r, out);
        if (r.left() < 4) r.truncated("the CRC-32 checksum");
        r.fail(crc_msg);  // the structure is complete: the size field itself is wrong
    }
    if (out.declared_size < n) {
        const std::uint64_t d = out.declared_size;
        if (d >= model_header_size + 5 && model_stored_crc(data + d - 4) == crc32(data, static_cast<std::size_t>(d - 4)))
            r.fail(std::to_string(n - static_cast<std::size_t>(d)) + " unexpected bytes after the end of the model data (the header declares " +
                   std::to_string(d) + " bytes, the file has " + std::to_string(n) + ")");
        r.fail(crc_msg);
    }
    if (model_stored_crc(data + n - 4) != crc32(data, n - 4)) r.fail(crc_msg);
    // Intact as written; what follows catches files made by hand or by a broken writer.
    if (!dtype_ok) r.fail("unknown dtype code " + std::to_string(out.dtype) + " (expected 1 = float32 or 2 = float64)");
    ModelReader body_reader(data, n - 4, src);
    body_reader.skip(body);
    parse_model_body(body_reader, out);
    if (body_reader.left() != 0)
        r.fail(std::to_string(body_reader.left()) + " unexpected bytes after the " + (out.has_opt ? "optimizer section" : "parameters"));
    return out;
}

template <class T>
void decode_model_values(const unsigned char* p, T* out, std::size_t n) {
    using U = typename std::conditional<sizeof(T) == 4, std::uint32_t, std::uint64_t>::type;
    for (std::size_t i = 0; i < n; ++i) {
        U u = 0;
        for (std::size_t k = 0; k < sizeof(U); ++k) u |= static_cast<U>(static_cast<U>(p[i * sizeof(U) + k]) << (8 * k));
        std::memcpy(out + i, &u, sizeof u);
    }
}

inline ModelFileInfo model_file_info(const ParsedModelFile& p) {
    ModelFileInfo info;
    info.version = p.version;
    info.dtype = dtype_name(p.dtype);
    for (const ModelRecord& r : p.params) info.parameters.emplace_back(r.name, r.shape);
    info.has_optimizer = p.has_opt;
    info.optimizer = p.opt_name;
    info.iterations = p.iterations;
    info.learning_rate = p.lr;
    for (const ModelRecord& r : p.state) info.optimizer_state.emplace_back(r.name, r.shape);
    return info;
}

template <class T>
void load_model_into(const unsigned char* data, std::size_t n, const NamedParameters<T>& params, OptimizerState<T>* opt,
               const std::string& src) {
    check_named_parameters(params, "load_model");
    const ParsedModelFile f = parse_model_file(data, n, src);
    auto fail = [&src](const std::string& what) { throw format_error(src + ": " + what); };

    // ---- validate everything against the model -----------------------------------------------
    if (f.dtype != dtype_code<T>())
        fail(std::string("the file holds ") + dtype_name(f.dtype) + " values but the model is " + dtype_name(dtype_code<T>()));
    if (f.params.size() != params.size())
        fail("the file has " + std::to_string(f.params.size()) + " parameters but the model has " + std::to_string(params.size()));
    for (std::size_t i = 0; i < params.size(); ++i) {
        const ModelRecord& r = f.params[i];
        const std::string& want = params[i].first;
        if (r.name != want)
            fail("parameter #" + std::to_string(i) + " is '" + model_printable(r.name) + "' in the file but '" + want + "' in the model");
        const Shape& s = params[i].second->value.shape();
        if (r.shape != s)
            fail("parameter '" + want + "' has shape " + r.shape.str() + " in the file but " + s.str() + " in the model");
    }
    std::vector<std::pair<std::string, Tensor<T>*>> st;
    if (opt) {
        if (!f.has_opt) fail("the file holds no optimizer state (it was saved without an optimizer)");
        const std::string& name = opt->name;
        if (f.opt_name != name)
            fail("the file holds the state of optimizer '" + model_printable(f.opt_name) + "' but the optimizer is '" + name + "'");
        st = opt->tensors;
        if (f.state.size() != st.size())
            fail("the file has " + std::to_string(f.state.size()) + " " + name + " state tensors but the optimizer has " +
                 std::to_string(st.size()));
        for (std::size_t i = 0; i < st.size(); ++i) {
            const ModelRecord& r = f.state[i];
            if (r.name != st[i].first)
                fail("optimizer state #" + std::to_string(i) + " is '" + model_printable(r.name) + "' in the file but '" + st[i].first +
                     "' in the optimizer");
            if (r.shape != st[i].second->shape())
                fail("optimizer state '" + st[i].first + "' has shape " + r.shape.str() + " in the file but " +
                     st[i].second->shape().str() + " in the optimizer");
        }
        const T lr = static_cast<T>(f.lr);  // the optimiser's type must hold it
        if (!(lr >= T(0)) || !std::isfinite(lr))
            fail("invalid optimizer learning rate " + model_number(f.lr) + " in the file");
        if (f.iterations > static_cast<std::uint64_t>(SIZE_MAX))
            fail("optimizer iteration count " + std::to_string(f.iterations) + " is too large for this machine");
    }

    // ---- apply (nothing below can fail) ------------------------------------------------------
    for (std::size_t i = 0; i < params.size(); ++i) {
        Tensor<T>& v = params[i].second->value;
        decode_model_values(data + f.params[i].offset, v.data(), v.size());
    }
    if (opt) {
        for (std::size_t i = 0; i < st.size(); ++i) decode_model_values(data + f.state[i].offset, st[i].second->data(), st[i].second->size());
        opt->iterations = f.iterations;
        opt->learning_rate = f.lr;
    }
}

struct ModelFileCloser {
    void operator()(std::FILE* f) const noexcept { std::fclose(f); }
};

inline std::string read_model_file(const std::string& path, const char* fn) {
    errno = 0;
    std::unique_ptr<std::FILE, ModelFileCloser> f(std::fopen(path.c_str(), "rb"));
    if (!f) throw format_error(std::string(fn) + ": cannot open '" + path + "': " + std::generic_category().message(errno));
    std::string data;
    char buf[1 << 16];
    errno = 0;
    for (;;) {
        const std::size_t got = std::fread(buf, 1, sizeof buf, f.get());
        data.append(buf, got);
        if (got < sizeof buf) break;
    }
    // A directory opens but does not read (EISDIR): the reason names it.
    if (std::ferror(f.get()))
        throw format_error(std::string(fn) + ": cannot read '" + path + "': " + std::generic_category().message(errno ? errno : EIO));
    return data;
}

/// Writes to path + ".tmp" and renames: a crash mid-write never leaves a half-written model file.
inline void write_model_file(const std::string& path, const std::string& data) {
    const std::string tmp = path + ".tmp";
    errno = 0;
    std::FILE* f = std::fopen(tmp.c_str(), "wb");
    if (!f) throw format_error("save_model: cannot open '" + tmp + "' for writing: " + std::generic_category().message(errno));
    const bool wrote = std::fwrite(data.data(), 1, data.size(), f) == data.size();
    const int err = errno;
    const bool closed = std::fclose(f) == 0;
    if (!wrote || !closed) {
        std::remove(tmp.c_str());
        throw format_error("save_model: error writing '" + tmp + "': " + std::generic_category().message(err ? err : EIO));
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
        const int e = errno;
        std::remove(tmp.c_str());
        // The temporary file is an implementation detail: the reason (a directory, EISDIR) is the path's.
        throw format_error("save_model: cannot write '" + path + "': " + std::generic_category().message(e));
    }
}

} // namespace detail

// ---- public API ----------------------------------------------------------------------------------

/// The model file as bytes (the in-memory form of save_model).
template <class T>
std::string save_model_to_string(const NamedParameters<T>& params, typename detail::model_type_identity<const OptimizerState<T>>::type* optimizer_state = nullptr) {
    return detail::serialise_model(params, optimizer_state);
}
template <class T>
std::vector<std::uint8_t> save_model_to_bytes(const NamedParameters<T>& params,
                                              typename detail::model_type_identity<const OptimizerState<T>>::type* optimizer_state = nullptr) {
    const std::string s = detail::serialise_model(params, optimizer_state);
    return std::vector<std::uint8_t>(s.begin(), s.end());
}

/// Saves the parameters (and an optimiser's section: optim::save_model fills it from an optimiser).
template <class T>
void save_model(const std::string& path, const NamedParameters<T>& params,
                typename detail::model_type_identity<const OptimizerState<T>>::type* optimizer_state = nullptr) {
    detail::write_model_file(path, detail::serialise_model(params, optimizer_state));
}

/// Loads into the given parameters (and optimiser): names, order, shapes and dtype must match the
/// file exactly. Throws format_error before changing anything if the file is not a tapir model
/// file, is truncated, corrupted, or does not fit. An optimiser section is ignored when no
/// optimizer_state is passed; one is required when it is (optim::load_model passes an
/// optimiser's and applies the iteration count and learning rate read into it).
template <class T>
void load_model_from_bytes(const void* data, std::size_t size, const NamedParameters<T>& params,
                           typename detail::model_type_identity<OptimizerState<T>>::type* optimizer_state = nullptr,
                           const std::string& source = "<memory>") {
    detail::load_model_into(static_cast<const unsigned char*>(data), size, params, optimizer_state, source);
}
template <class T>
void load_model_from_string(const std::string& data, const NamedParameters<T>& params,
                            typename detail::model_type_identity<OptimizerState<T>>::type* optimizer_state = nullptr,
                            const std::string& source = "<memory>") {
    detail::load_model_into(reinterpret_cast<const unsigned char*>(data.data()), data.size(), params, optimizer_state, source);
}
template <class T>
void load_model_from_bytes(const std::vector<std::uint8_t>& data, const NamedParameters<T>& params,
                           typename detail::model_type_identity<OptimizerState<T>>::type* optimizer_state = nullptr,
                           const std::string& source = "<memory>") {
    detail::load_model_into(data.data(), data.size(), params, optimizer_state, source);
}
template <class T>
void load_model(const std::string& path, const NamedParameters<T>& params,
                typename detail::model_type_identity<OptimizerState<T>>::type* optimizer_state = nullptr) {
    const std::string data = detail::read_model_file(path, "load_model");
    detail::load_model_into(reinterpret_cast<const unsigned char*>(data.data()), data.size(), params, optimizer_state, path);
}

/// Header, integrity and contents of a model file, checked as load_model checks them.
inline ModelFileInfo inspect_model_bytes(const void* data, std::size_t size, const std::string& source = "<memory>") {
    return detail::model_file_info(detail::parse_model_file(static_cast<const unsigned char*>(data), size, source));
}
inline ModelFileInfo inspect_model(const std::string& path) {
    const std::string data = detail::read_model_file(path, "inspect_model");
    return inspect_model_bytes(data.data(), data.size(), path);
}

} // namespace io
} // namespace tapir
// ---- end tapir/io/model_file.hpp ----

namespace tapir {
namespace nn {

struct CheckpointOptions {
    std::string monitor;  ///< default: "val_loss" with validation data, else "loss"
    MonitorMode mode = MonitorMode::automatic;
    double min_delta = 0.0;
};

/// Keras' ModelCheckpoint(save_best_only=True): after each epoch whose monitored value beats the
/// best so far, writes the model's parameters to `path` with io::save_model (a temporary file
/// renamed over the old one, so a crash never leaves half a checkpoint). Load it with
/// io::load_model(path, model.named_parameters()).
template <class T>
Callback<T> checkpoint_best(std::string path, const CheckpointOptions& o = CheckpointOptions{}) {
    if (path.empty()) throw value_error("checkpoint_best: empty path");
    auto mon = std::make_shared<detail::MonitorState>();
    mon->monitor = o.monitor;
    mon->mode = o.mode;
    mon->min_delta = o.min_delta;
    return [mon, path](EpochEnd<T>& e) {
        if (mon->improved(e.history)) io::save_model(path, e.model.named_parameters());
    };
}

} // namespace nn
} // namespace tapir
// ---- end tapir/nn/checkpoint.hpp ----
// ---- begin tapir/nn/fit.hpp ----
/// A Keras-like training loop: fit(model, x, y, optimizer, options, loss) with mini-batches,
/// validation (split or set), metrics, early stopping, per-epoch callbacks and a progress
/// display; evaluate() and predict() for trained models. History, metrics and callbacks are in
/// callbacks.hpp, the display in progress.hpp, the losses are loss/'s functions.
///
/// The step itself (Trainer::step) reuses one tape, cleared each step, and gathers each batch
/// into tensors kept across steps; the loss is a template parameter, not a std::function. Once
/// the first steps have sized the arena and the buffers, a step touches the heap not at all.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

// ---- begin tapir/loss/classification.hpp ----
/// Classification and regression losses: binary cross-entropy from logits and from
/// probabilities, MSE, MAE and categorical cross-entropy from logits.
///
/// All take an optional pointer to per-event weights (N values, may be negative, detached) and
/// return the weighted mean over events sum_i w_i l_i / sum_i w_i. A multi-column prediction
/// (N, D) is averaged over its columns first (Keras' convention), so a weight belongs to an event.

#include <cstddef>
#include <string>
#include <vector>

// ---- begin tapir/loss/common.hpp ----
/// Shared plumbing of the losses: batch-shape checks and the weighted mean over events.
///
/// Every loss takes optional per-event weights as a pointer to a Var of N values (N = the batch
/// axis). Weights are constants: they are detached, so no gradient flows into them. They may be
/// negative (Monte Carlo weights); only a zero or non-finite total is rejected, because the
/// weighted mean sum_i w_i l_i / sum_i w_i is then undefined.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>


namespace tapir {
namespace loss {
namespace detail {

/// A scalar argument of type T that does not take part in template deduction, so that
/// f(var, 10) and f(var, 0.5) work for Var<float> and Var<double> alike.
template <class T>
using scalar_t = typename Var<T>::value_type;

template <class U>
struct type_identity {
    using type = U;
};
/// Optional per-event weights, also non-deduced so that `nullptr` can be passed.
template <class T>
using weights_t = const typename type_identity<Var<T>>::type*;

/// Number of events (the first axis); rejects scalars and empty batches.
template <class T>
std::size_t batch_size(const Var<T>& v, const char* fn, const char* what) {
    if (v.shape().rank() == 0)
        throw shape_error(std::string(fn) + ": " + what + " must have a batch axis, got shape ()");
    const std::size_t n = v.shape()[0];
    if (n == 0 || v.size() == 0) throw shape_error(std::string(fn) + ": empty batch (" + what + " of shape " + v.shape().str() + ")");
    return n;
}

/// One value per event: (N,) or (N, 1) (or any shape of N elements along the batch axis).
template <class T>
Var<T> per_event_column(const Var<T>& v, const char* fn, const char* what) {
    const std::size_t n = batch_size(v, fn, what);
    if (v.size() != n)
        throw shape_error(std::string(fn) + ": " + what + " must hold one value per event, shape (N,) or (N, 1); got " + v.shape().str());
    return v.shape().rank() == 1 ? v : reshape(v, Shape{n});
}

/// `b` viewed with a's shape; both must have the same number of elements. Guards against the
/// silent (N, 1) - (N,) -> (N, N) broadcast.
template <class T>
Var<T> same_layout(const Var<T>& a, const Var<T>& b, const char* fn, const char* what) {
    if (a.size() != b.size()) {
        throw shape_error(std::string(fn) + ": " + what + " of shape " + b.shape().str() + " does not match predictions of shape " +
                          a.shape().str());
    }
    return a.shape() == b.shape() ? b : reshape(b, a.shape());
}

/// Sum of the weights (accumulated in double), checked to be finite and non-zero.
template <class T>
double weight_total(const Var<T>& w, const char* fn) {
    double s = 0.0;
    const T* p = w.data();
    for (std::size_t i = 0; i < w.size(); ++i) s += static_cast<double>(p[i]);
    if (!std::isfinite(s)) throw value_error(std::string(fn) + ": the event weights contain NaN or infinity");
    if (s == 0.0) throw value_error(std::string(fn) + ": the event weights sum to zero (no events with weight?)");
    return s;
}

/// Weights as a detached (N,) constant; checks that there is one per event.
template <class T>
Var<T> event_weights(const Var<T>& w, std::size_t n, const char* fn) {
    if (w.size() != n)
        throw shape_error(std::string(fn) + ": " + std::to_string(n) + " events but weights of shape " + w.shape().str());
    const Var<T> d = detach(w);
    return d.shape().rank() == 1 ? d : reshape(d, Shape{n});
}

/// sum_i w_i l_i / sum_i w_i over per-event values l (N,); the plain mean without weights.
template <class T>
Var<T> weighted_mean(const Var<T>& per_event, const Var<T>* weights, const char* fn) {
    const std::size_t n = per_event.size();
    if (!weights) return mean(per_event);
    const Var<T> w = event_weights(*weights, n, fn);
    const double total = weight_total(w, fn);
    return scale(sum(mul(per_event, w)), static_cast<T>(1.0 / total));
}

/// reduce(flat, 1) over all axes but the first: (N, ...) -> (N,); one value per event is kept as is.
template <class T, class R>
Var<T> reduce_per_event(const Var<T>& v, R reduce) {
    const std::size_t n = v.shape()[0];
    const std::size_t k = v.size() / n;
    const Var<T> flat = v.shape().rank() == 2 ? v : reshape(v, Shape{n, k});
    return k == 1 ? reshape(flat, Shape{n}) : reduce(flat, 1);
}

/// Mean over all axes but the first: (N, ...) -> (N,).
template <class T>
Var<T> mean_per_event(const Var<T>& v) {
    return reduce_per_event(v, [](const Var<T>& x, std::int64_t axis) { return mean(x, axis); });
}

/// Sum over all axes but the first: (N, ...) -> (N,).
template <class T>
Var<T> sum_per_event(const Var<T>& v) {
    return reduce_per_event(v, [](const Var<T>& x, std::int64_t axis) { return sum(x, axis); });
}

} // namespace detail

/// Refuses binary targets outside [0, 1] (and NaN) with the row and the value: a stray "2" in a
/// label column would otherwise train silently. Soft labels in [0, 1] are accepted on purpose
/// (label smoothing, teacher probabilities). y holds `rows` rows of `per_row` values each.
template <class T>
void check_binary_targets(const T* y, std::size_t rows, std::size_t per_row, const char* fn) {
    const std::size_t n = rows * per_row;
    for (std::size_t i = 0; i < n; ++i) {
        if (TAPIR_LIKELY(y[i] >= T(0) && y[i] <= T(1))) continue;
        std::string where = "row " + std::to_string(i / (per_row ? per_row : 1));
        if (per_row > 1) where += ", column " + std::to_string(i % per_row);
        throw value_error(std::string(fn) + ": target " + tapir::detail::number_text(static_cast<double>(y[i])) + " in " + where +
                          " is not in [0, 1] (binary labels are 0 or 1, soft labels lie between)");
    }
}

namespace detail {

/// check_binary_targets on a loss's targets when they are constants (labels); targets that
/// carry a gradient are model outputs, not labels.
template <class T>
void check_binary_target_var(const Var<T>& y, const char* fn) {
    if (y.requires_grad()) return;
    const std::size_t rows = y.shape().rank() ? y.shape()[0] : 1;
    check_binary_targets(y.data(), rows, rows ? y.size() / rows : 0, fn);
}

inline void check_finite_param(const char* fn, const char* what, double v) {
    if (!std::isfinite(v)) throw value_error(std::string(fn) + ": " + what + " must be finite, got " + std::to_string(v));
}

} // namespace detail
} // namespace loss
} // namespace tapir
// ---- end tapir/loss/common.hpp ----

namespace tapir {
namespace loss {

/// Binary cross-entropy from logits t and labels y (the numerically stable form):
///   BCE = sum_i w_i (softplus(t_i) - y_i t_i) / sum_i w_i,
/// never log(sigmoid(t)), so any logit is finite. Labels may be soft (in [0, 1]); constant
/// targets outside [0, 1] or NaN are refused with their row (see check_binary_targets).
template <class T>
Var<T> binary_cross_entropy_with_logits(const Var<T>& logits, const Var<T>& targets, detail::weights_t<T> weights = nullptr) {
    const char* fn = "binary_cross_entropy_with_logits";
    const std::size_t n = detail::batch_size(logits, fn, "logits");
    const Var<T> y = detail::same_layout(logits, targets, fn, "targets");
    detail::check_binary_target_var(y, fn);
    // Without weights the mean over events of the per-event column means is the mean over all
    // elements: one fused node, also for several outputs per event.
    if (!weights) return bce_with_logits(logits, y);
    if (logits.size() == n) {  // one logit per event: the fused node
        const Var<T> w = detail::event_weights(*weights, n, fn);
        detail::weight_total(w, fn);
        return bce_with_logits(logits, y, &w);
    }
    const Var<T> per = detail::mean_per_event(sub(softplus(logits), mul(y, logits)));
    return detail::weighted_mean(per, weights, fn);
}

/// Binary cross-entropy from probabilities with Keras' clipping (tf.keras.backend, TF 2.x):
///   p' = clip(p, eps, 1 - eps),  l = -[y ln(p' + eps) + (1 - y) ln(1 - p' + eps)],  eps = 1e-7.
/// The gradient is zero where p was clipped, as in Keras. Prefer the logit form when you can.
/// Targets as for binary_cross_entropy_with_logits (in [0, 1], checked when constant).
template <class T>
Var<T> binary_cross_entropy(const Var<T>& probs, const Var<T>& targets, detail::weights_t<T> weights = nullptr, detail::scalar_t<T> eps = T(1e-7)) {
    const char* fn = "binary_cross_entropy";
    detail::batch_size(probs, fn, "probabilities");
    if (!(eps > T(0) && eps < T(0.5))) throw value_error(std::string(fn) + ": eps must be in (0, 0.5), got " + std::to_string(eps));
    const Var<T> y = detail::same_layout(probs, targets, fn, "targets");
    detail::check_binary_target_var(y, fn);
    const Var<T> p = clamp(probs, eps, T(1) - eps);
    const Var<T> lp = log(add_scalar(p, eps));
    const Var<T> lq = log(add_scalar(neg(p), T(1) + eps));
    // -(y lp + (1 - y) lq) = -(lq + y (lp - lq))
    const Var<T> l = neg(add(lq, mul(y, sub(lp, lq))));
    return detail::weighted_mean(detail::mean_per_event(l), weights, fn);
}

/// Mean squared error: per event mean_j (p_ij - y_ij)^2, then the weighted mean over events,
/// computed as sum_ij w_i (p_ij - y_ij)^2 / (K sum_i w_i) (the mean of all elements without
/// weights): one reduction, and the arithmetic nn::fit's MseLoss has always used.
template <class T>
Var<T> mse(const Var<T>& pred, const Var<T>& targets, detail::weights_t<T> weights = nullptr) {
    const char* fn = "mse";
    const std::size_t n = detail::batch_size(pred, fn, "predictions");
    const Var<T> y = detail::same_layout(pred, targets, fn, "targets");
    const Var<T> d2 = square(sub(pred, y));
    if (!weights) return mean(d2);
    const Var<T> w = detail::event_weights(*weights, n, fn);
    detail::weight_total(w, fn);
    T norm = T(0);  // accumulated in T, in order: the factor fit has always applied
    for (std::size_t i = 0; i < n; ++i) norm += w.data()[i];
    const T k = static_cast<T>(pred.size() / n);
    const Var<T> per = d2.shape().rank() == 2 ? d2 : reshape(d2, Shape{n, pred.size() / n});
    return scale(sum(mul(per, reshape(w, Shape{n, 1}))), T(1) / (norm * k));
}

/// Mean absolute error: per event mean_j |p_ij - y_ij|, then the weighted mean over events.
/// The gradient at p = y is 0 (sign(0) = 0).
template <class T>
Var<T> mae(const Var<T>& pred, const Var<T>& targets, detail::weights_t<T> weights = nullptr) {
    const char* fn = "mae";
    detail::batch_size(pred, fn, "predictions");
    const Var<T> y = detail::same_layout(pred, targets, fn, "targets");
    return detail::weighted_mean(detail::mean_per_event(abs(sub(pred, y))), weights, fn);
}

/// Categorical cross-entropy from logits z (N, K) and target distributions q (N, K) (one-hot or
/// soft): l_i = -sum_k q_ik log_softmax(z_i)_k, weighted mean over events. log_softmax is
/// computed with the max subtracted, so large logits are safe.
template <class T>
Var<T> categorical_cross_entropy_with_logits(const Var<T>& logits, const Var<T>& targets, detail::weights_t<T> weights = nullptr) {
    const char* fn = "categorical_cross_entropy_with_logits";
    detail::batch_size(logits, fn, "logits");
    if (logits.shape().rank() != 2) throw shape_error(std::string(fn) + ": logits must be (N, K), got " + logits.shape().str());
    if (targets.shape() != logits.shape())
        throw shape_error(std::string(fn) + ": targets of shape " + targets.shape().str() + " do not match logits of shape " +
                          logits.shape().str());
    const Var<T> l = neg(sum(mul(targets, log_softmax(logits, 1)), 1));
    return detail::weighted_mean(l, weights, fn);
}

/// The same with integer class labels in [0, K).
template <class T>
Var<T> categorical_cross_entropy_with_logits(const Var<T>& logits, const std::vector<std::size_t>& labels,
                                             detail::weights_t<T> weights = nullptr) {
    const char* fn = "categorical_cross_entropy_with_logits";
    detail::batch_size(logits, fn, "logits");
    if (logits.shape().rank() != 2) throw shape_error(std::string(fn) + ": logits must be (N, K), got " + logits.shape().str());
    const std::size_t n = logits.shape()[0], k = logits.shape()[1];
    if (labels.size() != n)
        throw shape_error(std::string(fn) + ": " + std::to_string(labels.size()) + " labels for logits of shape " + logits.shape().str());
    Tensor<T> onehot(Shape{n, k});
    for (std::size_t i = 0; i < n; ++i) {
        if (labels[i] >= k)
            throw value_error(std::string(fn) + ": label " + std::to_string(labels[i]) + " of event " + std::to_string(i) +
                              " is out of range for " + std::to_string(k) + " classes");
        onehot(i, labels[i]) = T(1);
    }
    return categorical_cross_entropy_with_logits(logits, logits.tape().constant(onehot), weights);
}

} // namespace loss
} // namespace tapir
// ---- end tapir/loss/classification.hpp ----
// ---- begin tapir/nn/progress.hpp ----
/// fit()'s progress display: a bar redrawn with carriage returns on a terminal, or one line per
/// epoch where carriage returns would litter a file (a pipe, a log, CI).

#include <chrono>
#include <cstddef>
#include <cstdio>
#include <string>

#if defined(_WIN32)
#include <io.h>
#elif defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif


namespace tapir {
namespace nn {

/// automatic: the bar on a terminal, nothing otherwise. progress: the bar on a terminal, one
/// line per epoch otherwise. lines: one line per epoch always. quiet: nothing.
enum class Verbosity { automatic, quiet, progress, lines };

namespace detail {

inline bool is_terminal(std::FILE* f) noexcept {
#if defined(_WIN32)
    return _isatty(_fileno(f)) != 0;
#elif defined(__unix__) || defined(__APPLE__)
    return isatty(fileno(f)) != 0;
#else
    (void)f;
    return false;
#endif
}
inline bool stderr_is_terminal() noexcept { return is_terminal(stderr); }

/// "Epoch 3/20 [=====>........] 45/100 - loss: 0.4123" (no allocation: for the step loop).
inline int format_progress(char* buf, std::size_t cap, std::size_t epoch, std::size_t epochs, std::size_t step,
                           std::size_t steps, double loss, std::size_t width = 30) {
    char bar[128];
    if (width > sizeof bar - 1) width = sizeof bar - 1;
    const std::size_t done = steps ? (step * width) / steps : width;
    for (std::size_t i = 0; i < width; ++i) bar[i] = i < done ? '=' : (i == done ? '>' : '.');
    bar[width] = '\0';
    return std::snprintf(buf, cap, "Epoch %zu/%zu [%s] %zu/%zu - loss: %.4f", epoch, epochs, bar, step, steps, loss);
}

/// The line left on screen after an epoch: bar, seconds, then every history column.
inline std::string format_epoch_line(std::size_t epoch, std::size_t epochs, std::size_t steps, double seconds, const History& h) {
    char buf[256];
    format_progress(buf, sizeof buf, epoch, epochs, steps, steps, 0.0);
    std::string s = buf;
    s.erase(s.find(" - loss"));
    std::snprintf(buf, sizeof buf, " - %.1fs", seconds);
    s += buf;
    for (const auto& c : h.columns()) {
        std::snprintf(buf, sizeof buf, " - %s: %.4f", c.c_str(), h[c].back());
        s += buf;
    }
    return s;
}

/// The display of one fit() call. step() is allocation-free (it runs inside the training loop).
class ProgressDisplay {
public:
    ProgressDisplay(Verbosity v, std::FILE* out) : out_(out ? out : stderr) {
        const bool tty = v == Verbosity::automatic || v == Verbosity::progress ? is_terminal(out_) : false;
        bar_ = tty;
        lines_ = !tty && (v == Verbosity::progress || v == Verbosity::lines);
    }
    bool active() const noexcept { return bar_ || lines_; }
    bool bar() const noexcept { return bar_; }

    void start_epoch(std::chrono::steady_clock::time_point t0) noexcept { last_draw_ = t0; }

    /// Redraws the bar at most every 100 ms, and after the last step.
    void step(std::size_t epoch, std::size_t epochs, std::size_t s, std::size_t steps, double loss) {
        if (!bar_) return;
        const auto now = std::chrono::steady_clock::now();
        if (s == steps || now - last_draw_ > std::chrono::milliseconds(100)) {
            last_draw_ = now;
            char line[256];
            const int len = format_progress(line + 1, sizeof line - 1, epoch, epochs, s, steps, loss);
            line[0] = '\r';
            const std::size_t shown = len < 0 ? 0 : (static_cast<std::size_t>(len) < sizeof line - 2 ? static_cast<std::size_t>(len) : sizeof line - 2);
            std::fwrite(line, 1, shown + 1, out_);
        }
    }

    void end_epoch(std::size_t epoch, std::size_t epochs, std::size_t steps, double seconds, const History& h) {
        if (!active()) return;
        const std::string s = (bar_ ? "\r" : "") + format_epoch_line(epoch, epochs, steps, seconds, h) + "\n";
        std::fwrite(s.data(), 1, s.size(), out_);
        if (lines_) std::fflush(out_);
    }

private:
    std::FILE* out_;
    bool bar_ = false, lines_ = false;
    std::chrono::steady_clock::time_point last_draw_{};
};

} // namespace detail
} // namespace nn
} // namespace tapir
// ---- end tapir/nn/progress.hpp ----

namespace tapir {
namespace nn {

// ---- losses ---------------------------------------------------------------------------------

/// The default loss: binary cross-entropy on logits (loss::binary_cross_entropy_with_logits),
/// weighted by per-event weights if given. Targets must lie in [0, 1]: fit() checks every
/// label before training and names the row of the first one outside (soft labels are fine).
struct BceWithLogitsLoss {
    template <class T>
    Var<T> operator()(const Var<T>& out, const Var<T>& target, const Var<T>* weight) const {
        return loss::binary_cross_entropy_with_logits(out, target, weight);
    }
    /// fit() and evaluate() call this on the whole target tensor before the first batch.
    template <class T>
    void check_targets(const Tensor<T>& y, const char* who) const {
        const std::size_t rows = y.rank() ? y.shape()[0] : 1;
        loss::check_binary_targets(y.data(), rows, rows ? y.size() / rows : 0, who);
    }
};

/// Mean squared error over events and outputs (loss::mse); with weights w (batch, 1):
/// sum_i w_i sum_k (o_ik - y_ik)^2 / (K sum_i w_i).
struct MseLoss {
    template <class T>
    Var<T> operator()(const Var<T>& out, const Var<T>& target, const Var<T>* weight) const {
        return loss::mse(out, target, weight);
    }
};

// ---- options ------------------------------------------------------------------------------------

template <class T>
struct FitOptions {
    std::size_t epochs = 10;
    std::size_t batch_size = 32;
    bool shuffle = true;
    bool drop_last = false;  ///< skip the last, incomplete batch (BatchNorm needs >= 2 events)
    std::uint64_t seed = 42;  ///< fixes the validation split and the batch order

    const Tensor<T>* sample_weight = nullptr;  ///< per-event weights, (n,) or (n, 1)

    /// Fraction of events held out for validation, drawn at random with the seed (Keras takes
    /// the last rows instead, which is wrong for files sorted by class). Ignored when
    /// validation_x is given.
    double validation_split = 0.0;
    const Tensor<T>* validation_x = nullptr;
    const Tensor<T>* validation_y = nullptr;
    const Tensor<T>* validation_weight = nullptr;

    std::vector<Metric<T>> metrics;

    /// Early stopping: stop after `patience` epochs without an improvement larger than
    /// min_delta in `monitor` (default "val_loss" with validation data, else "loss"); 0 = off.
    std::size_t patience = 0;
    std::string monitor;
    MonitorMode monitor_mode = MonitorMode::automatic;
    double min_delta = 0.0;
    /// With early stopping on: end with the parameters and buffers of the best epoch.
    bool restore_best_weights = true;

    std::vector<Callback<T>> callbacks;
    Verbosity verbose = Verbosity::automatic;
    std::FILE* progress_stream = nullptr;  ///< where the display goes; null = stderr
};

namespace detail {
/// A batch's weight in the epoch means: its event weights' sum, or its size without weights.
template <class T>
double batch_weight(const Tensor<T>* w, const std::size_t* idx, std::size_t nb) {
    if (!w) return static_cast<double>(nb);
    double bw = 0.0;
    for (std::size_t i = 0; i < nb; ++i) bw += static_cast<double>((*w)[idx[i]]);
    return bw;
}

template <class T>
std::size_t checked_rows(const char* who, const Tensor<T>& x, const Tensor<T>& y, const Tensor<T>* w) {
    if (x.rank() != 2) throw shape_error(std::string(who) + ": inputs must have shape (events, features), got " + x.shape().str());
    const std::size_t n = x.shape()[0];
    if (y.rank() == 0 || y.rank() > 2 || y.shape()[0] != n)
        tapir::detail::throw_shape(who, x.shape(), y.shape(), "targets must be (events,) or (events, outputs) with one row per input row");
    if (w && (w->size() != n || w->rank() == 0 || w->shape()[0] != n))
        tapir::detail::throw_shape(who, x.shape(), w->shape(), "weights must be (events,) or (events, 1) with one per input row");
    return n;
}

template <class U>
struct non_deduced {
    using type = U;
};

/// Whether a loss functor checks its targets (BceWithLogitsLoss: labels in [0, 1]).
template <class L, class T, class = void>
struct checks_targets : std::false_type {};
template <class L, class T>
struct checks_targets<L, T, std::void_t<decltype(std::declval<const L&>().check_targets(std::declval<const Tensor<T>&>(), ""))>>
    : std::true_type {};

template <class T, class Loss>
void check_targets(const Loss& l, const Tensor<T>& y, const char* who) {
    if constexpr (checks_targets<Loss, T>::value) l.check_targets(y, who);
}

/// Rows idx[0..n) of src (rows, ...) into dst as (n, columns) (data/dataset.hpp's gather_rows,
/// viewed as a matrix), without allocating once dst has held that many elements.
template <class T>
void gather_into(const Tensor<T>& src, const std::size_t* idx, std::size_t n, Tensor<T>& dst) {
    const std::size_t rows = src.rank() ? src.shape()[0] : 0;
    data::gather_rows(src, idx, n, dst);
    if (dst.rank() != 2) dst.reshape_(Shape{n, rows ? src.size() / rows : 0});
}

/// Parameter and buffer values, for restoring the best epoch.
template <class T>
struct Snapshot {
    std::vector<Tensor<T>> values;
    void save(const std::vector<Parameter<T>*>& ps, const std::vector<NamedBuffer<T>>& bs) {
        values.resize(ps.size() + bs.size());
        for (std::size_t i = 0; i < ps.size(); ++i) values[i] = ps[i]->value;
        for (std::size_t i = 0; i < bs.size(); ++i) values[ps.size() + i] = *bs[i].second;
    }
    void restore(const std::vector<Parameter<T>*>& ps, const std::vector<NamedBuffer<T>>& bs) const {
        for (std::size_t i = 0; i < ps.size(); ++i) ps[i]->value = values[i];
        for (std::size_t i = 0; i < bs.size(); ++i) *bs[i].second = values[ps.size() + i];
    }
};

/// Puts the modules' mode flags back when leaving a scope (also on exceptions).
template <class T>
struct ModeGuard {
    Module<T>& m;
    std::vector<bool> modes;
    explicit ModeGuard(Module<T>& mod) : m(mod), modes(mod.training_modes()) {}
    ~ModeGuard() { m.set_training_modes(modes); }
    ModeGuard(const ModeGuard&) = delete;
    ModeGuard& operator=(const ModeGuard&) = delete;
};

} // namespace detail

// ---- the training step -------------------------------------------------------------------------

namespace detail {

/// Forward pass and loss on gathered rows, on one tape that is cleared and reused: the part of
/// a training step that evaluation shares.
template <class T, class Loss>
class BatchLoss {
public:
    BatchLoss(Module<T>& model, Loss loss, const char* who) : model_(model), loss_(std::move(loss)), who_(who) {}
    BatchLoss(const BatchLoss&) = delete;
    BatchLoss& operator=(const BatchLoss&) = delete;

    Tape<T>& tape() noexcept { return tape_; }
    Module<T>& model() noexcept { return model_; }
    const Loss& loss() const noexcept { return loss_; }

    Var<T> record(const Tensor<T>& x, const Tensor<T>& y, const Tensor<T>* w, const std::size_t* idx, std::size_t n) {
        const std::size_t rows = checked_rows(who_, x, y, w);
        if (n == 0) throw value_error(std::string(who_) + ": empty batch");
        for (std::size_t i = 0; i < n; ++i)
            if (TAPIR_UNLIKELY(idx[i] >= rows))
                throw value_error(std::string(who_) + ": row index " + std::to_string(idx[i]) + " out of range for " + std::to_string(rows) +
                                  " events");
        tape_.clear();
        gather_into(x, idx, n, xb_);
        gather_into(y, idx, n, yb_);
        const Var<T> xv = tape_.view(xb_), yv = tape_.view(yb_);
        const Var<T> out = model_(xv);
        if (out.shape().rank() == 0 || out.shape()[0] != n)
            throw shape_error(std::string(who_) + ": the model output must have one row per event: input " + xb_.shape().str() +
                              ", output " + out.shape().str());
        out_index_ = out.index();
        out_width_ = out.size() / n;
        Var<T> l;
        if (w) {
            gather_into(*w, idx, n, wb_);
            const Var<T> wv = tape_.view(wb_);
            l = loss_(out, yv, &wv);
        } else {
            l = loss_(out, yv, static_cast<const Var<T>*>(nullptr));
        }
        if (l.size() != 1) throw shape_error(std::string(who_) + ": the loss must be a single value, got shape " + l.shape().str());
        return l;
    }

    T evaluate(const Tensor<T>& x, const Tensor<T>& y, const Tensor<T>* w, const std::size_t* idx, std::size_t n) {
        NoGradGuard<T> guard(tape_);
        return record(x, y, w, idx, n).item();
    }

    void copy_last_output(T* dst) const {
        const Ref<T>& o = tape_.node(out_index_).out;
        std::memcpy(dst, o.data, o.size() * sizeof(T));
    }
    std::size_t last_output_width() const noexcept { return out_width_; }

    /// The last outputs into pred's rows idx[i] (pred shaped (rows, outputs) on first use).
    void copy_rows(std::size_t rows, const std::size_t* idx, std::size_t n, Tensor<T>& pred) {
        if (pred.rank() != 2 || pred.shape()[0] != rows || pred.shape()[1] != out_width_) pred = Tensor<T>(Shape{rows, out_width_});
        const T* o = tape_.node(out_index_).out.data;
        for (std::size_t i = 0; i < n; ++i) std::memcpy(pred.data() + idx[i] * out_width_, o + i * out_width_, out_width_ * sizeof(T));
    }

private:
    Module<T>& model_;
    Loss loss_;
    const char* who_;
    Tape<T> tape_;
    Tensor<T> xb_, yb_, wb_;
    std::int32_t out_index_ = -1;
    std::size_t out_width_ = 0;
};

} // namespace detail

/// One reusable training step: gathers the batch rows into kept tensors, clears and reuses one
/// tape, runs forward, loss, backward and the optimiser. Steady-state steps allocate nothing.
template <class T, class Loss = BceWithLogitsLoss>
class Trainer {
public:
    Trainer(Module<T>& model, optim::Optimizer<T>& optimizer, Loss loss = Loss{})
        : batch_(model, std::move(loss), "Trainer"), opt_(optimizer) {
        // Model parameters the optimiser does not update still get gradients: keep them from
        // accumulating across steps.
        for (Parameter<T>* p : model.parameters())
            if (std::find(opt_.parameters().begin(), opt_.parameters().end(), p) == opt_.parameters().end()) extra_.push_back(p);
    }
    Trainer(const Trainer&) = delete;
    Trainer& operator=(const Trainer&) = delete;

    Tape<T>& tape() noexcept { return batch_.tape(); }
    Module<T>& model() noexcept { return batch_.model(); }

    /// One optimisation step on rows idx[0..n) of x, y (and per-event weights w); returns the
    /// batch loss. With pred, the batch outputs are also written to pred's rows idx[i] (pred
    /// is shaped (rows of x, outputs) on first use).
    T step(const Tensor<T>& x, const Tensor<T>& y, const Tensor<T>* w, const std::size_t* idx, std::size_t n,
           Tensor<T>* pred = nullptr) {
        const Var<T> l = batch_.record(x, y, w, idx, n);
        for (Parameter<T>* p : extra_) p->zero_grad();
        opt_.zero_grad();
        backward(l);
        opt_.step();
        if (pred) batch_.copy_rows(x.shape()[0], idx, n, *pred);
        return l.item();
    }

    /// The loss on rows idx[0..n) without gradients or updates (in the modules' current modes).
    T evaluate(const Tensor<T>& x, const Tensor<T>& y, const Tensor<T>* w, const std::size_t* idx, std::size_t n) {
        return batch_.evaluate(x, y, w, idx, n);
    }

    /// Copies the outputs of the last step or evaluation (batch rows x last_output_width()) to dst.
    void copy_last_output(T* dst) const { batch_.copy_last_output(dst); }

    /// Outputs per event of the last step or evaluation.
    std::size_t last_output_width() const noexcept { return batch_.last_output_width(); }

    detail::BatchLoss<T, Loss>& batch_loss() noexcept { return batch_; }

private:
    detail::BatchLoss<T, Loss> batch_;
    optim::Optimizer<T>& opt_;
    std::vector<Parameter<T>*> extra_;
};

namespace detail {

/// The loss over the rows of a set in batches, combined as the weighted mean of the batch
/// losses (exact for losses that are weighted means over events); with pred, the outputs
/// (rows.size(), outputs) too. fit's validation and evaluate() share it.
template <class T, class Loss>
double set_loss(BatchLoss<T, Loss>& b, const Tensor<T>& x, const Tensor<T>& y, const Tensor<T>* w, const std::vector<std::size_t>& rows,
                std::size_t batch_size, Tensor<T>* pred) {
    double vsum = 0.0, vwsum = 0.0;
    const std::size_t nv = rows.size();
    for (std::size_t start = 0; start < nv; start += batch_size) {
        const std::size_t nb = std::min(batch_size, nv - start);
        const std::size_t* idx = rows.data() + start;
        const T l = b.evaluate(x, y, w, idx, nb);
        if (pred) {
            const std::size_t k = b.last_output_width();
            if (pred->rank() != 2 || pred->shape()[0] != nv || pred->shape()[1] != k) *pred = Tensor<T>(Shape{nv, k});
            b.copy_last_output(pred->data() + start * k);
        }
        const double bw = batch_weight(w, idx, nb);
        vsum += static_cast<double>(l) * bw;
        vwsum += bw;
    }
    return vsum / vwsum;
}

} // namespace detail

// ---- prediction ---------------------------------------------------------------------------------

/// The model's outputs for every row of x, in eval mode (modes restored afterwards), without
/// gradients, in batches: shape (rows, outputs...); (0, outputs...) for zero rows. Thread-safe on
/// a shared model that is already in eval mode (nothing is written to it then).
template <class T>
Tensor<T> predict(Module<T>& model, const Tensor<T>& x, std::size_t batch_size = 256) {
    if (x.rank() != 2) throw shape_error("predict: inputs must have shape (events, features), got " + x.shape().str());
    if (batch_size == 0) throw value_error("predict: batch size must be positive");
    // Modes are switched (and restored) only when some module is training: a model already in
    // eval mode is only read, so several threads may predict with it at once.
    const std::vector<bool> before = model.training_modes();
    std::optional<detail::ModeGuard<T>> modes;
    if (std::find(before.begin(), before.end(), true) != before.end()) {
        modes.emplace(model);
        model.eval();
    }
    const std::size_t n = x.shape()[0], f = x.shape()[1];
    if (n == 0) {  // no batch to run: the shape of one row's output, with zero rows
        Shape s = model.output_shape(Shape{1, f});
        if (s.rank() == 0) throw shape_error("predict: the model output must have one row per event, got shape " + s.str());
        s[0] = 0;
        return Tensor<T>(s);
    }
    Tape<T> t;
    NoGradGuard<T> guard(t);
    Tensor<T> out, xb;
    for (std::size_t start = 0; start < n; start += batch_size) {
        const std::size_t m = std::min(batch_size, n - start);
        t.clear();
        xb.resize(Shape{m, f});
        std::memcpy(xb.data(), x.data() + start * f, m * f * sizeof(T));
        const Var<T> y = model(t.view(xb));
        if (y.shape().rank() == 0 || y.shape()[0] != m)
            throw shape_error("predict: the model output must have one row per event: input " + xb.shape().str() + ", output " + y.shape().str());
        const std::size_t k = y.size() / m;
        if (start == 0) {
            Shape s = y.shape();
            s[0] = n;
            out = Tensor<T>(s);
        }
        std::memcpy(out.data() + start * k, y.data(), m * k * sizeof(T));
    }
    return out;
}

// ---- evaluation ---------------------------------------------------------------------------------

/// The loss and metrics of a trained model on a data set, Keras' model.evaluate.
struct Evaluation {
    double loss = std::numeric_limits<double>::quiet_NaN();
    std::vector<std::pair<std::string, double>> metrics;  ///< in the order asked for

    /// "loss" or a metric's name.
    double operator[](const std::string& name) const {
        if (name == "loss") return loss;
        std::string known = "loss";
        for (const auto& m : metrics) {
            if (m.first == name) return m.second;
            known += ", " + m.first;
        }
        throw value_error("Evaluation: no value '" + name + "' (values: " + known + ")");
    }
};

/// Loss (the same loss as fit's, default BCE on logits) and metrics of model on (x, y[, weights])
/// in eval mode, without gradients, in batches of batch_size; modes are restored. With the
/// validation set and fit's batch size, the loss equals the last "val_loss" of fit's history bit
/// for bit.
template <class T, class Loss = BceWithLogitsLoss>
Evaluation evaluate(Module<T>& model, const Tensor<T>& x, const Tensor<T>& y, const std::vector<Metric<T>>& metrics = {},
                    const typename detail::non_deduced<Tensor<T>>::type* weights = nullptr, std::size_t batch_size = 32,
                    Loss loss = Loss{}) {
    const std::size_t n = detail::checked_rows("evaluate", x, y, weights);
    if (n == 0) throw value_error("evaluate: no events");
    if (batch_size == 0) throw value_error("evaluate: batch size must be positive");
    for (const auto& m : metrics)
        if (m.name.empty() || m.name == "loss" || !m.fn) throw value_error("evaluate: metric '" + m.name + "' has no function or a reserved name");
    detail::check_targets(loss, y, "evaluate");
    detail::ModeGuard<T> modes(model);
    model.eval();
    detail::BatchLoss<T, Loss> b(model, std::move(loss), "evaluate");
    std::vector<std::size_t> rows(n);
    for (std::size_t i = 0; i < n; ++i) rows[i] = i;
    Tensor<T> pred, yy, ww;
    Evaluation e;
    e.loss = detail::set_loss(b, x, y, weights, rows, batch_size, metrics.empty() ? nullptr : &pred);
    if (!metrics.empty()) {
        detail::gather_into(y, rows.data(), n, yy);
        if (weights) detail::gather_into(*weights, rows.data(), n, ww);
        for (const auto& m : metrics) e.metrics.emplace_back(m.name, m.fn(pred, yy, weights ? &ww : nullptr));
    }
    return e;
}

// ---- fit ----------------------------------------------------------------------------------------

/// Trains model on (x, y) with the optimiser for options.epochs epochs of mini-batches and returns
/// the history. Inputs are (events, features), targets (events,) or (events, outputs), weights
/// (events,) or (events, 1) and reach the loss as a (batch, 1) value. The loss is any callable
/// (output, target, const Var* weights or nullptr) -> single-valued Var; default
/// loss::binary_cross_entropy_with_logits, whose targets must lie in [0, 1] (a label outside is
/// refused before training, with its row and value). Training runs in the modules' own modes (train() by default); validation in
/// eval mode; the modes are put back at the end. The epoch "loss" is the weighted mean of the
/// batch losses (Keras' running mean); "val_loss" combines batches of validation events the
/// same way, which is exact for losses that are (weighted) means over events.
template <class T, class Loss = BceWithLogitsLoss>
History fit(Module<T>& model, const Tensor<T>& x, const Tensor<T>& y, optim::Optimizer<T>& optimizer,
            const FitOptions<T>& o = FitOptions<T>(), Loss loss = Loss{}) {
    const Tensor<T>* w = o.sample_weight;
    const std::size_t n = detail::checked_rows("fit", x, y, w);
    if (n == 0) throw value_error("fit: no events");
    if (o.batch_size == 0) throw value_error("fit: batch size must be positive");

    // Which rows train and which validate.
    Rng rng(o.seed);
    std::vector<std::size_t> train_rows, val_rows;
    const Tensor<T>* vx = nullptr;
    const Tensor<T>* vy = nullptr;
    const Tensor<T>* vw = nullptr;
    if (o.validation_x || o.validation_y) {
        if (!o.validation_x || !o.validation_y) throw value_error("fit: give both validation_x and validation_y");
        vx = o.validation_x;
        vy = o.validation_y;
        vw = o.validation_weight;
        const std::size_t nv = detail::checked_rows("fit (validation set)", *vx, *vy, vw);
        if (vx->shape()[1] != x.shape()[1]) tapir::detail::throw_shape("fit: training vs validation inputs", x.shape(), vx->shape(), "feature counts differ");
        if (vy->size() / (nv ? nv : 1) != y.size() / n) tapir::detail::throw_shape("fit: training vs validation targets", y.shape(), vy->shape(), "output counts differ");
        if ((vw != nullptr) != (w != nullptr)) throw value_error("fit: give weights for both the training and the validation set, or for neither");
        if (nv == 0) throw value_error("fit: empty validation set");
        for (std::size_t i = 0; i < nv; ++i) val_rows.push_back(i);
        for (std::size_t i = 0; i < n; ++i) train_rows.push_back(i);
    } else if (o.validation_split != 0.0) {
        if (!(o.validation_split > 0.0 && o.validation_split < 1.0))
            throw value_error("fit: validation_split must be in [0, 1), got " + std::to_string(o.validation_split));
        const auto nv = static_cast<std::size_t>(std::llround(o.validation_split * static_cast<double>(n)));
        if (nv == 0 || nv >= n)
            throw value_error("fit: validation_split " + std::to_string(o.validation_split) + " of " + std::to_string(n) +
                              " events leaves " + std::to_string(nv) + " for validation and " + std::to_string(n - (nv < n ? nv : n)) +
                              " for training; both need at least one");
        std::vector<std::size_t> perm = rng.permutation(n);
        val_rows.assign(perm.begin(), perm.begin() + static_cast<std::ptrdiff_t>(nv));
        train_rows.assign(perm.begin() + static_cast<std::ptrdiff_t>(nv), perm.end());
        std::sort(val_rows.begin(), val_rows.end());
        std::sort(train_rows.begin(), train_rows.end());
        vx = &x;
        vy = &y;
        vw = w;
    } else {
        for (std::size_t i = 0; i < n; ++i) train_rows.push_back(i);
    }
    detail::check_targets(loss, y, "fit");
    if (vy && vy != &y) detail::check_targets(loss, *vy, "fit (validation set)");
    const bool has_val = vx != nullptr;
    const std::size_t nt = train_rows.size();
    const std::size_t steps = o.drop_last ? nt / o.batch_size : (nt + o.batch_size - 1) / o.batch_size;
    if (steps == 0)
        throw value_error("fit: drop_last with batch size " + std::to_string(o.batch_size) + " leaves no batch of the " + std::to_string(nt) +
                          " training events");

    History h;
    h.add_column("loss");
    for (const auto& m : o.metrics) {
        if (m.name.empty() || m.name == "loss" || m.name.compare(0, 4, "val_") == 0)
            throw value_error("fit: metric name '" + m.name + "' is empty or reserved");
        if (!m.fn) throw value_error("fit: metric '" + m.name + "' has no function");
        h.add_column(m.name);
    }
    if (has_val) {
        h.add_column("val_loss");
        for (const auto& m : o.metrics) h.add_column("val_" + m.name);
    }
    bool minimise = true;
    if (o.patience > 0) {
        h.monitor = o.monitor.empty() ? (has_val ? "val_loss" : "loss") : o.monitor;
        (void)h[h.monitor];  // names the columns if the monitor is unknown
        minimise = detail::monitor_minimises(h.monitor, o.monitor_mode);
    }

    Trainer<T, Loss> trainer(model, optimizer, std::move(loss));
    detail::ModeGuard<T> modes(model);
    const std::vector<Parameter<T>*> params = model.parameters();
    const std::vector<NamedBuffer<T>> buffers = model.named_buffers();
    detail::Snapshot<T> best;

    // Metric inputs: predictions by row, gathered per set at the end of an epoch.
    const bool metrics = !o.metrics.empty();
    Tensor<T> pred_all, pred_set, y_train, w_train, y_val, w_val, val_pred;
    auto gather_set = [](const Tensor<T>& src, const std::vector<std::size_t>& rows, Tensor<T>& dst) {
        detail::gather_into(src, rows.data(), rows.size(), dst);
    };
    if (metrics && has_val) {
        gather_set(*vy, val_rows, y_val);
        if (vw) gather_set(*vw, val_rows, w_val);
    }

    detail::ProgressDisplay display(o.verbose, o.progress_stream);
    using clock = std::chrono::steady_clock;
    std::size_t wait = 0;
    std::vector<double> row;

    for (std::size_t epoch = 1; epoch <= o.epochs; ++epoch) {
        const auto t0 = clock::now();
        display.start_epoch(t0);
        model.set_training_modes(modes.modes);
        if (o.shuffle) rng.shuffle(train_rows.begin(), train_rows.end());
        double loss_sum = 0.0, weight_sum = 0.0;
        for (std::size_t s = 0; s < steps; ++s) {
            const std::size_t start = s * o.batch_size;
            const std::size_t nb = std::min(o.batch_size, nt - start);
            const std::size_t* idx = train_rows.data() + start;
            const T l = trainer.step(x, y, w, idx, nb, metrics ? &pred_all : nullptr);
            if (!std::isfinite(static_cast<double>(l)))
                throw value_error("fit: the loss is " + std::string(l != l ? "NaN" : "infinite") + " at epoch " + std::to_string(epoch) +
                                  ", batch " + std::to_string(s + 1) + " of " + std::to_string(steps) +
                                  " (lower the learning rate, standardise the inputs, or use anomaly mode to find the op)");
            const double bw = detail::batch_weight(w, idx, nb);
            loss_sum += static_cast<double>(l) * bw;
            weight_sum += bw;
            if (display.bar()) display.step(epoch, o.epochs, s + 1, steps, loss_sum / weight_sum);
        }
        row.assign(1, loss_sum / weight_sum);
        if (metrics) {
            gather_set(pred_all, train_rows, pred_set);
            // train_rows is shuffled: gather the targets in the same order.
            gather_set(y, train_rows, y_train);
            if (w) gather_set(*w, train_rows, w_train);
            for (const auto& m : o.metrics) row.push_back(m.fn(pred_set, y_train, w ? &w_train : nullptr));
        }
        if (has_val) {
            model.eval();
            row.push_back(detail::set_loss(trainer.batch_loss(), *vx, *vy, vw, val_rows, o.batch_size, metrics ? &val_pred : nullptr));
            for (const auto& m : o.metrics) row.push_back(m.fn(val_pred, y_val, vw ? &w_val : nullptr));
            model.set_training_modes(modes.modes);
        }
        h.append(row);

        bool stop = false;
        if (o.patience > 0) {
            const double v = h[h.monitor].back();
            const bool better = h.best_epoch == 0 ||
                                (minimise ? v < h.best_value - o.min_delta : v > h.best_value + o.min_delta);
            if (better) {
                h.best_value = v;
                h.best_epoch = epoch;
                wait = 0;
                if (o.restore_best_weights) best.save(params, buffers);
            } else if (++wait >= o.patience) {
                stop = true;
                h.stopped_early = epoch < o.epochs;
            }
        }
        if (!o.callbacks.empty()) {
            EpochEnd<T> info{epoch, o.epochs, h, model, optimizer, false};
            for (const auto& cb : o.callbacks)
                if (cb) cb(info);
            if (info.stop_training) {
                stop = true;
                h.stopped_early = epoch < o.epochs;
            }
        }
        if (display.active()) display.end_epoch(epoch, o.epochs, steps, std::chrono::duration<double>(clock::now() - t0).count(), h);
        if (stop) break;
    }
    if (o.patience > 0 && o.restore_best_weights && h.best_epoch != 0 && h.best_epoch != h.epochs()) best.restore(params, buffers);
    return h;
}

} // namespace nn
} // namespace tapir
// ---- end tapir/nn/fit.hpp ----
// ---- begin tapir/nn/init.hpp ----
/// Weight initialisers: Glorot/Xavier and He/Kaiming (uniform, normal), zeros, ones, constant.
///
/// Every random initialiser draws from a tapir::Rng, so a seed fixes the weights on every
/// platform. Fans follow the Keras kernel layout (in, out): fan_in = shape[0], fan_out =
/// shape[1]. The normal variants use a plain (untruncated) normal, as PyTorch does.

#include <cmath>
#include <cstddef>
#include <string>


namespace tapir {
namespace nn {

struct Fans {
    double in = 1.0;
    double out = 1.0;
};

/// Fans of a weight tensor: rank 2 (in, out); rank 1 and 0 count the elements both ways; a higher
/// rank (kernel..., in, out) multiplies both by the receptive field, as Keras does.
inline Fans compute_fans(const Shape& s) {
    const std::size_t r = s.rank();
    if (r == 0) return Fans{1.0, 1.0};
    if (r == 1) return Fans{static_cast<double>(s[0]), static_cast<double>(s[0])};
    double receptive = 1.0;
    for (std::size_t i = 0; i + 2 < r; ++i) receptive *= static_cast<double>(s[i]);
    return Fans{static_cast<double>(s[r - 2]) * receptive, static_cast<double>(s[r - 1]) * receptive};
}

namespace init {

template <class T>
void zeros(Tensor<T>& w) { w.fill(T(0)); }
template <class T>
void ones(Tensor<T>& w) { w.fill(T(1)); }
template <class T>
void constant(Tensor<T>& w, T value) { w.fill(value); }

/// Uniform in [lo, hi).
template <class T>
void uniform(Tensor<T>& w, Rng& rng, double lo, double hi) {
    if (!(lo <= hi)) throw value_error("init::uniform: lower bound " + std::to_string(lo) + " exceeds upper bound " + std::to_string(hi));
    for (auto& v : w) v = static_cast<T>(rng.uniform(lo, hi));
}
template <class T>
void normal(Tensor<T>& w, Rng& rng, double mean, double stddev) {
    if (!(stddev >= 0.0)) throw value_error("init::normal: standard deviation must be non-negative, got " + std::to_string(stddev));
    for (auto& v : w) v = static_cast<T>(rng.normal(mean, stddev));
}

namespace detail {
inline double checked_fan(double fan, const char* who, const Shape& s) {
    if (!(fan > 0.0)) throw value_error(std::string(who) + ": weight of shape " + s.str() + " has a zero fan");
    return fan;
}
} // namespace detail

/// U(-a, a) with a = gain * sqrt(6 / (fan_in + fan_out)).
template <class T>
void glorot_uniform(Tensor<T>& w, Rng& rng, double gain = 1.0) {
    if (w.empty()) return;
    const Fans f = compute_fans(w.shape());
    const double a = gain * std::sqrt(6.0 / detail::checked_fan(f.in + f.out, "init::glorot_uniform", w.shape()));
    uniform(w, rng, -a, a);
}
/// N(0, s^2) with s = gain * sqrt(2 / (fan_in + fan_out)).
template <class T>
void glorot_normal(Tensor<T>& w, Rng& rng, double gain = 1.0) {
    if (w.empty()) return;
    const Fans f = compute_fans(w.shape());
    normal(w, rng, 0.0, gain * std::sqrt(2.0 / detail::checked_fan(f.in + f.out, "init::glorot_normal", w.shape())));
}
/// U(-a, a) with a = sqrt(6 / fan_in): variance 2 / fan_in, for ReLU networks.
template <class T>
void he_uniform(Tensor<T>& w, Rng& rng) {
    if (w.empty()) return;
    const Fans f = compute_fans(w.shape());
    const double a = std::sqrt(6.0 / detail::checked_fan(f.in, "init::he_uniform", w.shape()));
    uniform(w, rng, -a, a);
}
/// N(0, s^2) with s = sqrt(2 / fan_in).
template <class T>
void he_normal(Tensor<T>& w, Rng& rng) {
    if (w.empty()) return;
    const Fans f = compute_fans(w.shape());
    normal(w, rng, 0.0, std::sqrt(2.0 / detail::checked_fan(f.in, "init::he_normal", w.shape())));
}

template <class T>
void xavier_uniform(Tensor<T>& w, Rng& rng, double gain = 1.0) { glorot_uniform(w, rng, gain); }
template <class T>
void xavier_normal(Tensor<T>& w, Rng& rng, double gain = 1.0) { glorot_normal(w, rng, gain); }
template <class T>
void kaiming_uniform(Tensor<T>& w, Rng& rng) { he_uniform(w, rng); }
template <class T>
void kaiming_normal(Tensor<T>& w, Rng& rng) { he_normal(w, rng); }

} // namespace init

/// An initialiser as a value, for layer options: Init::he_normal(), Init::constant(0.1), ...
struct Init {
    enum class Kind { zeros, ones, constant, glorot_uniform, glorot_normal, he_uniform, he_normal };
    Kind kind = Kind::glorot_uniform;
    double value = 0.0;  ///< the constant, or the gain of the Glorot variants

    static Init zeros() { return Init{Kind::zeros, 0.0}; }
    static Init ones() { return Init{Kind::ones, 0.0}; }
    static Init constant(double v) { return Init{Kind::constant, v}; }
    static Init glorot_uniform(double gain = 1.0) { return Init{Kind::glorot_uniform, gain}; }
    static Init glorot_normal(double gain = 1.0) { return Init{Kind::glorot_normal, gain}; }
    static Init xavier_uniform(double gain = 1.0) { return glorot_uniform(gain); }
    static Init xavier_normal(double gain = 1.0) { return glorot_normal(gain); }
    static Init he_uniform() { return Init{Kind::he_uniform, 0.0}; }
    static Init he_normal() { return Init{Kind::he_normal, 0.0}; }

    template <class T>
    void apply(Tensor<T>& w, Rng& rng) const {
        switch (kind) {
        case Kind::zeros: init::zeros(w); break;
        case Kind::ones: init::ones(w); break;
        case Kind::constant: init::constant(w, static_cast<T>(value)); break;
        case Kind::glorot_uniform: init::glorot_uniform(w, rng, value); break;
        case Kind::glorot_normal: init::glorot_normal(w, rng, value); break;
        case Kind::he_uniform: init::he_uniform(w, rng); break;
        case Kind::he_normal: init::he_normal(w, rng); break;
        }
    }

    std::string name() const {
        switch (kind) {
        case Kind::zeros: return "zeros";
        case Kind::ones: return "ones";
        case Kind::constant: return "constant";
        case Kind::glorot_uniform: return "glorot_uniform";
        case Kind::glorot_normal: return "glorot_normal";
        case Kind::he_uniform: return "he_uniform";
        case Kind::he_normal: return "he_normal";
        }
        return "?";
    }
};

} // namespace nn
} // namespace tapir
// ---- end tapir/nn/init.hpp ----
// ---- begin tapir/nn/layers.hpp ----
/// Layers: Dense (fused matmul + bias + activation), activation layers, Softmax, Dropout,
/// BatchNorm and LayerNorm.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>


namespace tapir {
namespace nn {

/// The conventional slope of an activation that has one: 0.01 for leaky ReLU, 1 for ELU.
inline double default_alpha(Activation act) noexcept {
    return act == Activation::leaky_relu ? 0.01 : (act == Activation::elu ? 1.0 : 0.0);
}

// ---- Dense ----------------------------------------------------------------------------------

struct DenseOptions {
    Activation activation = Activation::none;
    std::optional<double> alpha;  ///< leaky ReLU slope or ELU scale; default_alpha() when unset
    bool bias = true;
    Init kernel_init = Init::glorot_uniform();  ///< Keras' defaults: Glorot uniform kernel, zero bias
    Init bias_init = Init::zeros();
};

/// y = act(x W + b), recorded as ONE tape node (tapir::dense) with a fused backward.
/// Weight layout follows Keras: `weight` has shape (in, out), so y = x W with x (batch, in);
/// PyTorch's nn.Linear stores the transpose (out, in). `bias` has shape (out,).
template <class T>
class Dense : public Module<T> {
public:
    Parameter<T> weight;  ///< (in, out)
    Parameter<T> bias;    ///< (out,); empty without bias

    Dense(std::size_t in, std::size_t out, Rng& rng, Activation act = Activation::none)
        : Dense(in, out, rng, options_for(act)) {}
    Dense(std::size_t in, std::size_t out, Rng& rng, const DenseOptions& opt)
        : weight("weight", Tensor<T>(Shape{in, out})),
          act_(opt.activation),
          alpha_(static_cast<T>(opt.alpha ? *opt.alpha : default_alpha(opt.activation))),
          has_bias_(opt.bias) {
        if (in == 0 || out == 0)
            throw value_error("Dense: input and output sizes must be positive, got " + std::to_string(in) + " -> " + std::to_string(out));
        opt.kernel_init.apply(weight.value, rng);
        if (has_bias_) {
            bias = Parameter<T>("bias", Tensor<T>(Shape{out}));
            opt.bias_init.apply(bias.value, rng);
        }
    }

    std::size_t in_features() const noexcept { return weight.value.shape()[0]; }
    std::size_t out_features() const noexcept { return weight.value.shape()[1]; }
    bool has_bias() const noexcept { return has_bias_; }
    Activation activation() const noexcept { return act_; }
    T alpha() const noexcept { return alpha_; }

    Var<T> forward(const Var<T>& x) override { return apply(x, act_, alpha_); }

    bool can_fuse_activation() const noexcept override { return act_ == Activation::none; }
    /// This layer followed by an activation, as one dense node (what Sequential calls).
    Var<T> forward_fused(const Var<T>& x, Activation act, T alpha) override {
        if (act_ != Activation::none)
            throw value_error(std::string("Dense::forward_fused: the layer already applies ") + activation_name(act_));
        return apply(x, act, alpha);
    }

    Shape output_shape(const Shape& in) const override {
        check_input(in);
        return Shape{in[0], out_features()};
    }
    LayerKind kind() const override { return LayerKind::dense; }
    std::string type_name() const override { return "Dense"; }
    std::string describe() const override {
        std::string s = "Dense";
        if (act_ != Activation::none) {
            s += std::string("(") + activation_name(act_);
            if (act_ == Activation::leaky_relu || act_ == Activation::elu) s += ", " + tapir::detail::number_text(static_cast<double>(alpha_));
            s += ")";
        }
        return s;
    }
    std::unique_ptr<Module<T>> clone() const override { return std::make_unique<Dense>(*this); }

protected:
    void collect_parameters(std::vector<NamedParameter<T>>& out) override {
        out.emplace_back("weight", &weight);
        if (has_bias_) out.emplace_back("bias", &bias);
    }

private:
    static DenseOptions options_for(Activation act) {
        DenseOptions o;
        o.activation = act;
        return o;
    }
    void check_input(const Shape& s) const {
        if (TAPIR_UNLIKELY(s.rank() != 2 || s[1] != in_features()))
            throw shape_error("Dense(" + std::to_string(in_features()) + " -> " + std::to_string(out_features()) +
                              "): expected input of shape (batch, " + std::to_string(in_features()) + "), got " + s.str());
    }
    Var<T> apply(const Var<T>& x, Activation act, T alpha) {
        check_input(x.shape());
        Tape<T>& t = x.tape();
        const Var<T> w = this->use(t, weight);
        if (!has_bias_) return dense(x, w, nullptr, act, alpha);
        const Var<T> b = this->use(t, bias);
        return dense(x, w, &b, act, alpha);
    }

    Activation act_;
    T alpha_;
    bool has_bias_;
};

// ---- activations ----------------------------------------------------------------------------

/// An elementwise activation as a layer. Sequential fuses it into a preceding Dense.
template <class T>
class ActivationLayer : public Module<T> {
public:
    explicit ActivationLayer(Activation act, T alpha = T(0)) : act_(act), alpha_(alpha) {}

    Activation activation() const noexcept { return act_; }
    T alpha() const noexcept { return alpha_; }

    Var<T> forward(const Var<T>& x) override {
        switch (act_) {
        case Activation::none: return x;
        case Activation::relu: return relu(x);
        case Activation::leaky_relu: return leaky_relu(x, alpha_);
        case Activation::elu: return elu(x, alpha_);
        case Activation::tanh: return tanh(x);
        case Activation::sigmoid: return sigmoid(x);
        case Activation::softplus: return softplus(x);
        }
        return x;
    }
    Activation fusable_activation() const noexcept override { return act_; }
    T activation_alpha() const noexcept override { return alpha_; }

    Shape output_shape(const Shape& in) const override { return in; }
    LayerKind kind() const override { return LayerKind::activation; }
    std::string type_name() const override {
        switch (act_) {
        case Activation::none: return "Identity";
        case Activation::relu: return "ReLU";
        case Activation::leaky_relu: return "LeakyReLU";
        case Activation::elu: return "ELU";
        case Activation::tanh: return "Tanh";
        case Activation::sigmoid: return "Sigmoid";
        case Activation::softplus: return "Softplus";
        }
        return "?";
    }
    std::string describe() const override {
        if (act_ == Activation::leaky_relu || act_ == Activation::elu)
            return type_name() + "(" + tapir::detail::number_text(static_cast<double>(alpha_)) + ")";
        return type_name();
    }
    std::unique_ptr<Module<T>> clone() const override { return std::make_unique<ActivationLayer>(*this); }

private:
    Activation act_;
    T alpha_;
};

template <class T>
struct ReLU : ActivationLayer<T> {
    ReLU() : ActivationLayer<T>(Activation::relu) {}
    std::unique_ptr<Module<T>> clone() const override { return std::make_unique<ReLU>(*this); }
};
template <class T>
struct LeakyReLU : ActivationLayer<T> {
    explicit LeakyReLU(T alpha = T(0.01)) : ActivationLayer<T>(Activation::leaky_relu, alpha) {}
    std::unique_ptr<Module<T>> clone() const override { return std::make_unique<LeakyReLU>(*this); }
};
template <class T>
struct ELU : ActivationLayer<T> {
    explicit ELU(T alpha = T(1)) : ActivationLayer<T>(Activation::elu, alpha) {}
    std::unique_ptr<Module<T>> clone() const override { return std::make_unique<ELU>(*this); }
};
template <class T>
struct Sigmoid : ActivationLayer<T> {
    Sigmoid() : ActivationLayer<T>(Activation::sigmoid) {}
    std::unique_ptr<Module<T>> clone() const override { return std::make_unique<Sigmoid>(*this); }
};
template <class T>
struct Tanh : ActivationLayer<T> {
    Tanh() : ActivationLayer<T>(Activation::tanh) {}
    std::unique_ptr<Module<T>> clone() const override { return std::make_unique<Tanh>(*this); }
};
template <class T>
struct Softplus : ActivationLayer<T> {
    Softplus() : ActivationLayer<T>(Activation::softplus) {}
    std::unique_ptr<Module<T>> clone() const override { return std::make_unique<Softplus>(*this); }
};
template <class T>
struct Identity : ActivationLayer<T> {
    Identity() : ActivationLayer<T>(Activation::none) {}
    std::unique_ptr<Module<T>> clone() const override { return std::make_unique<Identity>(*this); }
};

/// Softmax along an axis (the last by default). Not fused: it couples the outputs of a row.
template <class T>
class Softmax : public Module<T> {
public:
    explicit Softmax(std::int64_t axis = -1) : axis_(axis) {}
    std::int64_t axis() const noexcept { return axis_; }
    Var<T> forward(const Var<T>& x) override { return softmax(x, axis_); }
    Shape output_shape(const Shape& in) const override {
        tapir::detail::normalize_axis(axis_, in, "Softmax");
        return in;
    }
    LayerKind kind() const override { return LayerKind::softmax; }
    std::string type_name() const override { return "Softmax"; }
    std::unique_ptr<Module<T>> clone() const override { return std::make_unique<Softmax>(*this); }

private:
    std::int64_t axis_;
};

// ---- Dropout --------------------------------------------------------------------------------

/// Inverted dropout: in training each element is zeroed with probability p and the survivors
/// are scaled by 1/(1-p), so eval mode is the identity. The mask stream comes from the layer's
/// own Rng, so a seed reproduces it.
template <class T>
class Dropout : public Module<T> {
public:
    explicit Dropout(double p, std::uint64_t seed = 0x5eed) : p_(check_p(p)), rng_(seed) {}
    Dropout(double p, Rng& rng) : p_(check_p(p)), rng_(rng.next_u64()) {}

    double p() const noexcept { return p_; }
    void reseed(std::uint64_t seed) noexcept { rng_.reseed(seed); }

    Var<T> forward(const Var<T>& x) override {
        if (!this->is_training() || p_ == 0.0) return x;
        Tape<T>& t = x.tape();
        Ref<T> mask = t.alloc(x.shape());
        const T keep = p_ < 1.0 ? static_cast<T>(1.0 / (1.0 - p_)) : T(0);
        const std::size_t n = mask.size();
        for (std::size_t i = 0; i < n; ++i) mask.data[i] = rng_.uniform() < p_ ? T(0) : keep;
        return mul(x, t.leaf(mask, false));
    }

    Shape output_shape(const Shape& in) const override { return in; }
    LayerKind kind() const override { return LayerKind::dropout; }
    std::string type_name() const override { return "Dropout"; }
    std::string describe() const override { return "Dropout(" + tapir::detail::number_text(p_) + ")"; }
    std::unique_ptr<Module<T>> clone() const override { return std::make_unique<Dropout>(*this); }

private:
    static double check_p(double p) {
        if (!(p >= 0.0 && p <= 1.0)) throw value_error("Dropout: probability must be in [0, 1], got " + std::to_string(p));
        return p;
    }
    double p_;
    Rng rng_;
};

// ---- normalisation --------------------------------------------------------------------------

/// Batch normalisation over the batch axis of (batch, features) inputs, PyTorch conventions:
/// training normalises with the batch mean and biased variance and updates
///   running_mean = (1 - momentum) running_mean + momentum mean,
///   running_var  = (1 - momentum) running_var  + momentum var * n / (n - 1)   (unbiased),
/// momentum 0.1, eps 1e-5; eval normalises with the running statistics. (Keras' momentum 0.99
/// is 1 - PyTorch's.) weight starts at 1, bias at 0; running_mean at 0, running_var at 1.
template <class T>
class BatchNorm : public Module<T> {
public:
    Parameter<T> weight;  ///< (features,) scale, gamma
    Parameter<T> bias;    ///< (features,) shift, beta
    Tensor<T> running_mean;
    Tensor<T> running_var;

    explicit BatchNorm(std::size_t features, double momentum = 0.1, double eps = 1e-5)
        : weight("weight", Tensor<T>(Shape{features}, T(1))),
          bias("bias", Tensor<T>(Shape{features})),
          running_mean(Shape{features}),
          running_var(Shape{features}, T(1)),
          momentum_(momentum),
          eps_(eps) {
        if (features == 0) throw value_error("BatchNorm: the number of features must be positive");
        if (!(momentum >= 0.0 && momentum <= 1.0)) throw value_error("BatchNorm: momentum must be in [0, 1], got " + std::to_string(momentum));
        if (!(eps > 0.0)) throw value_error("BatchNorm: eps must be positive, got " + std::to_string(eps));
    }

    std::size_t features() const noexcept { return weight.value.size(); }
    double momentum() const noexcept { return momentum_; }
    double eps() const noexcept { return eps_; }
    /// Training batches seen (the running statistics' update count).
    std::size_t batches_tracked() const noexcept { return batches_; }

    Var<T> forward(const Var<T>& x) override {
        check_input(x.shape());
        Tape<T>& t = x.tape();
        const Var<T> w = this->use(t, weight), b = this->use(t, bias);
        const std::size_t f = features();
        if (this->is_training()) {
            const std::size_t n = x.shape()[0];
            if (n < 2)
                throw value_error("BatchNorm(" + std::to_string(f) + "): training needs more than one event per batch, got input of shape " +
                                  x.shape().str());
            const Var<T> mu = mean(x, 0, true);
            const Var<T> xc = sub(x, mu);
            const Var<T> var = mean(square(xc), 0, true);
            const Var<T> inv_std = pow(add_scalar(var, static_cast<T>(eps_)), T(-0.5));
            const Var<T> y = add(mul(mul(xc, inv_std), w), b);
            const T m = static_cast<T>(momentum_);
            const T unbias = static_cast<T>(static_cast<double>(n) / static_cast<double>(n - 1));
            for (std::size_t j = 0; j < f; ++j) {
                running_mean[j] = (T(1) - m) * running_mean[j] + m * mu[j];
                running_var[j] = (T(1) - m) * running_var[j] + m * var[j] * unbias;
            }
            ++batches_;
            return y;
        }
        Ref<T> inv = t.alloc(Shape{f});
        for (std::size_t j = 0; j < f; ++j) inv.data[j] = T(1) / std::sqrt(running_var[j] + static_cast<T>(eps_));
        const Var<T> scale = mul(w, t.leaf(inv, false));
        return add(mul(sub(x, t.constant(running_mean)), scale), b);
    }

    Shape output_shape(const Shape& in) const override {
        check_input(in);
        return in;
    }
    LayerKind kind() const override { return LayerKind::batch_norm; }
    std::string type_name() const override { return "BatchNorm"; }
    std::unique_ptr<Module<T>> clone() const override { return std::make_unique<BatchNorm>(*this); }

protected:
    void collect_parameters(std::vector<NamedParameter<T>>& out) override {
        out.emplace_back("weight", &weight);
        out.emplace_back("bias", &bias);
    }
    void collect_buffers(std::vector<NamedBuffer<T>>& out) override {
        out.emplace_back("running_mean", &running_mean);
        out.emplace_back("running_var", &running_var);
    }

private:
    void check_input(const Shape& s) const {
        if (TAPIR_UNLIKELY(s.rank() != 2 || s[1] != features()))
            throw shape_error("BatchNorm(" + std::to_string(features()) + "): expected input of shape (batch, " +
                              std::to_string(features()) + "), got " + s.str());
    }
    double momentum_;
    double eps_;
    std::size_t batches_ = 0;
};

/// Layer normalisation over the last axis (biased variance, eps 1e-5), with a learned
/// elementwise scale (weight, starts at 1) and shift (bias, starts at 0). Same in train and eval.
template <class T>
class LayerNorm : public Module<T> {
public:
    Parameter<T> weight;
    Parameter<T> bias;

    explicit LayerNorm(std::size_t features, double eps = 1e-5)
        : weight("weight", Tensor<T>(Shape{features}, T(1))), bias("bias", Tensor<T>(Shape{features})), eps_(eps) {
        if (features == 0) throw value_error("LayerNorm: the number of features must be positive");
        if (!(eps > 0.0)) throw value_error("LayerNorm: eps must be positive, got " + std::to_string(eps));
    }

    std::size_t features() const noexcept { return weight.value.size(); }
    double eps() const noexcept { return eps_; }

    Var<T> forward(const Var<T>& x) override {
        check_input(x.shape());
        Tape<T>& t = x.tape();
        const Var<T> mu = mean(x, -1, true);
        const Var<T> xc = sub(x, mu);
        const Var<T> var = mean(square(xc), -1, true);
        const Var<T> xn = mul(xc, pow(add_scalar(var, static_cast<T>(eps_)), T(-0.5)));
        return add(mul(xn, this->use(t, weight)), this->use(t, bias));
    }

    Shape output_shape(const Shape& in) const override {
        check_input(in);
        return in;
    }
    LayerKind kind() const override { return LayerKind::layer_norm; }
    std::string type_name() const override { return "LayerNorm"; }
    std::unique_ptr<Module<T>> clone() const override { return std::make_unique<LayerNorm>(*this); }

protected:
    void collect_parameters(std::vector<NamedParameter<T>>& out) override {
        out.emplace_back("weight", &weight);
        out.emplace_back("bias", &bias);
    }

private:
    void check_input(const Shape& s) const {
        if (TAPIR_UNLIKELY(s.rank() == 0 || s[s.rank() - 1] != features()))
            throw shape_error("LayerNorm(" + std::to_string(features()) + "): expected the last axis of length " +
                              std::to_string(features()) + ", got input of shape " + s.str());
    }
    double eps_;
};

} // namespace nn
} // namespace tapir
// ---- end tapir/nn/layers.hpp ----
// ---- begin tapir/nn/nn.hpp ----
/// Neural-network layers, models and the training loop in one include.

// ---- begin tapir/nn/pivot.hpp ----
/// Adversarial decorrelation, "learning to pivot" (Louppe, Kagan, Cranmer, arXiv 1611.01046):
/// a gradient-reversal layer, a mixture-density adversary module and a trainer for the paper's
/// Algorithm 1 on E = L_f - lambda L_r. Models and training live in nn/; the losses they use
/// (loss::mdn_nll, loss::binary_cross_entropy_with_logits) stay functions in loss/.
///
///     tapir::nn::Sequential<float> clf;  // x -> one logit
///     tapir::nn::MdnAdversary<float> adv(1, {20, 20}, 5, rng);
///     tapir::optim::Adam<float> oc(clf.parameters(), 1e-3f), oa(adv.parameters(), 1e-3f);
///     tapir::nn::PivotTrainer<float> tr(clf, adv, oc, oa, options);
///     tr.set_data(x, y, m);  // m: the variable to decorrelate, scaled to [0, 1] for truncation
///     tr.run();              // pretrain f, pretrain r on frozen f, then K r-steps per f-step

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

// ---- begin tapir/loss/mdn.hpp ----
/// Negative log-likelihood of a Gaussian mixture density network (Bishop 1994), the adversary
/// of "learning to pivot" (Louppe, Kagan, Cranmer, arXiv 1611.01046), optionally with every
/// component truncated to an interval (the mass window the adversary sees).

#include <cmath>
#include <cstddef>
#include <limits>
#include <string>


namespace tapir {
namespace loss {

template <class T>
struct MdnOptions {
    /// sigma_k = softplus(raw_k) + sigma_floor: keeps a component from collapsing onto one
    /// point (where the likelihood is unbounded).
    T sigma_floor = T(1e-4);
    /// Truncate each component to [lo, hi] and renormalise it (the course's variant, on m
    /// scaled to [0, 1]).
    bool truncate = false;
    T lo = T(0);
    T hi = T(1);
};

/// Per-event log-density log p(m_i) of the mixture, shape (N,):
///   log p(m) = logsumexp_k [ log_softmax(logits)_k + log N(m; mu_k, sigma_k) - log Z_k ],
///   N(m; mu, s) = exp(-(m - mu)^2 / (2 s^2)) / (s sqrt(2 pi)),
///   Z_k = Phi((hi - mu_k)/s_k) - Phi((lo - mu_k)/s_k) with truncation (else Z_k = 1),
///   Phi(x) = (1 + erf(x / sqrt 2)) / 2   (Bishop 1994; Louppe et al., arXiv 1611.01046).
/// Inputs: logits, mu, raw_sigma of shape (N, K); m of shape (N,) or (N, 1). Z_k is floored at
/// 64 machine epsilons, the rounding noise of a difference of two erf values near 1, so a
/// component lying entirely outside [lo, hi] is under-weighted instead of divided by 0
/// (or by noise).
template <class T>
Var<T> mdn_log_prob(const Var<T>& logits, const Var<T>& mu, const Var<T>& raw_sigma, const Var<T>& m,
                    const MdnOptions<T>& opt = MdnOptions<T>{}) {
    const char* fn = "mdn_nll";
    detail::batch_size(logits, fn, "mixture logits");
    if (logits.shape().rank() != 2) throw shape_error(std::string(fn) + ": mixture logits must be (N, K), got " + logits.shape().str());
    if (mu.shape() != logits.shape() || raw_sigma.shape() != logits.shape())
        throw shape_error(std::string(fn) + ": logits " + logits.shape().str() + ", means " + mu.shape().str() + " and widths " +
                          raw_sigma.shape().str() + " must all be (N, K)");
    const std::size_t n = logits.shape()[0];
    if (m.size() != n || m.shape()[0] != n)
        throw shape_error(std::string(fn) + ": target of shape " + m.shape().str() + " for " + std::to_string(n) +
                          " events; expected (N,) or (N, 1)");
    if (!(opt.sigma_floor >= T(0)) || !std::isfinite(static_cast<double>(opt.sigma_floor)))
        throw value_error(std::string(fn) + ": sigma_floor must be finite and >= 0, got " + std::to_string(opt.sigma_floor));
    if (opt.truncate && !(opt.lo < opt.hi))
        throw value_error(std::string(fn) + ": truncation interval [" + std::to_string(opt.lo) + ", " + std::to_string(opt.hi) +
                          "] is empty");
    const Var<T> target = m.shape().rank() == 2 ? m : reshape(m, Shape{n, 1});
    const Var<T> sigma = add_scalar(softplus(raw_sigma), opt.sigma_floor);
    const Var<T> z = div(sub(target, mu), sigma);
    const T half_log_2pi = T(0.91893853320467274178);
    Var<T> lp = sub(sub(log_softmax(logits, 1), scale(square(z), T(0.5))), add_scalar(log(sigma), half_log_2pi));
    if (opt.truncate) {
        const T inv_sqrt2 = T(0.70710678118654752440);
        const Var<T> inv_s = rdiv_scalar(inv_sqrt2, sigma);
        const Var<T> ehi = erf(mul(add_scalar(neg(mu), opt.hi), inv_s));
        const Var<T> elo = erf(mul(add_scalar(neg(mu), opt.lo), inv_s));
        const Var<T> zk = clamp(scale(sub(ehi, elo), T(0.5)), T(64) * std::numeric_limits<T>::epsilon(), T(1));
        lp = sub(lp, log(zk));
    }
    return logsumexp(lp, 1);
}

/// Weighted mean negative log-likelihood -sum_i w_i log p(m_i) / sum_i w_i of the mixture (see
/// mdn_log_prob). In the pivot set-up the weights select background events (w = 0 for signal).
/// With m ~ N(0, 1) and a perfect fit, the value tends to ln sqrt(2 pi e) = 1.4189 nats.
template <class T>
Var<T> mdn_nll(const Var<T>& logits, const Var<T>& mu, const Var<T>& raw_sigma, const Var<T>& m, detail::weights_t<T> weights = nullptr,
               const MdnOptions<T>& opt = MdnOptions<T>{}) {
    return neg(detail::weighted_mean(mdn_log_prob(logits, mu, raw_sigma, m, opt), weights, "mdn_nll"));
}

} // namespace loss
} // namespace tapir
// ---- end tapir/loss/mdn.hpp ----
// ---- begin tapir/nn/sequential.hpp ----
/// Sequential: layers applied in order, with Dense followed by an activation layer fused into
/// one dense node (one matmul + bias + activation kernel and one fused backward).

#include <cstddef>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>


namespace tapir {
namespace nn {

/// A stack of layers, PyTorch's nn.Sequential / Keras' Sequential:
///
///     tapir::Rng rng(42);
///     tapir::nn::Sequential<float> model;
///     model.add<tapir::nn::Dense<float>>(8, 24, rng).add<tapir::nn::ReLU<float>>()
///          .add<tapir::nn::Dense<float>>(24, 1, rng);
///     tapir::Var<float> logits = model(tape.view(x));
///
/// Layers are named by position ("0", "1", ...), so parameters are "0.weight", "0.bias", ...
template <class T>
class Sequential : public Module<T> {
public:
    Sequential() = default;
    Sequential(Sequential&&) noexcept = default;
    Sequential& operator=(Sequential&&) noexcept = default;
    /// A deep copy: every layer is cloned.
    Sequential(const Sequential& o) : Module<T>(o), fuse_(o.fuse_) {
        for (const auto& l : o.layers_) push(l->clone());
    }
    Sequential& operator=(const Sequential& o) {
        if (this != &o) {
            Sequential copy(o);
            *this = std::move(copy);
        }
        return *this;
    }

    /// Constructs a layer in place: add<Dense<float>>(8, 24, rng). Returns *this for chaining.
    template <class L, class... Args>
    Sequential& add(Args&&... args) {
        static_assert(std::is_base_of<Module<T>, L>::value, "Sequential::add: the layer must derive from tapir::nn::Module<T>");
        push(std::make_unique<L>(std::forward<Args>(args)...));
        return *this;
    }
    /// Adds a layer object (moved or copied in): add(Dense<float>(8, 24, rng)).
    template <class L, class = std::enable_if_t<std::is_base_of<Module<T>, std::decay_t<L>>::value>>
    Sequential& add(L&& layer) {
        push(std::make_unique<std::decay_t<L>>(std::forward<L>(layer)));
        return *this;
    }
    Sequential& add(std::unique_ptr<Module<T>> layer) {
        if (!layer) throw value_error("Sequential::add: null layer");
        push(std::move(layer));
        return *this;
    }
    /// Like add<L>(...), but returns the new layer.
    template <class L, class... Args>
    L& emplace(Args&&... args) {
        auto p = std::make_unique<L>(std::forward<Args>(args)...);
        L& ref = *p;
        push(std::move(p));
        return ref;
    }

    std::size_t size() const noexcept { return layers_.size(); }
    bool empty() const noexcept { return layers_.empty(); }
    Module<T>& operator[](std::size_t i) { return *layers_[i]; }
    const Module<T>& operator[](std::size_t i) const { return *layers_[i]; }
    Module<T>& at(std::size_t i) {
        check_index(i);
        return *layers_[i];
    }
    const Module<T>& at(std::size_t i) const {
        check_index(i);
        return *layers_[i];
    }
    /// The layers in order, for code that walks the model (e.g. export: switch on kind(), then
    /// static_cast to Dense<T>, ActivationLayer<T>, BatchNorm<T>, ...).
    std::vector<const Module<T>*> layers() const {
        std::vector<const Module<T>*> out;
        for (const auto& l : layers_) out.push_back(l.get());
        return out;
    }
    std::vector<Module<T>*> layers() {
        std::vector<Module<T>*> out;
        for (auto& l : layers_) out.push_back(l.get());
        return out;
    }

    /// Fusion of Dense + activation into one node (on by default; off reproduces the unfused graph).
    void set_fusion(bool on) noexcept { fuse_ = on; }
    bool fusion() const noexcept { return fuse_; }

    Var<T> forward(const Var<T>& x) override {
        Var<T> h = x;
        Tape<T>& t = x.tape();
        const char* outer = t.label();
        const std::size_t n = layers_.size();
        for (std::size_t i = 0; i < n; ++i) {
            Module<T>& l = *layers_[i];
            t.set_label(labels_[i].c_str());
            if (fuse_ && i + 1 < n && l.can_fuse_activation()) {
                const Module<T>& next = *layers_[i + 1];
                const Activation act = next.fusable_activation();
                if (act != Activation::none) {
                    h = l.forward_fused(h, act, next.activation_alpha());
                    ++i;
                    continue;
                }
            }
            h = l.forward(h);
        }
        t.set_label(outer);
        return h;
    }

    Shape output_shape(const Shape& in) const override {
        Shape s = in;
        for (std::size_t i = 0; i < layers_.size(); ++i) s = shape_after(i, s);
        return s;
    }
    void summary_rows(const Shape& input, std::vector<SummaryRow>& rows) const override {
        Shape s = input;
        for (std::size_t i = 0; i < layers_.size(); ++i) {
            s = shape_after(i, s);
            rows.push_back(SummaryRow{std::to_string(i), layers_[i]->describe(), s, layers_[i]->num_parameters()});
        }
    }
    LayerKind kind() const override { return LayerKind::sequential; }
    std::string type_name() const override { return "Sequential"; }
    std::unique_ptr<Module<T>> clone() const override { return std::make_unique<Sequential>(*this); }

protected:
    void collect_children(std::vector<NamedModule<T>>& out) override {
        for (std::size_t i = 0; i < layers_.size(); ++i) out.emplace_back(std::to_string(i), layers_[i].get());
    }

private:
    void push(std::unique_ptr<Module<T>> l) {
        labels_.push_back(std::to_string(layers_.size()) + " (" + l->type_name() + ")");
        layers_.push_back(std::move(l));
        this->update_parameter_names();
    }
    void check_index(std::size_t i) const {
        if (i >= layers_.size())
            throw value_error("Sequential: layer index " + std::to_string(i) + " out of range for " + std::to_string(layers_.size()) + " layers");
    }
    Shape shape_after(std::size_t i, const Shape& s) const {
        try {
            return layers_[i]->output_shape(s);
        } catch (const shape_error& e) {
            throw shape_error("Sequential layer " + std::to_string(i) + " (" + layers_[i]->describe() + "): " + e.what());
        }
    }

    std::vector<std::unique_ptr<Module<T>>> layers_;
    std::vector<std::string> labels_;  ///< tape labels ("2 (Dense)") named by anomaly errors
    bool fuse_ = true;
};

} // namespace nn
} // namespace tapir
// ---- end tapir/nn/sequential.hpp ----

namespace tapir {
namespace nn {
namespace detail {
inline void check_finite_hyper(const char* fn, const char* what, double v) {
    if (!std::isfinite(v)) throw value_error(std::string(fn) + ": " + what + " must be finite, got " + std::to_string(v));
}
} // namespace detail

// ---- gradient reversal ------------------------------------------------------------------------

/// The op grad_reverse (identity forward, gradient times -lambda backward; Ganin & Lempitsky,
/// arXiv 1409.7495) as a layer, for use inside a Sequential. Placed between the classifier output
/// and the adversary, one backward pass of L_f + L_r(reverse(f)) trains the adversary on L_r and
/// the classifier on L_f - lambda L_r.
template <class T>
class GradientReversal : public Module<T> {
public:
    explicit GradientReversal(T lambda = T(1)) : lambda_(lambda) {
        detail::check_finite_hyper("GradientReversal", "lambda", static_cast<double>(lambda));
    }
    Var<T> forward(const Var<T>& x) override { return grad_reverse(x, lambda_); }
    std::string type_name() const override { return "GradientReversal"; }
    std::string describe() const override { return "GradientReversal(" + tapir::detail::number_text(static_cast<double>(lambda_)) + ")"; }
    Shape output_shape(const Shape& in) const override { return in; }
    std::unique_ptr<Module<T>> clone() const override { return std::make_unique<GradientReversal>(*this); }
    T lambda() const noexcept { return lambda_; }
    void set_lambda(T l) {
        detail::check_finite_hyper("GradientReversal", "lambda", static_cast<double>(l));
        lambda_ = l;
    }

private:
    T lambda_;
};

// ---- mixture density adversary -----------------------------------------------------------------

/// The three heads of a K-component mixture, each (N, K).
template <class T>
struct MdnHeads {
    Var<T> logits;     ///< mixture weights pi = softmax(logits)
    Var<T> mu;         ///< means
    Var<T> raw_sigma;  ///< widths sigma = softplus(raw_sigma) + floor
};

/// Mixture density network r(m | z): input z (N, in) -> hidden Dense layers -> one Dense head of
/// 3K outputs, split into mixture logits, means and raw widths (see mdn_nll). The paper and the
/// course use K = 5; the course's adversary is 1 -> 200 -> 100 -> 50 -> 5 components.
template <class T>
class MdnAdversary : public Module<T> {
public:
    MdnAdversary(std::size_t in, const std::vector<std::size_t>& hidden, std::size_t components, Rng& rng,
                 Activation act = Activation::relu)
        : k_(components) {
        if (in == 0 || components == 0)
            throw value_error("MdnAdversary: input size and number of components must be positive, got " + std::to_string(in) + " and " +
                              std::to_string(components));
        std::size_t prev = in;
        for (std::size_t h : hidden) {
            body_.template add<Dense<T>>(prev, h, rng, act);
            prev = h;
        }
        head_ = std::make_unique<Dense<T>>(prev, 3 * components, rng);
    }
    MdnAdversary(const MdnAdversary& o) : Module<T>(o), body_(o.body_), head_(std::make_unique<Dense<T>>(*o.head_)), k_(o.k_) {}
    MdnAdversary& operator=(const MdnAdversary& o) {
        if (this != &o) {
            Module<T>::operator=(o);
            body_ = o.body_;
            head_ = std::make_unique<Dense<T>>(*o.head_);
            k_ = o.k_;
        }
        return *this;
    }

    std::size_t components() const noexcept { return k_; }

    /// The raw head outputs (N, 3K): [logits | means | raw widths].
    Var<T> forward(const Var<T>& z) override {
        const Var<T> in = z.shape().rank() == 1 ? reshape(z, Shape{z.shape()[0], 1}) : z;
        return (*head_)(body_.empty() ? in : body_(in));
    }
    MdnHeads<T> heads(const Var<T>& z) {
        const Var<T> out = forward(z);
        return MdnHeads<T>{slice(out, 1, 0, k_), slice(out, 1, k_, k_), slice(out, 1, 2 * k_, k_)};
    }
    /// -sum_i w_i log p(m_i | z_i) / sum_i w_i (see mdn_nll).
    Var<T> nll(const Var<T>& z, const Var<T>& m, const Var<T>* weights = nullptr, const loss::MdnOptions<T>& opt = loss::MdnOptions<T>{}) {
        const MdnHeads<T> h = heads(z);
        return loss::mdn_nll(h.logits, h.mu, h.raw_sigma, m, weights, opt);
    }

    std::string type_name() const override { return "MdnAdversary"; }
    std::string describe() const override { return "MdnAdversary(" + std::to_string(k_) + " components)"; }
    std::unique_ptr<Module<T>> clone() const override { return std::make_unique<MdnAdversary>(*this); }
    void summary_rows(const Shape& input, std::vector<SummaryRow>& rows) const override {
        Shape s = input;
        if (!body_.empty()) {
            s = body_.output_shape(s);
            rows.push_back(SummaryRow{"body", body_.describe(), s, body_.num_parameters()});
        }
        rows.push_back(SummaryRow{"head", "Dense(" + std::to_string(k_) + " x [logit, mean, width])", head_->output_shape(s),
                                  head_->num_parameters()});
    }

protected:
    void collect_children(std::vector<NamedModule<T>>& out) override {
        out.emplace_back("body", &body_);
        out.emplace_back("head", head_.get());
    }

private:
    Sequential<T> body_;
    std::unique_ptr<Dense<T>> head_;
    std::size_t k_;
};

// ---- Algorithm 1 --------------------------------------------------------------------------------

/// Which events the adversary sees. The physics use (decorrelating a mass from a classifier
/// on background) is `background`; the paper's toy (a nuisance acting on signal) uses `all`.
enum class PivotEvents { background, signal, all };

template <class T>
struct PivotOptions {
    T lambda = T(50);                          ///< E = L_f - lambda L_r
    std::size_t adversary_steps = 5;           ///< K adversary steps per classifier step
    std::size_t pretrain_classifier_steps = 500;
    std::size_t pretrain_adversary_steps = 500;
    std::size_t steps = 1000;                  ///< classifier steps of the adversarial phase
    std::size_t batch_size = 128;
    PivotEvents adversary_events = PivotEvents::background;
    loss::MdnOptions<T> mdn{};                       ///< widths floor, optional truncation to [lo, hi]
    std::uint64_t seed = 1;                    ///< mini-batch sampling
};

/// Per-step losses of a run (pretraining and adversarial phase, in order).
template <class T>
struct PivotHistory {
    std::vector<T> classifier_pretrain;  ///< L_f
    std::vector<T> adversary_pretrain;   ///< L_r
    std::vector<T> classifier;           ///< E = L_f - lambda L_r at each classifier step
    std::vector<T> adversary;            ///< L_r at the last adversary step before each classifier step
};

/// Trains a classifier f (any Module mapping x (N, D) to one logit per event) against an MDN
/// adversary r(m | sigmoid(f(x))) with the paper's Algorithm 1 (arXiv 1611.01046): pretrain f on
/// L_f (weighted BCE from logits), pretrain r on L_r with f frozen, then alternate K steps of r
/// (minimising L_r, f frozen) with one step of f on L_f - lambda L_r (r frozen). The adversary's
/// event weights are the event weights times the `adversary_events` selection, so with the
/// default it sees background only. Mini-batches are drawn at random with replacement of batches
/// (without replacement inside one batch). The optimisers must hold the classifier's and the
/// adversary's parameters respectively.
template <class T>
class PivotTrainer {
public:
    PivotTrainer(Module<T>& classifier, MdnAdversary<T>& adversary, optim::Optimizer<T>& classifier_opt,
                 optim::Optimizer<T>& adversary_opt, const PivotOptions<T>& opt = PivotOptions<T>{})
        : clf_(classifier), adv_(adversary), copt_(classifier_opt), aopt_(adversary_opt), opt_(opt), rng_(opt.seed) {
        detail::check_finite_hyper("PivotTrainer", "lambda", static_cast<double>(opt.lambda));
        if (opt.batch_size == 0) throw value_error("PivotTrainer: batch_size must be positive");
    }

    const PivotOptions<T>& options() const noexcept { return opt_; }
    void set_lambda(T lambda) {
        detail::check_finite_hyper("PivotTrainer", "lambda", static_cast<double>(lambda));
        opt_.lambda = lambda;
    }

    /// Training data: features x (N, D), labels y (N) in {0, 1}, the variable to decorrelate m (N)
    /// (scaled to the truncation interval if truncation is on), optional event weights w (N).
    /// The tensors are copied.
    void set_data(const Tensor<T>& x, const Tensor<T>& y, const Tensor<T>& m, const Tensor<T>* w = nullptr) {
        const char* fn = "PivotTrainer::set_data";
        if (x.rank() != 2 || x.dim(0) == 0) throw shape_error(std::string(fn) + ": features must be (N, D), got " + x.shape().str());
        const std::size_t n = x.dim(0);
        if (y.size() != n || m.size() != n || (w && w->size() != n))
            throw shape_error(std::string(fn) + ": " + std::to_string(n) + " events in x but labels " + y.shape().str() + ", m " +
                              m.shape().str() + (w ? ", weights " + w->shape().str() : std::string()));
        for (std::size_t i = 0; i < n; ++i)
            if (!(y[i] == T(0) || y[i] == T(1)))
                throw value_error(std::string(fn) + ": label of event " + std::to_string(i) + " is " + std::to_string(y[i]) +
                                  ", expected 0 or 1");
        x_ = x;
        y_ = y.reshaped(Shape{n});
        m_ = m.reshaped(Shape{n, 1});
        w_ = w ? w->reshaped(Shape{n}) : Tensor<T>(Shape{n}, T(1));
        wa_ = Tensor<T>(Shape{n});
        for (std::size_t i = 0; i < n; ++i) {
            const bool use = opt_.adversary_events == PivotEvents::all || (opt_.adversary_events == PivotEvents::background) == (y_[i] == T(0));
            wa_[i] = use ? w_[i] : T(0);
        }
        const std::size_t b = opt_.batch_size < n ? opt_.batch_size : n;
        bx_ = Tensor<T>(Shape{b, x.dim(1)});
        by_ = Tensor<T>(Shape{b});
        bm_ = Tensor<T>(Shape{b, 1});
        bw_ = Tensor<T>(Shape{b});
        bwa_ = Tensor<T>(Shape{b});
    }

    /// One step of f on L_f alone. Returns L_f.
    T pretrain_classifier_step() { return classifier_step_impl(false); }
    /// One step of r on L_r with f frozen. Returns L_r (0 if the batch has no adversary events).
    T adversary_step() {
        sample();
        if (!batch_has_adversary_weight()) return T(0);
        tape_.clear();
        Var<T> z;
        {
            NoGradGuard<T> guard(tape_);
            z = sigmoid(clf_(tape_.view(bx_)));
        }
        const Var<T> wa = tape_.view(bwa_);
        const Var<T> lr = adv_.nll(z, tape_.view(bm_), &wa, opt_.mdn);
        aopt_.zero_grad();
        backward(lr);
        aopt_.step();
        return lr.item();
    }
    /// One step of f on E = L_f - lambda L_r with r frozen. Returns E.
    T classifier_step() { return classifier_step_impl(true); }

    /// The whole algorithm with the configured numbers of steps.
    PivotHistory<T> run() {
        check_data();
        PivotHistory<T> h;
        for (std::size_t i = 0; i < opt_.pretrain_classifier_steps; ++i) h.classifier_pretrain.push_back(pretrain_classifier_step());
        for (std::size_t i = 0; i < opt_.pretrain_adversary_steps; ++i) h.adversary_pretrain.push_back(adversary_step());
        for (std::size_t s = 0; s < opt_.steps; ++s) {
            T la = T(0);
            for (std::size_t k = 0; k < opt_.adversary_steps; ++k) la = adversary_step();
            h.adversary.push_back(la);
            h.classifier.push_back(classifier_step());
        }
        return h;
    }

    /// Classifier outputs sigmoid(f(x)) (N,) without recording gradients.
    Tensor<T> predict(const Tensor<T>& x) {
        Tape<T> t;
        NoGradGuard<T> guard(t);
        const Var<T> p = sigmoid(clf_(t.view(x)));
        return p.value().reshaped(Shape{p.size()});
    }

    /// L_r of the current adversary on a data set (all adversary events), without training.
    T adversary_loss(const Tensor<T>& x, const Tensor<T>& y, const Tensor<T>& m) {
        Tape<T> t;
        NoGradGuard<T> guard(t);
        const std::size_t n = x.dim(0);
        Tensor<T> wa(Shape{n});
        for (std::size_t i = 0; i < n; ++i) {
            const bool use = opt_.adversary_events == PivotEvents::all || (opt_.adversary_events == PivotEvents::background) == (y[i] == T(0));
            wa[i] = use ? T(1) : T(0);
        }
        const Var<T> z = sigmoid(clf_(t.view(x)));
        const Var<T> wv = t.view(wa);
        return adv_.nll(z, t.constant(m.reshaped(Shape{n, 1})), &wv, opt_.mdn).item();
    }

private:
    void check_data() const {
        if (x_.empty()) throw value_error("PivotTrainer: no data (call set_data first)");
    }
    bool batch_has_adversary_weight() const {
        double s = 0.0;
        for (std::size_t i = 0; i < bwa_.size(); ++i) s += static_cast<double>(bwa_[i]);
        return s != 0.0;
    }
    /// A random mini-batch (distinct events) into the batch buffers.
    void sample() {
        check_data();
        const std::size_t n = x_.dim(0), d = x_.dim(1), b = bx_.dim(0);
        if (perm_.size() != n || pos_ + b > n) {
            perm_ = rng_.permutation(n);
            pos_ = 0;
        }
        for (std::size_t r = 0; r < b; ++r) {
            const std::size_t i = perm_[pos_ + r];
            for (std::size_t j = 0; j < d; ++j) bx_[r * d + j] = x_[i * d + j];
            by_[r] = y_[i];
            bm_[r] = m_[i];
            bw_[r] = w_[i];
            bwa_[r] = wa_[i];
        }
        pos_ += b;
    }
    /// Marks a module's parameters as constants for a scope (r while f trains).
    struct Freeze {
        std::vector<Parameter<T>*> params;
        std::vector<bool> saved;
        explicit Freeze(Module<T>& m) : params(m.parameters()) {
            for (Parameter<T>* p : params) {
                saved.push_back(p->requires_grad);
                p->requires_grad = false;
            }
        }
        ~Freeze() {
            for (std::size_t i = 0; i < params.size(); ++i) params[i]->requires_grad = saved[i];
        }
        Freeze(const Freeze&) = delete;
        Freeze& operator=(const Freeze&) = delete;
    };

    T classifier_step_impl(bool adversarial) {
        sample();
        tape_.clear();
        const Freeze frozen(adv_);
        const Var<T> logits = clf_(tape_.view(bx_));
        const Var<T> wv = tape_.view(bw_);
        Var<T> e = loss::binary_cross_entropy_with_logits(logits, tape_.view(by_), &wv);
        if (adversarial && opt_.lambda != T(0) && batch_has_adversary_weight()) {
            const Var<T> wa = tape_.view(bwa_);
            const Var<T> lr = adv_.nll(sigmoid(logits), tape_.view(bm_), &wa, opt_.mdn);
            e = sub(e, scale(lr, opt_.lambda));
        }
        copt_.zero_grad();
        backward(e);
        copt_.step();
        return e.item();
    }

    Module<T>& clf_;
    MdnAdversary<T>& adv_;
    optim::Optimizer<T>& copt_;
    optim::Optimizer<T>& aopt_;
    PivotOptions<T> opt_;
    Rng rng_;
    Tape<T> tape_;
    Tensor<T> x_, y_, m_, w_, wa_;
    Tensor<T> bx_, by_, bm_, bw_, bwa_;
    std::vector<std::size_t> perm_;
    std::size_t pos_ = 0;
};

} // namespace nn
} // namespace tapir
// ---- end tapir/nn/pivot.hpp ----
// ---- end tapir/nn/nn.hpp ----
// ---- begin tapir/optim/adagrad.hpp ----
/// Adagrad (Duchi, Hazan & Singer 2011), PyTorch torch.optim.Adagrad semantics.

#include <cmath>
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

// ---- begin tapir/optim/kernels.hpp ----
/// Fused per-parameter update kernels, one pass over (param, grad, state) each, written once over
/// the SIMD wrappers of simd/vec.hpp and dispatched to the active instruction set.
/// Kernels run through simd::dispatch (public); V::sqrt is the wrappers' correctly rounded square
/// root (a plain std::sqrt loop does not vectorise: errno handling).

#include <cmath>
#include <cstddef>
#include <type_traits>
#include <utility>


TAPIR_SIMD_DIAG_PUSH

namespace tapir::optim::detail {

/// Runs Body::block<V, Partial>(args, i, r) over [0, n) in steps of V::W, the tail partially.
template <class V, class Body, class Args>
TAPIR_ALWAYS_INLINE void for_blocks(const Args& a, std::size_t n) {
    constexpr std::size_t W = V::W;
    std::size_t i = 0;
    for (; i + W <= n; i += W) Body::template block<V, false>(a, i, W);
    if (i < n) Body::template block<V, true>(a, i, n - i);
}

template <class V, bool Partial, class T>
TAPIR_ALWAYS_INLINE typename V::reg ld(const T* p, std::size_t r) {
    if constexpr (Partial) {
        return V::load_partial(p, r);
    } else {
        (void)r;
        return V::load(p);
    }
}
template <class V, bool Partial, class T>
TAPIR_ALWAYS_INLINE void st(T* p, const typename V::reg& v, std::size_t r) {
    if constexpr (Partial) {
        V::store_partial(p, v, r);
    } else {
        (void)r;
        V::store(p, v);
    }
}

/// The parameter an update kernel works on: value p, gradient g, n elements.
template <class T>
struct ParamSpan {
    T* p;
    const T* g;
    std::size_t n;
};

/// What every update kernel shares: its value type for simd::dispatch, and run<V>(args) over
/// [0, args.n) with Kernel::block (CRTP).
template <class T, class Kernel>
struct block_kernel {
    using value_type = T;
    template <class V, class Args>
    static TAPIR_ALWAYS_INLINE void run(Args a) {
        for_blocks<V, Kernel>(a, a.n);
    }
};

/// The parameter's gradient at element i, plus wd * p when Wd (L2 weight decay).
template <class V, bool P, bool Wd, class Args>
TAPIR_ALWAYS_INLINE typename V::reg ld_grad(const Args& a, std::size_t i, std::size_t r, const typename V::reg& p) {
    auto d = ld<V, P>(a.g + i, r);
    if constexpr (Wd) d = V::fma(V::set1(a.wd), p, d);
    return d;
}

// ---- SGD ------------------------------------------------------------------------------------
template <class T>
struct SgdArgs : ParamSpan<T> {
    T* buf;
    T lr, wd, mu_buf, c_grad, mu;  // buf = mu_buf * buf + c_grad * d; nesterov adds mu * buf
};

/// d = g + wd p; buf = mu_buf buf + c d; d = Nesterov ? d + mu buf : buf; p -= lr d.
template <class T, bool Wd, bool Momentum, bool Nesterov>
struct sgd_kernel : block_kernel<T, sgd_kernel<T, Wd, Momentum, Nesterov>> {
    template <class V, bool P>
    static TAPIR_ALWAYS_INLINE void block(const SgdArgs<T>& a, std::size_t i, std::size_t r) {
        auto p = ld<V, P>(a.p + i, r);
        auto d = ld_grad<V, P, Wd>(a, i, r, p);
        if constexpr (Momentum) {
            const auto b = V::fma(V::set1(a.mu_buf), ld<V, P>(a.buf + i, r), V::mul(V::set1(a.c_grad), d));
            st<V, P>(a.buf + i, b, r);
            if constexpr (Nesterov) {
                d = V::fma(V::set1(a.mu), b, d);
            } else {
                d = b;
            }
        }
        p = V::fnma(V::set1(a.lr), d, p);
        st<V, P>(a.p + i, p, r);
    }
};

// ---- Adam / AdamW -----------------------------------------------------------------------------
template <class T>
struct AdamArgs : ParamSpan<T> {
    T* m;
    T* v;
    T b1, c1, b2, c2;  // m = b1 m + c1 g, v = b2 v + c2 g^2
    T step;            // lr / bc1 (PyTorch) or lr sqrt(bc2) / bc1 (Keras)
    T sqrt_bc2;        // divides sqrt(v) (PyTorch); 1 for Keras
    T eps, wd, decay;  // wd: L2 added to the gradient; decay: AdamW's p *= 1 - lr wd
};

template <class T, bool L2, bool Decoupled>
struct adam_kernel : block_kernel<T, adam_kernel<T, L2, Decoupled>> {
    template <class V, bool P>
    static TAPIR_ALWAYS_INLINE void block(const AdamArgs<T>& a, std::size_t i, std::size_t r) {
        auto p = ld<V, P>(a.p + i, r);
        const auto g = ld_grad<V, P, L2>(a, i, r, p);
        const auto m = V::fma(V::set1(a.b1), ld<V, P>(a.m + i, r), V::mul(V::set1(a.c1), g));
        const auto v = V::fma(V::set1(a.b2), ld<V, P>(a.v + i, r), V::mul(V::mul(V::set1(a.c2), g), g));
        st<V, P>(a.m + i, m, r);
        st<V, P>(a.v + i, v, r);
        if constexpr (Decoupled) p = V::mul(p, V::set1(a.decay));
        const auto denom = V::add(V::div(V::sqrt(v), V::set1(a.sqrt_bc2)), V::set1(a.eps));
        p = V::fnma(V::set1(a.step), V::div(m, denom), p);
        st<V, P>(a.p + i, p, r);
    }
};

// ---- RMSprop ----------------------------------------------------------------------------------
template <class T>
struct RmspropArgs : ParamSpan<T> {
    T* sq;
    T* gavg;
    T* buf;
    T lr, alpha, c_alpha, eps, wd, mu;
};

/// sq = a sq + (1-a) d^2; avg = sqrt(sq - gavg^2 (centered)) + eps; p -= lr d / avg (or via momentum).
template <class T, bool Wd, bool Centered, bool Momentum>
struct rmsprop_kernel : block_kernel<T, rmsprop_kernel<T, Wd, Centered, Momentum>> {
    template <class V, bool P>
    static TAPIR_ALWAYS_INLINE void block(const RmspropArgs<T>& a, std::size_t i, std::size_t r) {
        auto p = ld<V, P>(a.p + i, r);
        auto d = ld_grad<V, P, Wd>(a, i, r, p);
        const auto alpha = V::set1(a.alpha), ca = V::set1(a.c_alpha);
        const auto sq = V::fma(alpha, ld<V, P>(a.sq + i, r), V::mul(V::mul(ca, d), d));
        st<V, P>(a.sq + i, sq, r);
        typename V::reg var = sq;
        if constexpr (Centered) {
            const auto ga = V::fma(alpha, ld<V, P>(a.gavg + i, r), V::mul(ca, d));
            st<V, P>(a.gavg + i, ga, r);
            // sq >= ga^2 in exact arithmetic; rounding can push the difference below zero.
            var = V::max(V::zero(), V::fnma(ga, ga, sq));
        }
        const auto avg = V::add(V::sqrt(var), V::set1(a.eps));
        const auto q = V::div(d, avg);
        if constexpr (Momentum) {
            const auto b = V::fma(V::set1(a.mu), ld<V, P>(a.buf + i, r), q);
            st<V, P>(a.buf + i, b, r);
            p = V::fnma(V::set1(a.lr), b, p);
        } else {
            p = V::fnma(V::set1(a.lr), q, p);
        }
        st<V, P>(a.p + i, p, r);
    }
};

// ---- Adagrad ----------------------------------------------------------------------------------
template <class T>
struct AdagradArgs : ParamSpan<T> {
    T* sum;
    T clr, eps, wd;
};

template <class T, bool Wd>
struct adagrad_kernel : block_kernel<T, adagrad_kernel<T, Wd>> {
    template <class V, bool P>
    static TAPIR_ALWAYS_INLINE void block(const AdagradArgs<T>& a, std::size_t i, std::size_t r) {
        auto p = ld<V, P>(a.p + i, r);
        auto d = ld_grad<V, P, Wd>(a, i, r, p);
        const auto s = V::fma(d, d, ld<V, P>(a.sum + i, r));
        st<V, P>(a.sum + i, s, r);
        const auto std_ = V::add(V::sqrt(s), V::set1(a.eps));
        p = V::fnma(V::set1(a.clr), V::div(d, std_), p);
        st<V, P>(a.p + i, p, r);
    }
};

// ---- gradient helpers -------------------------------------------------------------------------
/// g = clamp(g, -c, c).
template <class T>
struct clamp_kernel : block_kernel<T, clamp_kernel<T>> {
    struct Args {
        T* g;
        std::size_t n;
        T c;
    };
    template <class V, bool P>
    static TAPIR_ALWAYS_INLINE void block(const Args& a, std::size_t i, std::size_t r) {
        const auto g = ld<V, P>(a.g + i, r);
        st<V, P>(a.g + i, V::min(V::max(g, V::set1(-a.c)), V::set1(a.c)), r);
    }
};

/// g += lambda sign(p), sign(0) = 0.
template <class T>
struct l1_grad_kernel : block_kernel<T, l1_grad_kernel<T>> {
    struct Args {
        const T* p;
        T* g;
        std::size_t n;
        T lambda;
    };
    template <class V, bool P>
    static TAPIR_ALWAYS_INLINE void block(const Args& a, std::size_t i, std::size_t r) {
        const auto p = ld<V, P>(a.p + i, r);
        const auto z = V::zero();
        const auto s = V::select(V::gt(p, z), V::set1(a.lambda), V::select(V::lt(p, z), V::set1(-a.lambda), z));
        st<V, P>(a.g + i, V::add(ld<V, P>(a.g + i, r), s), r);
    }
};

/// sum |x| with four independent accumulators.
template <class T>
struct abs_sum_kernel {
    using value_type = T;
    template <class V>
    static TAPIR_ALWAYS_INLINE T run(const T* x, std::size_t n) {
        constexpr std::size_t W = V::W;
        const auto z = V::zero();
        auto s0 = z, s1 = z;
        std::size_t i = 0;
        for (; i + 2 * W <= n; i += 2 * W) {
            const auto a = V::load(x + i), b = V::load(x + i + W);
            s0 = V::add(s0, V::max(a, V::sub(z, a)));
            s1 = V::add(s1, V::max(b, V::sub(z, b)));
        }
        for (; i + W <= n; i += W) {
            const auto a = V::load(x + i);
            s0 = V::add(s0, V::max(a, V::sub(z, a)));
        }
        if (i < n) {
            const auto a = V::load_partial(x + i, n - i);
            s1 = V::add(s1, V::max(a, V::sub(z, a)));
        }
        return V::hsum(V::add(s0, s1));
    }
};

} // namespace tapir::optim::detail

TAPIR_SIMD_DIAG_POP
// ---- end tapir/optim/kernels.hpp ----

namespace tapir {
namespace optim {

/// Per step t = 1, 2, ... and every parameter p with gradient g:
///   clr = lr / (1 + (t - 1) * lr_decay)
///   d = g + weight_decay * p
///   sum += d^2                      (sum starts at initial_accumulator_value)
///   p -= clr * d / (sqrt(sum) + eps)
template <class T>
class Adagrad : public Optimizer<T> {
public:
    explicit Adagrad(std::vector<Parameter<T>*> params, T lr = T(1e-2), T lr_decay = T(0), T weight_decay = T(0),
                     T initial_accumulator_value = T(0), T eps = T(1e-10))
        : Optimizer<T>(std::move(params), lr, "Adagrad"), lr_decay_(lr_decay), wd_(weight_decay),
          init_(initial_accumulator_value), eps_(eps) {
        detail::check_hyper("Adagrad", "lr_decay", static_cast<double>(lr_decay), 0.0, false, HUGE_VAL, true);
        detail::check_hyper("Adagrad", "weight_decay", static_cast<double>(weight_decay), 0.0, false, HUGE_VAL, true);
        detail::check_hyper("Adagrad", "initial_accumulator_value", static_cast<double>(initial_accumulator_value), 0.0,
                            false, HUGE_VAL, true);
        detail::check_hyper("Adagrad", "eps", static_cast<double>(eps), 0.0, false, HUGE_VAL, true);
    }

    std::string name() const override { return "Adagrad"; }
    T lr_decay() const noexcept { return lr_decay_; }
    T weight_decay() const noexcept { return wd_; }
    T initial_accumulator_value() const noexcept { return init_; }
    T eps() const noexcept { return eps_; }

    void step() override {
        this->check_gradients();
        this->allocate_like_params(sum_, init_);
        const double t = static_cast<double>(this->iterations_ + 1);
        detail::AdagradArgs<T> a{};
        a.clr = static_cast<T>(static_cast<double>(this->lr_) / (1.0 + (t - 1.0) * static_cast<double>(lr_decay_)));
        a.eps = eps_;
        a.wd = wd_;
        this->update_each(a, [&](std::size_t i) {
            a.sum = sum_[i].data();
            if (wd_ != T(0)) {
                simd::dispatch<detail::adagrad_kernel<T, true>>(a);
            } else {
                simd::dispatch<detail::adagrad_kernel<T, false>>(a);
            }
        });
    }

    std::vector<std::pair<std::string, Tensor<T>*>> state() override {
        this->allocate_like_params(sum_, init_);
        std::vector<std::pair<std::string, Tensor<T>*>> out;
        this->name_state(out, "sum", sum_);
        return out;
    }

private:
    T lr_decay_, wd_, init_, eps_;
    std::vector<Tensor<T>> sum_;
};

} // namespace optim
} // namespace tapir
// ---- end tapir/optim/adagrad.hpp ----
// ---- begin tapir/optim/adam.hpp ----
/// Adam (with the epsilon convention of PyTorch or of Keras) and AdamW (decoupled weight decay).

#include <cmath>
#include <cstddef>
#include <string>
#include <utility>
#include <vector>


namespace tapir {
namespace optim {

/// Where epsilon enters Adam's denominator. With t the step number (1, 2, ...) and
/// m = b1 m + (1 - b1) g, v = b2 v + (1 - b2) g^2 in both conventions:
///   pytorch (torch.optim.Adam, the default):
///       p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
///     epsilon is added to the bias-corrected sqrt(v_hat).
///   keras (TF2 / Keras 2 legacy Adam, "epsilon hat" of Kingma & Ba section 2):
///       lr_t = lr * sqrt(1 - b2^t) / (1 - b1^t);   p -= lr_t * m / (sqrt(v) + eps)
///     epsilon is added to the uncorrected sqrt(v), so it acts as eps * sqrt(1 - b2^t) in
///     PyTorch's terms: larger early on. Keras' default epsilon is 1e-7 (PyTorch's 1e-8): pass it.
/// The two agree exactly when eps = 0.
enum class AdamEps { pytorch, keras };

inline const char* adam_eps_name(AdamEps e) noexcept { return e == AdamEps::keras ? "keras" : "pytorch"; }

namespace detail {
/// Shared by Adam and AdamW: moments, bias corrections, the fused kernel.
template <class T>
class AdamCore : public Optimizer<T> {
public:
    T beta1() const noexcept { return b1_; }
    T beta2() const noexcept { return b2_; }
    T eps() const noexcept { return eps_; }
    T weight_decay() const noexcept { return wd_; }
    AdamEps eps_convention() const noexcept { return conv_; }

    void step() override {
        this->check_gradients();
        this->allocate_like_params(m_, T(0));
        this->allocate_like_params(v_, T(0));
        const double t = static_cast<double>(this->iterations_ + 1);
        const double b1 = static_cast<double>(b1_), b2 = static_cast<double>(b2_), lr = static_cast<double>(this->lr_);
        const double bc1 = 1.0 - std::pow(b1, t), bc2 = 1.0 - std::pow(b2, t);
        AdamArgs<T> a{};
        a.b1 = b1_;
        a.c1 = static_cast<T>(1.0 - b1);
        a.b2 = b2_;
        a.c2 = static_cast<T>(1.0 - b2);
        a.eps = eps_;
        if (conv_ == AdamEps::pytorch) {
            a.step = static_cast<T>(lr / bc1);
            a.sqrt_bc2 = static_cast<T>(std::sqrt(bc2));
        } else {
            a.step = static_cast<T>(lr * std::sqrt(bc2) / bc1);
            a.sqrt_bc2 = T(1);
        }
        const bool l2 = wd_ != T(0) && !decoupled_, dec = wd_ != T(0) && decoupled_;
        a.wd = wd_;
        a.decay = static_cast<T>(1.0 - lr * static_cast<double>(wd_));
        this->update_each(a, [&](std::size_t i) {
            a.m = m_[i].data();
            a.v = v_[i].data();
            if (l2) {
                simd::dispatch<adam_kernel<T, true, false>>(a);
            } else if (dec) {
                simd::dispatch<adam_kernel<T, false, true>>(a);
            } else {
                simd::dispatch<adam_kernel<T, false, false>>(a);
            }
        });
    }

    std::vector<std::pair<std::string, Tensor<T>*>> state() override {
        this->allocate_like_params(m_, T(0));
        this->allocate_like_params(v_, T(0));
        std::vector<std::pair<std::string, Tensor<T>*>> out;
        this->name_state(out, "exp_avg", m_);
        this->name_state(out, "exp_avg_sq", v_);
        return out;
    }

protected:
    AdamCore(std::vector<Parameter<T>*> params, T lr, T b1, T b2, T eps, T wd, AdamEps conv, bool decoupled, const char* kind)
        : Optimizer<T>(std::move(params), lr, kind), b1_(b1), b2_(b2), eps_(eps), wd_(wd), conv_(conv), decoupled_(decoupled) {
        check_hyper(kind, "beta1", static_cast<double>(b1), 0.0, false, 1.0, true);
        check_hyper(kind, "beta2", static_cast<double>(b2), 0.0, false, 1.0, true);
        check_hyper(kind, "eps", static_cast<double>(eps), 0.0, false, HUGE_VAL, true);
        check_hyper(kind, "weight_decay", static_cast<double>(wd), 0.0, false, HUGE_VAL, true);
    }

private:
    T b1_, b2_, eps_, wd_;
    AdamEps conv_;
    bool decoupled_;
    std::vector<Tensor<T>> m_, v_;
};
} // namespace detail

/// Adam (Kingma & Ba 2015). weight_decay adds weight_decay * p to the gradient before the
/// moments (L2, PyTorch's Adam); for decoupled decay use AdamW.
template <class T>
class Adam : public detail::AdamCore<T> {
public:
    explicit Adam(std::vector<Parameter<T>*> params, T lr = T(1e-3), T beta1 = T(0.9), T beta2 = T(0.999),
                  T eps = T(1e-8), AdamEps convention = AdamEps::pytorch, T weight_decay = T(0))
        : detail::AdamCore<T>(std::move(params), lr, beta1, beta2, eps, weight_decay, convention, false, "Adam") {}
    std::string name() const override { return "Adam"; }
};

/// AdamW (Loshchilov & Hutter 2019), PyTorch semantics: before the Adam update (with the
/// undecayed gradient) every parameter shrinks as p *= 1 - lr * weight_decay, with the current lr.
template <class T>
class AdamW : public detail::AdamCore<T> {
public:
    explicit AdamW(std::vector<Parameter<T>*> params, T lr = T(1e-3), T beta1 = T(0.9), T beta2 = T(0.999),
                   T eps = T(1e-8), T weight_decay = T(1e-2), AdamEps convention = AdamEps::pytorch)
        : detail::AdamCore<T>(std::move(params), lr, beta1, beta2, eps, weight_decay, convention, true, "AdamW") {}
    std::string name() const override { return "AdamW"; }
};

} // namespace optim
} // namespace tapir
// ---- end tapir/optim/adam.hpp ----
// ---- begin tapir/optim/clip.hpp ----
/// Gradient clipping over a parameter list: by global norm and by value. Both return the global
/// L2 norm of the gradients before clipping (for logging, and to skip steps on spikes).

#include <cmath>
#include <cstddef>
#include <string>
#include <vector>


namespace tapir {
namespace optim {

namespace detail {
/// Sum of squares of one gradient, safe against overflow: a scaled second pass if the fast one
/// overflows while every value is finite. Returns NaN or inf if the gradient holds either.
template <class T>
double sum_squares(const T* g, std::size_t n) {
    const double fast = static_cast<double>(simd::dot(g, g, n));
    if (std::isfinite(fast)) return fast;
    double amax = 0.0;
    for (std::size_t i = 0; i < n; ++i) {
        const double a = std::fabs(static_cast<double>(g[i]));
        if (!(a <= amax)) amax = a;  // NaN propagates
    }
    if (!std::isfinite(amax)) return amax;
    double s = 0.0;
    for (std::size_t i = 0; i < n; ++i) {
        const double q = static_cast<double>(g[i]) / amax;
        s += q * q;
    }
    return s * amax * amax;  // may be inf for T = double near the overflow threshold
}

template <class T>
[[noreturn]] void throw_nonfinite_grad(const char* fn, const Parameter<T>& p) {
    const T* g = p.grad.data();
    for (std::size_t k = 0; k < p.grad.size(); ++k) {
        if (g[k] - g[k] == T(0)) continue;
        throw value_error(std::string(fn) + ": the gradient of parameter '" + p.name + "' is " +
                          (g[k] != g[k] ? "NaN" : (g[k] > T(0) ? "+inf" : "-inf")) + " at element " + std::to_string(k) +
                          "; the gradient norm is not finite");
    }
    throw value_error(std::string(fn) + ": the gradient norm overflows (parameter '" + p.name + "')");
}

/// Global norm over the trainable parameters; throws naming the first non-finite gradient if asked.
template <class T>
double global_norm_checked(const std::vector<Parameter<T>*>& params, const char* fn, bool error_if_nonfinite) {
    double total = 0.0;
    for (const Parameter<T>* p : params) {
        if (p == nullptr) throw value_error(std::string(fn) + ": null parameter pointer");
        if (!p->requires_grad) continue;
        const double s = sum_squares(p->grad.data(), p->grad.size());
        if (!std::isfinite(s) && error_if_nonfinite) throw_nonfinite_grad(fn, *p);
        total += s;
    }
    return std::sqrt(total);
}
} // namespace detail

/// sqrt(sum of squares of every trainable parameter's gradient), accumulated in double.
template <class T>
T grad_norm(const std::vector<Parameter<T>*>& params) {
    return static_cast<T>(detail::global_norm_checked(params, "grad_norm", false));
}

/// Scales all gradients by max_norm / norm when their global norm exceeds max_norm, so the
/// clipped norm is max_norm (tf.clip_by_global_norm; PyTorch's clip_grad_norm_ divides by
/// norm + 1e-6). Returns the norm before clipping. A NaN or infinite gradient throws value_error
/// naming it (error_if_nonfinite, the default) or, if not, leaves every gradient untouched and
/// returns the non-finite norm so that the caller can skip the step.
template <class T>
T clip_grad_norm(const std::vector<Parameter<T>*>& params, T max_norm, bool error_if_nonfinite = true) {
    detail::check_hyper("clip_grad_norm", "max_norm", static_cast<double>(max_norm), 0.0, true, HUGE_VAL, true);
    const double norm = detail::global_norm_checked(params, "clip_grad_norm", error_if_nonfinite);
    if (!std::isfinite(norm) || !(norm > static_cast<double>(max_norm))) return static_cast<T>(norm);
    const T scale = static_cast<T>(static_cast<double>(max_norm) / norm);
    for (Parameter<T>* p : params) {
        if (!p->requires_grad) continue;
        simd::mul_scalar(p->grad.data(), scale, p->grad.data(), p->grad.size());
    }
    return static_cast<T>(norm);
}

/// Clamps every gradient element to [-clip_value, clip_value] (Keras clipvalue, PyTorch
/// clip_grad_value_). Returns the global norm before clipping; non-finite gradients as above.
template <class T>
T clip_grad_value(const std::vector<Parameter<T>*>& params, T clip_value, bool error_if_nonfinite = true) {
    detail::check_hyper("clip_grad_value", "clip_value", static_cast<double>(clip_value), 0.0, true, HUGE_VAL, true);
    const double norm = detail::global_norm_checked(params, "clip_grad_value", error_if_nonfinite);
    if (!std::isfinite(norm)) return static_cast<T>(norm);
    for (Parameter<T>* p : params) {
        if (!p->requires_grad) continue;
        simd::dispatch<detail::clamp_kernel<T>>(typename detail::clamp_kernel<T>::Args{p->grad.data(), p->grad.size(), clip_value});
    }
    return static_cast<T>(norm);
}

} // namespace optim
} // namespace tapir
// ---- end tapir/optim/clip.hpp ----
// ---- begin tapir/optim/model_file.hpp ----
/// An optimiser's state in a model file, written and read by the optimiser's side: the state
/// goes to io/ as a plain io::OptimizerState (io/ knows no optimiser), and what the file holds
/// comes back into the optimiser only after io has validated the whole file.
///
///     optim::save_model("run.tpr", model.named_parameters(), &adam);  // or unqualified: found
///     optim::load_model("run.tpr", model.named_parameters(), &adam);  // by argument lookup
///
/// The functions mirror io's (save_model, save_model_to_string/_bytes, load_model,
/// load_model_from_string/_bytes); a null optimiser saves or loads the parameters only.

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>


namespace tapir {
namespace optim {

/// The optimiser's section as io writes it: name, iteration count, (scheduled) learning rate and
/// the named state tensors (allocated on first use, so a fresh optimiser can receive a state).
template <class T>
io::OptimizerState<T> file_state(Optimizer<T>& opt) {
    io::OptimizerState<T> s;
    s.name = opt.name();
    s.iterations = opt.iterations();
    s.learning_rate = static_cast<double>(opt.learning_rate());
    s.tensors = opt.state();
    return s;
}

namespace detail {
/// After io has filled the tensors: the iteration count and learning rate (validated by io).
template <class T>
void apply_file_state(Optimizer<T>& opt, const io::OptimizerState<T>& s) {
    opt.set_iterations(static_cast<std::size_t>(s.iterations));
    opt.set_scheduled_learning_rate(static_cast<T>(s.learning_rate));
}

template <class T, class Load>
void load_with(Optimizer<T>* opt, const Load& load) {
    if (!opt) {
        load(static_cast<io::OptimizerState<T>*>(nullptr));
        return;
    }
    io::OptimizerState<T> s = file_state(*opt);
    load(&s);
    apply_file_state(*opt, s);
}
} // namespace detail

template <class T>
std::string save_model_to_string(const io::NamedParameters<T>& params, Optimizer<T>* optimizer) {
    if (!optimizer) return io::save_model_to_string(params);
    const io::OptimizerState<T> s = file_state(*optimizer);
    return io::save_model_to_string(params, &s);
}
template <class T>
std::vector<std::uint8_t> save_model_to_bytes(const io::NamedParameters<T>& params, Optimizer<T>* optimizer) {
    if (!optimizer) return io::save_model_to_bytes(params);
    const io::OptimizerState<T> s = file_state(*optimizer);
    return io::save_model_to_bytes(params, &s);
}
/// The parameters and the optimiser's name, iteration count, learning rate and state, written
/// atomically (io::save_model).
template <class T>
void save_model(const std::string& path, const io::NamedParameters<T>& params, Optimizer<T>* optimizer) {
    if (!optimizer) return io::save_model(path, params);
    const io::OptimizerState<T> s = file_state(*optimizer);
    io::save_model(path, params, &s);
}

/// Loads parameters and optimiser state; all or nothing, as io::load_model.
template <class T>
void load_model_from_bytes(const void* data, std::size_t size, const io::NamedParameters<T>& params, Optimizer<T>* optimizer,
                           const std::string& source = "<memory>") {
    detail::load_with(optimizer, [&](io::OptimizerState<T>* s) { io::load_model_from_bytes(data, size, params, s, source); });
}
template <class T>
void load_model_from_bytes(const std::vector<std::uint8_t>& data, const io::NamedParameters<T>& params, Optimizer<T>* optimizer,
                           const std::string& source = "<memory>") {
    detail::load_with(optimizer, [&](io::OptimizerState<T>* s) { io::load_model_from_bytes(data, params, s, source); });
}
template <class T>
void load_model_from_string(const std::string& data, const io::NamedParameters<T>& params, Optimizer<T>* optimizer,
                            const std::string& source = "<memory>") {
    detail::load_with(optimizer, [&](io::OptimizerState<T>* s) { io::load_model_from_string(data, params, s, source); });
}
template <class T>
void load_model(const std::string& path, const io::NamedParameters<T>& params, Optimizer<T>* optimizer) {
    detail::load_with(optimizer, [&](io::OptimizerState<T>* s) { io::load_model(path, params, s); });
}

} // namespace optim
} // namespace tapir
// ---- end tapir/optim/model_file.hpp ----
// ---- begin tapir/optim/optim.hpp ----
/// Every optimiser, schedule and gradient helper, and saving an optimiser's state in model files.

// ---- begin tapir/optim/regularization.hpp ----
/// L1 and L2 regularisation, Keras conventions: the L1 term is lambda * sum |w|, the L2 term
/// lambda * sum w^2 (tf.keras.regularizers.l1 / l2). Either add the term to the loss on the tape
/// (l1_loss, l2_loss) or add its gradient after backward() (add_l1_gradient, add_l2_gradient);
/// the penalty values (l1_penalty, l2_penalty) are for logging.
///
/// Note: an optimiser's weight_decay wd adds wd * w to the gradient, the gradient of
/// (wd / 2) sum w^2; it equals add_l2_gradient with lambda = wd / 2.

#include <cmath>
#include <cstddef>
#include <string>
#include <vector>


namespace tapir {
namespace optim {

namespace detail {
template <class T>
void check_reg(const std::vector<Parameter<T>*>& params, const char* fn, T lambda) {
    check_hyper(fn, "lambda", static_cast<double>(lambda), 0.0, false, HUGE_VAL, true);
    for (std::size_t i = 0; i < params.size(); ++i)
        if (params[i] == nullptr) throw value_error(std::string(fn) + ": parameter #" + std::to_string(i) + " is a null pointer");
}
template <class T>
void check_grad_shape(const Parameter<T>& p, const char* fn) {
    if (p.grad.shape() != p.value.shape())
        throw shape_error(std::string(fn) + ": parameter '" + p.name + "' has a gradient of shape " + p.grad.shape().str() +
                          " but a value of shape " + p.value.shape().str());
}
/// Checks lambda and every trainable gradient's shape first (a failing call changes nothing),
/// then applies f to each trainable parameter.
template <class T, class F>
void for_each_trainable(const std::vector<Parameter<T>*>& params, const char* fn, T lambda, F f) {
    check_reg(params, fn, lambda);
    for (const Parameter<T>* p : params) if (p->requires_grad) check_grad_shape(*p, fn);
    for (Parameter<T>* p : params)
        if (p->requires_grad) f(*p);
}
/// lambda * sum over the parameters of sum(term(w)), recorded on the tape.
template <class T, class F>
Var<T> penalty_on_tape(Tape<T>& tape, const std::vector<Parameter<T>*>& params, T lambda, const char* fn, F term) {
    check_reg(params, fn, lambda);
    Var<T> total = tape.scalar(T(0));
    for (Parameter<T>* p : params) total = tapir::add(total, tapir::sum(term(tape.param(*p))));
    return tapir::scale(total, lambda);
}
} // namespace detail

/// lambda * sum |w| over the parameters' values.
template <class T>
T l1_penalty(const std::vector<Parameter<T>*>& params, T lambda) {
    detail::check_reg(params, "l1_penalty", lambda);
    double s = 0.0;
    for (const Parameter<T>* p : params) s += static_cast<double>(simd::dispatch<detail::abs_sum_kernel<T>>(p->value.data(), p->value.size()));
    return static_cast<T>(static_cast<double>(lambda) * s);
}

/// lambda * sum w^2 over the parameters' values.
template <class T>
T l2_penalty(const std::vector<Parameter<T>*>& params, T lambda) {
    detail::check_reg(params, "l2_penalty", lambda);
    double s = 0.0;
    for (const Parameter<T>* p : params) s += static_cast<double>(simd::dot(p->value.data(), p->value.data(), p->value.size()));
    return static_cast<T>(static_cast<double>(lambda) * s);
}

/// grad += lambda * sign(w) for every trainable parameter (sign(0) = 0: the subgradient that
/// leaves exact zeros alone).
template <class T>
void add_l1_gradient(const std::vector<Parameter<T>*>& params, T lambda) {
    detail::for_each_trainable(params, "add_l1_gradient", lambda, [lambda](Parameter<T>& p) {
        simd::dispatch<detail::l1_grad_kernel<T>>(
            typename detail::l1_grad_kernel<T>::Args{p.value.data(), p.grad.data(), p.value.size(), lambda});
    });
}

/// grad += 2 lambda w for every trainable parameter.
template <class T>
void add_l2_gradient(const std::vector<Parameter<T>*>& params, T lambda) {
    detail::for_each_trainable(params, "add_l2_gradient", lambda, [lambda](Parameter<T>& p) {
        simd::axpy(T(2) * lambda, p.value.data(), p.grad.data(), p.value.size());
    });
}

/// lambda * sum |w| recorded on the tape (add it to the loss before backward()).
template <class T>
Var<T> l1_loss(Tape<T>& tape, const std::vector<Parameter<T>*>& params, T lambda) {
    return detail::penalty_on_tape(tape, params, lambda, "l1_loss", [](const Var<T>& w) { return tapir::abs(w); });
}

/// lambda * sum w^2 recorded on the tape.
template <class T>
Var<T> l2_loss(Tape<T>& tape, const std::vector<Parameter<T>*>& params, T lambda) {
    return detail::penalty_on_tape(tape, params, lambda, "l2_loss", [](const Var<T>& w) { return tapir::square(w); });
}

} // namespace optim
} // namespace tapir
// ---- end tapir/optim/regularization.hpp ----
// ---- begin tapir/optim/rmsprop.hpp ----
/// RMSprop (Tieleman and Hinton 2012; the centered variant of Graves, arXiv 1308.0850), PyTorch
/// torch.optim.RMSprop semantics: optional momentum, centered variant, L2 weight decay.

#include <cmath>
#include <cstddef>
#include <string>
#include <utility>
#include <vector>


namespace tapir {
namespace optim {

/// Per step, for every parameter p with gradient g:
///   d = g + weight_decay * p
///   sq = alpha * sq + (1 - alpha) * d^2
///   centered:  ga = alpha * ga + (1 - alpha) * d;  avg = sqrt(sq - ga^2) + eps
///   otherwise: avg = sqrt(sq) + eps
///   momentum > 0: buf = momentum * buf + d / avg;  p -= lr * buf
///   otherwise:    p -= lr * d / avg
/// Epsilon is added outside the square root (PyTorch; Keras adds it the same way since TF 2).
/// State starts at zero. In the centered form sq - ga^2 is clamped at 0 against rounding.
template <class T>
class RMSprop : public Optimizer<T> {
public:
    explicit RMSprop(std::vector<Parameter<T>*> params, T lr = T(1e-2), T alpha = T(0.99), T eps = T(1e-8),
                     T weight_decay = T(0), T momentum = T(0), bool centered = false)
        : Optimizer<T>(std::move(params), lr, "RMSprop"), alpha_(alpha), eps_(eps), wd_(weight_decay), mu_(momentum),
          centered_(centered) {
        detail::check_hyper("RMSprop", "alpha", static_cast<double>(alpha), 0.0, false, 1.0, false);
        detail::check_hyper("RMSprop", "eps", static_cast<double>(eps), 0.0, false, HUGE_VAL, true);
        detail::check_hyper("RMSprop", "weight_decay", static_cast<double>(weight_decay), 0.0, false, HUGE_VAL, true);
        detail::check_hyper("RMSprop", "momentum", static_cast<double>(momentum), 0.0, false, 1.0, false);
    }

    std::string name() const override { return "RMSprop"; }
    T alpha() const noexcept { return alpha_; }
    T eps() const noexcept { return eps_; }
    T weight_decay() const noexcept { return wd_; }
    T momentum() const noexcept { return mu_; }
    bool centered() const noexcept { return centered_; }

    void step() override {
        this->check_gradients();
        allocate();
        const bool mom = mu_ != T(0);
        detail::RmspropArgs<T> a{};
        a.lr = this->lr_;
        a.alpha = alpha_;
        a.c_alpha = static_cast<T>(1.0 - static_cast<double>(alpha_));
        a.eps = eps_;
        a.wd = wd_;
        a.mu = mu_;
        this->update_each(a, [&](std::size_t i) {
            a.sq = sq_[i].data();
            a.gavg = centered_ ? gavg_[i].data() : nullptr;
            a.buf = mom ? buf_[i].data() : nullptr;
            run(a, mom);
        });
    }

    std::vector<std::pair<std::string, Tensor<T>*>> state() override {
        allocate();
        std::vector<std::pair<std::string, Tensor<T>*>> out;
        this->name_state(out, "square_avg", sq_);
        if (centered_) this->name_state(out, "grad_avg", gavg_);
        if (mu_ != T(0)) this->name_state(out, "momentum_buffer", buf_);
        return out;
    }

private:
    void allocate() {
        this->allocate_like_params(sq_, T(0));
        if (centered_) this->allocate_like_params(gavg_, T(0));
        if (mu_ != T(0)) this->allocate_like_params(buf_, T(0));
    }
    template <bool W, bool C, bool M>
    static void go(const detail::RmspropArgs<T>& a) {
        simd::dispatch<detail::rmsprop_kernel<T, W, C, M>>(a);
    }
    template <bool W>
    void run_wd(const detail::RmspropArgs<T>& a, bool mom) const {
        if (centered_) return mom ? go<W, true, true>(a) : go<W, true, false>(a);
        return mom ? go<W, false, true>(a) : go<W, false, false>(a);
    }
    void run(const detail::RmspropArgs<T>& a, bool mom) const {
        if (wd_ != T(0)) return run_wd<true>(a, mom);
        return run_wd<false>(a, mom);
    }

    T alpha_, eps_, wd_, mu_;
    bool centered_;
    std::vector<Tensor<T>> sq_, gavg_, buf_;
};

} // namespace optim
} // namespace tapir
// ---- end tapir/optim/rmsprop.hpp ----
// ---- begin tapir/optim/schedule.hpp ----
/// Learning-rate schedules: objects that set an optimiser's learning rate from a step count.
///
/// A schedule remembers the optimiser's learning rate at construction as the base rate and keeps
/// its own count t (0 at construction). Each call of step() advances t and sets
/// lr = lr_at(t). Call it after every optimiser step for per-iteration schedules, or once per
/// epoch for per-epoch ones: the schedule does not care which.
///
///   Keras' legacy `decay` (lr / (1 + decay * iterations); lr 1e-3, decay 3e-4 here):
///       Adam<float> opt(params, 1e-3f);  InverseTimeLR<float> sched(opt, 3e-4);
///       for (...) { ...; opt.step(); sched.step(); }   // update k (k = 0, 1, ...) uses lr / (1 + decay k)

#include <cmath>
#include <cstddef>
#include <string>


namespace tapir {
namespace optim {

template <class T>
class LRSchedule {
public:
    virtual ~LRSchedule() = default;
    LRSchedule(const LRSchedule&) = delete;
    LRSchedule& operator=(const LRSchedule&) = delete;

    /// The learning rate after t schedule steps (lr_at(0) is the base rate).
    T lr_at(std::size_t t) const { return static_cast<T>(rate(static_cast<double>(base_), t)); }
    /// Advances the count and sets the optimiser's learning rate.
    void step() {
        ++count_;
        opt_.set_scheduled_learning_rate(lr_at(count_));
    }
    std::size_t count() const noexcept { return count_; }
    /// Resumes at count t (e.g. opt.iterations() after loading a per-step run) and sets lr_at(t).
    void set_count(std::size_t t) {
        opt_.set_scheduled_learning_rate(lr_at(t));
        count_ = t;
    }
    T base_lr() const noexcept { return base_; }
    virtual std::string name() const = 0;

protected:
    explicit LRSchedule(Optimizer<T>& opt) : opt_(opt), base_(opt.learning_rate()) {}
    /// The rate after t steps from base rate `base`.
    virtual double rate(double base, std::size_t t) const = 0;

private:
    Optimizer<T>& opt_;
    T base_;
    std::size_t count_ = 0;
};

/// lr = base * gamma^floor(t / step_size) (PyTorch StepLR).
template <class T>
class StepLR : public LRSchedule<T> {
public:
    StepLR(Optimizer<T>& opt, std::size_t step_size, double gamma = 0.1) : LRSchedule<T>(opt), step_size_(step_size), gamma_(gamma) {
        if (step_size == 0) throw value_error("StepLR: step_size must be at least 1, got 0");
        detail::check_hyper("StepLR", "gamma", gamma, 0.0, true, HUGE_VAL, true);
    }
    std::string name() const override { return "StepLR"; }

protected:
    double rate(double base, std::size_t t) const override {
        return base * std::pow(gamma_, static_cast<double>(t / step_size_));
    }

private:
    std::size_t step_size_;
    double gamma_;
};

/// lr = base * gamma^t (PyTorch ExponentialLR; Keras ExponentialDecay with decay_steps = 1).
template <class T>
class ExponentialLR : public LRSchedule<T> {
public:
    ExponentialLR(Optimizer<T>& opt, double gamma) : LRSchedule<T>(opt), gamma_(gamma) {
        detail::check_hyper("ExponentialLR", "gamma", gamma, 0.0, true, HUGE_VAL, true);
    }
    std::string name() const override { return "ExponentialLR"; }

protected:
    double rate(double base, std::size_t t) const override { return base * std::pow(gamma_, static_cast<double>(t)); }

private:
    double gamma_;
};

/// lr = min_lr + (base - min_lr) * (1 + cos(pi * min(t, t_max) / t_max)) / 2: half a cosine from
/// base to min_lr over t_max steps, then min_lr (PyTorch CosineAnnealingLR's closed form up to
/// t_max; Keras CosineDecay with alpha = min_lr / base). min_lr = 0 is allowed here.
template <class T>
class CosineAnnealingLR : public LRSchedule<T> {
public:
    CosineAnnealingLR(Optimizer<T>& opt, std::size_t t_max, double min_lr = 0.0) : LRSchedule<T>(opt), t_max_(t_max), min_(min_lr) {
        if (t_max == 0) throw value_error("CosineAnnealingLR: t_max must be at least 1, got 0");
        detail::check_hyper("CosineAnnealingLR", "min_lr", min_lr, 0.0, false, static_cast<double>(opt.learning_rate()), false);
    }
    std::string name() const override { return "CosineAnnealingLR"; }

protected:
    double rate(double base, std::size_t t) const override {
        const double pi = 3.14159265358979323846;
        const double x = static_cast<double>(t < t_max_ ? t : t_max_) / static_cast<double>(t_max_);
        return min_ + (base - min_) * 0.5 * (1.0 + std::cos(pi * x));
    }

private:
    std::size_t t_max_;
    double min_;
};

/// lr = base / (1 + decay * t) (Keras' legacy `decay` argument; Keras InverseTimeDecay with
/// decay_steps = 1, staircase off).
template <class T>
class InverseTimeLR : public LRSchedule<T> {
public:
    InverseTimeLR(Optimizer<T>& opt, double decay) : LRSchedule<T>(opt), decay_(decay) {
        detail::check_hyper("InverseTimeLR", "decay", decay, 0.0, false, HUGE_VAL, true);
    }
    std::string name() const override { return "InverseTimeLR"; }

protected:
    double rate(double base, std::size_t t) const override { return base / (1.0 + decay_ * static_cast<double>(t)); }

private:
    double decay_;
};

} // namespace optim
} // namespace tapir
// ---- end tapir/optim/schedule.hpp ----
// ---- begin tapir/optim/sgd.hpp ----
/// Stochastic gradient descent with momentum, Nesterov momentum and L2 weight decay (PyTorch
/// torch.optim.SGD semantics).

#include <cmath>
#include <cstddef>
#include <string>
#include <utility>
#include <vector>


namespace tapir {
namespace optim {

/// Per step, for every parameter p with gradient g (PyTorch's update rule):
///   d = g + weight_decay * p
///   if momentum != 0:  buf = d on the first step, else buf = momentum * buf + (1 - dampening) * d
///                      d = nesterov ? d + momentum * buf : buf
///   p -= lr * d
/// The momentum buffers are allocated at the first step (or by state()) and never again.
template <class T>
class SGD : public Optimizer<T> {
public:
    SGD(std::vector<Parameter<T>*> params, T lr, T momentum = T(0), T dampening = T(0), T weight_decay = T(0),
        bool nesterov = false)
        : Optimizer<T>(std::move(params), lr, "SGD"), momentum_(momentum), dampening_(dampening),
          weight_decay_(weight_decay), nesterov_(nesterov) {
        detail::check_hyper("SGD", "momentum", static_cast<double>(momentum), 0.0, false, 1.0, false);
        detail::check_hyper("SGD", "dampening", static_cast<double>(dampening), 0.0, false, 1.0, false);
        detail::check_hyper("SGD", "weight_decay", static_cast<double>(weight_decay), 0.0, false, HUGE_VAL, true);
        if (nesterov && (momentum <= T(0) || dampening != T(0)))
            throw value_error("SGD: Nesterov momentum requires momentum > 0 and dampening = 0, got momentum " +
                              detail::fmt_number(static_cast<double>(momentum)) + " and dampening " +
                              detail::fmt_number(static_cast<double>(dampening)));
    }

    std::string name() const override { return "SGD"; }
    T momentum() const noexcept { return momentum_; }
    T dampening() const noexcept { return dampening_; }
    T weight_decay() const noexcept { return weight_decay_; }
    bool nesterov() const noexcept { return nesterov_; }

    void step() override {
        this->check_gradients();
        const bool mom = momentum_ != T(0);
        if (mom) this->allocate_like_params(buf_, T(0));
        const bool first = this->iterations_ == 0;
        detail::SgdArgs<T> a{};
        a.lr = this->lr_;
        a.wd = weight_decay_;
        a.mu = momentum_;
        a.mu_buf = first ? T(0) : momentum_;  // first step: buf = d exactly (0 * 0 + 1 * d)
        a.c_grad = first ? T(1) : T(1) - dampening_;
        this->update_each(a, [&](std::size_t i) {
            a.buf = mom ? buf_[i].data() : nullptr;
            run(a, mom);
        });
    }

    std::vector<std::pair<std::string, Tensor<T>*>> state() override {
        std::vector<std::pair<std::string, Tensor<T>*>> out;
        if (momentum_ == T(0)) return out;
        this->allocate_like_params(buf_, T(0));
        this->name_state(out, "momentum_buffer", buf_);
        return out;
    }

private:
    template <bool Wd, bool M, bool N>
    static void go(const detail::SgdArgs<T>& a) {
        simd::dispatch<detail::sgd_kernel<T, Wd, M, N>>(a);
    }
    void run(const detail::SgdArgs<T>& a, bool mom) const {
        const bool wd = weight_decay_ != T(0);
        if (!mom) return wd ? go<true, false, false>(a) : go<false, false, false>(a);
        if (nesterov_) return wd ? go<true, true, true>(a) : go<false, true, true>(a);
        return wd ? go<true, true, false>(a) : go<false, true, false>(a);
    }

    T momentum_, dampening_, weight_decay_;
    bool nesterov_;
    std::vector<Tensor<T>> buf_;
};

} // namespace optim
} // namespace tapir
// ---- end tapir/optim/sgd.hpp ----
// ---- end tapir/optim/optim.hpp ----
// ---- begin tapir/loss/disco.hpp ----
/// Distance correlation decorrelation (DisCo: Kasieczka & Shih, arXiv 2001.05310).
///
/// dCorr^2 is zero exactly when two variables are independent, so the penalty
/// lambda dCorr^2(m, score) on background events keeps a classifier from sculpting the mass.
/// O(N^2) per batch in time and memory: the N x N distance matrices are built with
/// broadcasting, (N, 1) - (1, N).

#include <cmath>
#include <cstddef>
#include <limits>
#include <string>
#include <vector>


namespace tapir {
namespace loss {
namespace detail {

/// Double-centred distance matrix A_ij = a_ij - abar_i - abar_j + (1/N) sum_i abar_i w_i with
/// a_ij = |x_i - x_j| and abar_i = (1/N) sum_j a_ij w_j (weights normalised to sum N).
/// |x_i - x_i| = 0 has gradient 0 (sign(0) = 0), which is its correct one-sided average.
template <class T>
Var<T> dcenter(const Var<T>& x, std::size_t n, const Var<T>* wr, const Var<T>* wc) {
    const Var<T> a = abs(sub(reshape(x, Shape{n, 1}), reshape(x, Shape{1, n})));
    const T inv_n = T(1) / static_cast<T>(n);
    const Var<T> abar = scale(sum(wr ? mul(a, *wr) : a, 1, true), inv_n);  // (n, 1)
    const Var<T> grand = scale(sum(wc ? mul(abar, *wc) : abar), inv_n);    // ()
    return add(sub(sub(a, abar), reshape(abar, Shape{1, n})), grand);
}

/// dCov^2(A, B) = (1/N^2) sum_ij w_i w_j A_ij B_ij.
template <class T>
Var<T> dcov2(const Var<T>& a, const Var<T>& b, std::size_t n, const Var<T>* wm) {
    const Var<T> ab = mul(a, b);
    return scale(sum(wm ? mul(ab, *wm) : ab), T(1) / (static_cast<T>(n) * static_cast<T>(n)));
}

} // namespace detail

/// Squared distance correlation of two per-event variables (Szekely, Rizzo, Bakirov, Ann. Statist. 35 (2007) 2769):
///   dCorr^2(x, y) = dCov^2(x, y) / sqrt(dCov^2(x, x) dCov^2(y, y)),
/// weighted as in the DisCo reference code: weights normalised so that sum w = N. x and y hold
/// one value per event ((N,) or (N, 1)); N >= 2. dCorr^2(x, x) = 1; x = [-2..2], y = x^2 gives
/// 0.266177. The product under the square root is floored at the smallest normal number, so a
/// constant variable gives 0 rather than NaN (negative weights can make dCov^2 negative: the
/// same floor applies).
template <class T>
Var<T> distance_correlation_sq(const Var<T>& x, const Var<T>& y, detail::weights_t<T> weights = nullptr) {
    const char* fn = "distance_correlation_sq";
    const Var<T> xv = detail::per_event_column(x, fn, "x");
    const Var<T> yv = detail::per_event_column(y, fn, "y");
    const std::size_t n = xv.size();
    if (yv.size() != n)
        throw shape_error(std::string(fn) + ": x of shape " + x.shape().str() + " and y of shape " + y.shape().str() +
                          " differ in the number of events");
    if (n < 2) throw shape_error(std::string(fn) + ": needs at least 2 events, got " + std::to_string(n));
    Tape<T>& t = xv.tape();
    Var<T> wr, wc, wm;
    if (weights) {
        const Var<T> w = detail::event_weights(*weights, n, fn);
        const double total = detail::weight_total(w, fn);
        Tensor<T> wn(Shape{n}), wmat(Shape{n, n});
        for (std::size_t i = 0; i < n; ++i) wn[i] = static_cast<T>(static_cast<double>(w[i]) * static_cast<double>(n) / total);
        for (std::size_t i = 0; i < n; ++i)
            for (std::size_t j = 0; j < n; ++j) wmat(i, j) = wn[i] * wn[j];
        wr = reshape(t.constant(wn), Shape{1, n});
        wc = reshape(wr, Shape{n, 1});
        wm = t.constant(wmat);
    }
    const Var<T>* pr = weights ? &wr : nullptr;
    const Var<T>* pc = weights ? &wc : nullptr;
    const Var<T>* pm = weights ? &wm : nullptr;
    const Var<T> a = detail::dcenter(xv, n, pr, pc);
    const Var<T> b = detail::dcenter(yv, n, pr, pc);
    const Var<T> xy = detail::dcov2(a, b, n, pm);
    const Var<T> xx = detail::dcov2(a, a, n, pm);
    const Var<T> yy = detail::dcov2(b, b, n, pm);
    return div(xy, sqrt(clamp(mul(xx, yy), std::numeric_limits<T>::min(), std::numeric_limits<T>::max())));
}

/// DisCo penalty lambda dCorr^2(m, score) over the background events (label 0) of the batch;
/// `labels` are 0/1 constants, `weights` optional per-event weights of the whole batch.
/// Needs at least two background events.
template <class T>
Var<T> disco_penalty(const Var<T>& mass, const Var<T>& score, const Var<T>& labels, detail::scalar_t<T> lambda,
                     detail::weights_t<T> weights = nullptr) {
    const char* fn = "disco_penalty";
    const Var<T> m = detail::per_event_column(mass, fn, "mass");
    const Var<T> f = detail::per_event_column(score, fn, "score");
    const std::size_t n = m.size();
    if (f.size() != n || labels.size() != n)
        throw shape_error(std::string(fn) + ": mass " + mass.shape().str() + ", score " + score.shape().str() + " and labels " +
                          labels.shape().str() + " must hold the same number of events");
    detail::check_finite_param(fn, "lambda", static_cast<double>(lambda));
    std::vector<std::size_t> bkg;
    for (std::size_t i = 0; i < n; ++i) {
        if (!(labels[i] == T(0) || labels[i] == T(1)))
            throw value_error(std::string(fn) + ": label of event " + std::to_string(i) + " is " + std::to_string(labels[i]) +
                              ", expected 0 or 1");
        if (labels[i] == T(0)) bkg.push_back(i);
    }
    if (bkg.size() < 2)
        throw value_error(std::string(fn) + ": the batch has " + std::to_string(bkg.size()) + " background events; at least 2 are needed");
    const Var<T> mb = gather_rows(m, bkg);
    const Var<T> fb = gather_rows(f, bkg);
    if (!weights) return scale(distance_correlation_sq(mb, fb), lambda);
    const Var<T> w = detail::event_weights(*weights, n, fn);
    const Var<T> wb = gather_rows(w, bkg);
    return scale(distance_correlation_sq(mb, fb, &wb), lambda);
}

/// The DisCo training loss: BCE(logits, labels) + lambda dCorr^2(m, sigmoid(logits)) on background.
template <class T>
Var<T> disco_loss(const Var<T>& logits, const Var<T>& labels, const Var<T>& mass, detail::scalar_t<T> lambda,
                  detail::weights_t<T> weights = nullptr) {
    return add(binary_cross_entropy_with_logits(logits, labels, weights), disco_penalty(mass, sigmoid(logits), labels, lambda, weights));
}

} // namespace loss
} // namespace tapir
// ---- end tapir/loss/disco.hpp ----
// ---- begin tapir/loss/gan.hpp ----
/// Adversarial generative losses: the original GAN (from logits) and the Wasserstein GAN with
/// gradient penalty.
///
/// GAN losses take discriminator logits t, D = sigmoid(t), and use log D = -softplus(-t),
/// log(1 - D) = -softplus(t), so they are finite for any logit (Goodfellow et al., arXiv 1406.2661).

#include <cmath>
#include <cstddef>
#include <string>
#include <type_traits>
#include <utility>


namespace tapir {
namespace loss {

// ---- GAN (Goodfellow et al. 2014, arXiv 1406.2661) ------------------------------------------

/// Discriminator loss, the negative of the GAN value function:
///   L_D = -E_x[log D(x)] - E_z[log(1 - D(G(z)))] = <softplus(-t_real)> + <softplus(t_fake)>,
/// with each expectation a (weighted) mean over its own batch.
template <class T>
Var<T> gan_discriminator_loss(const Var<T>& real_logits, const Var<T>& fake_logits, detail::weights_t<T> real_weights = nullptr,
                              detail::weights_t<T> fake_weights = nullptr) {
    const char* fn = "gan_discriminator_loss";
    const Var<T> r = detail::per_event_column(real_logits, fn, "real logits");
    const Var<T> f = detail::per_event_column(fake_logits, fn, "fake logits");
    return add(detail::weighted_mean(softplus(neg(r)), real_weights, fn), detail::weighted_mean(softplus(f), fake_weights, fn));
}

/// Minimax generator loss (minimised by G): L_G = E_z[log(1 - D(G(z)))] = -<softplus(t_fake)>.
/// Saturates when D rejects the fakes confidently; see the non-saturating form.
template <class T>
Var<T> gan_generator_loss_minimax(const Var<T>& fake_logits, detail::weights_t<T> weights = nullptr) {
    const char* fn = "gan_generator_loss_minimax";
    const Var<T> f = detail::per_event_column(fake_logits, fn, "fake logits");
    return neg(detail::weighted_mean(softplus(f), weights, fn));
}

/// Non-saturating generator loss: L_G = -E_z[log D(G(z))] = <softplus(-t_fake)>.
template <class T>
Var<T> gan_generator_loss_nonsaturating(const Var<T>& fake_logits, detail::weights_t<T> weights = nullptr) {
    const char* fn = "gan_generator_loss_nonsaturating";
    const Var<T> f = detail::per_event_column(fake_logits, fn, "fake logits");
    return detail::weighted_mean(softplus(neg(f)), weights, fn);
}

// ---- Wasserstein GAN (arXiv 1701.07875, 1704.00028) ---------------------------------------------

/// Critic loss (minimised by the critic): L_C = <D(fake)> - <D(real)> on raw critic scores.
/// Add gradient_penalty() for WGAN-GP.
template <class T>
Var<T> wgan_critic_loss(const Var<T>& real_scores, const Var<T>& fake_scores, detail::weights_t<T> real_weights = nullptr,
                        detail::weights_t<T> fake_weights = nullptr) {
    const char* fn = "wgan_critic_loss";
    const Var<T> r = detail::per_event_column(real_scores, fn, "real scores");
    const Var<T> f = detail::per_event_column(fake_scores, fn, "fake scores");
    return sub(detail::weighted_mean(f, fake_weights, fn), detail::weighted_mean(r, real_weights, fn));
}

/// Generator loss: L_G = -<D(G(z))>.
template <class T>
Var<T> wgan_generator_loss(const Var<T>& fake_scores, detail::weights_t<T> weights = nullptr) {
    const char* fn = "wgan_generator_loss";
    return neg(detail::weighted_mean(detail::per_event_column(fake_scores, fn, "fake scores"), weights, fn));
}

/// Gradient penalty at given points xhat (a variable on the tape, shape (N, ...)):
///   lambda * mean_i (||grad_x D(xhat_i)||_2 - 1)^2   (one-sided: relu(||g|| - 1)^2),
/// with the per-event gradients from grad(sum D(xhat), xhat, create_graph = true), so the result
/// is differentiable in the critic's weights (double backprop). The norm is
/// sqrt(sum g^2 + 1e-12): the epsilon keeps the derivative of sqrt finite at a zero gradient
/// and shifts the norm by at most 1e-6.
template <class T, class Critic>
Var<T> gradient_penalty_at(Critic&& critic, const Var<T>& xhat, detail::scalar_t<T> lambda = T(10), bool one_sided = false) {
    const char* fn = "gradient_penalty";
    const std::size_t n = detail::batch_size(xhat, fn, "interpolates");
    if (!xhat.requires_grad())
        throw tape_error(std::string(fn) + ": the interpolates must be a tape.variable (gradient recording is off?)");
    detail::check_finite_param(fn, "lambda", static_cast<double>(lambda));
    const Var<T> d = critic(xhat);
    if (d.size() != n)
        throw shape_error(std::string(fn) + ": the critic must give one score per event; " + std::to_string(n) +
                          " events but output of shape " + d.shape().str());
    const Var<T> g = grad(sum(d), xhat, /*create_graph=*/true);
    const Var<T> sq = detail::sum_per_event(square(g));
    const Var<T> norm = sqrt(add_scalar(sq, T(1e-12)));
    Var<T> dev = add_scalar(norm, T(-1));
    if (one_sided) dev = relu(dev);
    return scale(mean(square(dev)), lambda);
}

/// Interpolates xhat = a real + (1 - a) fake with a ~ U[0, 1] per event, as a new variable on
/// the tape (no graph link to the generator: fakes enter as values).
template <class T>
Var<T> random_interpolates(const Var<T>& real, const Var<T>& fake, Rng& rng) {
    const char* fn = "gradient_penalty";
    const std::size_t n = detail::batch_size(real, fn, "real batch");
    if (real.shape() != fake.shape())
        throw shape_error(std::string(fn) + ": real batch of shape " + real.shape().str() + " vs fake batch of shape " +
                          fake.shape().str());
    const std::size_t k = real.size() / n;
    Tensor<T> x(real.shape());
    const T* r = real.data();
    const T* f = fake.data();
    for (std::size_t i = 0; i < n; ++i) {
        const T a = static_cast<T>(rng.uniform());
        for (std::size_t j = 0; j < k; ++j) x[i * k + j] = a * r[i * k + j] + (T(1) - a) * f[i * k + j];
    }
    return real.tape().variable(x);
}

/// WGAN-GP penalty (Gulrajani et al., arXiv 1704.00028, eq. 3) on random interpolates of a real
/// and a fake batch; `critic` is any callable Var -> Var (a Sequential, a lambda). Returns
/// lambda * GP; the paper uses lambda = 10.
template <class T, class Critic>
Var<T> gradient_penalty(Critic&& critic, const Var<T>& real, const Var<T>& fake, Rng& rng, detail::scalar_t<T> lambda = T(10),
                        bool one_sided = false) {
    const Var<T> xhat = random_interpolates(real, fake, rng);
    return gradient_penalty_at(std::forward<Critic>(critic), xhat, lambda, one_sided);
}

} // namespace loss
} // namespace tapir
// ---- end tapir/loss/gan.hpp ----
// ---- begin tapir/loss/label_proportions.hpp ----
/// Learning from label proportions (Dery et al., arXiv 1702.00414): without per-event
/// labels, the batch-mean output is fitted to the batch's known signal fraction.

#include <cmath>
#include <cstddef>
#include <string>
#include <vector>


namespace tapir {
namespace loss {

/// The distance l between a batch mean and its fraction: both forms are used publicly.
enum class ProportionDistance { squared, absolute };

namespace detail {
inline void check_fraction(const char* fn, double f, std::size_t k) {
    if (!(f >= 0.0 && f <= 1.0))
        throw value_error(std::string(fn) + ": signal fraction of group " + std::to_string(k) + " must be in [0, 1], got " +
                          std::to_string(f));
}
template <class T>
Var<T> proportion_distance(const Var<T>& d, ProportionDistance kind) {
    return kind == ProportionDistance::squared ? square(d) : abs(d);
}
} // namespace detail

/// One batch with known signal fraction f: l(`<yhat>_w` - f), l = square or abs, where `<yhat>_w` is
/// the (weighted) batch mean of the outputs yhat in [0, 1].
template <class T>
Var<T> label_proportion_loss(const Var<T>& yhat, detail::scalar_t<T> fraction,
                             ProportionDistance kind = ProportionDistance::squared, detail::weights_t<T> weights = nullptr) {
    const char* fn = "label_proportion_loss";
    detail::check_fraction(fn, static_cast<double>(fraction), 0);
    const Var<T> m = detail::weighted_mean(detail::per_event_column(yhat, fn, "outputs"), weights, fn);
    return detail::proportion_distance(add_scalar(m, -fraction), kind);
}

/// Several groups K in one batch: sum_K l(`<yhat>_K` - f_K) (arXiv 1702.00414), with group[i] the
/// group index of event i in [0, fractions.size()). Every group needs events (non-zero weight).
template <class T>
Var<T> label_proportion_loss(const Var<T>& yhat, const std::vector<std::size_t>& group, const std::vector<T>& fractions,
                             ProportionDistance kind = ProportionDistance::squared, detail::weights_t<T> weights = nullptr) {
    const char* fn = "label_proportion_loss";
    const Var<T> p = detail::per_event_column(yhat, fn, "outputs");
    const std::size_t n = p.size(), k = fractions.size();
    if (group.size() != n)
        throw shape_error(std::string(fn) + ": " + std::to_string(group.size()) + " group indices for " + std::to_string(n) + " events");
    if (k == 0) throw value_error(std::string(fn) + ": no group fractions given");
    for (std::size_t j = 0; j < k; ++j) detail::check_fraction(fn, static_cast<double>(fractions[j]), j);
    const T* wv = weights ? detail::event_weights(*weights, n, fn).data() : nullptr;
    // Row K of the membership matrix holds w_i / sum_{i in K} w_i for the events of group K.
    Tensor<T> member(Shape{k, n});
    std::vector<double> total(k, 0.0);
    for (std::size_t i = 0; i < n; ++i) {
        if (group[i] >= k)
            throw value_error(std::string(fn) + ": group index " + std::to_string(group[i]) + " of event " + std::to_string(i) +
                              " is out of range for " + std::to_string(k) + " groups");
        total[group[i]] += wv ? static_cast<double>(wv[i]) : 1.0;
    }
    for (std::size_t j = 0; j < k; ++j)
        if (total[j] == 0.0 || !std::isfinite(total[j]))
            throw value_error(std::string(fn) + ": group " + std::to_string(j) + " has no events (or zero / non-finite total weight)");
    for (std::size_t i = 0; i < n; ++i)
        member(group[i], i) = static_cast<T>((wv ? static_cast<double>(wv[i]) : 1.0) / total[group[i]]);
    Tape<T>& t = p.tape();
    const Var<T> means = matmul(t.constant(member), reshape(p, Shape{n, 1}));  // (k, 1)
    Tensor<T> f(Shape{k, 1});
    for (std::size_t j = 0; j < k; ++j) f[j] = fractions[j];
    return sum(detail::proportion_distance(sub(means, t.constant(f)), kind));
}

} // namespace loss
} // namespace tapir
// ---- end tapir/loss/label_proportions.hpp ----
// ---- begin tapir/loss/loss.hpp ----
/// All of tapir's training objectives (loss/): classification, GAN and WGAN-GP, significance,
/// DisCo, learning from label proportions, mixture density NLL (the pivot adversary's loss; its
/// model and trainer are in nn/pivot.hpp), and binned Poisson likelihood fits. Losses are
/// functions only: loss/ includes neither nn/ nor optim/. Formulas and sources are in each header.

// ---- begin tapir/loss/poisson_fit.hpp ----
/// Binned Poisson likelihood fits on the tape (Baker and Cousins, Nucl. Instrum. Meth. 221 (1984)
/// 437; Cowan et al., arXiv 1007.1727, for the significance): background n0 exp(a x + b x^2), signal plus background with a Gaussian,
/// a damped Newton minimiser of the negative log-likelihood whose gradient and Hessian come
/// from the tape (the Hessian through double backprop), parameter uncertainties from the
/// inverse Hessian, and the local significance sqrt(2 (ln L_sb - ln L_b)).
///
/// The expected count of bin i is the model at its centre x_i (no integration over the bin):
/// n0 and n1 are then counts per bin. Centre and scale x (e.g. t = (m - 130 GeV) / 25 GeV) so that
/// a and b are of order one: a fit in raw GeV is badly conditioned.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>


namespace tapir {
namespace loss {

// ---- Poisson sampling ----------------------------------------------------------------------------

/// A Poisson variate from tapir::Rng (portable, unlike std::poisson_distribution). Mean below 10:
/// Knuth's multiplication of uniforms (exact, O(mean) uniforms). Mean 10 and above: Hormann's
/// transformed rejection with squeeze, PTRS (W. Hormann, "The transformed rejection method for
/// generating Poisson random variables", Insurance: Math. Econ. 12 (1993) 39), exact, O(1);
/// the same algorithm numpy uses.
inline std::uint64_t poisson_sample(Rng& rng, double mean) {
    if (!(mean >= 0.0) || !std::isfinite(mean))
        throw value_error("poisson_sample: mean must be finite and >= 0, got " + std::to_string(mean));
    if (mean == 0.0) return 0;
    if (mean < 10.0) {
        const double limit = std::exp(-mean);
        double p = rng.uniform();
        std::uint64_t k = 0;
        while (p > limit) {
            ++k;
            p *= rng.uniform();
        }
        return k;
    }
    const double slam = std::sqrt(mean), loglam = std::log(mean);
    const double b = 0.931 + 2.53 * slam;
    const double a = -0.059 + 0.02483 * b;
    const double invalpha = 1.1239 + 1.1328 / (b - 3.4);
    const double vr = 0.9277 - 3.6224 / (b - 2.0);
    for (;;) {
        const double u = rng.uniform() - 0.5;
        const double v = rng.uniform();
        const double us = 0.5 - std::abs(u);
        const double k = std::floor((2.0 * a / us + b) * u + mean + 0.43);
        if (us >= 0.07 && v <= vr) return static_cast<std::uint64_t>(k);
        if (k < 0.0 || (us < 0.013 && v > us)) continue;
        if (std::log(v) + std::log(invalpha) - std::log(a / (us * us) + b) <= -mean + k * loglam - std::lgamma(k + 1.0))
            return static_cast<std::uint64_t>(k);
    }
}

// ---- models --------------------------------------------------------------------------------------

namespace detail {
template <class T>
Var<T> param_at(const Var<T>& p, std::size_t i) {
    return slice(p, 0, i, 1);  // shape (1,): broadcasts against the bins
}
template <class T>
void check_model_args(const Var<T>& p, const Var<T>& x, std::size_t np, const char* fn) {
    if (p.shape() != Shape{np}) throw shape_error(std::string(fn) + ": expects " + std::to_string(np) + " parameters, got shape " + p.shape().str());
    if (x.shape().rank() != 1) throw shape_error(std::string(fn) + ": bin centres must be a vector (B,), got " + x.shape().str());
}
} // namespace detail

/// Background f(x) = n0 exp(a x + b x^2), parameters p = [n0, a, b], bin centres x (B,).
template <class T>
Var<T> exp_poly2_background(const Var<T>& p, const Var<T>& x) {
    detail::check_model_args(p, x, 3, "exp_poly2_background");
    const Var<T> expo = add(mul(detail::param_at(p, 1), x), mul(detail::param_at(p, 2), square(x)));
    return mul(detail::param_at(p, 0), exp(expo));
}

/// Signal plus background g(x) = n0 exp(a x + b x^2) + n1 exp(-(x - mu)^2 / (2 sigma^2)),
/// p = [n0, a, b, n1, mu, sigma]. Depends on sigma^2 only: fit with a lower bound 0 on sigma
/// (PoissonFitOptions::lower), or a step may land on the mirror minimum -sigma.
template <class T>
Var<T> exp_poly2_plus_gaussian(const Var<T>& p, const Var<T>& x) {
    detail::check_model_args(p, x, 6, "exp_poly2_plus_gaussian");
    const Var<T> bkg = exp_poly2_background(slice(p, 0, 0, 3), x);
    const Var<T> d = div(sub(x, detail::param_at(p, 4)), detail::param_at(p, 5));
    return add(bkg, mul(detail::param_at(p, 3), exp(scale(square(d), T(-0.5)))));
}

/// Poisson negative log-likelihood -ln L = sum_i [lambda_i - k_i ln lambda_i + ln k_i!] of counts
/// k (constants; may be non-integer, e.g. an Asimov data set, through lgamma) for expectations
/// lambda > 0.
template <class T>
Var<T> poisson_nll(const Var<T>& lambda, const Var<T>& counts) {
    if (lambda.shape() != counts.shape()) tapir::detail::throw_shape("poisson_nll: expectations vs counts", lambda.shape(), counts.shape());
    double c = 0.0;
    for (std::size_t i = 0; i < counts.size(); ++i) {
        const double k = static_cast<double>(counts[i]);
        if (!(k >= 0.0) || !std::isfinite(k))
            throw value_error("poisson_nll: count of bin " + std::to_string(i) + " must be finite and >= 0, got " + std::to_string(k));
        c += std::lgamma(k + 1.0);
    }
    const Var<T> k = detach(counts);
    return add_scalar(sum(sub(lambda, mul(k, log(lambda)))), static_cast<T>(c));
}

// ---- the fit ----------------------------------------------------------------------------------

struct PoissonFitOptions {
    std::size_t max_iterations = 200;
    /// Converged when the Newton decrement g^T H^-1 g (the expected drop of 2 x NLL) is below this.
    double tolerance = 1e-10;
    /// Parameters held at their initial value (empty: all free).
    std::vector<bool> fixed;
    /// Open bounds lower < p < upper (empty: none; use +-HUGE_VAL for an unbounded entry). Steps
    /// that leave them are rejected, e.g. sigma > 0 for the Gaussian, whose likelihood depends on
    /// sigma^2 only and would otherwise let a Newton step jump to the mirror minimum at -sigma.
    std::vector<double> lower, upper;
};

struct PoissonFitResult {
    std::vector<double> params;
    std::vector<double> errors;      ///< sqrt of the covariance diagonal (0 for fixed parameters)
    std::vector<double> covariance;  ///< P x P row-major inverse Hessian of the NLL (0 rows for fixed)
    double nll = 0.0;                ///< -ln L at the minimum, with the ln k! terms
    double log_likelihood = 0.0;     ///< ln L = -nll
    std::size_t iterations = 0;
    bool converged = false;
    double cov(std::size_t i, std::size_t j) const { return covariance[i * params.size() + j]; }
};

namespace detail {

/// Cholesky factorisation of a symmetric n x n matrix in place (lower triangle); false unless
/// positive definite.
inline bool cholesky(std::vector<double>& a, std::size_t n) {
    for (std::size_t j = 0; j < n; ++j) {
        double d = a[j * n + j];
        for (std::size_t k = 0; k < j; ++k) d -= a[j * n + k] * a[j * n + k];
        if (!(d > 0.0) || !std::isfinite(d)) return false;
        d = std::sqrt(d);
        a[j * n + j] = d;
        for (std::size_t i = j + 1; i < n; ++i) {
            double s = a[i * n + j];
            for (std::size_t k = 0; k < j; ++k) s -= a[i * n + k] * a[j * n + k];
            a[i * n + j] = s / d;
        }
    }
    return true;
}
/// Solves L L^T x = b with the factor from cholesky().
inline std::vector<double> cholesky_solve(const std::vector<double>& l, std::size_t n, std::vector<double> b) {
    for (std::size_t i = 0; i < n; ++i) {
        for (std::size_t k = 0; k < i; ++k) b[i] -= l[i * n + k] * b[k];
        b[i] /= l[i * n + i];
    }
    for (std::size_t i = n; i-- > 0;) {
        for (std::size_t k = i + 1; k < n; ++k) b[i] -= l[k * n + i] * b[k];
        b[i] /= l[i * n + i];
    }
    return b;
}

/// T is double; a template parameter so that the tape code below is compiled only where a fit is
/// made, not in every file that includes tapir.hpp.
template <class Model, class T = double>
struct PoissonFitEval {
    Model& model;
    const Tensor<T>& x;
    const Tensor<T>& k;
    Tape<T> tape;

    /// The NLL, or +inf where the model is not positive (outside the physical region).
    double value(const std::vector<double>& p) {
        NoGradGuard<T> guard(tape);
        tape.clear();
        const Var<T> pv = tape.constant(Tensor<T>(Shape{p.size()}, p));
        const Var<T> lam = model(pv, tape.view(x));
        for (std::size_t i = 0; i < lam.size(); ++i)
            if (!(lam[i] > 0.0) || !std::isfinite(lam[i])) return HUGE_VAL;
        const double v = poisson_nll(lam, tape.view(k)).item();
        return std::isfinite(v) ? v : HUGE_VAL;
    }
    /// NLL, gradient and Hessian (rows by differentiating each gradient component again).
    double derivatives(const std::vector<double>& p, std::vector<double>& g, std::vector<double>& h) {
        const std::size_t np = p.size();
        tape.clear();
        const Var<T> pv = tape.variable(Tensor<T>(Shape{np}, p));
        const Var<T> lam = model(pv, tape.view(x));
        if (lam.shape() != x.shape())
            throw shape_error("poisson_fit: the model returned shape " + lam.shape().str() + " for bin centres of shape " + x.shape().str());
        const Var<T> nll = poisson_nll(lam, tape.view(k));
        const Var<T> gv = grad(nll, pv, /*create_graph=*/true);
        g.assign(np, 0.0);
        h.assign(np * np, 0.0);
        for (std::size_t i = 0; i < np; ++i) g[i] = gv[i];
        if (gv.requires_grad()) {
            for (std::size_t i = 0; i < np; ++i) {
                const Var<T> row = grad(slice(gv, 0, i, 1), pv, false);
                for (std::size_t j = 0; j < np; ++j) h[i * np + j] = row[j];
            }
        }
        for (std::size_t i = 0; i < np; ++i)  // symmetrise rounding
            for (std::size_t j = 0; j < i; ++j) h[i * np + j] = h[j * np + i] = 0.5 * (h[i * np + j] + h[j * np + i]);
        return nll.item();
    }
};

} // namespace detail

/// Maximum-likelihood fit of a binned Poisson model: minimises -ln L over the parameters with a
/// Levenberg-damped Newton method, gradient and Hessian from the tape (double precision).
/// `model(params (P,), x (B,)) -> lambda (B,)` is any callable built from tape ops, e.g.
/// exp_poly2_background or exp_poly2_plus_gaussian; x are the bin centres, counts the observed
/// entries, init the starting point (the fit is local: start near the answer, e.g. n0 from the
/// data, the signal mean and width at the hypothesis). The covariance is the inverse Hessian at
/// the minimum (the Cramer-Rao / Wald approximation).
template <class Model>
PoissonFitResult poisson_fit(Model&& model, const std::vector<double>& x, const std::vector<double>& counts, std::vector<double> init,
                             const PoissonFitOptions& opt = PoissonFitOptions{}) {
    const char* fn = "poisson_fit";
    if (x.size() != counts.size())
        throw shape_error(std::string(fn) + ": " + std::to_string(x.size()) + " bin centres but " + std::to_string(counts.size()) + " counts");
    if (x.empty()) throw shape_error(std::string(fn) + ": no bins");
    const std::size_t np = init.size();
    if (np == 0) throw value_error(std::string(fn) + ": no parameters");
    if (!opt.fixed.empty() && opt.fixed.size() != np)
        throw value_error(std::string(fn) + ": 'fixed' has " + std::to_string(opt.fixed.size()) + " flags for " + std::to_string(np) + " parameters");
    for (const auto* bound : {&opt.lower, &opt.upper})
        if (!bound->empty() && bound->size() != np)
            throw value_error(std::string(fn) + ": " + std::to_string(bound->size()) + " bounds for " + std::to_string(np) + " parameters");
    auto inside = [&opt](const std::vector<double>& q) {
        for (std::size_t i = 0; i < q.size(); ++i) {
            if (!opt.lower.empty() && !(q[i] > opt.lower[i])) return false;
            if (!opt.upper.empty() && !(q[i] < opt.upper[i])) return false;
        }
        return true;
    };
    if (!inside(init)) throw value_error(std::string(fn) + ": the starting point is outside the parameter bounds");
    std::vector<std::size_t> freeidx;
    for (std::size_t i = 0; i < np; ++i)
        if (opt.fixed.empty() || !opt.fixed[i]) freeidx.push_back(i);
    const std::size_t nf = freeidx.size();

    const Tensor<double> xt(Shape{x.size()}, x), kt(Shape{counts.size()}, counts);
    detail::PoissonFitEval<typename std::remove_reference<Model>::type> ev{model, xt, kt, {}};
    PoissonFitResult res;
    std::vector<double> p = std::move(init);
    double f = ev.value(p);
    if (!std::isfinite(f)) throw value_error(std::string(fn) + ": the model is not positive and finite at the starting point");

    std::vector<double> g, h, hf(nf * nf), gf(nf);
    double damping = 1e-3;  // relative to the Hessian diagonal
    for (res.iterations = 0; res.iterations < opt.max_iterations; ++res.iterations) {
        f = ev.derivatives(p, g, h);
        for (std::size_t a = 0; a < nf; ++a) {
            gf[a] = g[freeidx[a]];
            for (std::size_t b = 0; b < nf; ++b) hf[a * nf + b] = h[freeidx[a] * np + freeidx[b]];
        }
        // Convergence: the undamped Newton decrement, where the Hessian is positive definite;
        // the last Newton step is still taken (quadratic convergence makes it nearly exact).
        std::vector<double> l = hf;
        double dec = HUGE_VAL;
        if (detail::cholesky(l, nf)) {
            const std::vector<double> step = detail::cholesky_solve(l, nf, gf);
            dec = 0.0;
            for (std::size_t a = 0; a < nf; ++a) dec += gf[a] * step[a];
            if (dec < opt.tolerance) {
                std::vector<double> trial = p;
                for (std::size_t a = 0; a < nf; ++a) trial[freeidx[a]] -= step[a];
                if (inside(trial) && ev.value(trial) <= f) p = std::move(trial);
                res.converged = true;
                ++res.iterations;
                break;
            }
        }
        bool accepted = false;
        while (damping < 1e12) {
            l = hf;
            for (std::size_t a = 0; a < nf; ++a) l[a * nf + a] += damping * (std::abs(hf[a * nf + a]) + 1e-12);
            if (detail::cholesky(l, nf)) {
                const std::vector<double> step = detail::cholesky_solve(l, nf, gf);
                std::vector<double> trial = p;
                for (std::size_t a = 0; a < nf; ++a) trial[freeidx[a]] -= step[a];
                const double ft = inside(trial) ? ev.value(trial) : HUGE_VAL;
                if (ft <= f) {
                    p = std::move(trial);
                    damping = damping * 0.1 > 1e-9 ? damping * 0.1 : 1e-9;
                    accepted = true;
                    break;
                }
            }
            damping *= 10.0;
        }
        if (!accepted) {  // no descent step left: at the minimum up to rounding, or stuck
            res.converged = dec < 1e3 * opt.tolerance;
            break;
        }
    }
    f = ev.derivatives(p, g, h);
    res.params = p;
    res.nll = f;
    res.log_likelihood = -f;
    res.errors.assign(np, 0.0);
    res.covariance.assign(np * np, 0.0);
    for (std::size_t a = 0; a < nf; ++a)
        for (std::size_t b = 0; b < nf; ++b) hf[a * nf + b] = h[freeidx[a] * np + freeidx[b]];
    std::vector<double> l = hf;
    if (detail::cholesky(l, nf)) {
        for (std::size_t b = 0; b < nf; ++b) {
            std::vector<double> e(nf, 0.0);
            e[b] = 1.0;
            const std::vector<double> col = detail::cholesky_solve(l, nf, e);
            for (std::size_t a = 0; a < nf; ++a) res.covariance[freeidx[a] * np + freeidx[b]] = col[a];
        }
        for (std::size_t a = 0; a < nf; ++a) res.errors[freeidx[a]] = std::sqrt(res.cov(freeidx[a], freeidx[a]));
    } else {
        res.converged = false;  // not a minimum: no uncertainties
        for (std::size_t a = 0; a < nf; ++a) res.errors[freeidx[a]] = std::numeric_limits<double>::quiet_NaN();
    }
    return res;
}

/// Local significance of a signal-plus-background fit against the background-only fit,
/// Z = sqrt(2 (ln L_sb - ln L_b)) (Wilks, one extra signal strength; 0 if L_sb < L_b).
inline double local_significance(double log_likelihood_sb, double log_likelihood_b) {
    const double q = 2.0 * (log_likelihood_sb - log_likelihood_b);
    return q > 0.0 ? std::sqrt(q) : 0.0;
}
inline double local_significance(const PoissonFitResult& sb, const PoissonFitResult& b) {
    return local_significance(sb.log_likelihood, b.log_likelihood);
}

} // namespace loss
} // namespace tapir
// ---- end tapir/loss/poisson_fit.hpp ----
// ---- begin tapir/loss/significance.hpp ----
/// Significance losses (Elwood & Kruecker, arXiv 1806.00322): soft signal and
/// background yields from sigmoid outputs, the s/sqrt(s+b) loss (s+b)/s^2, and the Asimov
/// significance Z_A with a relative background systematic as 1/Z_A or 1/Z_A^2, with the
/// pretraining scheme that makes the Asimov loss trainable.
///
/// The yields are per batch, so these losses want large batches (the reference uses 4096).

#include <cmath>
#include <cstddef>
#include <limits>
#include <string>


namespace tapir {
namespace loss {

/// Soft yields of one batch.
template <class T>
struct SoftYields {
    Var<T> s;  ///< expected selected signal, S_exp * (soft efficiency of the signal events)
    Var<T> b;  ///< expected selected background, B_exp * (soft efficiency of the background events)
};

/// s = S_exp sum_i w_i yhat_i y_i / sum_i w_i y_i,  b = B_exp sum_i w_i yhat_i (1 - y_i) / sum_i w_i (1 - y_i)
/// (arXiv 1806.00322): yhat are sigmoid outputs (the soft selection), y the 0/1
/// labels (constants), w optional per-event weights, S_exp and B_exp the expected yields before
/// the selection (luminosity x cross-section x efficiency). Throws if the batch holds no signal
/// or no background weight.
template <class T>
SoftYields<T> soft_yields(const Var<T>& yhat, const Var<T>& labels, detail::scalar_t<T> s_exp, detail::scalar_t<T> b_exp,
                          detail::weights_t<T> weights = nullptr) {
    const char* fn = "soft_yields";
    const Var<T> p = detail::per_event_column(yhat, fn, "outputs");
    const std::size_t n = p.size();
    const Var<T> y = detail::same_layout(p, detach(labels), fn, "labels");
    detail::check_finite_param(fn, "S_exp", static_cast<double>(s_exp));
    detail::check_finite_param(fn, "B_exp", static_cast<double>(b_exp));
    Tensor<T> ws(Shape{n}), wb(Shape{n});
    const T* yv = y.data();
    const T* wv = weights ? detail::event_weights(*weights, n, fn).data() : nullptr;
    double sum_s = 0.0, sum_b = 0.0;
    for (std::size_t i = 0; i < n; ++i) {
        if (!(yv[i] == T(0) || yv[i] == T(1)))
            throw value_error(std::string(fn) + ": label of event " + std::to_string(i) + " is " + std::to_string(yv[i]) +
                              ", expected 0 or 1");
        const T w = wv ? wv[i] : T(1);
        ws[i] = yv[i] * w;
        wb[i] = (T(1) - yv[i]) * w;
        sum_s += static_cast<double>(ws[i]);
        sum_b += static_cast<double>(wb[i]);
    }
    if (!std::isfinite(sum_s) || !std::isfinite(sum_b)) throw value_error(std::string(fn) + ": the event weights contain NaN or infinity");
    if (sum_s == 0.0) throw value_error(std::string(fn) + ": the batch has no signal weight (no signal events?)");
    if (sum_b == 0.0) throw value_error(std::string(fn) + ": the batch has no background weight (no background events?)");
    Tape<T>& t = p.tape();
    const Var<T> s = scale(sum(mul(p, t.constant(ws))), static_cast<T>(static_cast<double>(s_exp) / sum_s));
    const Var<T> b = scale(sum(mul(p, t.constant(wb))), static_cast<T>(static_cast<double>(b_exp) / sum_b));
    return SoftYields<T>{s, b};
}

/// The s/sqrt(s+b) loss: (s + b) / (s^2 + eps), eps = 1e-7 as in the reference code
/// (github.com/aelwood/hepML), minimising it maximises s/sqrt(s+b).
template <class T>
Var<T> s_over_sqrt_sb_loss(const Var<T>& s, const Var<T>& b, detail::scalar_t<T> eps = T(1e-7)) {
    if (s.shape() != b.shape()) tapir::detail::throw_shape("s_over_sqrt_sb_loss: s vs b", s.shape(), b.shape());
    return div(add(s, b), add_scalar(square(s), eps));
}

namespace detail {

/// h(t) = g(t)/t with g(t) = (1+t) ln(1+t) - t, and h(0) = 0, for t >= 0 elementwise.
/// Below t = 0.1 the series h = sum_{j>=1} (-1)^(j+1) t^j / (j (j+1)) (15 terms: relative
/// error < 1e-17); above it the closed form, which loses at most a factor 20 to cancellation
/// there. Each branch is fed a safe input (0 or 1 where it is not selected), so both stay
/// finite and where() passes clean gradients: no 0/0 at t = 0.
template <class T>
Var<T> xlog1px_minus_x_over_x(const Var<T>& t) {
    Tape<T>& tape = t.tape();
    const std::size_t n = t.size();
    Tensor<T> m(t.shape());
    for (std::size_t i = 0; i < n; ++i) m[i] = std::abs(t[i]) < T(0.1) ? T(1) : T(0);
    const Var<T> mask = tape.constant(m);
    const Var<T> ts = where(mask, t, tape.full(t.shape(), T(0)));
    const Var<T> te = where(mask, tape.full(t.shape(), T(1)), t);
    constexpr int terms = 15;
    auto coef = [](int j) { return static_cast<T>((j % 2 == 1 ? 1.0 : -1.0) / (static_cast<double>(j) * (j + 1.0))); };
    Var<T> p = tape.full(t.shape(), coef(terms));
    for (int j = terms - 1; j >= 1; --j) p = add_scalar(mul(ts, p), coef(j));
    const Var<T> series = mul(ts, p);
    const Var<T> closed = add_scalar(div(mul(add_scalar(te, T(1)), log1p(te)), te), T(-1));
    return where(mask, series, closed);
}

template <class T>
void check_yields(const Var<T>& s, const Var<T>& b, double r, const char* fn) {
    if (s.shape() != b.shape()) tapir::detail::throw_shape((std::string(fn) + ": s vs b").c_str(), s.shape(), b.shape());
    if (!(r >= 0.0 && std::isfinite(r)))
        throw value_error(std::string(fn) + ": relative background systematic r must be finite and >= 0, got " + std::to_string(r));
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (!(s[i] >= T(0) && std::isfinite(static_cast<double>(s[i]))))
            throw value_error(std::string(fn) + ": signal yield s must be finite and >= 0, got " + std::to_string(s[i]));
        if (!(b[i] > T(0) && std::isfinite(static_cast<double>(b[i]))))
            throw value_error(std::string(fn) + ": background yield b must be finite and > 0, got " + std::to_string(b[i]));
    }
}

/// Z_A^2 = 2 s (h(s/b) - h(y)), y = r^2 s / (1 + r^2 b), floored at the smallest normal number.
template <class T>
Var<T> asimov_z2(const Var<T>& s, const Var<T>& b, T r, const char* fn) {
    check_yields(s, b, static_cast<double>(r), fn);
    const T r2 = r * r;
    const Var<T> x = div(s, b);
    const Var<T> y = div(scale(s, r2), add_scalar(scale(b, r2), T(1)));
    const Var<T> z2 = scale(mul(s, sub(xlog1px_minus_x_over_x(x), xlog1px_minus_x_over_x(y))), T(2));
    return clamp(z2, std::numeric_limits<T>::min(), std::numeric_limits<T>::max());
}

} // namespace detail

/// Asimov discovery significance with a relative background systematic r (sigma_b = r b),
/// Cowan et al. (arXiv 1007.1727), in the form with sigma_b that arXiv 1806.00322 uses:
///   Z_A = sqrt(2[(s+b) ln((s+b)(b+sb^2)/(b^2+(s+b)sb^2)) - (b^2/sb^2) ln(1 + sb^2 s/(b(b+sb^2)))]),
/// evaluated as Z_A^2 = 2 s [h(s/b) - h(r^2 s/(1 + r^2 b))], h(t) = ((1+t) ln(1+t) - t)/t, which
/// never divides by r: r = 0 gives sqrt(2((s+b) ln(1+s/b) - s)) exactly, and value and
/// gradients are continuous as r -> 0. Z_A(14, 5, 0.3) = 3.6149635; Z_A(100, 1000, 0) = 3.11165.
/// Elementwise in s and b (same shape); s >= 0 and b > 0 are required (value_error otherwise).
template <class T>
Var<T> asimov_significance(const Var<T>& s, const Var<T>& b, detail::scalar_t<T> r = T(0)) {
    return sqrt(detail::asimov_z2(s, b, r, "asimov_significance"));
}

/// Asimov loss: 1/Z_A (the slides, default) or 1/Z_A^2 (squared = true, the reference code).
template <class T>
Var<T> asimov_loss(const Var<T>& s, const Var<T>& b, detail::scalar_t<T> r, bool squared = false) {
    const Var<T> z2 = detail::asimov_z2(s, b, r, "asimov_loss");
    return squared ? rdiv_scalar(T(1), z2) : rdiv_scalar(T(1), sqrt(z2));
}

/// Kaggle HiggsML approximate median significance, differentiable:
///   AMS = sqrt(2((s + b + b_reg) ln(1 + s/(b + b_reg)) - s)), b_reg = 10,
/// which is Z_A at r = 0 with b + b_reg in place of b. AMS(100, 1000) = 3.09669.
template <class T>
Var<T> ams(const Var<T>& s, const Var<T>& b, detail::scalar_t<T> b_reg = T(10)) {
    if (!(b_reg >= T(0)) || !std::isfinite(static_cast<double>(b_reg)))
        throw value_error("ams: b_reg must be finite and >= 0, got " + std::to_string(b_reg));
    return sqrt(detail::asimov_z2(s, add_scalar(b, b_reg), T(0), "ams"));
}

/// The training scheme of the paper: the first `pretrain_epochs` epochs (5 is typically
/// enough) use (s+b)/s^2, then the Asimov loss, whose gradients are tiny while s is small.
template <class T>
struct SignificanceSchedule {
    std::size_t pretrain_epochs = 5;
    T systematic = T(0.5);  ///< relative background systematic r of the Asimov loss
    bool squared = false;   ///< Asimov loss as 1/Z_A^2 instead of 1/Z_A
    T eps = T(1e-7);        ///< of the (s+b)/s^2 loss

    bool pretraining(std::size_t epoch) const noexcept { return epoch < pretrain_epochs; }
    /// The loss for a batch in `epoch` (counted from 0).
    Var<T> operator()(std::size_t epoch, const Var<T>& s, const Var<T>& b) const {
        return pretraining(epoch) ? s_over_sqrt_sb_loss(s, b, eps) : asimov_loss(s, b, systematic, squared);
    }
    Var<T> operator()(std::size_t epoch, const SoftYields<T>& y) const { return (*this)(epoch, y.s, y.b); }
};

} // namespace loss
} // namespace tapir
// ---- end tapir/loss/significance.hpp ----
// ---- end tapir/loss/loss.hpp ----
// ---- begin tapir/metrics/accuracy.hpp ----
/// Classification accuracy.

#include <cstddef>
#include <string>


namespace tapir::metrics {

/// Weighted fraction of events classified correctly, predicting 1 when score > threshold
/// (Keras' binary_accuracy convention: a score equal to the threshold predicts 0).
/// Empty weights = all 1; the weight total must be positive.
inline double accuracy(const ValueView& scores, const ValueView& labels, const ValueView& weights = {},
                       double threshold = 0.5) {
    detail::metric_check("accuracy", scores, labels, weights);
    double good = 0.0, total = 0.0;
    for (std::size_t i = 0; i < scores.size(); ++i) {
        const double w = detail::metric_weight(weights, i);
        total += w;
        if ((scores[i] > threshold) == (labels[i] == 1.0)) good += w;
    }
    if (!(total > 0.0))
        throw value_error("accuracy: the weights sum to " + detail::error_number(total) + " (need a positive total)");
    return good / total;
}

} // namespace tapir::metrics
// ---- end tapir/metrics/accuracy.hpp ----
// ---- begin tapir/metrics/divergence.hpp ----
/// Jensen-Shannon divergence of histograms, and the background mass-sculpting measure of the
/// H -> gamma gamma study.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

// ---- begin tapir/metrics/histogram.hpp ----
/// Fixed-width weighted histograms.
///
/// Bins follow numpy.histogram: bin i covers [edge(i), edge(i+1)), the last bin also includes
/// hi. Values below lo go to underflow(), above hi to overflow(); the flows are kept apart and
/// never enter contents(), integral() or normalized(). -inf / +inf are flows; NaN is an error.

#include <cmath>
#include <cstddef>
#include <string>
#include <vector>


namespace tapir::metrics {

class Histogram {
public:
    Histogram(std::size_t bins, double lo, double hi) : lo_(lo), hi_(hi), w_(bins, 0.0), w2_(bins, 0.0) {
        if (bins == 0) throw value_error("Histogram: the number of bins must be positive");
        if (!(std::isfinite(lo) && std::isfinite(hi) && lo < hi))
            throw value_error("Histogram: range [" + detail::error_number(lo) + ", " + detail::error_number(hi) +
                              "] must be finite with lo < hi");
    }

    /// Bins of the given width from lo to hi; (hi - lo) must be a whole number of widths
    /// (up to 1e-9 relative), e.g. with_width(105, 160, 5) has 11 bins.
    static Histogram with_width(double lo, double hi, double width) {
        if (!(width > 0.0 && std::isfinite(width)))
            throw value_error("Histogram::with_width: width must be positive, got " + detail::error_number(width));
        if (!(std::isfinite(lo) && std::isfinite(hi) && lo < hi))
            throw value_error("Histogram::with_width: range [" + detail::error_number(lo) + ", " +
                              detail::error_number(hi) + "] must be finite with lo < hi");
        const double n = std::round((hi - lo) / width);
        if (n < 1.0 || std::abs(n * width - (hi - lo)) > 1e-9 * (hi - lo) || n > 1e9)
            throw value_error("Histogram::with_width: width " + detail::error_number(width) + " does not divide [" +
                              detail::error_number(lo) + ", " + detail::error_number(hi) + "] into whole bins");
        return Histogram(static_cast<std::size_t>(n), lo, hi);
    }

    std::size_t bins() const noexcept { return w_.size(); }
    double lo() const noexcept { return lo_; }
    double hi() const noexcept { return hi_; }
    double width() const noexcept { return (hi_ - lo_) / static_cast<double>(w_.size()); }
    /// Lower edge of bin i; edge(bins()) == hi.
    double edge(std::size_t i) const noexcept {
        return i >= w_.size() ? hi_ : lo_ + (hi_ - lo_) * (static_cast<double>(i) / static_cast<double>(w_.size()));
    }
    double center(std::size_t i) const noexcept { return 0.5 * (edge(i) + edge(i + 1)); }

    /// Bin of x, or -1 for underflow and bins() for overflow.
    long long find_bin(double x) const {
        if (std::isnan(x)) throw value_error("Histogram: cannot bin NaN");
        if (x < lo_) return -1;
        if (x > hi_) return static_cast<long long>(w_.size());
        const std::size_t n = w_.size();
        if (x == hi_) return static_cast<long long>(n - 1);
        double f = std::floor((x - lo_) / (hi_ - lo_) * static_cast<double>(n));
        std::size_t i = f < 0.0 ? 0 : (f >= static_cast<double>(n) ? n - 1 : static_cast<std::size_t>(f));
        // Rounding can put x one bin off; the edges decide.
        while (i > 0 && x < edge(i)) --i;
        while (i + 1 < n && x >= edge(i + 1)) ++i;
        return static_cast<long long>(i);
    }

    void fill(double x, double weight = 1.0) {
        if (std::isnan(x)) throw value_error("Histogram::fill: value is NaN");
        if (!std::isfinite(weight))
            throw value_error("Histogram::fill: non-finite weight " + detail::error_number(weight) + " for value " +
                              detail::error_number(x));
        const long long b = find_bin(x);
        if (b < 0) {
            under_ += weight;
        } else if (b >= static_cast<long long>(w_.size())) {
            over_ += weight;
        } else {
            w_[static_cast<std::size_t>(b)] += weight;
            w2_[static_cast<std::size_t>(b)] += weight * weight;
        }
        ++entries_;
    }

    /// Fills every value, with weights (empty = all 1).
    void fill(const ValueView& xs, const ValueView& weights = {}) {
        if (!weights.empty()) detail::metric_check_same_size("Histogram::fill", "values", xs, "weights", weights);
        for (std::size_t i = 0; i < xs.size(); ++i) {
            if (std::isnan(xs[i])) throw value_error("Histogram::fill: value " + std::to_string(i) + " is NaN");
            fill(xs[i], detail::metric_weight(weights, i));
        }
    }

    double content(std::size_t i) const { return w_.at(i); }
    double operator[](std::size_t i) const noexcept { return w_[i]; }
    const std::vector<double>& contents() const noexcept { return w_; }
    /// Statistical error of bin i: sqrt(sum of squared weights).
    double error(std::size_t i) const { return std::sqrt(w2_.at(i)); }
    double underflow() const noexcept { return under_; }
    double overflow() const noexcept { return over_; }
    /// Number of fill calls, flows included.
    std::size_t entries() const noexcept { return entries_; }
    /// Sum of the in-range bins (flows excluded).
    double integral() const noexcept {
        double s = 0.0;
        for (double v : w_) s += v;
        return s;
    }
    /// Contents divided by the integral (flows excluded); the integral must be positive.
    std::vector<double> normalized() const {
        const double s = integral();
        if (!(s > 0.0))
            throw value_error("Histogram::normalized: the in-range integral is " + detail::error_number(s) +
                              " (need a positive total)");
        std::vector<double> p(w_);
        for (double& v : p) v /= s;
        return p;
    }

private:
    double lo_, hi_;
    std::vector<double> w_, w2_;
    double under_ = 0.0, over_ = 0.0;
    std::size_t entries_ = 0;
};

} // namespace tapir::metrics
// ---- end tapir/metrics/histogram.hpp ----

namespace tapir::metrics {

/// JSD(P, Q) = KL(P||M)/2 + KL(Q||M)/2 with M = (P + Q)/2, in bits (log base 2), so it lies
/// in [0, 1]. P and Q are normalised each to unit sum first; entries must be finite and >= 0;
/// 0 * log 0 = 0. JSD([1,0],[0,1]) = 1, JSD([1,1],[1,3]) = 0.048795.
inline double jensen_shannon(const ValueView& p, const ValueView& q) {
    detail::metric_check_same_size("jensen_shannon", "bins in p", p, "bins in q", q);
    if (p.empty()) throw value_error("jensen_shannon: empty input");
    double sp = 0.0, sq = 0.0;
    for (std::size_t i = 0; i < p.size(); ++i) {
        if (!(std::isfinite(p[i]) && p[i] >= 0.0))
            throw value_error("jensen_shannon: bin " + std::to_string(i) + " of p is " + detail::error_number(p[i]) +
                              " (need finite values >= 0)");
        if (!(std::isfinite(q[i]) && q[i] >= 0.0))
            throw value_error("jensen_shannon: bin " + std::to_string(i) + " of q is " + detail::error_number(q[i]) +
                              " (need finite values >= 0)");
        sp += p[i];
        sq += q[i];
    }
    if (!(sp > 0.0)) throw value_error("jensen_shannon: p sums to 0 (cannot normalise)");
    if (!(sq > 0.0)) throw value_error("jensen_shannon: q sums to 0 (cannot normalise)");
    double acc = 0.0;
    for (std::size_t i = 0; i < p.size(); ++i) {
        const double a = p[i] / sp, b = q[i] / sq, m = a + b; // m = 2 M
        if (a > 0.0) acc += a * std::log2(2.0 * a / m);
        if (b > 0.0) acc += b * std::log2(2.0 * b / m);
    }
    return std::min(1.0, std::max(0.0, 0.5 * acc));
}

/// Same binning required.
inline double jensen_shannon(const Histogram& p, const Histogram& q) {
    if (p.bins() != q.bins() || p.lo() != q.lo() || p.hi() != q.hi())
        throw value_error("jensen_shannon: histograms have different binnings: " + std::to_string(p.bins()) +
                          " bins in [" + detail::error_number(p.lo()) + ", " + detail::error_number(p.hi()) + "] vs " +
                          std::to_string(q.bins()) + " bins in [" + detail::error_number(q.lo()) + ", " +
                          detail::error_number(q.hi()) + "]");
    return jensen_shannon(p.contents(), q.contents());
}

struct SculptingResult {
    double jsd = 0.0;       ///< JSD of the background mass, passing vs failing the cut (bits)
    double threshold = 0.0; ///< score cut: pass when score >= threshold
    Histogram pass;         ///< background mass of events passing the cut
    Histogram fail;         ///< background mass of events failing it
    /// 1/JSD, the figure quoted in the study (higher = less sculpting).
    double inverse_jsd() const noexcept { return 1.0 / jsd; }
};

/// Background mass sculpting: the cut on the score that keeps signal efficiency eps (see
/// efficiency_threshold), then the JSD between the background (label 0) mass histograms of
/// events passing and failing it, with bins of width `bin` from lo to hi (numpy binning; masses
/// outside [lo, hi] are left out, as in numpy.histogram). Empty weights = all 1.
inline SculptingResult mass_sculpting_jsd(const ValueView& scores, const ValueView& mass, const ValueView& labels,
                                          const ValueView& weights = {}, double eps = 0.5, double lo = 105.0,
                                          double hi = 160.0, double bin = 5.0) {
    const char* fn = "mass_sculpting_jsd";
    detail::metric_check_same_size(fn, "scores", scores, "masses", mass);
    detail::metric_check(fn, scores, labels, weights);
    detail::metric_check_finite(fn, "mass", mass);
    SculptingResult r{0.0, efficiency_threshold(scores, labels, weights, eps), Histogram::with_width(lo, hi, bin),
                      Histogram::with_width(lo, hi, bin)};
    for (std::size_t i = 0; i < scores.size(); ++i) {
        if (labels[i] != 0.0) continue;
        (scores[i] >= r.threshold ? r.pass : r.fail).fill(mass[i], detail::metric_weight(weights, i));
    }
    if (!(r.pass.integral() > 0.0))
        throw value_error(std::string(fn) + ": no background weight in [" + detail::error_number(lo) + ", " +
                          detail::error_number(hi) + "] passes the cut at score " + detail::error_number(r.threshold) +
                          " (total " + detail::error_number(r.pass.integral()) + ")");
    if (!(r.fail.integral() > 0.0))
        throw value_error(std::string(fn) + ": no background weight in [" + detail::error_number(lo) + ", " +
                          detail::error_number(hi) + "] fails the cut at score " + detail::error_number(r.threshold) +
                          " (total " + detail::error_number(r.fail.integral()) + ")");
    r.jsd = jensen_shannon(r.pass, r.fail);
    return r;
}

} // namespace tapir::metrics
// ---- end tapir/metrics/divergence.hpp ----
// ---- begin tapir/metrics/metrics.hpp ----
/// All metrics: ROC / AUC / rejection, histograms, Jensen-Shannon divergence, significances, accuracy.

// ---- begin tapir/metrics/significance.hpp ----
/// Discovery significances of a counting experiment: the HiggsML AMS and the Asimov Z_A with a
/// relative background systematic. Double precision throughout, accurate for s << b.

#include <algorithm>
#include <cmath>
#include <string>


namespace tapir::metrics {
namespace detail {

/// sum_{k>=2} (-1)^k term_k / (k (k-1)) with term_2 = term and term_{k+1} = term_k x, to 1e-17
/// relative: the small-argument series of the two functions below.
inline double alternating_series(double term, double x) {
    double sum = 0.0;
    for (int k = 2; k < 60; ++k) {
        const double t = term / (static_cast<double>(k) * static_cast<double>(k - 1));
        sum += (k % 2 == 0) ? t : -t;
        if (t <= 1e-17 * sum) break;
        term *= x;
    }
    return sum;
}

/// g(x) = (1 + x) ln(1 + x) - x for x >= 0, without the cancellation at small x
/// (series sum_{k>=2} (-1)^k x^k / (k (k-1)) below 0.1).
inline double xlog1px_minus_x(double x) {
    if (x > 0.1) return (1.0 + x) * std::log1p(x) - x;
    return alternating_series(x * x, x);
}

/// g(y) / y, continuous at 0 where it vanishes (series below 0.1).
inline double xlog1px_minus_x_over_x(double y) {
    if (y > 0.1) return xlog1px_minus_x(y) / y;
    return alternating_series(y, y);
}

inline void check_yield(const char* fn, const char* name, double v) {
    if (!(std::isfinite(v) && v >= 0.0))
        throw value_error(std::string(fn) + ": " + name + " must be finite and >= 0, got " + error_number(v));
}

} // namespace detail

/// Kaggle HiggsML approximate median significance:
/// AMS = sqrt(2((s + b + b_reg) ln(1 + s/(b + b_reg)) - s)), b_reg = 10 by default.
/// AMS(100, 1000) = 3.09669.
inline double ams(double s, double b, double b_reg = 10.0) {
    detail::check_yield("ams", "s", s);
    detail::check_yield("ams", "b", b);
    detail::check_yield("ams", "b_reg", b_reg);
    const double bb = b + b_reg;
    if (!(bb > 0.0)) throw value_error("ams: b + b_reg must be positive, got " + detail::error_number(bb));
    return std::sqrt(std::max(0.0, 2.0 * bb * detail::xlog1px_minus_x(s / bb)));
}

/// Asimov discovery significance with relative background uncertainty r (sigma_b = r b),
/// Cowan et al.:
///   Z_A = sqrt(2[(s+b) ln((s+b)(b+sb^2)/(b^2+(s+b)sb^2)) - (b^2/sb^2) ln(1 + sb^2 s/(b(b+sb^2)))]).
/// Written as Z_A^2 / 2 = b [g(x) - x g(y)/y] with x = s/b, u = r^2 b, y = x u/(1+u) and
/// g(t) = (1+t) ln(1+t) - t, which never divides by r: r = 0 gives exactly the
/// no-systematic sqrt(2((s+b) ln(1+s/b) - s)) and r -> 0 approaches it smoothly.
/// Z_A(14, 5, 0.3) = 3.6149635; Z_A(100, 1000, 0) = 3.11165.
inline double asimov_significance(double s, double b, double r = 0.0) {
    detail::check_yield("asimov_significance", "s", s);
    detail::check_yield("asimov_significance", "relative systematic r", r);
    if (!(std::isfinite(b) && b > 0.0))
        throw value_error("asimov_significance: b must be finite and positive, got " + detail::error_number(b));
    const double x = s / b;
    const double u = r * r * b;
    const double y = x * (u / (1.0 + u));
    const double half = b * (detail::xlog1px_minus_x(x) - x * detail::xlog1px_minus_x_over_x(y));
    return std::sqrt(std::max(0.0, 2.0 * half));
}

} // namespace tapir::metrics
// ---- end tapir/metrics/significance.hpp ----
// ---- end tapir/metrics/metrics.hpp ----
// ---- begin tapir/io/svg.hpp ----
/// Small dependency-free SVG plotting (lines, histograms, scatter, error bars, heatmaps) for the examples.
///
///   tapir::io::Figure fig(640, 480);
///   auto& ax = fig.axes();
///   ax.line(fpr, tpr, tapir::io::Style("DNN").width(2));
///   ax.set_xlabel("background efficiency").set_ylabel("signal efficiency");
///   fig.save("roc.svg");
///
/// The parts: svg/document.hpp (values, styles, SVG text), svg/ticks.hpp (axis ticks),
/// svg/axes.hpp (one panel and its plot kinds), svg/figure.hpp (the grid and the file).

// ---- begin tapir/io/svg/axes.hpp ----
/// SVG plotting, one panel: the series kinds an Axes holds (lines, histograms, scatter, error bars,
/// bands, heatmaps, text), its limits, and its drawing (layout, ticks, clipping, legend).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

// ---- begin tapir/io/svg/document.hpp ----
/// SVG plotting, the document level: series values, styles, legend locations, and the text the
/// writer emits (numbers, escaped text, attributes, colour maps).

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <iterator>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>


namespace tapir::io {

/// Any iterable of numbers (std::vector<float>, Tensor<double>, {1, 2, 3}) converts to Values.
struct Values {
    std::vector<double> v;
    Values() = default;
    Values(std::initializer_list<double> il) : v(il) {}
    template <class C, class E = std::decay_t<decltype(*std::begin(std::declval<const C&>()))>,
              class = std::enable_if_t<std::is_arithmetic_v<E> && !std::is_same_v<E, char> &&
                                       !std::is_same_v<std::decay_t<C>, Values>>>
    Values(const C& c) { // NOLINT: implicit on purpose
        for (const auto& x : c) v.push_back(static_cast<double>(x));
    }
    std::size_t size() const { return v.size(); }
    bool empty() const { return v.empty(); }
    double operator[](std::size_t i) const { return v[i]; }
};

/// Appearance of one series. An empty colour takes the next one of the tab10 cycle.
class Style {
public:
    Style(std::string lbl = {}, std::string col = {}) : label_(std::move(lbl)), color_(std::move(col)) {}
    Style& label(std::string s) { label_ = std::move(s); return *this; }
    Style& color(std::string s) { color_ = std::move(s); return *this; }
    Style& width(double px) { width_ = check(px, 0, 50, "width"); return *this; }
    Style& dashed(bool on = true) { dash_ = on ? "7,4" : ""; return *this; }
    Style& dotted(bool on = true) { dash_ = on ? "2,3" : ""; return *this; }
    Style& alpha(double a) { alpha_ = check(a, 0, 1, "alpha"); return *this; }
    /// Fill the area of a histogram or band with the series colour at this opacity.
    Style& fill(double opacity = 0.35) { fill_ = check(opacity, 0, 1, "fill opacity"); return *this; }
    /// 'o' circle, 's' square, '^' triangle, 'D' diamond, 'x' cross, 0 none.
    Style& marker(char m) {
        if (m != 0 && !std::strchr("os^Dx", m))
            throw value_error(std::string("Style::marker: unknown marker '") + m + "' (use o s ^ D x)");
        marker_ = m;
        return *this;
    }
    Style& marker_size(double px) { marker_size_ = check(px, 0, 100, "marker_size"); return *this; }
    Style& font_size(double px) { font_size_ = check(px, 1, 200, "font_size"); return *this; }
    /// Text anchor: "start", "middle" or "end".
    Style& anchor(std::string a) {
        if (a != "start" && a != "middle" && a != "end")
            throw value_error("Style::anchor: expected start, middle or end, got '" + a + "'");
        anchor_ = std::move(a);
        return *this;
    }

    // Read by Axes when drawing.
    std::string label_, color_, dash_, anchor_ = "start";
    double width_ = 1.8, alpha_ = 1, fill_ = 0, marker_size_ = 3.5, font_size_ = 12;
    char marker_ = 0;

private:
    static double check(double v, double lo, double hi, const char* what) {
        if (!(v >= lo && v <= hi))
            throw value_error(std::string("Style: ") + what + " must be in [" + std::to_string(lo) + ", " +
                              std::to_string(hi) + "], got " + std::to_string(v));
        return v;
    }
};

enum class Loc { best, upper_right, upper_left, lower_left, lower_right, center_right, center_left, lower_center,
                 upper_center, center, none };

namespace detail {

inline constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
inline constexpr const char* kCycle[10] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
inline constexpr const char* kMinus = "\u2212";

inline double pow10(int e) {
    e = std::clamp(e, -400, 400);
    double p = 1;
    for (int i = 0; i < std::abs(e); ++i) p *= 10; // exact up to 1e22, so 1/p rounds correctly
    return e >= 0 ? p : 1 / p;
}

/// Coordinates: two decimals, trailing zeros dropped; never "nan" (callers filter, this is the backstop).
inline std::string num(double v) {
    if (!std::isfinite(v)) v = 0;
    v = std::clamp(v, -1e7, 1e7);
    char buf[48];
    const auto r = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::fixed, 2);
    std::string s(buf, r.ptr);
    while (s.back() == '0') s.pop_back();
    if (s.back() == '.') s.pop_back();
    return s == "-0" ? "0" : s;
}

/// Tick-label number with a fixed count of decimals and a typographic minus.
inline std::string fixed(double v, int decimals) {
    char buf[400];
    const auto r = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::fixed, decimals);
    std::string s(buf, r.ptr);
    if (s[0] == '-') s = s.find_first_of("123456789") == std::string::npos ? s.substr(1) : kMinus + s.substr(1);
    return s;
}
inline std::string int_label(int e) { return e < 0 ? kMinus + std::to_string(-e) : std::to_string(e); }

/// XML-escapes text and repairs it: invalid UTF-8 becomes U+FFFD, control characters are dropped.
inline std::string escape(const std::string& s) {
    std::string o;
    o.reserve(s.size());
    for (std::size_t i = 0; i < s.size();) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (c < 0x80) {
            switch (c) {
            case '&': o += "&amp;"; break;
            case '<': o += "&lt;"; break;
            case '>': o += "&gt;"; break;
            case '"': o += "&quot;"; break;
            case '\'': o += "&apos;"; break;
            case '\n': case '\r': case '\t': o += ' '; break;
            default: if (c >= 0x20 && c != 0x7f) o += static_cast<char>(c);
            }
            ++i;
            continue;
        }
        const std::size_t n = c < 0xC2 ? 0 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : c < 0xF5 ? 4 : 0;
        bool ok = n != 0 && i + n <= s.size();
        for (std::size_t k = 1; ok && k < n; ++k) ok = (static_cast<unsigned char>(s[i + k]) & 0xC0) == 0x80;
        if (ok) { // reject overlong forms, surrogates, > U+10FFFF and the non-characters U+FFFE/FFFF
            const auto c1 = static_cast<unsigned char>(s[i + 1]);
            ok = !(c == 0xE0 && c1 < 0xA0) && !(c == 0xED && c1 >= 0xA0) && !(c == 0xF0 && c1 < 0x90) &&
                 !(c == 0xF4 && c1 >= 0x90) &&
                 !(c == 0xEF && c1 == 0xBF && static_cast<unsigned char>(s[i + 2]) >= 0xBE);
        }
        if (ok) o.append(s, i, n);
        else o += "\uFFFD";
        i += ok ? n : 1;
    }
    return o;
}

/// Rough advance width of DejaVu Sans / Helvetica text, for layout only.
inline double text_width(const std::string& s, double size) {
    double w = 0;
    for (char ch : s) {
        const auto c = static_cast<unsigned char>(ch);
        if ((c & 0xC0) == 0x80) continue;
        if (c >= 0x80) w += 0.7;
        else if (c != 0 && std::strchr("iljtfrI.,:;!|' ()[]", c)) w += 0.34;
        else if (c != 0 && std::strchr("mwMW@%", c)) w += 0.92;
        else if (c >= 'A' && c <= 'Z') w += 0.72;
        else w += 0.64;
    }
    return w * size;
}

inline std::string attr(const char* name, const std::string& v) { return std::string(" ") + name + "=\"" + v + "\""; }
inline std::string attr(const char* name, double v) { return attr(name, num(v)); }
inline std::string pt(double x, double y) { return num(x) + " " + num(y); }
inline std::string rect(double x, double y, double w, double h) {
    return "<rect" + attr("x", x) + attr("y", y) + attr("width", w) + attr("height", h);
}

/// Colour maps as evenly spaced stops, interpolated linearly in sRGB.
inline std::vector<unsigned> colormap_stops(const std::string& name) {
    if (name == "viridis")
        return {0x440154, 0x472d7b, 0x3b528b, 0x2c728e, 0x21918c, 0x28ae80, 0x5ec962, 0xaddc30, 0xfde725};
    if (name == "RdBu_r")
        return {0x053061, 0x2166ac, 0x4393c3, 0x92c5de, 0xd1e5f0, 0xf7f7f7,
                0xfddbc7, 0xf4a582, 0xd6604d, 0xb2182b, 0x67001f};
    if (name == "Blues")
        return {0xf7fbff, 0xdeebf7, 0xc6dbef, 0x9ecae1, 0x6baed6, 0x4292c6, 0x2171b5, 0x08519c, 0x08306b};
    throw value_error("heatmap: unknown colour map '" + name + "' (use viridis, RdBu_r or Blues)");
}
/// Returns "#rrggbb" for t in [0, 1] and the relative luminance through lum.
inline std::string colormap(const std::vector<unsigned>& stops, double t, double* lum = nullptr) {
    t = std::clamp(std::isfinite(t) ? t : 0.0, 0.0, 1.0) * static_cast<double>(stops.size() - 1);
    const auto i = std::min(static_cast<std::size_t>(t), stops.size() - 2);
    const double f = t - static_cast<double>(i);
    double ch[3];
    char buf[8];
    for (int k = 0; k < 3; ++k) {
        const int sh = 16 - 8 * k;
        ch[k] = (1 - f) * ((stops[i] >> sh) & 255u) + f * ((stops[i + 1] >> sh) & 255u);
    }
    std::snprintf(buf, sizeof buf, "#%02x%02x%02x", static_cast<unsigned>(std::lround(ch[0])),
                  static_cast<unsigned>(std::lround(ch[1])), static_cast<unsigned>(std::lround(ch[2])));
    if (lum) *lum = (0.2126 * ch[0] + 0.7152 * ch[1] + 0.0722 * ch[2]) / 255;
    return buf;
}

} // namespace detail

} // namespace tapir::io
// ---- end tapir/io/svg/document.hpp ----
// ---- begin tapir/io/svg/ticks.hpp ----
/// SVG plotting, axis ticks: 1-2-5 steps, linear and logarithmic tick sets with their labels.

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>


namespace tapir::io {

namespace detail {

struct Step {
    long long m = 1;
    int e = 0;
    double value() const { return static_cast<double>(m) * pow10(e); }
    double at(long long k) const { // k * step without accumulating 0.1 + 0.2 style error
        return e >= 0 ? static_cast<double>(k * m) * pow10(e) : static_cast<double>(k * m) / pow10(-e);
    }
};

/// The smallest 1-2-5 step giving at most max_ticks multiples inside [lo, hi] (the step before it when that
/// would leave a single tick).
inline Step nice_step(double lo, double hi, int max_ticks) {
    max_ticks = std::max(max_ticks, 2);
    const int e0 = static_cast<int>(std::floor(std::log10((hi - lo) / max_ticks))) - 1;
    Step prev{1, e0 - 1};
    for (int e = e0;; ++e)
        for (long long m : {1, 2, 5}) {
            const Step s{m, e};
            const double d = s.value(), n = std::floor(hi / d + 1e-9) - std::ceil(lo / d - 1e-9) + 1;
            if (n <= max_ticks) return n >= 2 ? s : prev;
            prev = s;
        }
}

/// Major ticks at multiples of a 1-2-5 step inside [lo, hi]: nice_ticks(0, 1, 7) = {0, 0.2, ..., 1}.
inline std::vector<double> ticks_for(double lo, double hi, Step s) {
    std::vector<double> t;
    const double d = s.value();
    const double k0 = std::ceil(lo / d - 1e-9), k1 = std::floor(hi / d + 1e-9);
    if (!(k1 - k0 < 1e4) || std::abs(k0) > 1e15) return {lo, hi}; // degenerate: range far below resolution
    for (auto k = static_cast<long long>(k0); k <= static_cast<long long>(k1); ++k) t.push_back(s.at(k));
    return t;
}

struct Label {
    std::string base, sup; // sup is drawn as a superscript: "10" + "−3"
};
struct Ticks {
    std::vector<double> major, minor;
    std::vector<Label> labels;
    std::string power; // labels are multiples of 10^power (drawn once at the axis end) when not empty
};
inline double label_width(const Label& l, double fs) { return text_width(l.base, fs) + text_width(l.sup, 0.7 * fs); }

inline Ticks linear_ticks(double lo, double hi, int max_ticks, bool minor) {
    Ticks t;
    const Step s = nice_step(lo, hi, max_ticks);
    t.major = ticks_for(lo, hi, s);
    double mx = 0;
    for (double v : t.major) mx = std::max(mx, std::abs(v));
    const bool sci = mx >= 1e6 || (mx > 0 && mx < 1e-3);
    const int e10 = sci ? static_cast<int>(std::floor(std::log10(mx))) : 0;
    for (double v : t.major) t.labels.push_back({fixed(v / pow10(e10), std::max(0, e10 - s.e)), ""});
    if (sci) t.power = int_label(e10);
    if (minor) {
        const Step ms{s.m == 2 ? 5 : (s.m == 5 ? 1 : 2), s.m == 5 ? s.e : s.e - 1};
        const int div = s.m == 2 ? 4 : 5;
        const double d = ms.value();
        const auto k0 = static_cast<long long>(std::ceil(lo / d - 1e-9));
        const auto k1 = static_cast<long long>(std::floor(hi / d + 1e-9));
        for (auto k = k0; k <= k1 && t.major.size() > 1; ++k)
            if (k % div != 0) t.minor.push_back(ms.at(k));
    }
    return t;
}

/// Log axes: labelled decades (every n-th when crowded), minor ticks at 2..9; narrow ranges fall back to 1-2-5.
inline Ticks log_ticks(double lo, double hi, int max_ticks) {
    Ticks t;
    const int d0 = static_cast<int>(std::ceil(std::log10(lo) - 1e-9));
    const int d1 = static_cast<int>(std::floor(std::log10(hi) + 1e-9));
    const int a = static_cast<int>(std::floor(std::log10(lo))), b = static_cast<int>(std::ceil(std::log10(hi)));
    if (d1 > d0) {
        const int stride = std::max(1, (d1 - d0 + max_ticks) / std::max(max_ticks, 1));
        for (int d = d0; d <= d1; ++d) {
            if (((d % stride) + stride) % stride == 0) {
                t.major.push_back(pow10(d));
                t.labels.push_back({"10", int_label(d)});
            } else {
                t.minor.push_back(pow10(d));
            }
        }
        if (stride == 1 && b - a <= 12)
            for (int d = a; d <= b; ++d)
                for (int m = 2; m <= 9; ++m)
                    if (m * pow10(d) >= lo && m * pow10(d) <= hi) t.minor.push_back(m * pow10(d));
        return t;
    }
    for (int d = a; d <= b; ++d)
        for (int m = 1; m <= 9; ++m) {
            const double v = m * pow10(d);
            if (v < lo * (1 - 1e-9) || v > hi * (1 + 1e-9)) continue;
            if (m == 1 || m == 2 || m == 5) {
                t.major.push_back(v);
                t.labels.push_back({fixed(v, std::max(0, -d)), ""});
            } else {
                t.minor.push_back(v);
            }
        }
    if (t.major.size() < 2) return linear_ticks(lo, hi, max_ticks, false);
    return t;
}

} // namespace detail

/// Public tick helper (1-2-5 steps, at most max_ticks values inside [lo, hi]).
inline std::vector<double> nice_ticks(double lo, double hi, int max_ticks = 7) {
    if (!std::isfinite(lo) || !std::isfinite(hi) || lo > hi)
        throw value_error("nice_ticks: need finite lo <= hi, got [" + std::to_string(lo) + ", " + std::to_string(hi) +
                          "]");
    if (lo == hi) return {lo};
    return detail::ticks_for(lo, hi, detail::nice_step(lo, hi, max_ticks));
}

} // namespace tapir::io
// ---- end tapir/io/svg/ticks.hpp ----

namespace tapir::io {

namespace detail {

struct Box {
    double x0, y0, x1, y1;
};
/// Liang-Barsky: does the segment touch the box? Drives the "best" legend position.
inline bool hits(double x0, double y0, double x1, double y1, const Box& b) {
    double t0 = 0, t1 = 1;
    const double p[4] = {x0 - x1, x1 - x0, y0 - y1, y1 - y0}, q[4] = {x0 - b.x0, b.x1 - x0, y0 - b.y0, b.y1 - y0};
    for (int i = 0; i < 4; ++i) {
        if (p[i] == 0) {
            if (q[i] < 0) return false;
        } else if (p[i] < 0) {
            t0 = std::max(t0, q[i] / p[i]);
        } else {
            t1 = std::min(t1, q[i] / p[i]);
        }
    }
    return t0 <= t1;
}

enum class Kind { line, hist, scatter, errorbar, band, hline, vline, text, annotate };
struct Item {
    Kind kind;
    Style st;
    std::vector<double> x, y, lo, e, ex; // lo: histogram bottom / band lower edge; e, ex: error bars
    std::vector<std::string> labels;
};
struct Heatmap {
    std::vector<double> v;
    std::size_t rows = 0, cols = 0;
    std::vector<std::string> row_labels, col_labels;
    double vmin = 0, vmax = 1;
    std::string cmap, cbar_label;
};

} // namespace detail

class Axes {
public:
    Axes& line(const Values& xs, const Values& ys, Style st = {}) {
        same_size("line", xs, ys, "ys");
        return add(detail::Kind::line, std::move(st), xs.v, ys.v);
    }
    /// Histogram from bin edges (n + 1) and contents (n), drawn as steps from `bottom` (default 0; for stacks).
    Axes& step_histogram(const Values& edges, const Values& counts, Style st = {}, const Values& bottom = {}) {
        if (edges.size() != counts.size() + 1)
            throw shape_error("Axes::step_histogram: need counts + 1 edges, got " + std::to_string(edges.size()) +
                              " edges for " + std::to_string(counts.size()) + " counts");
        for (std::size_t i = 0; i + 1 < edges.size(); ++i)
            if (!(edges[i] < edges[i + 1]) || !std::isfinite(edges[i + 1]) || !std::isfinite(edges[0]))
                throw value_error("Axes::step_histogram: edges must be finite and increasing (edge " +
                                  std::to_string(i) + " = " + std::to_string(edges[i]) + ", next " +
                                  std::to_string(edges[i + 1]) + ")");
        if (!bottom.empty()) same_size("step_histogram", counts, bottom, "bottom");
        add(detail::Kind::hist, std::move(st), edges.v, counts.v);
        items_.back().lo = bottom.empty() ? std::vector<double>(counts.size(), 0.0) : bottom.v;
        return *this;
    }
    /// Fills nbins equal bins on [lo, hi] (hi included, outside and non-finite values ignored) and draws them;
    /// density normalises to unit area. Returns the bin contents.
    std::vector<double> histogram(const Values& values, const Values& weights, std::size_t nbins, double lo, double hi,
                                  Style st = {}, bool density = false) {
        if (!weights.empty()) same_size("histogram", values, weights, "weights");
        if (nbins == 0 || !std::isfinite(lo) || !std::isfinite(hi) || !(lo < hi))
            throw value_error("Axes::histogram: need nbins > 0 and finite lo < hi, got nbins=" + std::to_string(nbins) +
                              " range [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
        std::vector<double> c(nbins, 0.0), edges(nbins + 1);
        const double w = (hi - lo) / static_cast<double>(nbins);
        for (std::size_t i = 0; i < values.size(); ++i) {
            const double v = values[i], wt = weights.empty() ? 1.0 : weights[i];
            if (!std::isfinite(v) || !std::isfinite(wt) || v < lo || v > hi) continue;
            c[std::min(nbins - 1, static_cast<std::size_t>((v - lo) / w))] += wt;
        }
        double total = 0;
        for (double x : c) total += x;
        if (density && total != 0)
            for (double& x : c) x /= total * w;
        for (std::size_t i = 0; i <= nbins; ++i) edges[i] = i == nbins ? hi : lo + static_cast<double>(i) * w;
        step_histogram(edges, c, std::move(st));
        return c;
    }
    std::vector<double> histogram(const Values& values, std::size_t nbins, double lo, double hi, Style st = {},
                                  bool density = false) {
        return histogram(values, Values{}, nbins, lo, hi, std::move(st), density);
    }
    /// Layers stacked bottom-up and filled (opaque unless the style says otherwise).
    Axes& stacked_histogram(const Values& edges, const std::vector<std::vector<double>>& layers,
                            std::vector<Style> styles = {}) {
        if (!styles.empty() && styles.size() != layers.size())
            throw shape_error("Axes::stacked_histogram: " + std::to_string(layers.size()) + " layers but " +
                              std::to_string(styles.size()) + " styles");
        std::vector<double> base(edges.empty() ? 0 : edges.size() - 1, 0.0);
        for (std::size_t l = 0; l < layers.size(); ++l) {
            Style st = styles.empty() ? Style() : styles[l];
            if (st.fill_ == 0) st.fill(0.85);
            Values top(layers[l]);
            same_size("stacked_histogram", Values(base), top, "layer " + std::to_string(l));
            for (std::size_t i = 0; i < base.size(); ++i) top.v[i] = base[i] + (std::isfinite(top[i]) ? top[i] : 0.0);
            step_histogram(edges, top, std::move(st), base);
            base = top.v;
        }
        return *this;
    }
    /// Markers, with an optional text label next to each point (e.g. the λ of each working point).
    Axes& scatter(const Values& xs, const Values& ys, Style st = {}, std::vector<std::string> point_labels = {}) {
        same_size("scatter", xs, ys, "ys");
        if (!point_labels.empty() && point_labels.size() != xs.size())
            throw shape_error("Axes::scatter: " + std::to_string(xs.size()) + " points but " +
                              std::to_string(point_labels.size()) + " point labels");
        if (st.marker_ == 0) st.marker('o');
        add(detail::Kind::scatter, std::move(st), xs.v, ys.v);
        items_.back().labels = std::move(point_labels);
        return *this;
    }
    /// Data points with symmetric vertical (and optional horizontal) error bars.
    Axes& errorbars(const Values& xs, const Values& ys, const Values& yerr, Style st = {}, const Values& xerr = {}) {
        same_size("errorbars", xs, ys, "ys");
        same_size("errorbars", xs, yerr, "yerr");
        if (!xerr.empty()) same_size("errorbars", xs, xerr, "xerr");
        for (std::size_t i = 0; i < yerr.size() + xerr.size(); ++i)
            if ((i < yerr.size() ? yerr[i] : xerr[i - yerr.size()]) < 0)
                throw value_error("Axes::errorbars: negative error at point " +
                                  std::to_string(i < yerr.size() ? i : i - yerr.size()));
        if (st.marker_ == 0) st.marker('o');
        add(detail::Kind::errorbar, std::move(st), xs.v, ys.v);
        items_.back().e = yerr.v;
        items_.back().ex = xerr.empty() ? std::vector<double>(xs.size(), 0.0) : xerr.v;
        return *this;
    }
    /// Shaded band between lower(x) and upper(x), e.g. a ±1σ envelope.
    Axes& fill_between(const Values& xs, const Values& lower, const Values& upper, Style st = {}) {
        same_size("fill_between", xs, lower, "lower");
        same_size("fill_between", xs, upper, "upper");
        if (st.fill_ == 0) st.fill(0.25);
        add(detail::Kind::band, std::move(st), xs.v, upper.v);
        items_.back().lo = lower.v;
        return *this;
    }
    Axes& hline(double y, Style st = {}) { return ref_line(detail::Kind::hline, y, std::move(st)); }
    Axes& vline(double x, Style st = {}) { return ref_line(detail::Kind::vline, x, std::move(st)); }
    /// Text at data coordinates; '\n' starts a new line.
    Axes& text(double x, double y, std::string s, Style st = {}) {
        return add_text(detail::Kind::text, x, y, std::move(s), std::move(st));
    }
    /// Text at axes-fraction coordinates ((0, 0) bottom left, (1, 1) top right).
    Axes& annotate(double fx, double fy, std::string s, Style st = {}) {
        return add_text(detail::Kind::annotate, fx, fy, std::move(s), std::move(st));
    }
    /// rows x cols matrix (row-major), row 0 at the top, with a colour bar; values printed when cells are large
    /// enough. NaN limits are taken from the data; an empty cmap means RdBu_r when the range straddles 0, else viridis.
    Axes& heatmap(const Values& m, std::size_t rows, std::size_t cols, std::vector<std::string> row_labels = {},
                  std::vector<std::string> col_labels = {}, double vmin = detail::kNaN, double vmax = detail::kNaN,
                  std::string cmap = {}, std::string cbar_label = {}) {
        if (m.size() != rows * cols || rows == 0)
            throw shape_error("Axes::heatmap: " + std::to_string(m.size()) + " values for a " + std::to_string(rows) +
                              " x " + std::to_string(cols) + " matrix");
        if ((!row_labels.empty() && row_labels.size() != rows) || (!col_labels.empty() && col_labels.size() != cols))
            throw shape_error("Axes::heatmap: " + std::to_string(row_labels.size()) + " row / " +
                              std::to_string(col_labels.size()) + " column labels for a " + std::to_string(rows) +
                              " x " + std::to_string(cols) + " matrix");
        double lo = std::numeric_limits<double>::infinity(), hi = -lo;
        for (double v : m.v)
            if (std::isfinite(v)) lo = std::min(lo, v), hi = std::max(hi, v);
        if (!std::isfinite(vmin)) vmin = lo <= hi ? lo : 0;
        if (!std::isfinite(vmax)) vmax = lo <= hi ? hi : 1;
        if (!(vmin < vmax)) vmax = vmin + 1;
        if (cmap.empty()) cmap = vmin < 0 && vmax > 0 ? "RdBu_r" : "viridis";
        detail::colormap_stops(cmap); // validate the name now
        heat_ = {m.v, rows, cols, std::move(row_labels), std::move(col_labels), vmin, vmax, std::move(cmap),
                 std::move(cbar_label)};
        has_heat_ = true;
        return *this;
    }

    Axes& set_title(std::string s) { title_ = std::move(s); return *this; }
    Axes& set_xlabel(std::string s) { xlabel_ = std::move(s); return *this; }
    Axes& set_ylabel(std::string s) { ylabel_ = std::move(s); return *this; }
    Axes& set_xlim(double lo, double hi) { return set_lim(xlim_, lo, hi, "set_xlim"); }
    Axes& set_ylim(double lo, double hi) { return set_lim(ylim_, lo, hi, "set_ylim"); }
    Axes& set_log_x(bool on = true) { logx_ = on; return *this; }
    Axes& set_log_y(bool on = true) { logy_ = on; return *this; }
    /// Legend placement; it is drawn whenever a series has a label, Loc::none hides it.
    Axes& legend(Loc where = Loc::best) { loc_ = where; return *this; }
    Axes& grid(bool on = true) { grid_ = on; return *this; }
    Axes& minor_ticks(bool on = true) { minor_ = on; return *this; }

    /// Draws into the cell (x, y, w, h) of a figure; id keeps clip-path ids unique. When the legend would hide
    /// data and the y limits are automatic, the y range is extended upwards to make room for it.
    void render(std::string& o, double cx, double cy, double cw, double ch, const std::string& id) const {
        std::string first;
        const double need = draw(first, cx, cy, cw, ch, id, 0);
        if (need > 0) draw(o, cx, cy, cw, ch, id, need);
        else o += first;
    }

private:
    struct Lim {
        double lo = 0, hi = 1;
        bool set = false;
    };
    struct Scale {
        double lo, hi, p0, p1;
        bool log;
        double t(double v) const { return log ? std::log10(v) : v; }
        bool ok(double v) const { return std::isfinite(v) && (!log || v > 0); }
        double operator()(double v) const {
            if (log && !(v > 0)) return p0 - 0.1 * (p1 - p0); // just outside the axis: clipped
            return std::clamp(p0 + (t(v) - t(lo)) / (t(hi) - t(lo)) * (p1 - p0), -1e6, 1e6);
        }
    };

    static void same_size(const char* fn, const Values& a, const Values& b, const std::string& what) {
        if (a.size() != b.size())
            throw shape_error(std::string("Axes::") + fn + ": sizes differ: " + std::to_string(a.size()) + " vs " +
                              std::to_string(b.size()) + " (" + what + ")");
    }
    Axes& add(detail::Kind k, Style st, std::vector<double> x, std::vector<double> y) {
        const bool neutral = k == detail::Kind::hline || k == detail::Kind::vline || k == detail::Kind::text ||
                             k == detail::Kind::annotate;
        if (st.color_.empty()) st.color_ = neutral ? "#333333" : detail::kCycle[ncolor_++ % 10];
        items_.push_back({k, std::move(st), std::move(x), std::move(y), {}, {}, {}, {}});
        return *this;
    }
    Axes& ref_line(detail::Kind k, double v, Style st) {
        if (st.width_ == 1.8) st.width(1.2);
        return add(k, std::move(st), {v}, {v});
    }
    Axes& add_text(detail::Kind k, double x, double y, std::string s, Style st) {
        add(k, std::move(st), {x}, {y});
        items_.back().labels = {std::move(s)};
        return *this;
    }
    Axes& set_lim(Lim& l, double lo, double hi, const char* fn) {
        if (!std::isfinite(hi - lo) || !(lo < hi))
            throw value_error(std::string("Axes::") + fn + ": need finite lo < hi, got [" + std::to_string(lo) + ", " +
                              std::to_string(hi) + "]");
        l = {lo, hi, true};
        return *this;
    }
    Lim limits(bool xaxis) const;
    double draw(std::string& o, double cx, double cy, double cw, double ch, const std::string& id,
                double headroom) const;

    std::vector<detail::Item> items_;
    detail::Heatmap heat_;
    bool has_heat_ = false, logx_ = false, logy_ = false, grid_ = false, minor_ = false;
    Lim xlim_, ylim_;
    std::string title_, xlabel_, ylabel_;
    Loc loc_ = Loc::best;
    std::size_t ncolor_ = 0;
};

inline Axes::Lim Axes::limits(bool xaxis) const {
    const bool lg = xaxis ? logx_ : logy_;
    const Lim& fixed_lim = xaxis ? xlim_ : ylim_;
    if (fixed_lim.set) {
        if (lg && !(fixed_lim.lo > 0))
            throw value_error(std::string("Axes: log ") + (xaxis ? "x" : "y") + " axis needs positive limits, got [" +
                              std::to_string(fixed_lim.lo) + ", " + std::to_string(fixed_lim.hi) + "]");
        return fixed_lim;
    }
    if (has_heat_) return {0, static_cast<double>(xaxis ? heat_.cols : heat_.rows), true};
    double lo = std::numeric_limits<double>::infinity(), hi = -lo;
    std::vector<double> sticky;
    auto add = [&](double v) { // clamped so that padding and tick steps stay finite
        if (std::isfinite(v) && (!lg || v > 0)) v = std::clamp(v, -1e300, 1e300), lo = std::min(lo, v), hi = std::max(hi, v);
    };
    for (const auto& it : items_) {
        using K = detail::Kind;
        const std::vector<double>& own = xaxis ? it.x : it.y;
        const std::vector<double>& other = xaxis ? it.y : it.x;
        switch (it.kind) {
        case K::line: case K::scatter: case K::band:
            for (std::size_t i = 0; i < own.size(); ++i)
                if (std::isfinite(other[i])) add(own[i]);
            if (it.kind == K::band && !xaxis)
                for (double v : it.lo) add(v);
            break;
        case K::errorbar:
            for (std::size_t i = 0; i < own.size(); ++i) {
                const double e = std::isfinite((xaxis ? it.ex : it.e)[i]) ? (xaxis ? it.ex : it.e)[i] : 0.0;
                if (std::isfinite(other[i])) add(own[i] - e), add(own[i] + e), add(own[i]);
            }
            break;
        case K::hist:
            for (double v : own) add(v);
            for (double v : (xaxis ? it.x : it.lo)) add(v), sticky.push_back(v);
            break;
        case K::hline: if (!xaxis) add(it.y[0]); break;
        case K::vline: if (xaxis) add(it.x[0]); break;
        default: break;
        }
    }
    if (lo > hi) return lg ? Lim{1, 10, false} : Lim{0, 1, false};
    auto T = [&](double v) { return lg ? std::log10(v) : v; };
    auto inv = [&](double v) { return lg ? std::pow(10.0, std::clamp(v, -300.0, 300.0)) : v; };
    double a = T(lo), b = T(hi);
    if (a == b) {
        const double d = lg || a == 0 ? 0.5 : 0.1 * std::abs(a);
        return {inv(a - d), inv(b + d), false};
    }
    double pa = a - 0.05 * (b - a), pb = b + 0.05 * (b - a);
    for (double s : sticky) { // do not pad past a histogram baseline or outer edge
        if (!std::isfinite(s) || (lg && !(s > 0))) continue;
        if (pa < T(s) && T(s) <= a) pa = T(s);
        if (pb > T(s) && T(s) >= b) pb = T(s);
    }
    return {inv(pa), inv(pb), false};
}

/// Returns the fraction of the plot height to add on top for the legend (0: nothing to do).
inline double Axes::draw(std::string& o, double cx, double cy, double cw, double ch, const std::string& id,
                         double headroom) const {
    using namespace detail;
    using std::to_string;
    constexpr double TF = 12, LF = 14, HF = 15, TL = 5; // tick, label and title font sizes; tick length
    const Lim xl = limits(true);
    Lim yl = limits(false);
    const bool lx = logx_ && !has_heat_, ly = logy_ && !has_heat_;
    if (headroom > 0) {
        if (ly) yl.hi = std::pow(10.0, std::log10(yl.lo) + (std::log10(yl.hi) - std::log10(yl.lo)) / (1 - headroom));
        else yl.hi = yl.lo + (yl.hi - yl.lo) / (1 - headroom);
    }
    auto make_ticks = [&](const Lim& l, bool lg, double len, double spacing) {
        return lg ? log_ticks(l.lo, l.hi, std::max(2, static_cast<int>(len / spacing)))
                  : linear_ticks(l.lo, l.hi, std::max(2, static_cast<int>(len / spacing)), minor_);
    };
    auto widest = [&](const std::vector<std::string>& v, double fs) {
        double w = 0;
        for (const auto& s : v) w = std::max(w, text_width(s, fs));
        return w;
    };

    // Layout: margins follow from the tick labels, which depend on the axis length; one refinement suffices.
    const double hfs = has_heat_ ? std::clamp(cw / static_cast<double>(heat_.cols + 6) * 0.45, 8.0, TF) : TF;
    double top = 14 + (title_.empty() ? 0 : HF + 10);
    double bottom = 12 + TL + 4 + TF + (xlabel_.empty() ? 0 : LF + 10);
    double left = 12 + (ylabel_.empty() ? 0 : LF + 10), right = 18;
    Ticks yt, xt;
    bool rotate = false;
    if (has_heat_) {
        const double cell = std::min((cw - left - right - 120) / static_cast<double>(heat_.cols),
                                     (ch - top - bottom - 40) / static_cast<double>(heat_.rows));
        const double wc = widest(heat_.col_labels, hfs);
        rotate = wc > cell - 4;
        if (rotate) bottom += wc * 0.72 - hfs;
        left += widest(heat_.row_labels, hfs) + 6;
        const double ph = ch - top - bottom;
        yt = linear_ticks(heat_.vmin, heat_.vmax, std::max(2, static_cast<int>(ph / 45)), false);
        double wl = 0;
        for (const auto& l : yt.labels) wl = std::max(wl, label_width(l, 11));
        right = 12 + 14 + 4 + wl + (heat_.cbar_label.empty() ? 0 : LF + 8) + 16;
    } else {
        yt = make_ticks(yl, ly, ch - top - bottom, 45);
        double wl = 0;
        for (const auto& l : yt.labels) wl = std::max(wl, label_width(l, TF));
        left += wl + TL + 5;
    }
    double pw = std::max(cw - left - right, 10.0), ph = std::max(ch - top - bottom, 10.0);
    if (has_heat_) { // square cells, centred in the cell
        const double cell = std::min(pw / static_cast<double>(heat_.cols), ph / static_cast<double>(heat_.rows));
        left += (pw - cell * static_cast<double>(heat_.cols)) / 2;
        top += (ph - cell * static_cast<double>(heat_.rows)) / 2;
        pw = cell * static_cast<double>(heat_.cols);
        ph = cell * static_cast<double>(heat_.rows);
    } else {
        for (double sp = 75;; sp *= 1.25) { // fewer x ticks until the labels do not collide
            xt = make_ticks(xl, lx, pw, sp);
            double wl = 0;
            for (const auto& l : xt.labels) wl = std::max(wl, label_width(l, TF));
            if (xt.major.size() < 3 || pw / static_cast<double>(xt.major.size() - 1) > wl + 12 || sp > pw) break;
        }
        // Keep a tick label at the right end inside the figure.
        if (!xt.labels.empty() && std::abs(xt.major.back() - xl.hi) <= 1e-9 * std::max(1.0, std::abs(xl.hi))) {
            const double half = label_width(xt.labels.back(), TF) / 2 + 4;
            if (half > right) pw -= half - right;
        }
    }
    const double x0 = cx + left, y0 = cy + top, x1 = x0 + pw, y1 = y0 + ph;
    const Scale X{xl.lo, xl.hi, x0, x1, lx}, Y{yl.lo, yl.hi, y1, y0, ly};
    const std::string clip = "tapir-clip-" + id;

    o += "<g class=\"axes\">\n<defs><clipPath" + attr("id", clip) + ">" + rect(x0, y0, pw, ph) +
         "/></clipPath></defs>\n";
    o += rect(x0, y0, pw, ph) + " fill=\"white\"/>\n";
    auto text = [&](double x, double y, const std::string& s, double fs, const char* anchor,
                    const std::string& extra = {}) {
        o += "<text" + attr("x", x) + attr("y", y) + attr("font-size", fs) + " text-anchor=\"" + anchor + "\"" + extra +
             ">" + escape(s) + "</text>\n";
    };
    auto label_text = [&](double x, double y, const Label& l, double fs, const char* anchor, const std::string& cls) {
        o += "<text class=\"" + cls + "\"" + attr("x", x) + attr("y", y) + attr("font-size", fs) + " text-anchor=\"" +
             anchor + "\">" + escape(l.base);
        if (!l.sup.empty()) o += "<tspan dy=\"-0.45em\" font-size=\"72%\">" + escape(l.sup) + "</tspan>";
        o += "</text>\n";
    };
    auto stroke = [&](const Style& s) {
        std::string a = " fill=\"none\"" + attr("stroke", escape(s.color_)) + attr("stroke-width", s.width_);
        if (!s.dash_.empty()) a += attr("stroke-dasharray", s.dash_);
        if (s.alpha_ < 1) a += attr("stroke-opacity", s.alpha_);
        return a;
    };
    auto marker = [&](double x, double y, const Style& s) {
        const double r = s.marker_size_;
        const std::string fill = attr("fill", escape(s.color_)) + (s.alpha_ < 1 ? attr("fill-opacity", s.alpha_) : "");
        auto poly = [&](std::initializer_list<std::pair<double, double>> pts) { // closed, in units of r
            std::string d;
            for (const auto& q : pts) d += (d.empty() ? "M" : "L") + pt(x + q.first * r, y + q.second * r);
            o += "<path d=\"" + d + "Z\"" + fill + "/>\n";
        };
        switch (s.marker_) {
        case 'o': o += "<circle" + attr("cx", x) + attr("cy", y) + attr("r", r) + fill + "/>\n"; break;
        case 's': poly({{-1, -1}, {1, -1}, {1, 1}, {-1, 1}}); break;
        case '^': poly({{0, -1.25}, {1.1, 0.65}, {-1.1, 0.65}}); break;
        case 'D': poly({{0, -1.3}, {1.1, 0}, {0, 1.3}, {-1.1, 0}}); break;
        case 'x':
            o += "<path d=\"M" + pt(x - r, y - r) + "L" + pt(x + r, y + r) + "M" + pt(x + r, y - r) + "L" +
                 pt(x - r, y + r) + "\"" + attr("stroke", escape(s.color_)) + " stroke-width=\"1.5\"/>\n";
            break;
        default: break;
        }
    };

    // Grid and heatmap cells sit under everything else.
    if (grid_ && !has_heat_) {
        std::string d;
        for (double v : xt.major) d += "M" + pt(X(v), y0) + "V" + num(y1);
        for (double v : yt.major) d += "M" + pt(x0, Y(v)) + "H" + num(x1);
        if (!d.empty())
            o += "<path class=\"grid\" d=\"" + d + "\" fill=\"none\" stroke=\"#e2e2e2\" stroke-width=\"0.8\"/>\n";
    }
    if (has_heat_) {
        const auto stops = colormap_stops(heat_.cmap);
        const double cw1 = pw / static_cast<double>(heat_.cols), ch1 = ph / static_cast<double>(heat_.rows);
        const int dec = heat_.vmax - heat_.vmin >= 100 ? 0 : heat_.vmax - heat_.vmin >= 10 ? 1 : 2;
        std::vector<std::string> vals(heat_.v.size());
        auto fit = [&](bool drop_zero) { // one font size for all cells, from the widest value
            double w = 0;
            for (std::size_t i = 0; i < vals.size(); ++i) {
                if (!std::isfinite(heat_.v[i])) continue;
                vals[i] = fixed(heat_.v[i], dec);
                const auto z = vals[i].find("0.");
                if (drop_zero && z != std::string::npos && (z == 0 || (z == 3 && vals[i].compare(0, 3, kMinus) == 0)))
                    vals[i].erase(z, 1);
                w = std::max(w, text_width(vals[i], 1));
            }
            return std::min({ch1 * 0.42, (cw1 - 5) / (w + 0.01), 12.0});
        };
        double fs = fit(false);
        if (fs < 8.5 && dec > 0) fs = fit(true);
        o += "<g class=\"heatmap\" stroke=\"white\"" + attr("stroke-width", std::min({1.0, cw1 / 25, ch1 / 25})) +
             ">\n";
        for (std::size_t r = 0; r < heat_.rows; ++r)
            for (std::size_t c = 0; c < heat_.cols; ++c) {
                const double v = heat_.v[r * heat_.cols + c], cx0 = x0 + static_cast<double>(c) * cw1,
                             cy0 = y0 + static_cast<double>(r) * ch1;
                double lum = 1;
                const double t = (v - heat_.vmin) / (heat_.vmax - heat_.vmin);
                const std::string col = std::isfinite(v) ? colormap(stops, t, &lum) : "#d9d9d9";
                o += rect(cx0, cy0, cw1, ch1) + attr("fill", col) + "/>\n";
                if (!std::isfinite(v)) continue;
                if (fs >= 6.5)
                    text(cx0 + cw1 / 2, cy0 + ch1 / 2, vals[r * heat_.cols + c], fs, "middle",
                         " dy=\"0.35em\" stroke=\"none\"" + attr("fill", lum > 0.45 ? "#111111" : "#ffffff"));
            }
        o += "</g>\n";
    }

    // Data, clipped to the plot area; legend swatch and hit segments collected on the way.
    std::vector<Box> segs, refs, areas; // data segments (points: degenerate), reference lines, filled areas
    o += "<g clip-path=\"url(#" + clip + ")\">\n";
    for (const auto& it : items_) {
        const Style& s = it.st;
        const std::size_t n = it.x.size();
        switch (it.kind) {
        case Kind::line: {
            std::string d;
            bool pen = false;
            for (std::size_t i = 0; i < n; ++i) {
                if (!X.ok(it.x[i]) || !Y.ok(it.y[i])) { pen = false; continue; }
                d += (pen ? "L" : "M") + pt(X(it.x[i]), Y(it.y[i]));
                if (pen) segs.push_back({X(it.x[i - 1]), Y(it.y[i - 1]), X(it.x[i]), Y(it.y[i])});
                else segs.push_back({X(it.x[i]), Y(it.y[i]), X(it.x[i]), Y(it.y[i])});
                pen = true;
            }
            if (!d.empty())
                o += "<path class=\"line\" d=\"" + d + "\"" + stroke(s) +
                     " stroke-linejoin=\"round\" stroke-linecap=\"round\"/>\n";
            if (s.marker_)
                for (std::size_t i = 0; i < n; ++i)
                    if (X.ok(it.x[i]) && Y.ok(it.y[i])) marker(X(it.x[i]), Y(it.y[i]), s);
            break;
        }
        case Kind::hist: case Kind::band: {
            const bool hist = it.kind == Kind::hist;
            std::vector<std::pair<double, double>> up, dn; // pixel polygon: upper edge forwards, lower edge backwards
            auto val = [](double v) { return std::isfinite(v) ? v : 0.0; };
            const std::size_t m = hist ? n - 1 : n;
            for (std::size_t i = 0; i < m; ++i) {
                if (!hist && (!X.ok(it.x[i]) || !std::isfinite(it.y[i]) || !std::isfinite(it.lo[i]))) continue;
                const double hi = val(it.y[i]), lo = val(it.lo[i]);
                const double top_v = hist && !std::isfinite(it.y[i]) ? lo : hi;
                for (double xv : hist ? std::vector<double>{it.x[i], it.x[i + 1]} : std::vector<double>{it.x[i]}) {
                    up.push_back({X(xv), Y(top_v)});
                    dn.push_back({X(xv), Y(lo)});
                }
                if (s.fill_ > 0)
                    areas.push_back({X(it.x[i]), std::min(Y(lo), Y(top_v)), X(it.x[hist ? i + 1 : i]),
                                     std::max(Y(lo), Y(top_v))});
            }
            if (up.empty()) break;
            std::string d;
            if (s.fill_ > 0) {
                for (std::size_t i = 0; i < up.size(); ++i) d += (i ? "L" : "M") + pt(up[i].first, up[i].second);
                for (std::size_t i = dn.size(); i-- > 0;) d += "L" + pt(dn[i].first, dn[i].second);
                o += "<path class=\"" + std::string(hist ? "hist-fill" : "band") + "\" d=\"" + d + "Z\"" +
                     attr("fill", escape(s.color_)) + attr("fill-opacity", s.fill_) + " stroke=\"none\"/>\n";
            }
            if (!hist) break;
            d = "M" + pt(dn.front().first, dn.front().second);
            for (std::size_t i = 0; i < up.size(); ++i) {
                d += "L" + pt(up[i].first, up[i].second);
                if (i) segs.push_back({up[i - 1].first, up[i - 1].second, up[i].first, up[i].second});
            }
            d += "L" + pt(dn.back().first, dn.back().second);
            o += "<path class=\"hist\" d=\"" + d + "\"" + stroke(s) + " stroke-linejoin=\"miter\"/>\n";
            break;
        }
        case Kind::scatter: case Kind::errorbar: {
            std::string d;
            for (std::size_t i = 0; i < n; ++i) {
                if (!X.ok(it.x[i]) || !Y.ok(it.y[i])) continue;
                const double px = X(it.x[i]), py = Y(it.y[i]);
                segs.push_back({px, py, px, py});
                if (it.kind == Kind::errorbar && std::isfinite(it.e[i]) && it.e[i] > 0)
                    d += "M" + pt(px, Y(it.y[i] - it.e[i])) + "V" + num(Y(it.y[i] + it.e[i]));
                if (it.kind == Kind::errorbar && std::isfinite(it.ex[i]) && it.ex[i] > 0)
                    d += "M" + pt(X(it.x[i] - it.ex[i]), py) + "H" + num(X(it.x[i] + it.ex[i]));
            }
            if (!d.empty())
                o += "<path class=\"errorbar\" d=\"" + d + "\"" + attr("stroke", escape(s.color_)) +
                     attr("stroke-width", std::min(s.width_, 1.5)) + "/>\n";
            for (std::size_t i = 0; i < n; ++i)
                if (X.ok(it.x[i]) && Y.ok(it.y[i])) marker(X(it.x[i]), Y(it.y[i]), s);
            break;
        }
        case Kind::hline: case Kind::vline: {
            const bool h = it.kind == Kind::hline;
            if (!(h ? Y : X).ok(it.x[0])) break;
            const double p = h ? Y(it.x[0]) : X(it.x[0]);
            o += "<path class=\"refline\" d=\"" + (h ? "M" + pt(x0, p) + "H" + num(x1)
                                                      : "M" + pt(p, y0) + "V" + num(y1)) + "\"" + stroke(s) + "/>\n";
            refs.push_back(h ? Box{x0, p, x1, p} : Box{p, y0, p, y1});
            break;
        }
        default: break;
        }
    }
    o += "</g>\n";

    // Frame, ticks, labels.
    o += rect(x0, y0, pw, ph) + " fill=\"none\" stroke=\"#333333\" stroke-width=\"1\"/>\n";
    std::string td;
    auto tick_in = [](double p, double a, double b) { return p >= std::min(a, b) - 0.5 && p <= std::max(a, b) + 0.5; };
    if (has_heat_) {
        const double cw1 = pw / static_cast<double>(heat_.cols), ch1 = ph / static_cast<double>(heat_.rows);
        for (std::size_t r = 0; r < heat_.row_labels.size(); ++r)
            text(x0 - 5, y0 + (static_cast<double>(r) + 0.5) * ch1, heat_.row_labels[r], hfs, "end",
                 " dy=\"0.35em\" class=\"ytick\"");
        for (std::size_t c = 0; c < heat_.col_labels.size(); ++c) {
            const double xc = x0 + (static_cast<double>(c) + 0.5) * cw1;
            if (rotate) text(xc + 0.3 * hfs, y1 + 6 + 0.5 * hfs, heat_.col_labels[c], hfs, "end",
                             " class=\"xtick\" transform=\"rotate(-45 " + pt(xc + 0.3 * hfs, y1 + 6 + 0.5 * hfs) +
                                 ")\"");
            else text(xc, y1 + 5 + hfs, heat_.col_labels[c], hfs, "middle", " class=\"xtick\"");
        }
        // Colour bar with its own ticks.
        const double bx = x1 + 12, bw = 14;
        const auto stops = colormap_stops(heat_.cmap);
        o += "<defs><linearGradient" + attr("id", "tapir-cbar-" + id) + " x1=\"0\" y1=\"1\" x2=\"0\" y2=\"0\">";
        for (int i = 0; i <= 16; ++i)
            o += "<stop" + attr("offset", i / 16.0) + attr("stop-color", colormap(stops, i / 16.0)) + "/>";
        o += "</linearGradient></defs>\n" + rect(bx, y0, bw, ph) + " class=\"colorbar\" fill=\"url(#tapir-cbar-" + id +
             ")\" stroke=\"#333333\" stroke-width=\"0.8\"/>\n";
        const Scale C{heat_.vmin, heat_.vmax, y1, y0, false};
        double wl = 0;
        for (std::size_t i = 0; i < yt.major.size(); ++i) {
            td += "M" + pt(bx + bw, C(yt.major[i])) + "h4";
            label_text(bx + bw + 6, C(yt.major[i]) + 4, yt.labels[i], 11, "start", "ctick");
            wl = std::max(wl, label_width(yt.labels[i], 11));
        }
        if (!yt.power.empty()) label_text(bx, y0 - 6, {"\u00d710", yt.power}, 11, "start", "ypower");
        if (!heat_.cbar_label.empty())
            text(bx + bw + 14 + wl, (y0 + y1) / 2, heat_.cbar_label, LF - 1, "middle",
                 " dy=\"0.35em\" transform=\"rotate(90 " + pt(bx + bw + 14 + wl, (y0 + y1) / 2) + ")\"");
    } else {
        for (std::size_t i = 0; i < xt.major.size(); ++i) {
            const double p = X(xt.major[i]);
            if (!tick_in(p, x0, x1)) continue;
            td += "M" + pt(p, y1) + "v" + num(TL);
            label_text(p, y1 + TL + 3 + TF * 0.9, xt.labels[i], TF, "middle", "xtick");
        }
        for (std::size_t i = 0; i < yt.major.size(); ++i) {
            const double p = Y(yt.major[i]);
            if (!tick_in(p, y0, y1)) continue;
            td += "M" + pt(x0, p) + "h" + num(-TL);
            label_text(x0 - TL - 3, p + TF * 0.35, yt.labels[i], TF, "end", "ytick");
        }
        for (double v : xt.minor)
            if (tick_in(X(v), x0, x1)) td += "M" + pt(X(v), y1) + "v3";
        for (double v : yt.minor)
            if (tick_in(Y(v), y0, y1)) td += "M" + pt(x0, Y(v)) + "h-3";
    }
    if (!td.empty()) o += "<path class=\"ticks\" d=\"" + td + "\" stroke=\"#333333\" stroke-width=\"1\"/>\n";
    if (!xt.power.empty()) label_text(x1, cy + ch - 12, {"\u00d710", xt.power}, TF, "end", "xpower");
    if (!yt.power.empty() && !has_heat_) label_text(x0, y0 - 6, {"\u00d710", yt.power}, TF, "start", "ypower");
    if (!xlabel_.empty()) text((x0 + x1) / 2, cy + ch - 12, xlabel_, LF, "middle", " class=\"xlabel\"");
    if (!ylabel_.empty())
        text(cx + 12 + LF * 0.8, (y0 + y1) / 2, ylabel_, LF, "middle",
             " class=\"ylabel\" transform=\"rotate(-90 " + pt(cx + 12 + LF * 0.8, (y0 + y1) / 2) + ")\"");
    if (!title_.empty()) text((x0 + x1) / 2, y0 - 10, title_, HF, "middle", " class=\"title\" font-weight=\"bold\"");

    // Free text, unclipped. Point labels take the first of eight spots around their marker that stays inside the
    // plot and clear of other labels and markers.
    std::vector<Box> placed;
    for (const auto& it : items_) {
        const Style& s = it.st;
        for (std::size_t i = 0; it.kind == Kind::scatter && i < it.labels.size(); ++i) {
            if (!X.ok(it.x[i]) || !Y.ok(it.y[i]) || it.labels[i].empty()) continue;
            const double px = X(it.x[i]), py = Y(it.y[i]), r = s.marker_size_ + 2, tw = text_width(it.labels[i], 10.5);
            Box best{};
            double best_cost = 1e300;
            constexpr int spots[8][2] = {{1, 0}, {1, -1}, {1, 1}, {-1, 0}, {-1, -1}, {-1, 1}, {0, -1}, {0, 1}};
            for (int k = 0; k < 8; ++k) {
                const int ax = spots[k][0], ay = spots[k][1];
                const double bx = ax > 0 ? px + r : ax < 0 ? px - r - tw : px - tw / 2;
                const double by = ay < 0 ? py - r - 9 : ay > 0 ? py + r - 2 : py - 5.5;
                const Box b{bx, by, bx + tw, by + 11};
                double cost = k + (b.x0 < x0 || b.x1 > x1 || b.y0 < y0 || b.y1 > y1 ? 100 : 0);
                for (const auto& q : placed) cost += q.x0 < b.x1 && b.x0 < q.x1 && q.y0 < b.y1 && b.y0 < q.y1 ? 50 : 0;
                for (const auto& q : segs) {
                    const bool point = q.x0 == q.x1 && q.y0 == q.y1; // markers count within their radius
                    const Box g = point ? Box{b.x0 - r + 2, b.y0 - r + 2, b.x1 + r - 2, b.y1 + r - 2} : b;
                    cost += hits(q.x0, q.y0, q.x1, q.y1, g) ? (point ? 20 : 3) : 0;
                }
                if (cost < best_cost) best_cost = cost, best = b;
            }
            placed.push_back(best);
            text(best.x0, best.y1 - 2, it.labels[i], 10.5, "start", " class=\"point-label\" fill=\"#333333\"");
        }
        if (it.kind != Kind::text && it.kind != Kind::annotate) continue;
        const bool data = it.kind == Kind::text;
        if (data && (!X.ok(it.x[0]) || !Y.ok(it.y[0]))) continue;
        if (!data && (!std::isfinite(it.x[0]) || !std::isfinite(it.y[0]))) continue;
        const double px = data ? X(it.x[0]) : x0 + it.x[0] * pw, py = data ? Y(it.y[0]) : y1 - it.y[0] * ph;
        const std::string& str = it.labels[0];
        o += "<text class=\"text\"" + attr("x", px) + attr("y", py) + attr("font-size", s.font_size_) +
             attr("fill", escape(s.color_)) + attr("text-anchor", s.anchor_) + ">";
        std::size_t start = 0;
        for (int line_no = 0; start <= str.size(); ++line_no) {
            const std::size_t end = std::min(str.find('\n', start), str.size());
            o += "<tspan" + attr("x", px) + (line_no ? " dy=\"1.25em\"" : "") + ">" +
                 escape(str.substr(start, end - start)) + "</tspan>";
            start = end + 1;
        }
        o += "</text>\n";
        if (it.kind == Kind::annotate) { // keep the legend off annotations: both diagonals of their box
            const double tw = text_width(str, s.font_size_);
            const double lines = static_cast<double>(std::count(str.begin(), str.end(), '\n') + 1);
            const double bx = s.anchor_ == "start" ? px : s.anchor_ == "end" ? px - tw : px - tw / 2;
            const double by0 = py - s.font_size_, by1 = py + (lines - 1) * 1.25 * s.font_size_ + 3;
            segs.push_back({bx, by0, bx + tw, by1});
            segs.push_back({bx, by1, bx + tw, by0});
        }
    }
    for (const auto& b : placed) segs.push_back({b.x0, b.y0, b.x1, b.y1});

    // Legend.
    std::vector<const Item*> entries;
    for (const auto& it : items_)
        if (!it.st.label_.empty() && it.kind != Kind::text && it.kind != Kind::annotate) entries.push_back(&it);
    if (loc_ != Loc::none && !entries.empty()) {
        constexpr double LFS = 12, row = 19, sw = 26, pad = 8, inset = 10;
        double tw = 0;
        for (const auto* e : entries) tw = std::max(tw, text_width(e->st.label_, LFS));
        const double bw = pad + sw + 7 + tw + pad, bh = 6 + row * static_cast<double>(entries.size()) + 4;
        auto place = [&](Loc l) { // column and row (0 left/top, 1 centre, 2 right/bottom) per Loc, in enum order
            constexpr int cr[10][2] = {{2, 0}, {2, 0}, {0, 0}, {0, 2}, {2, 2}, {2, 1}, {0, 1}, {1, 2}, {1, 0}, {1, 1}};
            const int c = cr[static_cast<int>(l)][0], r = cr[static_cast<int>(l)][1];
            const double lx0 = c == 0 ? x0 + inset : c == 1 ? (x0 + x1 - bw) / 2 : x1 - inset - bw;
            const double ly0 = r == 0 ? y0 + inset : r == 1 ? (y0 + y1 - bh) / 2 : y1 - inset - bh;
            return Box{lx0, ly0, lx0 + bw, ly0 + bh};
        };
        Loc where = loc_;
        if (where == Loc::best) {
            std::size_t best = std::numeric_limits<std::size_t>::max(), data_hits = 0;
            for (Loc l : {Loc::upper_right, Loc::upper_left, Loc::lower_left, Loc::lower_right, Loc::center_right,
                          Loc::center_left, Loc::lower_center, Loc::upper_center, Loc::center}) {
                const Box b = place(l);
                std::size_t dh = 0, rh = 0;
                for (const auto& sg : segs) dh += hits(sg.x0, sg.y0, sg.x1, sg.y1, b) ? 1 : 0;
                for (const auto& a : areas) dh += a.x0 <= b.x1 && b.x0 <= a.x1 && a.y0 <= b.y1 && b.y0 <= a.y1 ? 1 : 0;
                for (const auto& sg : refs) rh += hits(sg.x0, sg.y0, sg.x1, sg.y1, b) ? 1 : 0;
                if (1000 * dh + rh < best) best = 1000 * dh + rh, where = l, data_hits = dh;
            }
            if (data_hits > 0 && headroom == 0 && !ylim_.set && !has_heat_ && bh + 2 * inset < 0.45 * ph)
                return (bh + 2 * inset) / ph;
        }
        const Box b = place(where);
        o += "<g class=\"legend\">\n" + rect(b.x0, b.y0, bw, bh) +
             " rx=\"3\" fill=\"white\" fill-opacity=\"0.88\" stroke=\"#bbbbbb\" stroke-width=\"0.8\"/>\n";
        for (std::size_t i = 0; i < entries.size(); ++i) {
            const Item& e = *entries[i];
            const double cyr = b.y0 + 6 + row * (static_cast<double>(i) + 0.5), sx = b.x0 + pad;
            if (e.kind == Kind::hist || e.kind == Kind::band)
                o += rect(sx, cyr - 6, sw, 12) +
                     (e.st.fill_ > 0 ? attr("fill", escape(e.st.color_)) + attr("fill-opacity", e.st.fill_)
                                     : std::string(" fill=\"none\"")) +
                     (e.kind == Kind::band ? std::string(" stroke=\"none\"")
                                           : attr("stroke", escape(e.st.color_)) +
                                                 attr("stroke-width", std::min(e.st.width_, 2.0))) +
                     "/>\n";
            else if (e.kind == Kind::line || e.kind == Kind::hline || e.kind == Kind::vline)
                o += "<path d=\"M" + pt(sx, cyr) + "h" + num(sw) + "\"" + stroke(e.st) + "/>\n";
            if (e.kind == Kind::errorbar)
                o += "<path d=\"M" + pt(sx + sw / 2, cyr - 7) + "v14\"" + attr("stroke", escape(e.st.color_)) +
                     " stroke-width=\"1.5\"/>\n";
            if (e.st.marker_ && e.kind != Kind::hist) marker(sx + sw / 2, cyr, e.st);
            text(sx + sw + 7, cyr, e.st.label_, LFS, "start", " dy=\"0.35em\" class=\"legend-label\"");
        }
        o += "</g>\n";
    }
    o += "</g>\n";
    return 0;
}

} // namespace tapir::io
// ---- end tapir/io/svg/axes.hpp ----
// ---- begin tapir/io/svg/figure.hpp ----
/// SVG plotting, the figure: a grid of Axes written as one SVG document.

#include <cstddef>
#include <fstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>


namespace tapir::io {

class Figure {
public:
    /// width x height pixels, divided into a rows x cols grid of axes.
    explicit Figure(int width = 640, int height = 480, int rows = 1, int cols = 1)
        : w_(width), h_(height), rows_(rows), cols_(cols) {
        if (width < 100 || height < 100 || width > 20000 || height > 20000)
            throw value_error("Figure: size must be 100..20000 px, got " + std::to_string(width) + " x " +
                              std::to_string(height) +
                              " (for a grid of subplots use Figure(width, height, rows, cols))");
        if (rows < 1 || cols < 1 || rows > 16 || cols > 16)
            throw value_error("Figure: grid must be 1..16 x 1..16, got " + std::to_string(rows) + " x " +
                              std::to_string(cols));
        axes_.resize(static_cast<std::size_t>(rows * cols));
    }
    Axes& axes(int row = 0, int col = 0) {
        if (row < 0 || col < 0 || row >= rows_ || col >= cols_)
            throw value_error("Figure::axes: (" + std::to_string(row) + ", " + std::to_string(col) + ") outside the " +
                              std::to_string(rows_) + " x " + std::to_string(cols_) + " grid");
        return axes_[static_cast<std::size_t>(row * cols_ + col)];
    }
    /// Title above all panels.
    Figure& suptitle(std::string s) { title_ = std::move(s); return *this; }

    std::string to_string() const {
        using detail::attr;
        std::string o = "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"no\"?>\n"
                        "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\"" +
                        attr("width", w_) + attr("height", h_) + " viewBox=\"0 0 " + detail::pt(w_, h_) +
                        "\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" fill=\"#222222\">\n" +
                        "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
        const double th = title_.empty() ? 0 : 34;
        if (!title_.empty())
            o += "<text class=\"suptitle\"" + attr("x", w_ / 2.0) +
                 " y=\"24\" font-size=\"17\" font-weight=\"bold\" text-anchor=\"middle\">" +
                 detail::escape(title_) + "</text>\n";
        const double cw = w_ / static_cast<double>(cols_), ch = (h_ - th) / static_cast<double>(rows_);
        for (int r = 0; r < rows_; ++r)
            for (int c = 0; c < cols_; ++c)
                axes_[static_cast<std::size_t>(r * cols_ + c)].render(o, c * cw, th + r * ch, cw, ch,
                                                                     std::to_string(r) + "-" + std::to_string(c));
        return o + "</svg>\n";
    }
    /// Writes the SVG; throws std::runtime_error naming the path when the file cannot be written.
    void save(const std::string& path) const {
        const std::string s = to_string();
        std::ofstream f(path, std::ios::binary);
        if (f) f.write(s.data(), static_cast<std::streamsize>(s.size()));
        if (f) f.close();
        if (!f) throw std::runtime_error("Figure::save: cannot write '" + path + "'");
    }

private:
    int w_, h_, rows_, cols_;
    std::vector<Axes> axes_;
    std::string title_;
};

} // namespace tapir::io
// ---- end tapir/io/svg/figure.hpp ----
// ---- end tapir/io/svg.hpp ----
// ---- begin tapir/hep/diphoton.hpp ----
/// A synthetic H -> gamma gamma sample resembling the course's ATLAS Open Data file, and the
/// course CSV writer.
///
/// Physics of the generator: myy is drawn first (signal: double-sided Crystal Ball around the
/// Higgs mass; background: falling exponential), then the diphoton pT, the system rapidity Y
/// and the decay angles in the pair rest frame (signal isotropic, spin 0; background forward
/// peaked in eta* = atanh(cos theta*), beyond the t-channel 1/(1 - cos^2) of q qbar -> gamma
/// gamma, and with part of its pair pT along the photon axis, as from fake photons). The
/// photons are boosted to the lab and the analysis cuts are applied by retrying the kinematics
/// at fixed myy, so the mass spectrum is exactly the one drawn and everything else is the
/// distribution conditional on passing the cuts. That conditioning is what makes pT and
/// |delta eta| of the background rise with myy, as in the real file
/// (m^2 = 2 pT1 pT2 (cosh deta - cos dphi) under absolute pT cuts).
///
/// The default knobs were fitted to the course's 50k-event file (quantiles of pT1, pT2,
/// |delta eta|, |delta phi|, pT(yy), |Y| and the signal mass per class; background
/// correlations with myy and per-mass-bin means). A small network trained on the 8 photon
/// columns reaches the same AUC (~0.88) on generated events as on the real ones.
///
/// Every random number comes from tapir::Rng, so a seed gives the same events on every
/// platform with the same libm (std:: distributions would not).

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <fstream>
#include <locale>
#include <ostream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

// ---- begin tapir/hep/kinematics.hpp ----
/// Collider kinematics in double precision: four-vectors in (px, py, pz, E), built from the
/// detector coordinates (pT, eta, phi, E), and the pair observables of a diphoton analysis.
///
/// Conventions: GeV and radians, z along the beam, eta = asinh(pz / pT), phi in [-pi, pi].

#include <cmath>
#include <limits>
#include <string>


namespace tapir::hep {

namespace detail {
inline constexpr double pi = 3.14159265358979323846;
}

/// phi1 - phi2 wrapped to [-pi, pi]. std::remainder is exact, so no rounding is added
/// however many turns the inputs differ by.
inline double delta_phi(double phi1, double phi2) noexcept {
    return std::remainder(phi1 - phi2, 2.0 * detail::pi);
}

inline double delta_eta(double eta1, double eta2) noexcept { return eta1 - eta2; }

/// sqrt(deta^2 + dphi^2) with dphi wrapped.
inline double delta_r(double eta1, double phi1, double eta2, double phi2) noexcept {
    return std::hypot(eta1 - eta2, delta_phi(phi1, phi2));
}

struct FourVector {
    double px = 0.0, py = 0.0, pz = 0.0, e = 0.0;

    constexpr FourVector() = default;
    constexpr FourVector(double px_, double py_, double pz_, double e_) noexcept : px(px_), py(py_), pz(pz_), e(e_) {}

    /// From detector coordinates with a measured energy (the mass is whatever E implies).
    static FourVector from_pt_eta_phi_e(double pt, double eta, double phi, double energy) {
        check_pt(pt, "from_pt_eta_phi_e");
        return {pt * std::cos(phi), pt * std::sin(phi), pt * std::sinh(eta), energy};
    }
    /// A massless particle (photon): E = |p| = pT cosh(eta).
    static FourVector massless(double pt, double eta, double phi) {
        check_pt(pt, "massless");
        return {pt * std::cos(phi), pt * std::sin(phi), pt * std::sinh(eta), pt * std::cosh(eta)};
    }
    /// From (pT, eta, phi, m): E = sqrt(p^2 + m^2).
    static FourVector from_pt_eta_phi_m(double pt, double eta, double phi, double mass) {
        check_pt(pt, "from_pt_eta_phi_m");
        const double p = pt * std::cosh(eta);
        return {pt * std::cos(phi), pt * std::sin(phi), pt * std::sinh(eta), std::hypot(p, mass)};
    }

    double pt() const noexcept { return std::hypot(px, py); }
    double p() const noexcept { return std::hypot(std::hypot(px, py), pz); }
    /// Pseudorapidity; +-infinity along the beam (pT = 0), 0 for the null vector.
    double eta() const noexcept {
        const double t = pt();
        if (t == 0.0) return pz > 0.0 ? std::numeric_limits<double>::infinity()
                                      : (pz < 0.0 ? -std::numeric_limits<double>::infinity() : 0.0);
        return std::asinh(pz / t);
    }
    double phi() const noexcept { return (px == 0.0 && py == 0.0) ? 0.0 : std::atan2(py, px); }
    /// Rapidity 0.5 ln((E + pz) / (E - pz)); +-infinity for |pz| >= E.
    double rapidity() const noexcept {
        if (pz >= e) return std::numeric_limits<double>::infinity();
        if (-pz >= e) return -std::numeric_limits<double>::infinity();
        return std::atanh(pz / e);
    }
    /// m^2 = (E - |p|)(E + |p|): the factored form loses less than E^2 - p^2. Can be a little
    /// negative from rounding (or truly, for a spacelike vector).
    double m2() const noexcept {
        const double pp = p();
        return (e - pp) * (e + pp);
    }
    /// Invariant mass; m^2 < 0 from rounding is clamped to 0 rather than giving NaN.
    double m() const noexcept {
        const double q = m2();
        return q > 0.0 ? std::sqrt(q) : 0.0;
    }
    /// Transverse mass sqrt(m^2 + pT^2) = sqrt(E^2 - pz^2).
    double mt() const noexcept {
        const double q = (e - pz) * (e + pz);
        return q > 0.0 ? std::sqrt(q) : 0.0;
    }

    FourVector& operator+=(const FourVector& o) noexcept {
        px += o.px, py += o.py, pz += o.pz, e += o.e;
        return *this;
    }
    FourVector& operator-=(const FourVector& o) noexcept {
        px -= o.px, py -= o.py, pz -= o.pz, e -= o.e;
        return *this;
    }
    friend FourVector operator+(FourVector a, const FourVector& b) noexcept { return a += b; }
    friend FourVector operator-(FourVector a, const FourVector& b) noexcept { return a -= b; }
    /// Minkowski product with metric (+, -, -, -).
    friend double dot(const FourVector& a, const FourVector& b) noexcept {
        return a.e * b.e - a.px * b.px - a.py * b.py - a.pz * b.pz;
    }

private:
    static void check_pt(double pt, const char* who) {
        if (!(pt >= 0.0) || !std::isfinite(pt))
            throw value_error(std::string("FourVector::") + who + ": pT must be finite and >= 0, got " + std::to_string(pt));
    }
};

/// Lorentz boost by velocity (bx, by, bz) (in units of c): a particle at rest acquires that
/// velocity. Throws value_error unless |beta| < 1.
inline FourVector boost(const FourVector& v, double bx, double by, double bz) {
    const double b2 = bx * bx + by * by + bz * bz;
    if (!(b2 < 1.0))
        throw value_error("hep::boost: |beta| must be < 1, got |beta|^2 = " + std::to_string(b2));
    if (b2 == 0.0) return v;
    const double gamma = 1.0 / std::sqrt((1.0 - std::sqrt(b2)) * (1.0 + std::sqrt(b2)));
    const double bp = bx * v.px + by * v.py + bz * v.pz;
    /// (gamma - 1) / b2 = gamma^2 / (gamma + 1): no cancellation for tiny beta.
    const double g2 = gamma * gamma / (gamma + 1.0);
    const double k = g2 * bp + gamma * v.e;
    return {v.px + k * bx, v.py + k * by, v.pz + k * bz, gamma * (v.e + bp)};
}

/// Boost along z by rapidity y (exact for any y, unlike beta near 1): rapidities add.
inline FourVector boost_z_rapidity(const FourVector& v, double y) noexcept {
    const double c = std::cosh(y), s = std::sinh(y);
    return {v.px, v.py, c * v.pz + s * v.e, c * v.e + s * v.pz};
}

/// Boost that takes the system p to rest (p must be timelike, E > 0).
inline FourVector boost_to_rest_frame(const FourVector& v, const FourVector& p) {
    if (!(p.e > 0.0) || !(p.m2() > 0.0))
        throw value_error("hep::boost_to_rest_frame: the frame vector must be timelike with E > 0");
    return boost(v, -p.px / p.e, -p.py / p.e, -p.pz / p.e);
}

inline double delta_phi(const FourVector& a, const FourVector& b) noexcept { return delta_phi(a.phi(), b.phi()); }
inline double delta_eta(const FourVector& a, const FourVector& b) noexcept { return a.eta() - b.eta(); }
inline double delta_r(const FourVector& a, const FourVector& b) noexcept {
    return delta_r(a.eta(), a.phi(), b.eta(), b.phi());
}

/// Invariant mass of a pair of general four-vectors, clamped at 0.
inline double invariant_mass(const FourVector& a, const FourVector& b) noexcept { return (a + b).m(); }

/// Mass of two massless particles from detector coordinates:
/// m^2 = 2 pT1 pT2 (cosh deta - cos dphi) = 4 pT1 pT2 (sinh^2(deta/2) + sin^2(dphi/2)),
/// the second form being a sum of non-negative terms, free of cancellation for collinear pairs.
inline double massless_pair_mass(double pt1, double eta1, double phi1, double pt2, double eta2, double phi2) noexcept {
    const double sh = std::sinh(0.5 * (eta1 - eta2));
    const double sn = std::sin(0.5 * delta_phi(phi1, phi2));
    const double q = 4.0 * pt1 * pt2 * (sh * sh + sn * sn);
    return q > 0.0 ? std::sqrt(q) : 0.0;
}

/// Transverse momentum of the pair, pT(yy) = |pT1 + pT2| (vector sum in the transverse plane).
inline double pair_pt(double pt1, double phi1, double pt2, double phi2) noexcept {
    return std::hypot(pt1 * std::cos(phi1) + pt2 * std::cos(phi2), pt1 * std::sin(phi1) + pt2 * std::sin(phi2));
}
inline double pair_pt(const FourVector& a, const FourVector& b) noexcept { return std::hypot(a.px + b.px, a.py + b.py); }

/// Collins-Soper cos(theta*) of particle a in the pair rest frame:
/// 2 (a+ b- - a- b+) / (m sqrt(m^2 + pT^2)) with p+- = (E +- pz)/sqrt(2), signed along the
/// pair's pz (the quark direction is not known in pp). 0 for a massless pair.
inline double collins_soper_cos_theta(const FourVector& a, const FourVector& b) noexcept {
    const FourVector q = a + b;
    const double m = q.m();
    const double mt = q.mt();
    if (m == 0.0 || mt == 0.0) return 0.0;
    const double num = (a.e + a.pz) * (b.e - b.pz) - (a.e - a.pz) * (b.e + b.pz);
    const double c = num / (m * mt);
    return q.pz < 0.0 ? -c : c;
}

} // namespace tapir::hep
// ---- end tapir/hep/kinematics.hpp ----

namespace tapir::hep {

/// One event of the course file: leading photon first, GeV and radians; label 1 = signal.
struct DiphotonEvent {
    double pt1, eta1, phi1, e1, pt2, eta2, phi2, e2, myy;
    int label;
};

/// The generator's knobs. Defaults are tuned to the statistics of the ATLAS Open Data 13 TeV
/// diphoton file higgs_diphoton_50k.csv (checked in tests/hep/test_diphoton.cpp).
struct DiphotonConfig {
    double signal_fraction = 0.5;

    // Selection (the real file's): ordered photons, absolute pT cuts, acceptance, mass window.
    double pt1_min = 35.0, pt2_min = 25.0;
    double eta_max = 2.37;
    /// Barrel/end-cap transition: a photon with crack_lo < |eta| < crack_hi survives with
    /// probability crack_keep (the real file's stored eta shows a partial dip there, the cut
    /// having been applied on the calorimeter cluster eta). 1 disables.
    double crack_lo = 1.37, crack_hi = 1.52, crack_keep = 0.45;
    double m_min = 105.0, m_max = 160.0;

    /// Background: dN/dmyy ~ exp(bkg_slope * myy).
    double bkg_slope = -0.0204;
    /// Signal: double-sided Crystal Ball (core mean and sigma, tail start in sigmas, tail power).
    double sig_mean = 124.95, sig_sigma = 2.35;
    double sig_alpha_lo = 1.45, sig_n_lo = 8.0, sig_alpha_hi = 1.55, sig_n_hi = 12.0;

    /// pT(yy) before cuts, a generalised gamma: dN/dpT ~ pT^(a-1) exp(-(pT/p0)^b) (shape a,
    /// tail b), p0 = scale * (myy/125)^pt_mass_power. b < 1 gives the long tail of recoil
    /// against jets while keeping the far tail finite (a power law would not).
    double sig_pt_scale = 8.2, sig_pt_shape = 1.57, sig_pt_tail = 0.60;
    double bkg_pt_scale = 5.35, bkg_pt_shape = 2.36, bkg_pt_tail = 0.684;
    double pt_mass_power = 0.637;
    /// Fraction of background events whose pair pT points along a photon's transverse direction
    /// (Gaussian spread bkg_pt_align_width, radians), the rest isotropic in azimuth. It mimics
    /// the imbalance of a fake photon that carries only part of its jet: unequal pT, yet
    /// back to back; the real file shows it in the background and not in the signal.
    double bkg_pt_aligned = 0.59, bkg_pt_align_width = 0.324;
    /// System rapidity: Gaussian widths.
    double sig_y_sigma = 1.98, bkg_y_sigma = 1.10;
    /// Background decay angle, in eta* = atanh(cos theta*) (half the photons' rapidity gap):
    /// dN/deta* ~ cosh(eta*)^bkg_angle_power on |eta*| < bkg_eta_star_max. Power -2 is isotropic
    /// (the signal's), 0 is dN/dcos ~ 1/(1 - cos^2) (t-channel), > 0 more forward still.
    double bkg_angle_power = 2.24, bkg_eta_star_max = 1.56;

    /// Kinematic retries per event before giving up (cuts that accept nothing).
    std::size_t max_attempts = 100000;
};

namespace detail {

inline void check_config(const DiphotonConfig& c) {
    auto fail = [](const std::string& what) { throw value_error("DiphotonConfig: " + what); };
    auto num = [](double x) { return std::to_string(x); };
    if (!(c.signal_fraction >= 0.0 && c.signal_fraction <= 1.0))
        fail("signal_fraction must be in [0, 1], got " + num(c.signal_fraction));
    if (!(c.m_min > 0.0 && c.m_max > c.m_min && std::isfinite(c.m_max)))
        fail("need 0 < m_min < m_max, got [" + num(c.m_min) + ", " + num(c.m_max) + "]");
    if (!(c.pt1_min >= c.pt2_min && c.pt2_min >= 0.0))
        fail("need pt1_min >= pt2_min >= 0, got " + num(c.pt1_min) + ", " + num(c.pt2_min));
    if (!(c.eta_max > 0.0)) fail("eta_max must be > 0, got " + num(c.eta_max));
    if (!(c.crack_keep >= 0.0 && c.crack_keep <= 1.0) || !(c.crack_lo <= c.crack_hi))
        fail("need crack_lo <= crack_hi and crack_keep in [0, 1]");
    if (!std::isfinite(c.bkg_slope)) fail("bkg_slope must be finite");
    if (!(c.sig_sigma > 0.0) || !std::isfinite(c.sig_mean)) fail("sig_sigma must be > 0 and sig_mean finite");
    if (!(c.sig_alpha_lo > 0.0 && c.sig_alpha_hi > 0.0 && c.sig_n_lo > 1.0 && c.sig_n_hi > 1.0))
        fail("Crystal Ball tails need alpha > 0 and n > 1");
    if (!(c.sig_pt_scale > 0.0 && c.bkg_pt_scale > 0.0 && c.sig_pt_shape > 0.0 && c.bkg_pt_shape > 0.0 &&
          c.sig_pt_tail > 0.0 && c.bkg_pt_tail > 0.0 && std::isfinite(c.sig_pt_scale) && std::isfinite(c.bkg_pt_scale)))
        fail("pT(yy) spectra need finite scale > 0, shape > 0 and tail > 0");
    if (!std::isfinite(c.pt_mass_power)) fail("pt_mass_power must be finite");
    if (!(c.bkg_pt_aligned >= 0.0 && c.bkg_pt_aligned <= 1.0) || !(c.bkg_pt_align_width >= 0.0))
        fail("need bkg_pt_aligned in [0, 1] and bkg_pt_align_width >= 0");
    if (!(c.sig_y_sigma >= 0.0 && c.bkg_y_sigma >= 0.0)) fail("rapidity widths must be >= 0");
    if (!(c.bkg_angle_power >= -2.0 && c.bkg_angle_power <= 8.0) || !(c.bkg_eta_star_max > 0.0 && c.bkg_eta_star_max <= 10.0))
        fail("need bkg_angle_power in [-2, 8] and bkg_eta_star_max in (0, 10], got " + num(c.bkg_angle_power) + ", " +
             num(c.bkg_eta_star_max));
    if (c.max_attempts == 0) fail("max_attempts must be > 0");
}

/// exp(slope * x) on [lo, hi] by inversion; expm1/log1p keep it exact for tiny slopes.
inline double sample_truncated_exponential(Rng& rng, double slope, double lo, double hi) {
    const double u = rng.uniform();
    if (slope == 0.0) return lo + (hi - lo) * u;
    const double x = lo + std::log1p(u * std::expm1(slope * (hi - lo))) / slope;
    return x < lo ? lo : (x > hi ? hi : x);
}

/// Double-sided Crystal Ball in t = (x - mean)/sigma: Gaussian core on [-alo, ahi], power-law
/// tails A (B -+ t)^-n joined with continuous value and slope. Region by weight, then inversion
/// (tails) or rejection from the normal (core).
inline double sample_dscb(Rng& rng, double alo, double nlo, double ahi, double nhi) {
    const double w_lo = nlo / alo / (nlo - 1.0) * std::exp(-0.5 * alo * alo);
    const double w_hi = nhi / ahi / (nhi - 1.0) * std::exp(-0.5 * ahi * ahi);
    const double w_core = std::sqrt(0.5 * pi) *
                          (std::erf(alo / std::sqrt(2.0)) + std::erf(ahi / std::sqrt(2.0)));
    const double r = rng.uniform() * (w_lo + w_core + w_hi);
    if (r < w_lo) {
        const double b = nlo / alo - alo;
        const double u = 1.0 - rng.uniform();  // (0, 1]
        return b - (b + alo) * std::pow(u, -1.0 / (nlo - 1.0));
    }
    if (r < w_lo + w_core) {
        for (;;) {
            const double t = rng.normal();
            if (t >= -alo && t <= ahi) return t;
        }
    }
    const double b = nhi / ahi - ahi;
    const double u = 1.0 - rng.uniform();
    return -b + (b + ahi) * std::pow(u, -1.0 / (nhi - 1.0));
}

/// Gamma(k) variate, Marsaglia-Tsang (k >= 1) with the U^(1/k) boost below 1; built on
/// Rng::normal/uniform so it is as portable as they are.
inline double sample_gamma(Rng& rng, double k) {
    if (k < 1.0) return sample_gamma(rng, k + 1.0) * std::pow(1.0 - rng.uniform(), 1.0 / k);
    const double d = k - 1.0 / 3.0;
    const double c = 1.0 / std::sqrt(9.0 * d);
    for (;;) {
        double x, v;
        do {
            x = rng.normal();
            v = 1.0 + c * x;
        } while (v <= 0.0);
        v = v * v * v;
        const double u = 1.0 - rng.uniform();  // (0, 1]
        if (std::log(u) < 0.5 * x * x + d - d * v + d * std::log(v)) return d * v;
    }
}

/// dN/dpT ~ pT^(a-1) exp(-(pT/p0)^b): (pT/p0)^b is Gamma(a/b)-distributed.
inline double sample_pair_pt(Rng& rng, double p0, double a, double b) {
    return p0 * std::pow(sample_gamma(rng, a / b), 1.0 / b);
}

/// cos theta* with dN/deta* ~ cosh(eta*)^k on |eta*| < emax: eta* uniform, accepted with
/// (cosh eta* / cosh emax)^k for k >= 0 or cosh(eta*)^k for k < 0 (both <= 1). The acceptance
/// stays above ~1/(|k| emax + 1) within the range check_config allows.
inline double sample_cos_theta(Rng& rng, double k, double emax) {
    const double norm = k >= 0.0 ? std::cosh(emax) : 1.0;
    for (;;) {
        const double e = rng.uniform(-emax, emax);
        if (rng.uniform() <= std::pow(std::cosh(e) / norm, k)) return std::tanh(e);
    }
}

inline bool in_crack(double abs_eta, const DiphotonConfig& c) noexcept {
    return abs_eta > c.crack_lo && abs_eta < c.crack_hi;
}

} // namespace detail

/// Streams events one at a time; generate_diphoton() is a loop over next().
class DiphotonGenerator {
public:
    explicit DiphotonGenerator(std::uint64_t seed, const DiphotonConfig& config = DiphotonConfig{})
        : cfg_(config), rng_(seed) {
        detail::check_config(cfg_);
    }

    const DiphotonConfig& config() const noexcept { return cfg_; }

    /// An event of a random class (signal with probability signal_fraction).
    DiphotonEvent next() { return next(rng_.bernoulli(cfg_.signal_fraction) ? 1 : 0); }

    /// An event of the given class (1 signal, 0 background).
    DiphotonEvent next(int label) {
        if (label != 0 && label != 1)
            throw value_error("DiphotonGenerator::next: label must be 0 or 1, got " + std::to_string(label));
        const double m = label ? sample_signal_mass() : detail::sample_truncated_exponential(rng_, cfg_.bkg_slope, cfg_.m_min, cfg_.m_max);
        for (std::size_t attempt = 0; attempt < cfg_.max_attempts; ++attempt) {
            DiphotonEvent ev{};
            if (try_kinematics(m, label, ev)) return ev;
        }
        throw value_error("DiphotonGenerator: no event passed the cuts in " + std::to_string(cfg_.max_attempts) +
                          " attempts at myy = " + std::to_string(m) + " GeV; the cuts are too tight for the mass window");
    }

private:
    double sample_signal_mass() {
        for (std::size_t attempt = 0; attempt < cfg_.max_attempts; ++attempt) {
            const double t = detail::sample_dscb(rng_, cfg_.sig_alpha_lo, cfg_.sig_n_lo, cfg_.sig_alpha_hi, cfg_.sig_n_hi);
            const double m = cfg_.sig_mean + cfg_.sig_sigma * t;
            if (m >= cfg_.m_min && m <= cfg_.m_max) return m;
        }
        throw value_error("DiphotonGenerator: the signal peak (sig_mean = " + std::to_string(cfg_.sig_mean) +
                          " GeV) puts no events in the mass window [" + std::to_string(cfg_.m_min) + ", " +
                          std::to_string(cfg_.m_max) + "] GeV");
    }

    /// One try: pair pT, rapidity and decay angles at mass m, boost, cuts. False if cut away.
    bool try_kinematics(double m, int label, DiphotonEvent& ev) {
        const bool sig = label == 1;
        const double p0 = (sig ? cfg_.sig_pt_scale : cfg_.bkg_pt_scale) * std::pow(m / 125.0, cfg_.pt_mass_power);
        const double pt = sig ? detail::sample_pair_pt(rng_, p0, cfg_.sig_pt_shape, cfg_.sig_pt_tail)
                              : detail::sample_pair_pt(rng_, p0, cfg_.bkg_pt_shape, cfg_.bkg_pt_tail);
        const double y = rng_.normal() * (sig ? cfg_.sig_y_sigma : cfg_.bkg_y_sigma);

        const double cos_t = sig ? rng_.uniform(-1.0, 1.0)
                                 : detail::sample_cos_theta(rng_, cfg_.bkg_angle_power, cfg_.bkg_eta_star_max);
        const double sin_t = std::sqrt((1.0 - cos_t) * (1.0 + cos_t));
        const double phi_s = rng_.uniform(-detail::pi, detail::pi);
        // Pair pT azimuth: isotropic, or (aligned background) along +-the photon axis.
        const double u_dir = rng_.uniform();
        const double jitter = rng_.normal() * cfg_.bkg_pt_align_width;
        double big_phi = rng_.uniform(-detail::pi, detail::pi);
        if (!sig && u_dir < cfg_.bkg_pt_aligned) big_phi = phi_s + jitter + (rng_.bernoulli(0.5) ? detail::pi : 0.0);

        // Rest frame: back to back along (theta*, phi*), each with E = m/2.
        const double h = 0.5 * m;
        const FourVector a(h * sin_t * std::cos(phi_s), h * sin_t * std::sin(phi_s), h * cos_t, h);
        const FourVector b(-a.px, -a.py, -a.pz, h);
        // Transverse boost to pT, then longitudinal by rapidity y: the pair ends at
        // (pT cos Phi, pT sin Phi, mT sinh y, mT cosh y) and z stays the beam axis.
        const double mt = std::hypot(m, pt);
        const double bt = pt / mt;
        const double bx = bt * std::cos(big_phi), by = bt * std::sin(big_phi);
        FourVector g1 = boost_z_rapidity(boost(a, bx, by, 0.0), y);
        FourVector g2 = boost_z_rapidity(boost(b, bx, by, 0.0), y);
        if (g1.pt() < g2.pt()) std::swap(g1, g2);

        const double pt1 = g1.pt(), pt2 = g2.pt();
        if (!(pt1 > cfg_.pt1_min && pt2 > cfg_.pt2_min)) return false;
        const double eta1 = g1.eta(), eta2 = g2.eta();
        if (!(std::fabs(eta1) < cfg_.eta_max && std::fabs(eta2) < cfg_.eta_max)) return false;
        const double k1 = rng_.uniform(), k2 = rng_.uniform();
        if (detail::in_crack(std::fabs(eta1), cfg_) && !(k1 < cfg_.crack_keep)) return false;
        if (detail::in_crack(std::fabs(eta2), cfg_) && !(k2 < cfg_.crack_keep)) return false;

        const double phi1 = g1.phi(), phi2 = g2.phi();
        // Stored values are the massless photons at (pT, eta, phi); myy is recomputed from them
        // so the file is self-consistent to rounding.
        const double myy = massless_pair_mass(pt1, eta1, phi1, pt2, eta2, phi2);
        if (!(myy >= cfg_.m_min && myy <= cfg_.m_max)) return false;
        ev = DiphotonEvent{pt1, eta1, phi1, pt1 * std::cosh(eta1), pt2, eta2, phi2, pt2 * std::cosh(eta2), myy, label};
        return true;
    }

    DiphotonConfig cfg_;
    Rng rng_;
};

/// n events with the given configuration; the same (n, seed, config) gives the same events, and
/// a shorter run is a prefix of a longer one.
inline std::vector<DiphotonEvent> generate_diphoton(std::size_t n, std::uint64_t seed, const DiphotonConfig& config) {
    DiphotonGenerator gen(seed, config);
    std::vector<DiphotonEvent> out;
    out.reserve(n);
    for (std::size_t i = 0; i < n; ++i) out.push_back(gen.next());
    return out;
}

/// n events with the default (real-file-like) configuration and the given signal fraction.
inline std::vector<DiphotonEvent> generate_diphoton(std::size_t n, std::uint64_t seed, double signal_fraction = 0.5) {
    DiphotonConfig c;
    c.signal_fraction = signal_fraction;
    return generate_diphoton(n, seed, c);
}

namespace detail {
inline void check_events_writable(const std::vector<DiphotonEvent>& events) {
    for (std::size_t i = 0; i < events.size(); ++i) {
        const DiphotonEvent& e = events[i];
        const double v[9] = {e.pt1, e.eta1, e.phi1, e.e1, e.pt2, e.eta2, e.phi2, e.e2, e.myy};
        for (double x : v)
            if (!std::isfinite(x)) throw value_error("write_diphoton_csv: event " + std::to_string(i) + " has a non-finite value");
        if (e.label != 0 && e.label != 1)
            throw value_error("write_diphoton_csv: event " + std::to_string(i) + " has label " + std::to_string(e.label) +
                              " (must be 0 or 1)");
    }
}
} // namespace detail

/// The course CSV: header `,pt_y1,eta_y1,phi_y1,e_y1,pt_y2,eta_y2,phi_y2,e_y2,myy,label`, an
/// unnamed row index first, 17 significant digits (doubles round-trip), C locale whatever the
/// stream's; the stream's formatting state is restored afterwards. Throws value_error for an
/// event with a non-finite value or a label other than 0/1 (the file would not read back).
inline void write_diphoton_csv(std::ostream& os, const std::vector<DiphotonEvent>& events) {
    detail::check_events_writable(events);
    const std::locale old_locale = os.imbue(std::locale::classic());
    const auto old_flags = os.flags();
    const auto old_precision = os.precision(17);
    os.unsetf(std::ios::floatfield);
    os << ",pt_y1,eta_y1,phi_y1,e_y1,pt_y2,eta_y2,phi_y2,e_y2,myy,label\n";
    for (std::size_t i = 0; i < events.size(); ++i) {
        const DiphotonEvent& e = events[i];
        os << i << ',' << e.pt1 << ',' << e.eta1 << ',' << e.phi1 << ',' << e.e1 << ',' << e.pt2 << ',' << e.eta2 << ','
           << e.phi2 << ',' << e.e2 << ',' << e.myy << ',' << e.label << '\n';
    }
    os.precision(old_precision);
    os.flags(old_flags);
    os.imbue(old_locale);
}

inline void write_diphoton_csv(const std::string& path, const std::vector<DiphotonEvent>& events) {
    detail::check_events_writable(events);  // before the file is created or truncated
    std::ofstream f(path, std::ios::binary);
    if (!f) throw std::runtime_error("write_diphoton_csv: cannot open '" + path + "' for writing");
    write_diphoton_csv(f, events);
    f.flush();
    if (!f) throw std::runtime_error("write_diphoton_csv: writing '" + path + "' failed (disk full?)");
}

} // namespace tapir::hep
// ---- end tapir/hep/diphoton.hpp ----
// ---- begin tapir/hep/sampling.hpp ----
/// Random variates and decay kinematics shared by the event generators (zgamma.hpp, stop.hpp):
/// line shapes, spectra, counts and two-body decays, every number drawn from tapir::Rng so that
/// a seed gives the same events on every platform with the same libm.

#include <cmath>
#include <cstdint>
#include <string>


namespace tapir::hep::sampling {

inline constexpr double pi = 3.14159265358979323846;

/// dN/dx ~ exp(slope x) on [lo, hi], by inversion (expm1/log1p keep it exact for tiny slopes).
inline double truncated_exponential(Rng& rng, double slope, double lo, double hi) {
    const double u = rng.uniform();
    if (slope == 0.0) return lo + (hi - lo) * u;
    const double x = lo + std::log1p(u * std::expm1(slope * (hi - lo))) / slope;
    return x < lo ? lo : (x > hi ? hi : x);
}

/// Gaussian truncated to [lo, hi] by rejection; throws when the window holds (almost) nothing.
inline double truncated_normal(Rng& rng, double mean, double sigma, double lo, double hi) {
    for (int i = 0; i < 100000; ++i) {
        const double x = mean + sigma * rng.normal();
        if (x >= lo && x <= hi) return x;
    }
    throw value_error("sampling::truncated_normal: N(" + std::to_string(mean) + ", " + std::to_string(sigma) +
                      ") puts no probability in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
}

/// Relativistic line shape in the narrow-width form, a Cauchy distribution in the mass:
/// dN/dm ~ 1 / ((m - m0)^2 + (gamma/2)^2) on [lo, hi], by inversion of its CDF (exact).
inline double breit_wigner(Rng& rng, double m0, double gamma, double lo, double hi) {
    const double h = 0.5 * gamma;
    const double a = std::atan((lo - m0) / h), b = std::atan((hi - m0) / h);
    const double m = m0 + h * std::tan(a + (b - a) * rng.uniform());
    return m < lo ? lo : (m > hi ? hi : m);
}

/// Gamma(shape k, scale 1) variate: Marsaglia and Tsang (2000); k < 1 through U^(1/k) boosting.
inline double gamma(Rng& rng, double k) {
    if (!(k > 0.0)) throw value_error("sampling::gamma: shape must be > 0, got " + std::to_string(k));
    if (k < 1.0) return gamma(rng, k + 1.0) * std::pow(rng.uniform(), 1.0 / k);
    const double d = k - 1.0 / 3.0, c = 1.0 / std::sqrt(9.0 * d);
    for (;;) {
        double x, v;
        do {
            x = rng.normal();
            v = 1.0 + c * x;
        } while (v <= 0.0);
        v = v * v * v;
        const double u = rng.uniform();
        if (u < 1.0 - 0.0331 * x * x * x * x) return d * v;
        if (std::log(u) < 0.5 * x * x + d * (1.0 - v + std::log(v))) return d * v;
    }
}

/// Generalised gamma spectrum dN/dx ~ x^(a-1) exp(-(x/scale)^b) (a transverse-momentum shape:
/// rises like x^(a-1), tail exp(-x^b)). With u = (x/scale)^b, u ~ Gamma(a/b).
inline double generalised_gamma(Rng& rng, double scale, double a, double b) {
    return scale * std::pow(gamma(rng, a / b), 1.0 / b);
}

/// Poisson count (Knuth's product of uniforms; fine for the small means of jet multiplicities).
inline int poisson(Rng& rng, double mean) {
    if (!(mean >= 0.0) || !(mean < 200.0)) throw value_error("sampling::poisson: mean must be in [0, 200), got " + std::to_string(mean));
    const double limit = std::exp(-mean);
    double p = rng.uniform();
    int k = 0;
    while (p > limit) {
        ++k;
        p *= rng.uniform();
    }
    return k;
}

/// Number of successes in n trials of probability p.
inline int binomial(Rng& rng, int n, double p) {
    int k = 0;
    for (int i = 0; i < n; ++i) k += rng.bernoulli(p) ? 1 : 0;
    return k;
}

/// cos(theta) with dN/dcos ~ 1 + c2 cos^2 (c2 >= -1), by rejection.
inline double cos_theta_1pc2(Rng& rng, double c2) {
    const double top = 1.0 + (c2 > 0.0 ? c2 : 0.0);
    for (;;) {
        const double c = rng.uniform(-1.0, 1.0);
        if (rng.uniform() * top <= 1.0 + c2 * c * c) return c;
    }
}

/// cos(theta) = tanh(eta*) with dN/deta* ~ cosh(eta*)^k on |eta*| < emax: k = -2 is isotropic,
/// k = 0 is dN/dcos ~ 1/sin^2 (a t-channel forward peak), k > 0 more forward still.
inline double cos_theta_forward(Rng& rng, double k, double emax) {
    const double norm = k >= 0.0 ? std::cosh(emax) : 1.0;
    for (;;) {
        const double e = rng.uniform(-emax, emax);
        if (rng.uniform() <= std::pow(std::cosh(e) / norm, k)) return std::tanh(e);
    }
}

/// Momentum of either daughter in the rest frame of a parent of mass m decaying to masses m1, m2
/// (the Kallen function); 0 at threshold, value_error below it.
inline double two_body_momentum(double m, double m1, double m2) {
    const double a = (m - m1 - m2) * (m + m1 + m2), b = (m - m1 + m2) * (m + m1 - m2);
    if (a < 0.0 || m <= 0.0)
        throw value_error("sampling::two_body_momentum: " + std::to_string(m) + " GeV cannot decay to " + std::to_string(m1) +
                          " + " + std::to_string(m2) + " GeV");
    return std::sqrt(a * (b > 0.0 ? b : 0.0)) / (2.0 * m);
}

/// Daughters of a two-body decay of `parent` (a four-vector in the lab, mass > m1 + m2) with the
/// daughter-1 direction (cos theta, phi) given in the parent's rest frame, boosted to the lab.
struct TwoBody {
    FourVector d1, d2;
};
inline TwoBody decay_two_body(const FourVector& parent, double m1, double m2, double cos_t, double phi) {
    const double m = parent.m();
    const double p = two_body_momentum(m, m1, m2);
    const double s = std::sqrt((1.0 - cos_t) * (1.0 + cos_t));
    const FourVector a(p * s * std::cos(phi), p * s * std::sin(phi), p * cos_t, std::hypot(p, m1));
    const FourVector b(-a.px, -a.py, -a.pz, std::hypot(p, m2));
    const double bx = parent.px / parent.e, by = parent.py / parent.e, bz = parent.pz / parent.e;
    return TwoBody{boost(a, bx, by, bz), boost(b, bx, by, bz)};
}

/// Isotropic two-body decay.
inline TwoBody decay_isotropic(Rng& rng, const FourVector& parent, double m1, double m2) {
    const double c = rng.uniform(-1.0, 1.0);
    return decay_two_body(parent, m1, m2, c, rng.uniform(-pi, pi));
}

/// A system of mass m, transverse momentum pt at azimuth phi and rapidity y, as a four-vector:
/// (pt cos phi, pt sin phi, mT sinh y, mT cosh y) with mT = sqrt(m^2 + pt^2).
inline FourVector system_from_m_pt_y(double m, double pt, double phi, double y) {
    const double mt = std::hypot(m, pt);
    return FourVector(pt * std::cos(phi), pt * std::sin(phi), mt * std::sinh(y), mt * std::cosh(y));
}

} // namespace tapir::hep::sampling
// ---- end tapir/hep/sampling.hpp ----
// ---- begin tapir/hep/stop.hpp ----
/// A synthetic one-lepton search sample: top-squark pairs (T2tt: stop -> t neutralino, label 1)
/// against top-quark pairs (label 0), after the preselection of Elwood and Kruecker
/// (arXiv:1806.00322: one lepton with pT > 40 GeV, at least four jets with pT > 30 GeV, at least one
/// b-tagged jet), with the expected yields of a luminosity.
///
/// Physics of the generator (every number from tapir::Rng):
/// - Production: the pair mass is threshold plus a Gamma-distributed excess, the pair pT a
///   generalised-gamma spectrum (initial-state radiation), the pair rapidity a Gaussian; the
///   pair decays isotropically in its rest frame.
/// - Decays: stop -> t chi (two-body, isotropic), t -> b W, W -> l nu or q qbar', with
///   Breit-Wigner top and W masses. One W decays to an electron or muon; with probability
///   `dilepton_fraction` the other one decays leptonically too. A second electron or muon
///   (or the lepton of a leptonic tau decay) inside the acceptance vetoes the event; outside
///   it (soft or forward) it is lost and its momentum is missing; a hadronic tau is a jet
///   carrying part of its momentum, vetoed with an efficiency. These lost-lepton top pairs
///   populate the transverse-mass tail beyond the W mass, as in the real searches.
/// - Detector: jets are the b and W-daughter quarks plus initial-state-radiation jets that
///   share the recoil of the pair, with a calorimeter resolution; b-tagging with an efficiency
///   and mistag rates; missing E_T is the invisible momentum (neutrinos, neutralinos, the lost
///   lepton) plus the jet mismeasurement and a soft-term resolution.
/// - Selection by rejection, counting attempts: efficiency() is the preselection efficiency of
///   each class, and expected_yield() = luminosity x cross-section x branching x efficiency.
///
/// The signal default, m_stop = 600 GeV and m_LSP = 250 GeV, is moderately compressed: the
/// signal looks like top pairs with more missing E_T. The paper's compressed point (600, 400) is
/// out of reach of this background at 30 fb^-1 (its lost-lepton tail is that of the real
/// searches, heavier than the paper's sample shows); its uncompressed point is (900, 100) with
/// stop_cross_section_pb = 0.033. Cross-sections are approximate 14 TeV values.

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>


namespace tapir::hep {

/// One preselected event: the 21 features (GeV, radians) and the class (1 stop pair, 0 top pair).
struct StopEvent {
    double lep_pt, lep_eta;
    double jet1_pt, jet1_eta, jet2_pt, jet2_eta, jet3_pt, jet3_eta, jet4_pt, jet4_eta;
    double n_jets, n_bjets;
    double met, mt, ht, met_over_sqrt_ht;
    double dphi_min_j12_met;  ///< smallest |delta phi| between one of the two leading jets and the missing E_T
    double m_lb;              ///< mass of the lepton and the b-tagged jet closest to it
    double m_jjj;             ///< mass of the three jets with the largest summed pT (hadronic top candidate)
    double dr_lb;             ///< delta R of that lepton-b pair
    /// Hadronic-top chi^2: min over a jet pair (W) and a third jet (b) of
    /// ((m_jj - m_W)/10 GeV)^2 + ((m_jjj - m_t)/15 GeV)^2. Small when a t -> b q q' decay is
    /// reconstructed (single-lepton top pairs, the signal), large for lost-lepton top pairs.
    double had_top_chi2;
    int label;

    static constexpr std::size_t num_features = 21;
    std::array<double, num_features> features() const {
        return {lep_pt, lep_eta, jet1_pt, jet1_eta, jet2_pt, jet2_eta, jet3_pt, jet3_eta, jet4_pt, jet4_eta, n_jets,
                n_bjets, met,    mt,      ht,       met_over_sqrt_ht, dphi_min_j12_met, m_lb, m_jjj, dr_lb, had_top_chi2};
    }
};

/// Column names of StopEvent::features(), as used in the examples' CSV files.
inline const std::vector<std::string>& stop_feature_names() {
    static const std::vector<std::string> names = {
        "lep_pt", "lep_eta", "jet1_pt", "jet1_eta", "jet2_pt", "jet2_eta", "jet3_pt", "jet3_eta", "jet4_pt", "jet4_eta",
        "n_jets", "n_bjets", "met",     "mt",       "ht",      "met_over_sqrt_ht", "dphi_min_j12_met", "m_lb", "m_jjj", "dr_lb",
        "had_top_chi2"};
    return names;
}

struct StopConfig {
    double signal_fraction = 0.5;

    double stop_mass = 600.0, lsp_mass = 250.0;
    double top_mass = 172.5, top_width = 1.42, w_mass = 80.38, w_width = 2.085;

    /// Pair mass = threshold + excess, excess ~ Gamma(shape) x scale (scale for stops: a
    /// fraction of the stop mass).
    double tt_excess_shape = 1.5, tt_excess_scale = 90.0;
    double stop_excess_shape = 1.5, stop_excess_scale_fraction = 0.25;
    /// Pair pT, dN/dpT ~ pT^(shape-1) exp(-(pT/scale)^tail); heavier pairs radiate more.
    double tt_pt_scale = 30.0, stop_pt_scale = 45.0, pt_shape = 1.4, pt_tail = 0.8;
    double tt_y_sigma = 1.0, stop_y_sigma = 0.8;

    /// Probability that the second W decays leptonically (e, mu or tau: BR(W -> l nu) = 0.326);
    /// the second lepton is an electron or muon with probability 2/3, a tau otherwise. An
    /// electron or muon with pT > veto_pt_min and |eta| < lep_eta_max vetoes the event.
    double dilepton_fraction = 0.326, veto_pt_min = 10.0, tau_hadronic = 0.65;
    /// Hadronic-tau veto: a visible tau with pT > tau_veto_pt_min in the acceptance vetoes the
    /// event with probability tau_veto_eff (isolated-track and tau vetoes of the real searches).
    double tau_veto_pt_min = 10.0, tau_veto_eff = 0.7;

    /// Initial-state-radiation jets: N ~ Poisson(isr_base + pT(pair)/isr_pt_per_jet).
    double isr_base = 0.6, isr_pt_per_jet = 50.0, isr_eta_sigma = 1.8;
    /// Jet energy resolution sigma/pT = stochastic/sqrt(pT/GeV) (+) constant; lepton resolution.
    double jet_stochastic = 0.8, jet_constant = 0.05, lep_resolution = 0.02;
    /// Missing E_T soft-term resolution per component, GeV.
    double met_soft_sigma = 12.0;
    /// b-tagging: efficiency for b jets, mistag for W-daughter jets (charm included) and ISR jets.
    double btag_eff = 0.70, mistag_w = 0.03, mistag_isr = 0.01;

    /// Preselection (arXiv:1806.00322's).
    double lep_pt_min = 40.0, lep_eta_max = 2.5, jet_pt_min = 30.0, jet_eta_max = 2.5;
    int min_jets = 4, min_bjets = 1;

    /// Cross-sections (pb, approximate 14 TeV) and the branching fraction to at least one
    /// electron or muon, 1 - (1 - 0.214)^2, applied to both classes.
    double tt_cross_section_pb = 985.0, stop_cross_section_pb = 0.25, branching = 0.38;

    std::size_t max_attempts = 10000000;
};

namespace detail {
inline void check_stop_config(const StopConfig& c) {
    auto fail = [](const std::string& what) { throw value_error("StopConfig: " + what); };
    auto num = [](double x) { return std::to_string(x); };
    if (!(c.signal_fraction >= 0.0 && c.signal_fraction <= 1.0)) fail("signal_fraction must be in [0, 1], got " + num(c.signal_fraction));
    if (!(c.top_mass > c.w_mass && c.w_mass > 0.0 && c.top_width > 0.0 && c.w_width > 0.0)) fail("need top_mass > w_mass > 0 and widths > 0");
    if (!(c.lsp_mass >= 0.0 && c.stop_mass > c.top_mass + c.lsp_mass + 3.0 * c.top_width))
        fail("stop -> t chi needs stop_mass > top_mass + lsp_mass (on-shell top), got m_stop = " + num(c.stop_mass) +
             ", m_LSP = " + num(c.lsp_mass));
    for (double v : {c.tt_excess_shape, c.tt_excess_scale, c.stop_excess_shape, c.stop_excess_scale_fraction, c.tt_pt_scale,
                     c.stop_pt_scale, c.pt_shape, c.pt_tail, c.isr_pt_per_jet, c.tt_cross_section_pb, c.stop_cross_section_pb})
        if (!(v > 0.0 && std::isfinite(v))) fail("production shapes, scales and cross-sections must be finite and > 0");
    if (!(c.dilepton_fraction >= 0.0 && c.dilepton_fraction <= 1.0 && c.tau_hadronic >= 0.0 && c.tau_hadronic <= 1.0))
        fail("dilepton_fraction and tau_hadronic must be in [0, 1]");
    if (!(c.branching > 0.0 && c.branching <= 1.0)) fail("branching must be in (0, 1]");
    for (double p : {c.btag_eff, c.mistag_w, c.mistag_isr})
        if (!(p >= 0.0 && p <= 1.0)) fail("b-tagging probabilities must be in [0, 1]");
    if (!(c.isr_base >= 0.0 && c.tt_y_sigma >= 0.0 && c.stop_y_sigma >= 0.0 && c.isr_eta_sigma >= 0.0)) fail("widths and isr_base must be >= 0");
    if (!(c.jet_stochastic >= 0.0 && c.jet_constant >= 0.0 && c.lep_resolution >= 0.0 && c.met_soft_sigma >= 0.0))
        fail("resolutions must be >= 0");
    if (!(c.min_jets >= 3 && c.min_bjets >= 0)) fail("the features need min_jets >= 3 (jets 1-3) and min_bjets >= 0");
    if (c.max_attempts == 0) fail("max_attempts must be > 0");
}

struct StopJet {
    FourVector p;
    bool btag;
};
} // namespace detail

/// Streams preselected events and counts the attempts of each class.
class StopGenerator {
public:
    explicit StopGenerator(std::uint64_t seed, const StopConfig& config = StopConfig{}) : cfg_(config), rng_(seed) {
        detail::check_stop_config(cfg_);
    }
    const StopConfig& config() const noexcept { return cfg_; }

    StopEvent next() { return next(rng_.bernoulli(cfg_.signal_fraction) ? 1 : 0); }

    /// A preselected event of the given class (1 stop pair, 0 top pair).
    StopEvent next(int label) {
        if (label != 0 && label != 1) throw value_error("StopGenerator::next: label must be 0 or 1, got " + std::to_string(label));
        for (std::size_t attempt = 0; attempt < cfg_.max_attempts; ++attempt) {
            ++attempts_[label];
            StopEvent ev{};
            if (try_event(label, ev)) {
                ++accepted_[label];
                return ev;
            }
        }
        throw value_error("StopGenerator: no event passed the preselection in " + std::to_string(cfg_.max_attempts) + " attempts");
    }

    /// Preselection efficiency of a class so far (accepted / attempted); 0 before any attempt.
    double efficiency(int label) const {
        check_label(label);
        return attempts_[label] ? static_cast<double>(accepted_[label]) / static_cast<double>(attempts_[label]) : 0.0;
    }
    std::size_t attempts(int label) const {
        check_label(label);
        return attempts_[label];
    }
    /// Expected preselected events of a class at an integrated luminosity (fb^-1):
    /// L x sigma x branching x efficiency, with the efficiency measured so far.
    double expected_yield(int label, double luminosity_fb) const {
        const double xs = label ? cfg_.stop_cross_section_pb : cfg_.tt_cross_section_pb;
        return luminosity_fb * 1000.0 * xs * cfg_.branching * efficiency(label);
    }

private:
    static void check_label(int label) {
        if (label != 0 && label != 1) throw value_error("StopGenerator: label must be 0 or 1, got " + std::to_string(label));
    }
    double top_mass() { return sampling::breit_wigner(rng_, cfg_.top_mass, cfg_.top_width, cfg_.top_mass - 15.0, cfg_.top_mass + 15.0); }
    double w_mass() { return sampling::breit_wigner(rng_, cfg_.w_mass, cfg_.w_width, cfg_.w_mass - 20.0, cfg_.w_mass + 20.0); }

    /// Smeared jet at the parton's direction; below threshold partons still enter the MET balance.
    FourVector smear_jet(const FourVector& p) {
        const double pt = p.pt();
        const double rel = std::hypot(cfg_.jet_stochastic / std::sqrt(std::max(pt, 1.0)), cfg_.jet_constant);
        const double f = std::max(0.1, 1.0 + rel * rng_.normal());
        return FourVector(f * p.px, f * p.py, f * p.pz, f * p.e);
    }

    /// t -> b W -> b (l nu | q q'): appends the quarks to `partons` with their flavour (5 for b,
    /// 1 for a W daughter) and sets `lep` for a leptonic W (the neutrino is simply not seen).
    void decay_top(const FourVector& top, bool leptonic, std::vector<std::pair<FourVector, int>>& partons, FourVector& lep) {
        const double mw = std::min(w_mass(), top.m() - 5.0);
        const sampling::TwoBody bw = sampling::decay_isotropic(rng_, top, 4.8, mw);
        partons.emplace_back(bw.d1, 5);
        const sampling::TwoBody ff = sampling::decay_isotropic(rng_, bw.d2, 0.0, 0.0);
        if (leptonic) {
            lep = ff.d1;
        } else {
            partons.emplace_back(ff.d1, 1);
            partons.emplace_back(ff.d2, 1);
        }
    }

    bool try_event(int label, StopEvent& ev) {
        using sampling::pi;
        const bool sig = label == 1;
        // Production.
        const double m1 = sig ? cfg_.stop_mass : top_mass(), m2 = sig ? cfg_.stop_mass : top_mass();
        const double excess = sig ? sampling::gamma(rng_, cfg_.stop_excess_shape) * cfg_.stop_excess_scale_fraction * cfg_.stop_mass
                                  : sampling::gamma(rng_, cfg_.tt_excess_shape) * cfg_.tt_excess_scale;
        const double mpair = m1 + m2 + excess;
        const double ptpair = sampling::generalised_gamma(rng_, sig ? cfg_.stop_pt_scale : cfg_.tt_pt_scale, cfg_.pt_shape, cfg_.pt_tail);
        const double ypair = rng_.normal() * (sig ? cfg_.stop_y_sigma : cfg_.tt_y_sigma);
        const FourVector pair = sampling::system_from_m_pt_y(mpair, ptpair, rng_.uniform(-pi, pi), ypair);
        const sampling::TwoBody pp = sampling::decay_isotropic(rng_, pair, m1, m2);

        // Decays; neutrinos, neutralinos and the lost lepton are invisible (not in any list).
        FourVector t1 = pp.d1, t2 = pp.d2;
        if (sig) {  // stop -> t chi
            t1 = sampling::decay_isotropic(rng_, pp.d1, top_mass(), cfg_.lsp_mass).d1;
            t2 = sampling::decay_isotropic(rng_, pp.d2, top_mass(), cfg_.lsp_mass).d1;
        }
        std::vector<std::pair<FourVector, int>> partons;
        FourVector lep, lost;
        const bool dilepton = rng_.bernoulli(cfg_.dilepton_fraction);
        decay_top(t1, true, partons, lep);
        decay_top(t2, dilepton, partons, lost);
        if (dilepton) {
            // The second lepton: e or mu (2/3), else a tau whose visible decay product (a lepton
            // or a jet) carries a uniform fraction of its momentum. A visible lepton in the
            // acceptance vetoes the event; a visible hadronic tau does so with tau_veto_eff.
            const bool tau = rng_.uniform() >= 2.0 / 3.0;
            const bool hadronic = tau && rng_.bernoulli(cfg_.tau_hadronic);
            const double x = tau ? rng_.uniform(0.2, 1.0) : 1.0;
            const FourVector vis(x * lost.px, x * lost.py, x * lost.pz, x * lost.e);
            const bool in_acceptance = std::fabs(vis.eta()) < cfg_.lep_eta_max;
            if (!hadronic && in_acceptance && vis.pt() > cfg_.veto_pt_min) return false;
            if (hadronic) {
                if (in_acceptance && vis.pt() > cfg_.tau_veto_pt_min && rng_.bernoulli(cfg_.tau_veto_eff)) return false;
                partons.emplace_back(vis, 1);
            }
        }

        // ISR jets balance the pair's pT: Dirichlet(1,..,1) shares along the recoil with some
        // azimuthal spread, the last jet taking what is left so that the sum is exact.
        const int nisr = sampling::poisson(rng_, cfg_.isr_base + ptpair / cfg_.isr_pt_per_jet);
        FourVector soft(-pair.px, -pair.py, 0.0, 0.0);  // the recoil still to be assigned
        if (nisr > 0) {
            std::vector<double> share(static_cast<std::size_t>(nisr));
            double tot = 0.0;
            for (double& s : share) tot += (s = rng_.exponential(1.0));
            const double recoil_phi = std::atan2(-pair.py, -pair.px);
            for (int k = 0; k + 1 < nisr; ++k) {
                const FourVector j = FourVector::massless(share[static_cast<std::size_t>(k)] / tot * ptpair, cfg_.isr_eta_sigma * rng_.normal(),
                                                          recoil_phi + 0.3 * rng_.normal());
                partons.emplace_back(j, 0);
                soft.px -= j.px, soft.py -= j.py;
            }
            partons.emplace_back(FourVector::massless(std::hypot(soft.px, soft.py), cfg_.isr_eta_sigma * rng_.normal(),
                                                      std::atan2(soft.py, soft.px)),
                                 0);
            soft = FourVector();
        }

        // Detector: lepton, jets, b-tags, missing E_T.
        const double lf = 1.0 + cfg_.lep_resolution * rng_.normal();
        const FourVector l(lf * lep.px, lf * lep.py, lf * lep.pz, lf * lep.e);
        std::vector<detail::StopJet> jets;
        FourVector visible = l;
        for (const auto& q : partons) {
            const FourVector j = smear_jet(q.first);
            const double u = rng_.uniform();
            visible += j;
            if (!(j.pt() > cfg_.jet_pt_min && std::fabs(j.eta()) < cfg_.jet_eta_max)) continue;
            const double ptag = q.second == 5 ? cfg_.btag_eff : (q.second == 1 ? cfg_.mistag_w : cfg_.mistag_isr);
            jets.push_back(detail::StopJet{j, u < ptag});
        }
        // Missing E_T: minus everything measured (jets below threshold included; an unclustered
        // recoil with response 0.6), plus the soft-term resolution.
        const double mex = -(visible.px + 0.6 * soft.px) + cfg_.met_soft_sigma * rng_.normal();
        const double mey = -(visible.py + 0.6 * soft.py) + cfg_.met_soft_sigma * rng_.normal();

        // Preselection.
        if (!(l.pt() > cfg_.lep_pt_min && std::fabs(l.eta()) < cfg_.lep_eta_max)) return false;
        if (static_cast<int>(jets.size()) < cfg_.min_jets) return false;
        int nb = 0;
        for (const auto& j : jets) nb += j.btag ? 1 : 0;
        if (nb < cfg_.min_bjets) return false;

        std::sort(jets.begin(), jets.end(), [](const detail::StopJet& a, const detail::StopJet& b) { return a.p.pt() > b.p.pt(); });
        ev.lep_pt = l.pt(), ev.lep_eta = l.eta();
        const auto jpt = [&](std::size_t i) { return i < jets.size() ? jets[i].p.pt() : 0.0; };
        const auto jeta = [&](std::size_t i) { return i < jets.size() ? jets[i].p.eta() : 0.0; };
        ev.jet1_pt = jpt(0), ev.jet1_eta = jeta(0), ev.jet2_pt = jpt(1), ev.jet2_eta = jeta(1);
        ev.jet3_pt = jpt(2), ev.jet3_eta = jeta(2), ev.jet4_pt = jpt(3), ev.jet4_eta = jeta(3);
        ev.n_jets = static_cast<double>(jets.size());
        ev.n_bjets = nb;
        ev.met = std::hypot(mex, mey);
        const double met_phi = std::atan2(mey, mex);
        ev.mt = std::sqrt(std::max(0.0, 2.0 * ev.lep_pt * ev.met * (1.0 - std::cos(delta_phi(l.phi(), met_phi)))));
        double ht = 0.0;
        for (const auto& j : jets) ht += j.p.pt();
        ev.ht = ht;
        ev.met_over_sqrt_ht = ev.met / std::sqrt(ht);
        ev.dphi_min_j12_met = std::min(std::fabs(delta_phi(jets[0].p.phi(), met_phi)), std::fabs(delta_phi(jets[1].p.phi(), met_phi)));
        // Lepton + closest b-tagged jet (the leading jet when none is tagged, with min_bjets = 0).
        std::size_t best = 0;
        double best_dr = 1e300;
        for (std::size_t i = 0; i < jets.size(); ++i) {
            if (nb > 0 && !jets[i].btag) continue;
            const double dr = delta_r(l, jets[i].p);
            if (dr < best_dr) best_dr = dr, best = i;
        }
        ev.m_lb = (l + jets[best].p).m();
        ev.dr_lb = best_dr;
        // Hadronic top candidate: the three jets with the largest vector-sum pT.
        double best_pt = -1.0;
        for (std::size_t a = 0; a < jets.size(); ++a)
            for (std::size_t b = a + 1; b < jets.size(); ++b)
                for (std::size_t c = b + 1; c < jets.size(); ++c) {
                    const FourVector s = jets[a].p + jets[b].p + jets[c].p;
                    if (s.pt() > best_pt) best_pt = s.pt(), ev.m_jjj = s.m();
                }
        ev.had_top_chi2 = 1e300;
        for (std::size_t a = 0; a < jets.size(); ++a)
            for (std::size_t b = a + 1; b < jets.size(); ++b) {
                const FourVector w = jets[a].p + jets[b].p;
                const double cw = (w.m() - cfg_.w_mass) / 10.0;
                for (std::size_t c = 0; c < jets.size(); ++c) {
                    if (c == a || c == b) continue;
                    const double ct = ((w + jets[c].p).m() - cfg_.top_mass) / 15.0;
                    ev.had_top_chi2 = std::min(ev.had_top_chi2, cw * cw + ct * ct);
                }
            }
        ev.label = label;
        return true;
    }

    StopConfig cfg_;
    Rng rng_;
    std::size_t attempts_[2] = {0, 0}, accepted_[2] = {0, 0};
};

/// n preselected events; the same (n, seed, config) gives the same events.
inline std::vector<StopEvent> generate_stop(std::size_t n, std::uint64_t seed, const StopConfig& config = StopConfig{}) {
    StopGenerator gen(seed, config);
    std::vector<StopEvent> out;
    out.reserve(n);
    for (std::size_t i = 0; i < n; ++i) out.push_back(gen.next());
    return out;
}

} // namespace tapir::hep
// ---- end tapir/hep/stop.hpp ----
// ---- begin tapir/hep/zgamma.hpp ----
/// A synthetic Z gamma -> l+ l- gamma sample with 18 event features after the ATLAS
/// search ATLAS-CONF-2019-034: m_llg in a 130-170 GeV window, the dilepton (Z) and
/// l l gamma systems' four-momenta, Delta R and Delta phi of the leptons, missing E_T and its
/// azimuth, Delta phi(missing E_T, Z gamma), pT_ll / m_llg, and the jet counts. Optionally a
/// narrow scalar resonance X -> Z gamma on top (label 1), for resonance searches.
///
/// Physics of the generator (every number from tapir::Rng):
/// - m_llg is drawn first: the Standard-Model Z gamma continuum falls exponentially in the
///   window; the resonance is a Gaussian of the detector resolution. m_ll follows the Z line
///   shape (Breit-Wigner) convolved with the dilepton mass resolution.
/// - pT(llg) from a generalised-gamma spectrum (harder for the resonance, produced in gluon
///   fusion), rapidity from a Gaussian (wider for the q qbar -> Z gamma continuum).
/// - X -> Z gamma in the rest frame: isotropic for the scalar, forward-peaked (t-channel-like)
///   for the continuum; Z -> l l with 1 + cos^2. The system is boosted to the lab and the
///   lepton and photon cuts are applied by retrying the kinematics at fixed masses, so the
///   drawn mass spectra are exact and the rest is conditional on passing the cuts.
/// - Jets recoil against the l l gamma system: N_jets ~ Poisson(a + pT(llg)/b), a fraction of
///   them central. Missing E_T is the mismeasured recoil (jet response below one, so it points
///   along the recoil, opposite to the Z gamma system) plus a soft-term resolution that grows
///   with the jet count. That is what correlates met, dphi_met_llg, n_jets and pt_llg.

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>


namespace tapir::hep {

/// One l l gamma event: the three objects and the 18 features (GeV, radians); label 1 = resonance.
struct ZGammaEvent {
    // Objects (leptons ordered by pT), massless.
    double lep1_pt, lep1_eta, lep1_phi, lep2_pt, lep2_eta, lep2_phi, ph_pt, ph_eta, ph_phi;
    // The 18 features, in zgamma_feature_names() order.
    double m_llg, pt_llg, eta_llg, phi_llg, e_llg;
    double m_ll, pt_ll, eta_ll, phi_ll, e_ll;
    double dr_ll, met, phi_met, dphi_ll, dphi_met_llg, pt_ll_over_m_llg;
    double n_jets, n_central_jets;
    int label;

    static constexpr std::size_t num_features = 18;
    std::array<double, num_features> features() const {
        return {m_llg, pt_llg, eta_llg, phi_llg, e_llg, m_ll, pt_ll, eta_ll, phi_ll,
                e_ll,  dr_ll,  met,     phi_met, dphi_ll, dphi_met_llg, pt_ll_over_m_llg, n_jets, n_central_jets};
    }
};

/// Column names of ZGammaEvent::features(), as used in the examples' CSV files.
inline const std::vector<std::string>& zgamma_feature_names() {
    static const std::vector<std::string> names = {
        "m_llg", "pt_llg", "eta_llg", "phi_llg", "e_llg", "m_ll",         "pt_ll",            "eta_ll", "phi_ll",
        "e_ll",  "dr_ll",  "met",     "phi_met", "dphi_ll", "dphi_met_llg", "pt_ll_over_m_llg", "n_jets", "n_central_jets"};
    return names;
}

struct ZGammaConfig {
    /// Probability of a resonance event (0: the Standard-Model continuum only).
    double signal_fraction = 0.0;

    double m_min = 130.0, m_max = 170.0;  ///< m_llg window
    double bkg_slope = -0.045;            ///< continuum: dN/dm_llg ~ exp(bkg_slope m_llg)
    double sig_mass = 150.0, sig_width = 1.8;  ///< resonance: mean and Gaussian width (resolution)

    /// Z line shape: Breit-Wigner (mass, width) convolved with a Gaussian resolution, in [ll_min, ll_max].
    double z_mass = 91.1876, z_width = 2.4952, mll_resolution = 1.6;
    double mll_min = 76.0, mll_max = 106.0;

    /// pT(llg) spectra, dN/dpT ~ pT^(shape-1) exp(-(pT/scale)^tail): mean ~22 GeV for the
    /// continuum, ~47 GeV for the resonance (like a gluon-fusion Higgs boson).
    double bkg_pt_scale = 6.0, bkg_pt_shape = 1.6, bkg_pt_tail = 0.7;
    double sig_pt_scale = 16.0, sig_pt_shape = 1.8, sig_pt_tail = 0.8;
    /// Rapidity of the l l gamma system (Gaussian widths).
    double bkg_y_sigma = 1.3, sig_y_sigma = 1.0;
    /// Continuum decay angle: dN/deta* ~ cosh(eta*)^bkg_angle_power, |eta*| < bkg_eta_star_max.
    double bkg_angle_power = 0.0, bkg_eta_star_max = 2.0;

    /// Selection: pT-ordered leptons, photon, acceptance, lepton-photon separation.
    double lep1_pt_min = 25.0, lep2_pt_min = 20.0, lep_eta_max = 2.5;
    double ph_pt_min = 15.0, ph_eta_max = 2.37, dr_lep_ph_min = 0.4;

    /// Jets: N ~ Poisson(jet_base + pT(llg)/jet_pt_per_jet); each central with probability central_prob.
    double bkg_jet_base = 0.35, sig_jet_base = 0.8, jet_pt_per_jet = 30.0, central_prob = 0.65;
    /// Missing E_T: recoil response (mean, spread; soft response without jets) and soft-term
    /// resolution per component (constant plus per jet), GeV.
    double jet_response = 0.85, jet_response_spread = 0.15, soft_response = 0.6;
    double met_sigma = 6.0, met_sigma_per_jet = 3.0;

    std::size_t max_attempts = 100000;
};

namespace detail {
inline void check_zgamma_config(const ZGammaConfig& c) {
    auto fail = [](const std::string& what) { throw value_error("ZGammaConfig: " + what); };
    auto num = [](double x) { return std::to_string(x); };
    if (!(c.signal_fraction >= 0.0 && c.signal_fraction <= 1.0)) fail("signal_fraction must be in [0, 1], got " + num(c.signal_fraction));
    if (!(c.m_min > 0.0 && c.m_max > c.m_min && std::isfinite(c.m_max)))
        fail("need 0 < m_min < m_max, got [" + num(c.m_min) + ", " + num(c.m_max) + "]");
    if (!(c.mll_min > 0.0 && c.mll_max > c.mll_min)) fail("need 0 < mll_min < mll_max");
    if (!(c.mll_max < c.m_min)) fail("mll_max (" + num(c.mll_max) + ") must be below m_min (" + num(c.m_min) + "): m_llg >= m_ll");
    if (!(c.z_width > 0.0 && c.mll_resolution >= 0.0 && c.sig_width > 0.0)) fail("widths must be > 0");
    if (!(c.sig_mass > c.m_min && c.sig_mass < c.m_max)) fail("sig_mass must lie inside the m_llg window, got " + num(c.sig_mass));
    if (!std::isfinite(c.bkg_slope)) fail("bkg_slope must be finite");
    for (double v : {c.bkg_pt_scale, c.bkg_pt_shape, c.bkg_pt_tail, c.sig_pt_scale, c.sig_pt_shape, c.sig_pt_tail})
        if (!(v > 0.0 && std::isfinite(v))) fail("pT spectra need finite scale, shape and tail > 0");
    if (!(c.bkg_y_sigma >= 0.0 && c.sig_y_sigma >= 0.0)) fail("rapidity widths must be >= 0");
    if (!(c.bkg_angle_power >= -2.0 && c.bkg_angle_power <= 8.0 && c.bkg_eta_star_max > 0.0 && c.bkg_eta_star_max <= 10.0))
        fail("need bkg_angle_power in [-2, 8] and bkg_eta_star_max in (0, 10]");
    if (!(c.lep1_pt_min >= c.lep2_pt_min && c.lep2_pt_min >= 0.0 && c.ph_pt_min >= 0.0 && c.lep_eta_max > 0.0 && c.ph_eta_max > 0.0))
        fail("need lep1_pt_min >= lep2_pt_min >= 0, ph_pt_min >= 0 and positive eta limits");
    if (!(c.bkg_jet_base >= 0.0 && c.sig_jet_base >= 0.0 && c.jet_pt_per_jet > 0.0 && c.central_prob >= 0.0 && c.central_prob <= 1.0))
        fail("need jet bases >= 0, jet_pt_per_jet > 0 and central_prob in [0, 1]");
    if (!(c.jet_response_spread >= 0.0 && c.met_sigma >= 0.0 && c.met_sigma_per_jet >= 0.0)) fail("MET resolutions must be >= 0");
    if (c.max_attempts == 0) fail("max_attempts must be > 0");
}
} // namespace detail

/// Streams Z gamma events; generate_zgamma() is a loop over next().
class ZGammaGenerator {
public:
    explicit ZGammaGenerator(std::uint64_t seed, const ZGammaConfig& config = ZGammaConfig{}) : cfg_(config), rng_(seed) {
        detail::check_zgamma_config(cfg_);
    }
    const ZGammaConfig& config() const noexcept { return cfg_; }

    /// An event of a random class (resonance with probability signal_fraction).
    ZGammaEvent next() { return next(rng_.bernoulli(cfg_.signal_fraction) ? 1 : 0); }

    /// An event of the given class (1 resonance, 0 continuum).
    ZGammaEvent next(int label) {
        if (label != 0 && label != 1) throw value_error("ZGammaGenerator::next: label must be 0 or 1, got " + std::to_string(label));
        const double m = label ? sampling::truncated_normal(rng_, cfg_.sig_mass, cfg_.sig_width, cfg_.m_min, cfg_.m_max)
                               : sampling::truncated_exponential(rng_, cfg_.bkg_slope, cfg_.m_min, cfg_.m_max);
        const double mll = sample_mll();
        for (std::size_t attempt = 0; attempt < cfg_.max_attempts; ++attempt) {
            ZGammaEvent ev{};
            if (try_kinematics(m, mll, label, ev)) return ev;
        }
        throw value_error("ZGammaGenerator: no event passed the cuts in " + std::to_string(cfg_.max_attempts) +
                          " attempts at m_llg = " + std::to_string(m) + " GeV; the cuts are too tight");
    }

private:
    double sample_mll() {
        for (std::size_t i = 0; i < cfg_.max_attempts; ++i) {
            const double bw = sampling::breit_wigner(rng_, cfg_.z_mass, cfg_.z_width, cfg_.mll_min - 20.0, cfg_.mll_max + 20.0);
            const double m = bw + cfg_.mll_resolution * rng_.normal();
            if (m >= cfg_.mll_min && m <= cfg_.mll_max) return m;
        }
        throw value_error("ZGammaGenerator: the Z line shape puts nothing in [mll_min, mll_max]");
    }

    bool try_kinematics(double m, double mll, int label, ZGammaEvent& ev) {
        using sampling::pi;
        const bool sig = label == 1;
        const double pt = sig ? sampling::generalised_gamma(rng_, cfg_.sig_pt_scale, cfg_.sig_pt_shape, cfg_.sig_pt_tail)
                              : sampling::generalised_gamma(rng_, cfg_.bkg_pt_scale, cfg_.bkg_pt_shape, cfg_.bkg_pt_tail);
        const double y = rng_.normal() * (sig ? cfg_.sig_y_sigma : cfg_.bkg_y_sigma);
        const FourVector x = sampling::system_from_m_pt_y(m, pt, rng_.uniform(-pi, pi), y);

        // X -> Z gamma, then Z -> l l (1 + cos^2 in the Z frame).
        const double cos_x = sig ? rng_.uniform(-1.0, 1.0) : sampling::cos_theta_forward(rng_, cfg_.bkg_angle_power, cfg_.bkg_eta_star_max);
        const sampling::TwoBody zg = sampling::decay_two_body(x, mll, 0.0, cos_x, rng_.uniform(-pi, pi));
        const sampling::TwoBody ll = sampling::decay_two_body(zg.d1, 0.0, 0.0, sampling::cos_theta_1pc2(rng_, 1.0), rng_.uniform(-pi, pi));
        FourVector l1 = ll.d1, l2 = ll.d2;
        const FourVector& ph = zg.d2;
        if (l1.pt() < l2.pt()) std::swap(l1, l2);

        // Jets and missing E_T (they do not enter the cuts).
        const int nj = sampling::poisson(rng_, (sig ? cfg_.sig_jet_base : cfg_.bkg_jet_base) + pt / cfg_.jet_pt_per_jet);
        const int ncj = sampling::binomial(rng_, nj, cfg_.central_prob);
        const double response = nj > 0 ? cfg_.jet_response + cfg_.jet_response_spread * rng_.normal() : cfg_.soft_response;
        const double sigma = cfg_.met_sigma + cfg_.met_sigma_per_jet * nj;
        // Visible recoil = -response * pT(llg): the imbalance (response - 1) pT(llg) is missing.
        const double mex = (response - 1.0) * x.px + sigma * rng_.normal();
        const double mey = (response - 1.0) * x.py + sigma * rng_.normal();

        const double l1pt = l1.pt(), l2pt = l2.pt(), phpt = ph.pt();
        if (!(l1pt > cfg_.lep1_pt_min && l2pt > cfg_.lep2_pt_min && phpt > cfg_.ph_pt_min)) return false;
        const double l1eta = l1.eta(), l2eta = l2.eta(), pheta = ph.eta();
        if (!(std::fabs(l1eta) < cfg_.lep_eta_max && std::fabs(l2eta) < cfg_.lep_eta_max && std::fabs(pheta) < cfg_.ph_eta_max))
            return false;
        if (!(delta_r(l1, ph) > cfg_.dr_lep_ph_min && delta_r(l2, ph) > cfg_.dr_lep_ph_min)) return false;

        const FourVector z = l1 + l2, llg = z + ph;
        ev.lep1_pt = l1pt, ev.lep1_eta = l1eta, ev.lep1_phi = l1.phi();
        ev.lep2_pt = l2pt, ev.lep2_eta = l2eta, ev.lep2_phi = l2.phi();
        ev.ph_pt = phpt, ev.ph_eta = pheta, ev.ph_phi = ph.phi();
        ev.m_llg = llg.m(), ev.pt_llg = llg.pt(), ev.eta_llg = llg.eta(), ev.phi_llg = llg.phi(), ev.e_llg = llg.e;
        ev.m_ll = z.m(), ev.pt_ll = z.pt(), ev.eta_ll = z.eta(), ev.phi_ll = z.phi(), ev.e_ll = z.e;
        ev.dr_ll = delta_r(l1, l2);
        ev.met = std::hypot(mex, mey);
        ev.phi_met = std::atan2(mey, mex);
        ev.dphi_ll = std::fabs(delta_phi(ev.lep1_phi, ev.lep2_phi));
        ev.dphi_met_llg = std::fabs(delta_phi(ev.phi_met, ev.phi_llg));
        ev.pt_ll_over_m_llg = ev.pt_ll / ev.m_llg;
        ev.n_jets = nj;
        ev.n_central_jets = ncj;
        ev.label = label;
        return true;
    }

    ZGammaConfig cfg_;
    Rng rng_;
};

/// n events; the same (n, seed, config) gives the same events, and a shorter run is a prefix.
inline std::vector<ZGammaEvent> generate_zgamma(std::size_t n, std::uint64_t seed, const ZGammaConfig& config = ZGammaConfig{}) {
    ZGammaGenerator gen(seed, config);
    std::vector<ZGammaEvent> out;
    out.reserve(n);
    for (std::size_t i = 0; i < n; ++i) out.push_back(gen.next());
    return out;
}

} // namespace tapir::hep
// ---- end tapir/hep/zgamma.hpp ----
// ---- begin tapir/deploy/codegen.hpp ----
/// Code generation: one standalone C++ header per trained model, for firmware and trigger code
/// bases (in the spirit of hls4ml and TMVA SOFIE). The header holds the weights as constexpr
/// arrays and one function; it includes only `<cmath>`, needs C++11, and uses no exceptions, no
/// RTTI, no heap and no tapir:
///
///     auto spec = tapir::deploy::spec_from(trained);
///     tapir::deploy::CodegenOptions opt;
///     opt.name_space = "higgs";
///     tapir::deploy::write_header("higgs_classifier.hpp", spec, opt);
///
///     // in the trigger code:
///     #include "higgs_classifier.hpp"
///     float y[higgs::n_outputs];
///     higgs::predict(x, y);                       // x: higgs::n_inputs raw features
///
/// The generated code sums in tapir's order (one multiply-add chain per output, restarted every
/// CodegenOptions::sum_block terms) and computes tanh and sigmoid with the polynomials of tapir::simd, using table
/// powers of two instead of libm: with fused multiply-adds (TAPIR_GEN_FMA, on by default when
/// the target has FMA: __FMA__, aarch64) its outputs are bitwise tapir's on AVX2/AVX-512/NEON,
/// on any compiler and libm; without, they differ by rounding only.

#include <cctype>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <fstream>
#include <string>
#include <system_error>
#include <type_traits>
#include <vector>

// ---- begin tapir/deploy/convert.hpp ----
/// From a trained model to the deploy formats: a neutral list of dense layers (ModelSpec), built
/// from a tapir::nn::Sequential, from a model file, or by hand; and from it a fixed-size Mlp.
/// Unlike fixed.hpp this header throws (shape_error, value_error, format_error) with messages
/// that name the layer and both shapes.
///
///     tapir::nn::Sequential<float> net = ...;                    // trained
///     auto spec = tapir::deploy::spec_from(net);                 // or spec_from_model_file(...)
///     spec.set_input_scaling(scaler.mean(), scaler.scale());     // optional
///     auto fixed = tapir::deploy::to_fixed<tapir::deploy::Mlp<float, 8, 24, 16, 8, 1>>(spec);
///     fixed->forward(x, y);

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <memory>
#include <string>
#include <utility>
#include <vector>

// ---- begin tapir/deploy/fixed.hpp ----
/// Compile-time-sized inference for trained MLPs: Mlp<float, 8, 24, 16, 8, 1>.
///
/// Built for trigger and embedded code: forward() is const, noexcept, allocates nothing (weights
/// live inside the object, scratch on the stack), shares no mutable state (thread-safe), and this
/// header compiles with -fno-exceptions -fno-rtti (as simd/ does, whose instruction-set detection,
/// vector wrappers, math and activations it uses); conversion from a dynamic model or a model file
/// (with error messages) is in convert.hpp.
///
/// Numbers: each output is act(sum_p x[p] W[p][j] + b[j]) with the sum a chain of fused
/// multiply-adds in increasing p, exactly the order of tapir::simd::gemm (including its split of
/// long sums into blocks, 256 to 512 terms by kernel family), then the bias, then the
/// activation (simd/activation.hpp, the dynamic model's). On the same instruction set the
/// outputs are therefore bitwise those of the dynamic model's dense op.
///
/// Kernels: simd's families (AVX-512 and AVX2+FMA by target attributes, chosen at run time, no
/// -march needed; NEON on aarch64; a portable scalar path), through simd::dispatch_to. Large models (3 x 256 is 0.5 MB
/// of weights) belong in static storage or on the heap, not on a small stack.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>


TAPIR_SIMD_DIAG_PUSH

namespace tapir::deploy {

/// Outcome of loading or configuring a model (no exceptions in this header).
enum class Status : std::uint8_t { ok, layer_count, shape, null_pointer, non_finite, bad_scale, unsupported_isa };

inline const char* status_message(Status s) noexcept {
    switch (s) {
    case Status::ok: return "ok";
    case Status::layer_count: return "the number of layers differs from the model's";
    case Status::shape: return "a layer's input or output size differs from the model's";
    case Status::null_pointer: return "a weight or bias pointer is null";
    case Status::non_finite: return "a weight, bias or scale is NaN or infinite";
    case Status::bad_scale: return "an input scale is not positive";
    case Status::unsupported_isa: return "this CPU or build does not support the requested instruction set";
    }
    return "?";
}

/// One trained dense layer, read-only: weight (in x out, row-major, as tapir::nn::Dense and Keras
/// store it), bias (out values, or null for none), activation and its alpha (leaky slope, ELU scale).
template <class T>
struct LayerView {
    const T* weight = nullptr;
    const T* bias = nullptr;
    std::size_t in = 0, out = 0;
    Activation act = Activation::none;
    T alpha = T(0);
};

namespace detail {

constexpr std::size_t round_up(std::size_t x, std::size_t r) noexcept { return (x + r - 1) / r * r; }
constexpr std::size_t cmax(std::size_t a, std::size_t b) noexcept { return a > b ? a : b; }

template <class T>
inline bool finite(T x) noexcept {
    return x - x == x - x;
}

/// The checks every fixed-size layer makes of a LayerView: the sizes, then the weight pointer.
template <class T>
inline Status check_view_shape(const LayerView<T>& v, std::size_t in, std::size_t out) noexcept {
    if (v.in != in || v.out != out) return Status::shape;
    if (!v.weight) return Status::null_pointer;
    return Status::ok;
}
/// Whether every weight and bias (if any) of a LayerView whose sizes were checked is finite.
template <class T>
inline bool view_values_finite(const LayerView<T>& v) noexcept {
    for (std::size_t k = 0; k < v.in * v.out; ++k)
        if (!finite(v.weight[k])) return false;
    if (v.bias)
        for (std::size_t j = 0; j < v.out; ++j)
            if (!finite(v.bias[j])) return false;
    return true;
}

/// Single-output convenience shared by the models: the output of m for one event.
template <class M, class T>
inline T single_output(const M& m, const T* x) noexcept {
    T y[1];
    m.forward(x, y);
    return y[0];
}

/// Blocking per kernel family V (a simd wrapper): U1 vectors per pass at batch 1 (enough chains to
/// hide the FMA latency), R rows x UB vectors per pass in batches (weights loaded once for R rows);
/// KC is simd::gemm's K block depth, which decides where the dynamic model restarts its chains.
template <class V>
struct blocking {
    static constexpr std::size_t U1 = 8, R = 4;
    static constexpr std::size_t UB = (V::id == simd::isa::avx512 || V::id == simd::isa::neon) ? 4 : 2;
    static constexpr std::size_t KC = simd::gemm_kc(V::id, sizeof(typename V::value_type));
};

/// acc[r][u] = sum_{p0 <= p < p1} x[r][p] W[p][u-th vector], one fused chain per lane in p order.
template <class V, class T, std::size_t R, std::size_t U>
TAPIR_ALWAYS_INLINE void dense_chain(const T* TAPIR_RESTRICT x, std::size_t ldx, const T* TAPIR_RESTRICT w, std::size_t ldw,
                                     std::size_t p0, std::size_t p1, typename V::reg (&acc)[R][U]) noexcept {
    using reg = typename V::reg;
    constexpr std::size_t W = V::W;
#pragma GCC unroll 4
    for (std::size_t r = 0; r < R; ++r)
#pragma GCC unroll 16
        for (std::size_t u = 0; u < U; ++u) acc[r][u] = V::zero();
    for (std::size_t p = p0; p < p1; ++p) {
        const T* wp = w + p * ldw;
        if constexpr (R == 1) {
            const reg xv = V::set1(x[p]);
#pragma GCC unroll 16
            for (std::size_t u = 0; u < U; ++u) acc[0][u] = V::fma(xv, V::load(wp + u * W), acc[0][u]);
        } else {
            reg wv[U];
#pragma GCC unroll 16
            for (std::size_t u = 0; u < U; ++u) wv[u] = V::load(wp + u * W);
#pragma GCC unroll 4
            for (std::size_t r = 0; r < R; ++r) {
                const reg xv = V::set1(x[r * ldx + p]);
#pragma GCC unroll 16
                for (std::size_t u = 0; u < U; ++u) acc[r][u] = V::fma(xv, wv[u], acc[r][u]);
            }
        }
    }
}

/// y[r][0 .. U*W) = x[r][0 .. K) W[0 .. K)[same columns] + b for R rows: one fused chain per
/// output over each K block (simd::gemm's order), blocks added in order, then the bias.
template <class V, class T, std::size_t K, std::size_t R, std::size_t U>
TAPIR_ALWAYS_INLINE void dense_tile(const T* TAPIR_RESTRICT x, std::size_t ldx, const T* TAPIR_RESTRICT w, std::size_t ldw,
                                    const T* TAPIR_RESTRICT b, T* TAPIR_RESTRICT y, std::size_t ldy, bool relu) noexcept {
    using reg = typename V::reg;
    constexpr std::size_t W = V::W, kcb = simd::gemm_k_block(K, blocking<V>::KC);
    reg c[R][U];
    dense_chain<V, T, R, U>(x, ldx, w, ldw, 0, kcb, c);
    for (std::size_t p0 = kcb; p0 < K; p0 += kcb) {
        reg acc[R][U];
        dense_chain<V, T, R, U>(x, ldx, w, ldw, p0, p0 + kcb < K ? p0 + kcb : K, acc);
#pragma GCC unroll 4
        for (std::size_t r = 0; r < R; ++r)
#pragma GCC unroll 16
            for (std::size_t u = 0; u < U; ++u) c[r][u] = V::add(acc[r][u], c[r][u]);
    }
#pragma GCC unroll 4
    for (std::size_t r = 0; r < R; ++r)
#pragma GCC unroll 16
        for (std::size_t u = 0; u < U; ++u) {
            reg v = V::add(c[r][u], V::load(b + u * W));
            if (relu) v = simd::activation_value<Activation::relu, V>(v, T(0));
            V::store(y + r * ldy + u * W, v);
        }
}

} // namespace detail

/// A dense layer with compile-time sizes: weight (In x Out, row-major, rows padded to a multiple
/// of 64 bytes with zeros), bias, activation.
template <class T, std::size_t In, std::size_t Out>
struct Dense {
    static_assert(In > 0 && Out > 0, "Dense: sizes must be positive");
    using value_type = T;
    static constexpr std::size_t in = In, out = Out;
    static constexpr std::size_t lanes = 64 / sizeof(T);
    static constexpr std::size_t out_padded = detail::round_up(Out, lanes);

    alignas(64) T weight[In][out_padded] = {};
    alignas(64) T bias[out_padded] = {};
    Activation act = Activation::none;
    T alpha = T(0);

    /// Weight element (p, j), as in the (in, out) trained matrix.
    T w(std::size_t p, std::size_t j) const noexcept { return weight[p][j]; }

    /// Whether v fits this layer (sizes, pointers, finite values).
    static Status check(const LayerView<T>& v) noexcept {
        const Status s = detail::check_view_shape(v, In, Out);
        if (s != Status::ok) return s;
        if (!detail::view_values_finite(v) || !detail::finite(v.alpha)) return Status::non_finite;
        return Status::ok;
    }

    Status set(const LayerView<T>& v) noexcept {
        const Status s = check(v);
        if (s != Status::ok) return s;
        for (std::size_t p = 0; p < In; ++p)
            for (std::size_t j = 0; j < out_padded; ++j) weight[p][j] = j < Out ? v.weight[p * Out + j] : T(0);
        for (std::size_t j = 0; j < out_padded; ++j) bias[j] = (v.bias && j < Out) ? v.bias[j] : T(0);
        act = v.act;
        alpha = v.alpha;
        return Status::ok;
    }

    /// This layer on R rows (x: R x In with leading dimension ldx) into y (R x out_padded).
    template <class V, std::size_t R>
    TAPIR_ALWAYS_INLINE void run(const T* x, std::size_t ldx, T* y) const noexcept {
        constexpr std::size_t W = V::W, nvec = (Out + W - 1) / W;
        constexpr std::size_t U = R == 1 ? detail::blocking<V>::U1 : detail::blocking<V>::UB;
        constexpr std::size_t U_ = U < nvec ? U : nvec;
        constexpr std::size_t full = nvec / U_;
        const bool relu = act == Activation::relu;
        for (std::size_t t = 0; t < full; ++t)
            detail::dense_tile<V, T, In, R, U_>(x, ldx, &weight[0][0] + t * U_ * W, out_padded, bias + t * U_ * W,
                                               y + t * U_ * W, out_padded, relu);
        for (std::size_t v = full * U_; v < nvec; ++v)
            detail::dense_tile<V, T, In, R, 1>(x, ldx, &weight[0][0] + v * W, out_padded, bias + v * W, y + v * W,
                                              out_padded, relu);
        // The R rows are contiguous and out_padded a whole number of vectors: one sweep.
        if (act != Activation::none && act != Activation::relu) simd::activate_on(V::id, act, y, y, R * out_padded, alpha);
    }
};

namespace detail {
/// The i-th of a pack of sizes.
template <std::size_t... S>
constexpr std::size_t size_at(std::size_t i) noexcept {
    constexpr std::size_t a[] = {S...};
    return a[i];
}

template <class T, std::size_t... S>
struct mlp_layers {
    template <std::size_t... I>
    static std::tuple<Dense<T, size_at<S...>(I), size_at<S...>(I + 1)>...> make(std::index_sequence<I...>);
    using type = decltype(make(std::make_index_sequence<sizeof...(S) - 1>{}));
};

/// What the fixed-size models (Mlp, Int8Mlp, FixedMlp) share: the sizes, the tuple of layers,
/// the optional input standardisation, and all-or-nothing loading.
template <class Layers, std::size_t... S>
class model_base {
public:
    using layers_type = Layers;
    static constexpr std::size_t sizes[] = {S...};
    static constexpr std::size_t num_layers = sizeof...(S) - 1;
    static constexpr std::size_t inputs = size_at<S...>(0);
    static constexpr std::size_t outputs = size_at<S...>(sizeof...(S) - 1);

    /// Standardise inputs first: z = (x - mean) / scale (inputs values each). Null pointers turn it off.
    Status set_input_scaling(const double* mean, const double* scale) noexcept {
        if (!mean || !scale) {
            scaled_ = false;
            return Status::ok;
        }
        for (std::size_t i = 0; i < inputs; ++i) {
            if (!finite(mean[i]) || !finite(scale[i])) return Status::non_finite;
            if (!(scale[i] > 0.0)) return Status::bad_scale;
        }
        for (std::size_t i = 0; i < inputs; ++i) {
            mean_[i] = mean[i];
            scale_[i] = scale[i];
        }
        scaled_ = true;
        return Status::ok;
    }
    bool input_scaling() const noexcept { return scaled_; }
    const double* input_mean() const noexcept { return mean_; }
    const double* input_scale() const noexcept { return scale_; }

    template <std::size_t I>
    const std::tuple_element_t<I, Layers>& layer() const noexcept {
        return std::get<I>(layers_);
    }
    template <std::size_t I>
    std::tuple_element_t<I, Layers>& layer() noexcept {
        return std::get<I>(layers_);
    }

protected:
    /// count layers from views (null: null_pointer): check(index) for every layer first, then
    /// set(index) for each, index a std::integral_constant; the model is unchanged on a failed check.
    template <class Check, class Set>
    Status load_layers(std::size_t count, const void* views, Check check, Set set) noexcept {
        if (count != num_layers) return Status::layer_count;
        if (!views) return Status::null_pointer;
        const Status s = each<0>(check);
        return s != Status::ok ? s : each<0>(set);
    }

    /// Input i standardised, (v - mean) / scale in double (as tapir::StandardScaler::transform).
    double standardise(std::size_t i, double v) const noexcept { return (v - mean_[i]) / scale_[i]; }

    Layers layers_{};

private:
    double mean_[inputs] = {};
    double scale_[inputs] = {};
    bool scaled_ = false;

    template <std::size_t I, class F>
    static Status each(F& f) noexcept {
        if constexpr (I == num_layers) {
            return Status::ok;
        } else {
            const Status s = f(std::integral_constant<std::size_t, I>{});
            return s != Status::ok ? s : each<I + 1>(f);
        }
    }
};
} // namespace detail

/// A multilayer perceptron of compile-time sizes: Mlp<float, 8, 24, 16, 8, 1> has inputs 8,
/// hidden layers 24, 16, 8 and one output. Activations come with the loaded weights.
///
///     static tapir::deploy::Mlp<float, 8, 24, 16, 8, 1> net;      // or from deploy::to_fixed()
///     net.load(views, 4);                                           // Status::ok
///     float x[8] = {...}, y[1];
///     net.forward(x, y);                                            // batch 1
///     net.forward(xs, ys, n);                                       // n rows, row-major
///
/// Optional input standardisation z = (x - mean) / scale is computed in double and rounded to T,
/// exactly as tapir::data::StandardScaler::transform.
template <class T, std::size_t... S>
class Mlp : public detail::model_base<typename detail::mlp_layers<T, S...>::type, S...> {
    static_assert(sizeof...(S) >= 2, "Mlp: give at least the input and output sizes");
    static_assert(std::is_same<T, float>::value || std::is_same<T, double>::value, "Mlp: float or double");
    using base = detail::model_base<typename detail::mlp_layers<T, S...>::type, S...>;
    using base::layers_;

public:
    using typename base::layers_type;
    using base::inputs, base::num_layers, base::outputs;
    using value_type = T;

    Mlp() noexcept : isa_(simd::detected_isa()) {}

    /// Copies trained layers in (count must be num_layers; sizes must match). All or nothing:
    /// on an error the model is unchanged.
    Status load(const LayerView<T>* views, std::size_t count) noexcept {
        return this->load_layers(
            count, views, [&](auto i) { return std::tuple_element_t<i, layers_type>::check(views[i]); },
            [&](auto i) { return std::get<i>(layers_).set(views[i]); });
    }

    /// Kernel family used by forward (simd::detected_isa() by default).
    simd::isa isa() const noexcept { return isa_; }
    Status set_isa(simd::isa i) noexcept {
        if (!simd::isa_supported(i)) return Status::unsupported_isa;
        isa_ = i;
        return Status::ok;
    }

    /// Longest multiply-add chain of a kernel family before it restarts (simd::gemm's K block).
    static std::size_t sum_block(simd::isa i) noexcept {
#if !TAPIR_SIMD_X86
        if (i == simd::isa::avx2 || i == simd::isa::avx512) i = simd::isa::scalar; // not in this build
#endif
        return simd::gemm_kc(i, sizeof(T));
    }

    /// One event: x (inputs values) -> y (outputs values).
    void forward(const T* x, T* y) const noexcept { forward(x, y, 1); }

    /// n events, row-major: x (n x inputs) -> y (n x outputs).
    void forward(const T* x, T* y, std::size_t n) const noexcept {
        simd::dispatch_to<forward_kernel>(isa_, this, x, y, n);
    }

    /// Single-output convenience: the output for one event.
    T operator()(const T* x) const noexcept {
        static_assert(outputs == 1, "Mlp::operator(): the model has several outputs, use forward(x, y)");
        return detail::single_output(*this, x);
    }

private:
    /// The forward pass as a simd kernel: compiled once per instruction set.
    struct forward_kernel {
        using value_type = T;
        template <class V>
        static TAPIR_ALWAYS_INLINE void run(const Mlp* m, const T* x, T* y, std::size_t n) noexcept {
            m->template run_with<V>(x, y, n);
        }
    };

    /// Widest row a layer reads or writes, padded: the ping-pong scratch size.
    static constexpr std::size_t max_width() noexcept {
        std::size_t m = detail::round_up(inputs, 64 / sizeof(T));
        for (std::size_t i = 1; i <= num_layers; ++i) m = detail::cmax(m, detail::round_up(detail::size_at<S...>(i), 64 / sizeof(T)));
        return m;
    }

    template <class V, std::size_t R, std::size_t I>
    TAPIR_ALWAYS_INLINE void run_layers(const T* in, std::size_t ldin, T* buf0, T* buf1, T* y) const noexcept {
        using L = std::tuple_element_t<I, layers_type>;
        T* out = (I % 2 == 0) ? buf0 : buf1;
        std::get<I>(layers_).template run<V, R>(in, ldin, out);
        if constexpr (I + 1 < num_layers) {
            run_layers<V, R, I + 1>(out, L::out_padded, buf0, buf1, y);
        } else {
            for (std::size_t r = 0; r < R; ++r)
                for (std::size_t j = 0; j < outputs; ++j) y[r * outputs + j] = out[r * L::out_padded + j];
        }
    }

    template <class V, std::size_t R>
    TAPIR_ALWAYS_INLINE void run_rows(const T* x, T* y) const noexcept {
        constexpr std::size_t mw = max_width();
        alignas(64) T buf0[R * mw];
        alignas(64) T buf1[R * mw];
        if (this->input_scaling()) {
            for (std::size_t r = 0; r < R; ++r)
                for (std::size_t i = 0; i < inputs; ++i)
                    buf1[r * inputs + i] = static_cast<T>(this->standardise(i, static_cast<double>(x[r * inputs + i])));
            run_layers<V, R, 0>(buf1, inputs, buf0, buf1, y);
        } else {
            run_layers<V, R, 0>(x, inputs, buf0, buf1, y);
        }
    }

    template <class V>
    TAPIR_ALWAYS_INLINE void run_with(const T* x, T* y, std::size_t n) const noexcept {
        std::size_t i = 0;
        constexpr std::size_t R = detail::blocking<V>::R;
        for (; i + R <= n; i += R) run_rows<V, R>(x + i * inputs, y + i * outputs);
        for (; i < n; ++i) run_rows<V, 1>(x + i * inputs, y + i * outputs);
    }

    simd::isa isa_;
};

} // namespace tapir::deploy

TAPIR_SIMD_DIAG_POP
// ---- end tapir/deploy/fixed.hpp ----
// ---- begin tapir/deploy/quantize.hpp ----
/// Quantised fixed-size MLPs, with the same guarantees as fixed.hpp (noexcept, no heap, const and
/// thread-safe forward, builds with -fno-exceptions -fno-rtti):
///
/// - Int8Mlp<8, 24, 16, 8, 1>: int8 weights (one symmetric scale per layer, max |W| -> 127) and
///   8-bit activations with one scale per layer input, calibrated on data (the range that covers
///   99.99% of the |inputs| by default; beyond it values saturate): int8 [-127, 127], or uint8
///   [0, 255] when the previous activation is non-negative (relu, sigmoid, softplus), int32
///   accumulation with the bias in the accumulator's units, then
///   y = act(acc * s_x * s_w) in float (tanh and sigmoid with fused multiply-adds everywhere),
///   requantised by the next layer. Integer sums are exact, so every instruction set gives the
///   same outputs.
/// - FixedPoint<W, I, Q, O>: the ap_fixed<W, I> convention of FPGA toolchains (W bits in total,
///   I of them integer bits including the sign, F = W - I fractional bits; Q = trn (floor, the
///   default) or rnd (round half up); O = wrap (the default) or sat), and FixedMlp<Fx, 8, 24, ...>
///   with weights, biases, inputs and layer outputs in Fx, products accumulated at full precision
///   (2F fractional bits, as an accumulator wide enough never to round or overflow) and quantised
///   once per output. Non-linear activations are evaluated exactly and then quantised (hls4ml
///   uses lookup tables, which adds the table's error on top).

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <utility>


namespace tapir::deploy {

// ---- int8 -----------------------------------------------------------------------------------

namespace detail {

/// round-half-even(clamp(v, lo, hi)) as an integer, without libm and without fp contraction
/// (the clamp separates the product from the rounding add). NaN -> 0.
inline std::int32_t quantize_i8(float v, float lo = -127.0f, float hi = 127.0f) noexcept {
    v = v > hi ? hi : (v < lo ? lo : v);
    if (v != v) v = 0.0f;
    const float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer, half to even
    return static_cast<std::int32_t>((v + magic) - magic);
}

} // namespace detail

template <std::size_t In, std::size_t Out>
struct Int8Dense {
    static constexpr std::size_t in = In, out = Out;
    static constexpr std::size_t out_padded = detail::round_up(Out, 32);
    static constexpr std::size_t in_pairs = (In + 1) / 2;

    /// Quantised W, inputs in pairs: weight[p / 2][j][p % 2] (the operand layout of a
    /// 16-bit multiply-add of two inputs into one 32-bit sum); padding is zero.
    alignas(64) std::int8_t weight[in_pairs][out_padded][2] = {};
    alignas(64) std::int32_t bias[out_padded] = {};
    float in_scale = 1.0f;   ///< x_q = round(x / in_scale), clamped to [in_min, in_max]
    float inv_in_scale = 1.0f;
    float in_min = -127.0f, in_max = 127.0f;  ///< int8, or uint8 [0, 255] for non-negative inputs
    float w_scale = 1.0f;    ///< W ~ w_scale * weight
    float out_scale = 1.0f;  ///< in_scale * w_scale: one accumulator unit
    Activation act = Activation::none;
    float alpha = 0.0f;

    /// Quantised weight (p, j).
    std::int32_t w(std::size_t p, std::size_t j) const noexcept { return weight[p / 2][j][p % 2]; }

    static Status check(const LayerView<float>& v, float input_range) noexcept {
        const Status s = detail::check_view_shape(v, In, Out);
        if (s != Status::ok) return s;
        if (!detail::finite(input_range) || !(input_range >= 0.0f)) return Status::bad_scale;
        return detail::view_values_finite(v) ? Status::ok : Status::non_finite;
    }

    /// Quantises a float layer; input_range = the largest |input| to represent (from
    /// calibration), non_negative_input = the previous activation cannot go below zero.
    Status set(const LayerView<float>& v, float input_range, bool non_negative_input = false) noexcept {
        const Status s = check(v, input_range);
        if (s != Status::ok) return s;
        float wmax = 0.0f;
        for (std::size_t k = 0; k < In * Out; ++k) wmax = std::fabs(v.weight[k]) > wmax ? std::fabs(v.weight[k]) : wmax;
        w_scale = wmax > 0.0f ? wmax / 127.0f : 1.0f;
        in_min = non_negative_input ? 0.0f : -127.0f;
        in_max = non_negative_input ? 255.0f : 127.0f;
        in_scale = input_range > 0.0f ? input_range / in_max : 1.0f;
        inv_in_scale = 1.0f / in_scale;
        out_scale = in_scale * w_scale;
        const float inv_w = 1.0f / w_scale;
        for (std::size_t p = 0; p < 2 * in_pairs; ++p)
            for (std::size_t j = 0; j < out_padded; ++j)
                weight[p / 2][j][p % 2] =
                    static_cast<std::int8_t>(p < In && j < Out ? detail::quantize_i8(v.weight[p * Out + j] * inv_w) : 0);
        for (std::size_t j = 0; j < out_padded; ++j) {
            const double b = (v.bias && j < Out) ? static_cast<double>(v.bias[j]) / static_cast<double>(out_scale) : 0.0;
            const double lim = 2147483647.0;
            bias[j] = static_cast<std::int32_t>(std::nearbyint(b > lim ? lim : (b < -lim ? -lim : b)));
        }
        act = v.act;
        alpha = v.alpha;
        return Status::ok;
    }

    /// x (In floats) -> 16-bit pairs of quantised inputs (the odd tail padded with 0).
    TAPIR_ALWAYS_INLINE void quantize_input(const float* x, std::int16_t* q) const noexcept {
        for (std::size_t p = 0; p < In; ++p)
            q[p] = static_cast<std::int16_t>(detail::quantize_i8(x[p] * inv_in_scale, in_min, in_max));
        if (In % 2) q[In] = 0;
    }

    /// Dequantise and activate the Out accumulators into y.
    TAPIR_ALWAYS_INLINE void finish(const std::int32_t* acc, float* y) const noexcept {
        for (std::size_t j = 0; j < Out; ++j)
            y[j] = simd::activation_scalar<float, true>(act, static_cast<float>(acc[j]) * out_scale, alpha);
    }

    /// x (In floats) -> y (Out floats), portable loops.
    TAPIR_ALWAYS_INLINE void run(const float* x, float* y) const noexcept {
        alignas(64) std::int16_t q[2 * in_pairs];
        alignas(64) std::int32_t acc[out_padded];
        quantize_input(x, q);
        for (std::size_t j = 0; j < out_padded; ++j) acc[j] = bias[j];
        for (std::size_t pp = 0; pp < in_pairs; ++pp) {
            const std::int32_t x0 = q[2 * pp], x1 = q[2 * pp + 1];
            const std::int8_t(*wp)[2] = weight[pp];
            for (std::size_t j = 0; j < out_padded; ++j)
                acc[j] += x0 * static_cast<std::int32_t>(wp[j][0]) + x1 * static_cast<std::int32_t>(wp[j][1]);
        }
        finish(acc, y);
    }

#if TAPIR_SIMD_X86
    /// The same sums with AVX2: per pair of inputs, 16-bit multiply-adds (vpmaddwd) of the widened
    /// weights with the broadcast input pair, 8 outputs per register. |x_q w_q| <= 255 * 127, so the
    /// pair sum never saturates.
    TAPIR_TARGET_AVX2 inline void run_avx2(const float* x, float* y) const noexcept {
        alignas(64) std::int16_t q[2 * in_pairs];
        alignas(64) std::int32_t acc[out_padded];
        quantize_input(x, q);
        namespace x86 = ::tapir::detail::x86;
        constexpr std::size_t groups = out_padded / 8;  // 8 outputs = 16 int8 weights
        constexpr std::size_t U = groups < 4 ? groups : 4;
        for (std::size_t g0 = 0; g0 < groups; g0 += U) {
            x86::i32x8 a[U];
            for (std::size_t u = 0; u < U; ++u) a[u] = x86::load_i32x8(bias + (g0 + u) * 8);
            for (std::size_t pp = 0; pp < in_pairs; ++pp) {
                std::int32_t pair;
                std::memcpy(&pair, q + 2 * pp, sizeof pair);
                const x86::i16x16 xv = reinterpret_cast<x86::i16x16>(x86::set1_i32x8(pair));
                const std::int8_t* wp = &weight[pp][g0 * 8][0];
                for (std::size_t u = 0; u < U; ++u) {
                    const x86::i16x16 wv = x86::widen_i8(x86::load_i8x16(wp + u * 16));
                    a[u] = x86::add_wrap(a[u], x86::madd_i16(wv, xv));
                }
            }
            for (std::size_t u = 0; u < U; ++u) x86::store_i32x8(acc + (g0 + u) * 8, a[u]);
        }
        finish(acc, y);
    }
#endif
};

namespace detail {
template <std::size_t... S>
struct int8_layers {
    template <std::size_t... I>
    static std::tuple<Int8Dense<size_at<S...>(I), size_at<S...>(I + 1)>...> make(std::index_sequence<I...>);
    using type = decltype(make(std::make_index_sequence<sizeof...(S) - 1>{}));
};

template <std::size_t... S>
constexpr std::size_t max_size() noexcept {
    std::size_t m = 0;
    for (std::size_t s : {S...}) m = s > m ? s : m;
    return m;
}
} // namespace detail

/// An int8 MLP with compile-time sizes (float in, float out).
template <std::size_t... S>
class Int8Mlp : public detail::model_base<typename detail::int8_layers<S...>::type, S...> {
    static_assert(sizeof...(S) >= 2, "Int8Mlp: give at least the input and output sizes");
    using base = detail::model_base<typename detail::int8_layers<S...>::type, S...>;
    using base::layers_;

public:
    using typename base::layers_type;
    using base::inputs, base::num_layers, base::outputs;
    using value_type = float;

    Int8Mlp() noexcept
        : isa_(simd::detected_isa() == simd::isa::neon
                   ? simd::isa::neon
                   : (simd::isa_supported(simd::isa::avx2) ? simd::isa::avx2 : simd::isa::scalar)) {}

    /// Quantises trained float layers; input_ranges[l] is the |input| range of layer l to
    /// represent (ModelSpec::input_ranges in convert.hpp calibrates them). All or nothing.
    Status load(const LayerView<float>* views, std::size_t count, const float* input_ranges) noexcept {
        return this->load_layers(
            count, input_ranges ? views : nullptr,
            [&](auto i) { return std::tuple_element_t<i, layers_type>::check(views[i], input_ranges[i]); },
            [&](auto i) {
                return std::get<i>(layers_).set(views[i], input_ranges[i], i > 0 && non_negative(views[i - 1].act));
            });
    }

    simd::isa isa() const noexcept { return isa_; }
    /// scalar, or avx2 (its loops compiled for AVX2; avx512 falls back to it), or neon.
    Status set_isa(simd::isa i) noexcept {
        if (!simd::isa_supported(i)) return Status::unsupported_isa;
        isa_ = i == simd::isa::avx512 ? simd::isa::avx2 : i;
        return Status::ok;
    }

    void forward(const float* x, float* y) const noexcept { forward(x, y, 1); }
    void forward(const float* x, float* y, std::size_t n) const noexcept {
#if TAPIR_SIMD_X86
        if (isa_ == simd::isa::avx2) {
            run_avx2(*this, x, y, n);
            return;
        }
#endif
        run_generic(x, y, n);
    }
    float operator()(const float* x) const noexcept {
        static_assert(outputs == 1, "Int8Mlp::operator(): the model has several outputs, use forward(x, y)");
        return detail::single_output(*this, x);
    }

private:
    static bool non_negative(Activation a) noexcept { return a == Activation::relu || a == Activation::sigmoid || a == Activation::softplus; }
    template <bool Avx2, std::size_t I>
    TAPIR_ALWAYS_INLINE void run_layers(const float* in, float* a, float* b, float* y) const noexcept {
        float* out = (I + 1 == num_layers) ? y : ((I % 2 == 0) ? a : b);
#if TAPIR_SIMD_X86
        if constexpr (Avx2) std::get<I>(layers_).run_avx2(in, out);
        else std::get<I>(layers_).run(in, out);
#else
        std::get<I>(layers_).run(in, out);
#endif
        if constexpr (I + 1 < num_layers) run_layers<Avx2, I + 1>(out, a, b, y);
    }

    template <bool Avx2>
    TAPIR_ALWAYS_INLINE void run_rows(const float* x, float* y, std::size_t n) const noexcept {
        constexpr std::size_t mw = detail::max_size<S...>();
        float a[mw], b[mw], z[inputs];
        for (std::size_t r = 0; r < n; ++r) {
            const float* xr = x + r * inputs;
            if (this->input_scaling()) {
                for (std::size_t i = 0; i < inputs; ++i) z[i] = static_cast<float>(this->standardise(i, static_cast<double>(xr[i])));
                xr = z;
            }
            run_layers<Avx2, 0>(xr, a, b, y + r * outputs);
        }
    }
    void run_generic(const float* x, float* y, std::size_t n) const noexcept { run_rows<false>(x, y, n); }

#if TAPIR_SIMD_X86
    TAPIR_TARGET_AVX2 static void run_avx2(const Int8Mlp& m, const float* x, float* y, std::size_t n) noexcept {
        m.run_rows<true>(x, y, n);
    }
#endif

    simd::isa isa_;
};

// ---- fixed point (ap_fixed) -----------------------------------------------------------------

/// Quantisation mode when bits are dropped: trn = toward minus infinity (AP_TRN, the default),
/// rnd = to nearest, halves up (AP_RND).
enum class Quant : std::uint8_t { trn, rnd };
/// Overflow mode: wrap = keep the low W bits (AP_WRAP, the default), sat = clamp (AP_SAT).
enum class Ovf : std::uint8_t { wrap, sat };

/// A signed fixed-point number in the ap_fixed<W, I, Q, O> convention: W total bits, I integer
/// bits including the sign, F = W - I fractional bits; the value is raw * 2^-F.
template <int W, int I, Quant Q = Quant::trn, Ovf O = Ovf::wrap>
class FixedPoint {
    static_assert(W >= 2 && W <= 26, "FixedPoint: 2 <= W <= 26 (products accumulate exactly in 64-bit integers)");
    static_assert(I >= 1 && I <= W, "FixedPoint: 1 <= I <= W (I counts the sign bit)");

public:
    static constexpr int width = W, int_bits = I, frac_bits = W - I;
    static constexpr Quant quant = Q;
    static constexpr Ovf overflow = O;
    static constexpr std::int64_t raw_max = (std::int64_t(1) << (W - 1)) - 1;
    static constexpr std::int64_t raw_min = -(std::int64_t(1) << (W - 1));

    constexpr FixedPoint() noexcept = default;

    /// Quantises a value carried as an integer with `from_frac` fractional bits.
    static constexpr FixedPoint from_scaled(std::int64_t v, int from_frac) noexcept {
        std::int64_t r = v;
        const int shift = from_frac - frac_bits;
        if (shift > 0) {
            if (Q == Quant::rnd) r += std::int64_t(1) << (shift - 1);
            r = floor_shift(r, shift);
        } else if (shift < 0) {
            r = v * (std::int64_t(1) << -shift);
        }
        return from_raw(fit(r));
    }
    /// Quantises a double (NaN -> 0; out of range: wrap or saturate as O says).
    static FixedPoint from_double(double x) noexcept {
        if (x != x) return FixedPoint();
        double s = std::ldexp(x, frac_bits);
        s = Q == Quant::rnd ? std::floor(s + 0.5) : std::floor(s);
        const double lim = 4611686018427387904.0;  // 2^62: beyond any W <= 26 either way
        s = s > lim ? lim : (s < -lim ? -lim : s);
        return from_raw(fit(static_cast<std::int64_t>(s)));
    }
    static constexpr FixedPoint from_raw(std::int64_t r) noexcept {
        FixedPoint f;
        f.raw_ = r;
        return f;
    }

    constexpr std::int64_t raw() const noexcept { return raw_; }
    double to_double() const noexcept { return std::ldexp(static_cast<double>(raw_), -frac_bits); }
    /// Resolution 2^-F and range [-2^(I-1), 2^(I-1) - 2^-F].
    static double lsb() noexcept { return std::ldexp(1.0, -frac_bits); }
    static double max_value() noexcept { return std::ldexp(static_cast<double>(raw_max), -frac_bits); }
    static double min_value() noexcept { return std::ldexp(static_cast<double>(raw_min), -frac_bits); }

    friend constexpr FixedPoint operator+(FixedPoint a, FixedPoint b) noexcept { return from_raw(fit(a.raw_ + b.raw_)); }
    friend constexpr FixedPoint operator-(FixedPoint a, FixedPoint b) noexcept { return from_raw(fit(a.raw_ - b.raw_)); }
    /// Full-precision product (2F fractional bits), quantised back to this type.
    friend constexpr FixedPoint operator*(FixedPoint a, FixedPoint b) noexcept {
        return from_scaled(a.raw_ * b.raw_, 2 * frac_bits);
    }
    friend constexpr bool operator==(FixedPoint a, FixedPoint b) noexcept { return a.raw_ == b.raw_; }
    friend constexpr bool operator!=(FixedPoint a, FixedPoint b) noexcept { return a.raw_ != b.raw_; }
    friend constexpr bool operator<(FixedPoint a, FixedPoint b) noexcept { return a.raw_ < b.raw_; }

    /// Floor division by 2^s, defined for negative values too.
    static constexpr std::int64_t floor_shift(std::int64_t v, int s) noexcept {
        return v >= 0 ? (v >> s) : -(((-(v + 1)) >> s) + 1);
    }
    /// The overflow rule applied to an exact raw value.
    static constexpr std::int64_t fit(std::int64_t r) noexcept {
        if (O == Ovf::sat) return r > raw_max ? raw_max : (r < raw_min ? raw_min : r);
        const std::uint64_t m = (std::uint64_t(1) << W) - 1;
        std::uint64_t u = static_cast<std::uint64_t>(r) & m;
        if (u >> (W - 1)) u |= ~m;  // sign-extend
        return static_cast<std::int64_t>(u);
    }

private:
    std::int64_t raw_ = 0;
};

template <class Fx, std::size_t In, std::size_t Out>
struct FixedDense {
    static constexpr std::size_t in = In, out = Out;
    std::int32_t weight[In][Out] = {};  ///< raw values of Fx
    std::int32_t bias[Out] = {};
    Activation act = Activation::none;
    double alpha = 0.0;

    static Status check(const LayerView<float>& v) noexcept {
        const Status s = detail::check_view_shape(v, In, Out);
        if (s != Status::ok) return s;
        return detail::view_values_finite(v) ? Status::ok : Status::non_finite;
    }

    Status set(const LayerView<float>& v) noexcept {
        const Status s = check(v);
        if (s != Status::ok) return s;
        for (std::size_t p = 0; p < In; ++p)
            for (std::size_t j = 0; j < Out; ++j)
                weight[p][j] = static_cast<std::int32_t>(Fx::from_double(static_cast<double>(v.weight[p * Out + j])).raw());
        for (std::size_t j = 0; j < Out; ++j) {
            bias[j] = static_cast<std::int32_t>(Fx::from_double(v.bias ? static_cast<double>(v.bias[j]) : 0.0).raw());
        }
        act = v.act;
        alpha = static_cast<double>(v.alpha);
        return Status::ok;
    }

    /// x (In raw Fx values) -> y (Out raw Fx values).
    void run(const std::int64_t* x, std::int64_t* y) const noexcept {
        constexpr int F = Fx::frac_bits;
        std::int64_t acc[Out];
        for (std::size_t j = 0; j < Out; ++j) acc[j] = static_cast<std::int64_t>(bias[j]) * (std::int64_t(1) << F);
        for (std::size_t p = 0; p < In; ++p)
            for (std::size_t j = 0; j < Out; ++j) acc[j] += x[p] * static_cast<std::int64_t>(weight[p][j]);
        for (std::size_t j = 0; j < Out; ++j) {
            const Fx z = Fx::from_scaled(acc[j], 2 * F);
            switch (act) {
            case Activation::none: y[j] = z.raw(); break;
            case Activation::relu: y[j] = z.raw() > 0 ? z.raw() : 0; break;
            default: y[j] = Fx::from_double(simd::activation_scalar<double, false>(act, z.to_double(), alpha)).raw(); break;
            }
        }
    }
};

namespace detail {
template <class Fx, std::size_t... S>
struct fixed_layers {
    template <std::size_t... I>
    static std::tuple<FixedDense<Fx, size_at<S...>(I), size_at<S...>(I + 1)>...> make(std::index_sequence<I...>);
    using type = decltype(make(std::make_index_sequence<sizeof...(S) - 1>{}));
};
} // namespace detail

/// An MLP computed in the fixed-point type Fx (an emulation of an FPGA implementation: float in,
/// inputs quantised to Fx, float out).
template <class Fx, std::size_t... S>
class FixedMlp : public detail::model_base<typename detail::fixed_layers<Fx, S...>::type, S...> {
    static_assert(sizeof...(S) >= 2, "FixedMlp: give at least the input and output sizes");
    using base = detail::model_base<typename detail::fixed_layers<Fx, S...>::type, S...>;
    using base::layers_;

public:
    using typename base::layers_type;
    using base::inputs, base::num_layers, base::outputs;
    using value_type = float;
    using fixed_type = Fx;

    /// Quantises trained float layers to Fx. All or nothing.
    Status load(const LayerView<float>* views, std::size_t count) noexcept {
        return this->load_layers(
            count, views, [&](auto i) { return std::tuple_element_t<i, layers_type>::check(views[i]); },
            [&](auto i) { return std::get<i>(layers_).set(views[i]); });
    }

    void forward(const float* x, float* y) const noexcept { forward(x, y, 1); }
    void forward(const float* x, float* y, std::size_t n) const noexcept {
        constexpr std::size_t mw = detail::max_size<S...>();
        std::int64_t a[mw], b[mw];
        for (std::size_t r = 0; r < n; ++r) {
            for (std::size_t i = 0; i < inputs; ++i) {
                const double v = static_cast<double>(x[r * inputs + i]);
                a[i] = Fx::from_double(this->input_scaling() ? this->standardise(i, v) : v).raw();
            }
            const std::int64_t* out = run_layers<0>(a, b);
            for (std::size_t j = 0; j < outputs; ++j)
                y[r * outputs + j] = static_cast<float>(Fx::from_raw(out[j]).to_double());
        }
    }
    float operator()(const float* x) const noexcept {
        static_assert(outputs == 1, "FixedMlp::operator(): the model has several outputs, use forward(x, y)");
        return detail::single_output(*this, x);
    }

private:
    template <std::size_t I>
    const std::int64_t* run_layers(std::int64_t* in, std::int64_t* other) const noexcept {
        std::get<I>(layers_).run(in, other);
        if constexpr (I + 1 < num_layers) return run_layers<I + 1>(other, in);
        else return other;
    }

};

} // namespace tapir::deploy
// ---- end tapir/deploy/quantize.hpp ----

namespace tapir::deploy {

/// One dense layer: y = act(x W + b) with W (in x out, row-major) and b (out values or empty).
template <class T>
struct DenseSpec {
    std::size_t in = 0, out = 0;
    std::vector<T> weight;
    std::vector<T> bias;
    Activation act = Activation::none;
    T alpha = T(0);

    T w(std::size_t p, std::size_t j) const { return weight[p * out + j]; }
    LayerView<T> view() const noexcept {
        LayerView<T> v;
        v.weight = weight.data();
        v.bias = bias.empty() ? nullptr : bias.data();
        v.in = in;
        v.out = out;
        v.act = act;
        v.alpha = alpha;
        return v;
    }
};

/// A model as a neutral list of dense layers plus optional input standardisation
/// z = (x - input_mean) / input_scale (empty vectors: none).
template <class T>
struct ModelSpec {
    std::vector<DenseSpec<T>> layers;
    std::vector<double> input_mean, input_scale;

    std::size_t inputs() const noexcept { return layers.empty() ? 0 : layers.front().in; }
    std::size_t outputs() const noexcept { return layers.empty() ? 0 : layers.back().out; }
    bool has_input_scaling() const noexcept { return !input_mean.empty(); }

    /// Standardisation as tapir::data::StandardScaler stores it (scaler.mean(), scaler.scale()).
    void set_input_scaling(std::vector<double> mean, std::vector<double> scale) {
        input_mean = std::move(mean);
        input_scale = std::move(scale);
        validate();
    }

    /// Adds a layer: weight (in x out, row-major), bias (out values or empty).
    ModelSpec& add(std::size_t in, std::size_t out, std::vector<T> weight, std::vector<T> bias, Activation act = Activation::none,
                   T alpha = T(0)) {
        DenseSpec<T> d;
        d.in = in;
        d.out = out;
        d.weight = std::move(weight);
        d.bias = std::move(bias);
        d.act = act;
        d.alpha = alpha;
        layers.push_back(std::move(d));
        validate();
        return *this;
    }

    /// Sizes as a string: "8 -> 24 (relu) -> 16 (relu) -> 1 (sigmoid)".
    std::string describe() const {
        if (layers.empty()) return "(no layers)";
        std::string s = std::to_string(layers.front().in);
        for (const auto& l : layers) {
            s += " -> " + std::to_string(l.out);
            if (l.act != Activation::none) s += std::string(" (") + activation_name(l.act) + ")";
        }
        return s;
    }

    /// Throws value_error/shape_error naming the layer if the list is not a valid MLP.
    void validate() const {
        if (layers.empty()) throw value_error("deploy::ModelSpec: the model has no dense layers");
        for (std::size_t i = 0; i < layers.size(); ++i) {
            const DenseSpec<T>& l = layers[i];
            const std::string name = "deploy::ModelSpec: layer " + std::to_string(i);
            if (l.in == 0 || l.out == 0)
                throw value_error(name + " has size " + std::to_string(l.in) + " -> " + std::to_string(l.out));
            if (l.weight.size() != l.in * l.out)
                throw shape_error(name + ": weight has " + std::to_string(l.weight.size()) + " values, expected " +
                                  std::to_string(l.in) + " x " + std::to_string(l.out) + " = " + std::to_string(l.in * l.out));
            if (!l.bias.empty() && l.bias.size() != l.out)
                throw shape_error(name + ": bias has " + std::to_string(l.bias.size()) + " values, expected " + std::to_string(l.out));
            if (i > 0 && layers[i - 1].out != l.in)
                throw shape_error(name + " takes " + std::to_string(l.in) + " inputs but layer " + std::to_string(i - 1) + " gives " +
                                  std::to_string(layers[i - 1].out));
            for (std::size_t k = 0; k < l.weight.size(); ++k)
                if (!std::isfinite(l.weight[k]))
                    throw value_error(name + ": weight (" + std::to_string(k / l.out) + ", " + std::to_string(k % l.out) +
                                      ") is not finite");
            for (std::size_t k = 0; k < l.bias.size(); ++k)
                if (!std::isfinite(l.bias[k])) throw value_error(name + ": bias " + std::to_string(k) + " is not finite");
        }
        if (input_mean.size() != input_scale.size())
            throw value_error("deploy::ModelSpec: " + std::to_string(input_mean.size()) + " input means but " +
                              std::to_string(input_scale.size()) + " input scales");
        if (!input_mean.empty() && input_mean.size() != inputs())
            throw shape_error("deploy::ModelSpec: input scaling has " + std::to_string(input_mean.size()) +
                              " features but the model takes " + std::to_string(inputs()));
        for (std::size_t i = 0; i < input_mean.size(); ++i)
            if (!std::isfinite(input_mean[i]) || !(input_scale[i] > 0.0) || !std::isfinite(input_scale[i]))
                throw value_error("deploy::ModelSpec: input feature " + std::to_string(i) + " has mean " + std::to_string(input_mean[i]) +
                                  " and scale " + std::to_string(input_scale[i]) + " (need finite values and scale > 0)");
    }

    std::vector<LayerView<T>> views() const {
        std::vector<LayerView<T>> v;
        for (const auto& l : layers) v.push_back(l.view());
        return v;
    }

    /// Reference forward pass (x (n x inputs) -> y (n x outputs)): per output one fused
    /// multiply-add chain, restarted every sum_block terms (see Mlp::sum_block), then bias and
    /// activation. Plain loops, for checks and tools; not for speed.
    void forward(const T* x, T* y, std::size_t n, std::size_t sum_block = 256) const { run(x, y, n, nullptr, sum_block); }

    /// The |input| range of each layer over n events (layer 0: after input scaling): the
    /// coverage quantile of |x| over all of the layer's inputs (1 = the maximum). The int8
    /// model's activation scales are calibrated on these; rarer values saturate.
    std::vector<float> input_ranges(const T* x, std::size_t n, double coverage = 0.9999) const {
        if (!(coverage > 0.0 && coverage <= 1.0))
            throw value_error("deploy::ModelSpec::input_ranges: coverage must be in (0, 1], got " + std::to_string(coverage));
        std::vector<std::vector<float>> seen(layers.size());
        run(x, nullptr, n, &seen, 256);
        std::vector<float> r(layers.size(), 0.0f);
        for (std::size_t l = 0; l < seen.size(); ++l) {
            std::vector<float>& v = seen[l];
            if (v.empty()) continue;
            const auto k = static_cast<std::size_t>(std::ceil(coverage * static_cast<double>(v.size()))) - 1;
            std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
            r[l] = v[k];
        }
        return r;
    }

private:
    void run(const T* x, T* y, std::size_t n, std::vector<std::vector<float>>* seen, std::size_t sum_block) const {
        validate();
        if (sum_block == 0) throw value_error("deploy::ModelSpec::forward: sum_block must be positive");
        std::vector<T> a, b;
        for (std::size_t r = 0; r < n; ++r) {
            a.assign(x + r * inputs(), x + (r + 1) * inputs());
            if (has_input_scaling())
                for (std::size_t i = 0; i < a.size(); ++i)
                    a[i] = static_cast<T>((static_cast<double>(a[i]) - input_mean[i]) / input_scale[i]);
            for (std::size_t li = 0; li < layers.size(); ++li) {
                const DenseSpec<T>& l = layers[li];
                if (seen)
                    for (const T v : a) (*seen)[li].push_back(static_cast<float>(std::fabs(v)));
                b.assign(l.out, T(0));
                for (std::size_t j = 0; j < l.out; ++j) {
                    T acc = T(0);
                    for (std::size_t p0 = 0, kc = simd::gemm_k_block(l.in, sum_block); p0 < l.in; p0 += kc) {
                        T part = T(0);
                        for (std::size_t p = p0; p < p0 + kc && p < l.in; ++p) part = std::fma(a[p], l.w(p, j), part);
                        acc = p0 == 0 ? part : part + acc;
                    }
                    if (!l.bias.empty()) acc += l.bias[j];
                    b[j] = simd::activation_scalar<T, true>(l.act, acc, l.alpha);
                }
                a.swap(b);
            }
            if (y)
                for (std::size_t j = 0; j < outputs(); ++j) y[r * outputs() + j] = a[j];
        }
    }
};

namespace detail {

template <class T>
void append_dense(ModelSpec<T>& spec, const nn::Dense<T>& d) {
    DenseSpec<T> l;
    l.in = d.in_features();
    l.out = d.out_features();
    l.weight.assign(d.weight.value.data(), d.weight.value.data() + d.weight.value.size());
    if (d.has_bias()) l.bias.assign(d.bias.value.data(), d.bias.value.data() + d.bias.value.size());
    l.act = d.activation();
    l.alpha = d.alpha();
    spec.layers.push_back(std::move(l));
}

/// Folds an eval-mode BatchNorm into the preceding dense layer: W'[p][j] = W[p][j] s[j],
/// b'[j] = (b[j] - mean[j]) s[j] + beta[j], s = gamma / sqrt(var + eps). Not bitwise the unfolded
/// graph (a few ulp).
template <class T>
void fold_batch_norm(DenseSpec<T>& l, const nn::BatchNorm<T>& bn, const std::string& where) {
    if (bn.features() != l.out)
        throw shape_error("deploy::spec_from: " + where + " normalises " + std::to_string(bn.features()) +
                          " features but the dense layer before it has " + std::to_string(l.out) + " outputs");
    if (l.act != Activation::none)
        throw value_error("deploy::spec_from: " + where + " follows a dense layer with activation " + activation_name(l.act) +
                          "; only a BatchNorm between a dense layer and its activation can be folded");
    if (l.bias.empty()) l.bias.assign(l.out, T(0));
    for (std::size_t j = 0; j < l.out; ++j) {
        const double s = static_cast<double>(bn.weight.value[j]) /
                         std::sqrt(static_cast<double>(bn.running_var[j]) + bn.eps());
        for (std::size_t p = 0; p < l.in; ++p)
            l.weight[p * l.out + j] = static_cast<T>(static_cast<double>(l.weight[p * l.out + j]) * s);
        l.bias[j] = static_cast<T>((static_cast<double>(l.bias[j]) - static_cast<double>(bn.running_mean[j])) * s +
                                   static_cast<double>(bn.bias.value[j]));
    }
}

/// pending: the last dense layer may still take an activation (nothing but dropout since).
template <class T>
void walk(ModelSpec<T>& spec, const nn::Sequential<T>& seq, const std::string& prefix, bool& pending) {
    const std::vector<const nn::Module<T>*> layers = seq.layers();
    for (std::size_t i = 0; i < layers.size(); ++i) {
        const nn::Module<T>& m = *layers[i];
        const std::string where = "layer " + prefix + std::to_string(i) + " (" + m.describe() + ")";
        switch (m.kind()) {
        case nn::LayerKind::dense: {
            const auto& d = static_cast<const nn::Dense<T>&>(m);
            if (!spec.layers.empty() && spec.layers.back().out != d.in_features())
                throw shape_error("deploy::spec_from: " + where + " takes " + std::to_string(d.in_features()) +
                                  " inputs but the layer before gives " + std::to_string(spec.layers.back().out));
            append_dense(spec, d);
            pending = d.activation() == Activation::none;
            break;
        }
        case nn::LayerKind::activation: {
            const auto& a = static_cast<const nn::ActivationLayer<T>&>(m);
            if (a.activation() == Activation::none) break;
            if (!pending || spec.layers.empty())
                throw value_error("deploy::spec_from: " + where +
                                  " does not directly follow a dense layer without activation; deploy supports act(x W + b) layers");
            spec.layers.back().act = a.activation();
            spec.layers.back().alpha = a.alpha();
            pending = false;
            break;
        }
        case nn::LayerKind::dropout: break;  // the identity at inference
        case nn::LayerKind::batch_norm:
            if (!pending || spec.layers.empty())
                throw value_error("deploy::spec_from: " + where + " does not directly follow a dense layer, so it cannot be folded");
            fold_batch_norm(spec.layers.back(), static_cast<const nn::BatchNorm<T>&>(m), where);
            break;
        case nn::LayerKind::sequential:
            walk(spec, static_cast<const nn::Sequential<T>&>(m), prefix + std::to_string(i) + ".", pending);
            break;
        default:
            throw value_error("deploy::spec_from: " + where + " is not supported by the fixed-size path (" +
                              nn::layer_kind_name(m.kind()) + "); supported: Dense, activations, Dropout, BatchNorm after Dense");
        }
    }
}

} // namespace detail

/// The dense layers of a trained Sequential (Dense, activation layers fused into the Dense before
/// them, Dropout dropped, BatchNorm folded into the Dense before it, nested Sequentials walked).
template <class T>
ModelSpec<T> spec_from(const nn::Sequential<T>& model) {
    ModelSpec<T> spec;
    bool pending = false;
    detail::walk(spec, model, "", pending);
    spec.validate();
    return spec;
}

/// A model file saved from an MLP (parameters "<name>.weight" (in, out) and optional
/// "<name>.bias" (out), in order), with one activation per dense layer; alphas default to
/// 0.01 (leaky ReLU) and 1 (ELU).
template <class T>
ModelSpec<T> spec_from_model_file(const std::string& path, const std::vector<Activation>& activations,
                                  const std::vector<T>& alphas = {}) {
    const io::ModelFileInfo info = io::inspect_model(path);
    const std::string want = sizeof(T) == 4 ? "float32" : "float64";
    if (info.dtype != want)
        throw format_error(path + ": the file holds " + info.dtype + " values but a " + want + " model was requested");
    std::vector<Parameter<T>> params(info.parameters.size());
    io::NamedParameters<T> named;
    for (std::size_t i = 0; i < info.parameters.size(); ++i) {
        params[i] = Parameter<T>(info.parameters[i].first, Tensor<T>(info.parameters[i].second));
        named.emplace_back(info.parameters[i].first, &params[i]);
    }
    io::load_model(path, named);

    auto ends_with = [](const std::string& s, const std::string& suffix) {
        return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
    };
    ModelSpec<T> spec;
    for (std::size_t i = 0; i < params.size(); ++i) {
        const std::string& name = params[i].name;
        const Shape& s = params[i].value.shape();
        if (!ends_with(name, "weight") || s.rank() != 2)
            throw format_error(path + ": parameter '" + name + "' of shape " + s.str() +
                               " is not a dense weight (expected '<layer>.weight' of shape (in, out))");
        const std::string layer = name.substr(0, name.size() - 6);
        DenseSpec<T> l;
        l.in = s[0];
        l.out = s[1];
        l.weight.assign(params[i].value.data(), params[i].value.data() + params[i].value.size());
        if (i + 1 < params.size() && params[i + 1].name == layer + "bias") {
            const Shape& bs = params[i + 1].value.shape();
            if (bs.rank() != 1 || bs[0] != l.out)
                throw format_error(path + ": parameter '" + params[i + 1].name + "' has shape " + bs.str() + ", expected (" +
                                   std::to_string(l.out) + ") for weight '" + name + "' of shape " + s.str());
            l.bias.assign(params[i + 1].value.data(), params[i + 1].value.data() + params[i + 1].value.size());
            ++i;
        }
        spec.layers.push_back(std::move(l));
    }
    if (activations.size() != spec.layers.size())
        throw value_error("deploy::spec_from_model_file: " + path + " holds " + std::to_string(spec.layers.size()) +
                          " dense layers but " + std::to_string(activations.size()) + " activations were given");
    if (!alphas.empty() && alphas.size() != spec.layers.size())
        throw value_error("deploy::spec_from_model_file: " + std::to_string(alphas.size()) + " alphas for " +
                          std::to_string(spec.layers.size()) + " layers");
    for (std::size_t i = 0; i < spec.layers.size(); ++i) {
        spec.layers[i].act = activations[i];
        spec.layers[i].alpha = alphas.empty() ? static_cast<T>(nn::default_alpha(activations[i])) : alphas[i];
    }
    spec.validate();
    return spec;
}

/// Sizes of a fixed-size model type, as text: "8 -> 24 -> 16 -> 1".
template <class M>
std::string fixed_sizes() {
    std::string s;
    for (std::size_t i = 0; i <= M::num_layers; ++i) s += (i ? " -> " : "") + std::to_string(M::sizes[i]);
    return s;
}

/// Loads a spec into a fixed-size model (Mlp, or the quantised models of quantize.hpp).
/// Throws shape_error naming both architectures when the sizes differ.
template <class M, class T>
void load(M& fixed, const ModelSpec<T>& spec) {
    spec.validate();
    bool same = spec.layers.size() == M::num_layers;
    for (std::size_t i = 0; same && i < spec.layers.size(); ++i)
        same = spec.layers[i].in == M::sizes[i] && spec.layers[i].out == M::sizes[i + 1];
    if (!same)
        throw shape_error("deploy::load: the trained model is " + spec.describe() + " but the fixed-size model is " + fixed_sizes<M>());
    const std::vector<LayerView<T>> v = spec.views();
    const Status s = fixed.load(v.data(), v.size());
    if (s != Status::ok) throw value_error(std::string("deploy::load: ") + status_message(s));
    const Status t = spec.has_input_scaling() ? fixed.set_input_scaling(spec.input_mean.data(), spec.input_scale.data())
                                              : fixed.set_input_scaling(nullptr, nullptr);
    if (t != Status::ok) throw value_error(std::string("deploy::load: input scaling: ") + status_message(t));
}

/// A heap-allocated fixed-size model loaded from a spec or a trained Sequential (the object can be
/// large; for a trigger, copy it into static storage or keep it where it is).
template <class M, class T>
std::unique_ptr<M> to_fixed(const ModelSpec<T>& spec) {
    auto m = std::make_unique<M>();
    load(*m, spec);
    return m;
}
template <class M, class T>
std::unique_ptr<M> to_fixed(const nn::Sequential<T>& model) {
    return to_fixed<M>(spec_from(model));
}

/// Loads a float spec into an Int8Mlp, calibrating the activation scales on n events x
/// (n x inputs, raw features: the spec's input scaling is applied first) to cover the given
/// fraction of each layer's |inputs|.
template <class M>
void load(M& q, const ModelSpec<float>& spec, const float* calibration, std::size_t n, double coverage = 0.9999) {
    spec.validate();
    if (!calibration || n == 0) throw value_error("deploy::load (int8): calibration needs at least one event");
    bool same = spec.layers.size() == M::num_layers;
    for (std::size_t i = 0; same && i < spec.layers.size(); ++i)
        same = spec.layers[i].in == M::sizes[i] && spec.layers[i].out == M::sizes[i + 1];
    if (!same)
        throw shape_error("deploy::load: the trained model is " + spec.describe() + " but the fixed-size model is " + fixed_sizes<M>());
    const std::vector<float> ranges = spec.input_ranges(calibration, n, coverage);
    const std::vector<LayerView<float>> v = spec.views();
    const Status s = q.load(v.data(), v.size(), ranges.data());
    if (s != Status::ok) throw value_error(std::string("deploy::load (int8): ") + status_message(s));
    const Status t = spec.has_input_scaling() ? q.set_input_scaling(spec.input_mean.data(), spec.input_scale.data())
                                              : q.set_input_scaling(nullptr, nullptr);
    if (t != Status::ok) throw value_error(std::string("deploy::load (int8): input scaling: ") + status_message(t));
}

/// A heap-allocated Int8Mlp calibrated on n events.
template <class M>
std::unique_ptr<M> to_int8(const ModelSpec<float>& spec, const float* calibration, std::size_t n, double coverage = 0.9999) {
    auto m = std::make_unique<M>();
    load(*m, spec, calibration, n, coverage);
    return m;
}

} // namespace tapir::deploy
// ---- end tapir/deploy/convert.hpp ----

namespace tapir::deploy {

struct CodegenOptions {
    /// Namespace of everything generated ("a::b" nests); must be a C++ identifier path.
    std::string name_space = "tapir_model";
    /// Name of the batch-1 function; "<function>_batch" is the batched one.
    std::string function = "predict";
    /// Include guard; empty: derived from the namespace.
    std::string include_guard;
    /// Free text for the header's leading comment (model name, training run, ...).
    std::string comment;
    /// Longest multiply-add chain before the sum restarts, as tapir's GEMM does for long sums
    /// (Mlp::sum_block: 256 for the scalar and NEON kernels, 384 or 512 for AVX2/AVX-512).
    /// Only layers with more inputs than this are affected.
    std::size_t sum_block = 256;
};

namespace detail {

inline bool is_identifier(const std::string& s) {
    if (s.empty() || !(std::isalpha(static_cast<unsigned char>(s[0])) || s[0] == '_')) return false;
    for (char c : s)
        if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_')) return false;
    return true;
}

inline std::vector<std::string> split_namespace(const std::string& ns) {
    std::vector<std::string> parts;
    std::size_t at = 0;
    for (;;) {
        const std::size_t k = ns.find("::", at);
        parts.push_back(ns.substr(at, k == std::string::npos ? std::string::npos : k - at));
        if (k == std::string::npos) break;
        at = k + 2;
    }
    for (const auto& p : parts)
        if (!is_identifier(p))
            throw value_error("deploy::generate_header: namespace '" + ns + "' is not a C++ identifier path (part '" + p + "')");
    return parts;
}

/// Shortest round-trip decimal of a finite value as a C++ literal of type T (locale-independent).
template <class T>
std::string literal(T v) {
    char buf[64];
    const auto res = std::to_chars(buf, buf + sizeof buf, v);
    std::string s(buf, res.ptr);
    if (s.find_first_of(".e") == std::string::npos) s += ".0";
    if (std::is_same<T, float>::value) s += 'f';
    return s;
}

template <class T>
void emit_array(std::string& out, const std::string& decl, const T* v, std::size_t rows, std::size_t cols) {
    out += decl + " = {";
    for (std::size_t r = 0; r < rows; ++r) {
        if (rows > 1) out += r ? ",\n    {" : "\n    {";
        for (std::size_t c = 0; c < cols; ++c) {
            if (c) out += (c % 8 == 0) ? ",\n     " : ", ";
            out += literal(v[r * cols + c]);
        }
        if (rows > 1) out += "}";
    }
    out += "};\n";
}

/// The helpers, written once for T (replacing @T@): multiply-add, the blocked dense kernel,
/// and tanh/sigmoid as simd/vmath.hpp's tanh_v/sigmoid_v (simd/activation.hpp) on one lane,
/// operation by operation, with simd::math_constants' numbers; test_codegen.cpp compiles the
/// output and checks it bitwise against the library on every instruction set.
inline const char* gen_dense_helpers() {
    return R"(#if TAPIR_GEN_FMA
inline @T@ mad(@T@ a, @T@ b, @T@ c) noexcept { return std::fma(a, b, c); }
#else
inline @T@ mad(@T@ a, @T@ b, @T@ c) noexcept { return a * b + c; }
#endif

/// y = x W + b: per output one multiply-add chain over k in order, restarted every KB terms
/// and the partial sums added in order (tapir's GEMM blocking), then the bias.
template <int K, int N, int KB>
inline void dense(const @T@* x, const @T@ (&w)[K][N], const @T@ (&b)[N], @T@* y) noexcept {
    @T@ part[N];
    for (int k0 = 0; k0 < K; k0 += KB) {
        const int k1 = k0 + KB < K ? k0 + KB : K;
        for (int j = 0; j < N; ++j) part[j] = @T@(0);
        for (int k = k0; k < k1; ++k) {
            const @T@ xk = x[k];
            for (int j = 0; j < N; ++j) part[j] = mad(xk, w[k][j], part[j]);
        }
        for (int j = 0; j < N; ++j) y[j] = k0 == 0 ? part[j] : part[j] + y[j];
    }
    for (int j = 0; j < N; ++j) y[j] = y[j] + b[j];
}
)";
}

inline const char* gen_exp_helpers() {
    return R"(
/// Powers of two 2^(n - pow2_bias) for the exponent range the reductions below produce.
@POW2@

inline void reduce_ln2(@T@ y, @T@& n, @T@& r) noexcept {
    n = mad(y, @LOG2E@, @SHIFTER@) - @SHIFTER@;
    r = mad(-n, @LN2HI@, y);
    r = mad(-n, @LN2LO@, r);
}
/// e^r - 1 for |r| <= ln2/2: r + r^2 (1/2! + r (1/3! + ...)).
inline @T@ expm1_reduced(@T@ r) noexcept {
    @T@ q = @FACT_TOP@;
@HORNER@    return mad(r * r, q, r);
}
inline @T@ pow2(@T@ n) noexcept { return pow2_table[static_cast<int>(n) + pow2_bias]; }
inline @T@ exp_poly(@T@ x) noexcept {
    if (x != x) return x + x;
    @T@ xc = x > @EXPLO@ ? x : @EXPLO@;
    xc = xc < @EXPHI@ ? xc : @EXPHI@;
    @T@ n, r;
    reduce_ln2(xc, n, r);
    const @T@ p = expm1_reduced(r) + @T@(1);
    const @T@ n1 = mad(n, @T@(0.5), @SHIFTER@) - @SHIFTER@;
    const @T@ n2 = n - n1;
    return (p * pow2(n1)) * pow2(n2);
}
inline @T@ tanh_poly(@T@ x) noexcept {
    if (x != x) return x + x;
    @T@ a = std::fabs(x);
    a = a < @TANHCLAMP@ ? a : @TANHCLAMP@;
    @T@ n, r;
    reduce_ln2(a + a, n, r);
    const @T@ s = pow2(n);
    const @T@ em = mad(s, expm1_reduced(r), s - @T@(1));
    const @T@ t = em / (em + @T@(2));
    return std::signbit(x) ? -t : t;
}
inline @T@ sigmoid_poly(@T@ x) noexcept {
    if (x != x) return x + x;
    const @T@ e = exp_poly(-std::fabs(x));
    return (std::signbit(x) ? e : @T@(1)) / (@T@(1) + e);
}
)";
}

inline void replace_all(std::string& s, const std::string& from, const std::string& to) {
    for (std::size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size())) s.replace(at, from.size(), to);
}

template <class T>
std::string act_expr(Activation a, T alpha, const std::string& v) {
    switch (a) {
    case Activation::none: return v;
    case Activation::relu: return "(" + literal(T(0)) + " > " + v + " ? " + literal(T(0)) + " : " + v + ")";
    case Activation::leaky_relu: return "(" + v + " > " + literal(T(0)) + " ? " + v + " : " + literal(alpha) + " * " + v + ")";
    case Activation::elu: return "(" + v + " > " + literal(T(0)) + " ? " + v + " : " + literal(alpha) + " * std::expm1(" + v + "))";
    case Activation::tanh: return "tanh_poly(" + v + ")";
    case Activation::sigmoid: return "sigmoid_poly(" + v + ")";
    case Activation::softplus:
        return "((" + v + " > " + literal(T(0)) + " ? " + v + " : " + literal(T(0)) + ") + std::log1p(std::exp(-std::fabs(" + v + "))))";
    }
    return v;
}

} // namespace detail

/// The header text for a float or double model.
template <class T>
std::string generate_header(const ModelSpec<T>& spec, const CodegenOptions& opt = CodegenOptions{}) {
    static_assert(std::is_same<T, float>::value || std::is_same<T, double>::value, "generate_header: float or double");
    spec.validate();
    const std::vector<std::string> ns = detail::split_namespace(opt.name_space);
    if (!detail::is_identifier(opt.function))
        throw value_error("deploy::generate_header: function name '" + opt.function + "' is not a C++ identifier");
    std::string guard = opt.include_guard;
    if (guard.empty()) {
        guard = "TAPIR_GENERATED_";
        for (const auto& p : ns) guard += p + "_";
        for (char& c : guard) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        guard += "HPP";
    }
    if (!detail::is_identifier(guard)) throw value_error("deploy::generate_header: include guard '" + guard + "' is not an identifier");
    if (opt.sum_block == 0) throw value_error("deploy::generate_header: sum_block must be positive");
    const std::string tn = std::is_same<T, float>::value ? "float" : "double";
    const auto lit = [](auto v) { return detail::literal(static_cast<T>(v)); };
    const std::size_t nl = spec.layers.size();

    bool uses_poly = false;
    for (const auto& l : spec.layers) uses_poly |= l.act == Activation::tanh || l.act == Activation::sigmoid;

    std::string o;
    o += "// Generated by tapir " TAPIR_VERSION_STRING " (tapir::deploy::generate_header). Do not edit: regenerate.\n";
    o += "// Model: " + spec.describe() + ", " + tn + (spec.has_input_scaling() ? ", inputs standardised inside" : "") + ".\n";
    if (!opt.comment.empty()) {
        std::string c = opt.comment;
        detail::replace_all(c, "\n", "\n// ");
        o += "// " + c + "\n";
    }
    o += "//\n// Standalone: needs <cmath> and C++11; no exceptions, RTTI, heap or tapir.\n";
    o += "//   " + opt.function + "(x, y)            x: n_inputs values, y: n_outputs values\n";
    o += "//   " + opt.function + "_batch(x, y, n)   n events, row-major\n";
    o += "// Bitwise tapir's outputs when TAPIR_GEN_FMA is 1 (fused multiply-adds; the default when\n";
    o += "// the target has FMA); 0 gives the same up to rounding.\n";
    o += "#ifndef " + guard + "\n#define " + guard + "\n\n#include <cmath>\n\n";
    o += "#ifndef TAPIR_GEN_FMA\n#if defined(__FMA__) || defined(__aarch64__) || defined(__ARM_FEATURE_FMA)\n"
         "#define TAPIR_GEN_FMA 1\n#else\n#define TAPIR_GEN_FMA 0\n#endif\n#endif\n\n";
    for (const auto& p : ns) o += "namespace " + p + " {\n";
    o += "\nconstexpr int n_inputs = " + std::to_string(spec.inputs()) + ";\n";
    o += "constexpr int n_outputs = " + std::to_string(spec.outputs()) + ";\n\nnamespace detail {\n\n";

    std::string helpers = detail::gen_dense_helpers();
    if (uses_poly) {
        using C = simd::math_constants<T>;
        std::string e = detail::gen_exp_helpers();
        // 2^n for n in [lo, hi]: exp's two half exponents and tanh's expm1 exponent.
        const int lo = static_cast<int>(std::floor(static_cast<double>(C::exp_lo) * static_cast<double>(C::log2e) / 2.0)) - 2;
        const int hi = static_cast<int>(std::ceil(static_cast<double>(C::exp_hi) * static_cast<double>(C::log2e) / 2.0)) + 2;
        const int hi_t = static_cast<int>(std::ceil(2.0 * static_cast<double>(C::tanh_clamp) * static_cast<double>(C::log2e))) + 2;
        const int top = hi > hi_t ? hi : hi_t;
        std::vector<T> p2;
        for (int n = lo; n <= top; ++n) p2.push_back(static_cast<T>(std::ldexp(1.0, n)));
        std::string table = "constexpr int pow2_bias = " + std::to_string(-lo) + ";\n";
        detail::emit_array(table, "constexpr @T@ pow2_table[" + std::to_string(p2.size()) + "]", p2.data(), 1, p2.size());
        table.pop_back();
        detail::replace_all(e, "@POW2@", table);
        std::string horner;
        for (int k = C::exp_terms - 2; k >= 2; --k) horner += "    q = mad(q, r, " + lit(simd::inv_factorial<T>(k)) + ");\n";
        detail::replace_all(e, "@HORNER@", horner);
        detail::replace_all(e, "@FACT_TOP@", lit(simd::inv_factorial<T>(C::exp_terms - 1)));
        detail::replace_all(e, "@LOG2E@", lit(C::log2e));
        detail::replace_all(e, "@SHIFTER@", lit(C::shifter));
        detail::replace_all(e, "@LN2HI@", lit(C::ln2_hi));
        detail::replace_all(e, "@LN2LO@", lit(C::ln2_lo));
        detail::replace_all(e, "@EXPLO@", lit(C::exp_lo));
        detail::replace_all(e, "@EXPHI@", lit(C::exp_hi));
        detail::replace_all(e, "@TANHCLAMP@", lit(C::tanh_clamp));
        helpers += e;
    }
    detail::replace_all(helpers, "@T@", tn);
    o += helpers + "\n";

    if (spec.has_input_scaling()) {
        detail::emit_array(o, "constexpr double input_mean[" + std::to_string(spec.inputs()) + "]", spec.input_mean.data(), 1,
                           spec.inputs());
        detail::emit_array(o, "constexpr double input_scale[" + std::to_string(spec.inputs()) + "]", spec.input_scale.data(), 1,
                           spec.inputs());
        o += "\n";
    }
    for (std::size_t i = 0; i < nl; ++i) {
        const DenseSpec<T>& l = spec.layers[i];
        const std::string k = std::to_string(l.in), n = std::to_string(l.out), id = std::to_string(i);
        o += "// layer " + id + ": " + k + " -> " + n + ", " + activation_name(l.act) + "\n";
        detail::emit_array(o, "constexpr " + tn + " w" + id + "[" + k + "][" + n + "]", l.weight.data(), l.in, l.out);
        const std::vector<T> b = l.bias.empty() ? std::vector<T>(l.out, T(0)) : l.bias;
        detail::emit_array(o, "constexpr " + tn + " b" + id + "[" + n + "]", b.data(), 1, l.out);
        o += "\n";
    }
    o += "} // namespace detail\n\n";

    o += "/// One event: x (n_inputs values) -> y (n_outputs values).\n";
    o += "inline void " + opt.function + "(const " + tn + "* x, " + tn + "* y) noexcept {\n";
    std::string in = "x";
    if (spec.has_input_scaling()) {
        o += "    " + tn + " z[n_inputs];\n";
        o += "    for (int i = 0; i < n_inputs; ++i)\n";
        o += "        z[i] = static_cast<" + tn + ">((static_cast<double>(x[i]) - detail::input_mean[i]) / detail::input_scale[i]);\n";
        in = "z";
    }
    for (std::size_t i = 0; i < nl; ++i) {
        const DenseSpec<T>& l = spec.layers[i];
        const std::string id = std::to_string(i), n = std::to_string(l.out);
        const bool last = i + 1 == nl;
        const std::string out = last ? "y" : "h" + id;
        if (!last) o += "    " + tn + " " + out + "[" + n + "];\n";
        o += "    detail::dense<" + std::to_string(l.in) + ", " + n + ", " + std::to_string(simd::gemm_k_block(l.in, opt.sum_block)) + ">(" + in +
             ", detail::w" + id + ", detail::b" + id + ", " + out + ");\n";
        if (l.act != Activation::none) {
            const std::string e = detail::act_expr(l.act, l.alpha, out + "[j]");
            o += "    for (int j = 0; j < " + n + "; ++j) " + out + "[j] = " + (l.act == Activation::tanh || l.act == Activation::sigmoid ? "detail::" : "") + e + ";\n";
        }
        in = out;
    }
    o += "}\n\n";
    o += "/// n events, row-major: x (n x n_inputs) -> y (n x n_outputs).\n";
    o += "inline void " + opt.function + "_batch(const " + tn + "* x, " + tn + "* y, long n) noexcept {\n";
    o += "    for (long i = 0; i < n; ++i) " + opt.function + "(x + i * n_inputs, y + i * n_outputs);\n}\n\n";
    for (std::size_t i = ns.size(); i-- > 0;) o += "} // namespace " + ns[i] + "\n";
    o += "\n#endif // " + guard + "\n";
    return o;
}

/// Writes generate_header(spec, opt) to path; throws format_error naming the file on failure.
template <class T>
void write_header(const std::string& path, const ModelSpec<T>& spec, const CodegenOptions& opt = CodegenOptions{}) {
    const std::string text = generate_header(spec, opt);
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    if (!f) throw format_error("deploy::write_header: cannot open '" + path + "' for writing");
    f.write(text.data(), static_cast<std::streamsize>(text.size()));
    f.close();
    if (!f) throw format_error("deploy::write_header: error writing '" + path + "'");
}

} // namespace tapir::deploy
// ---- end tapir/deploy/codegen.hpp ----
// ---- begin tapir/deploy/deploy.hpp ----
/// Inference-only deployment header for trigger and embedded code: the fixed-size and quantised
/// models, no exceptions, no heap, none of the training library (compiles in a fraction of
/// tapir.hpp's time):
///   fixed.hpp     Mlp<float, 8, 24, 16, 8, 1>: compile-time sizes, noexcept, no heap, SIMD kernels,
///                 bitwise the dynamic model's numbers (builds with -fno-exceptions -fno-rtti)
///   quantize.hpp  Int8Mlp (int8 weights and activations) and FixedMlp<FixedPoint<W, I>, ...>
///                 (the ap_fixed<W, I> convention), same guarantees
/// The tools that build these models from trained ones are separate headers (both in tapir.hpp):
///   convert.hpp   ModelSpec (a neutral list of dense layers) from nn::Sequential or a model file,
///                 loading into the fixed-size and quantised models, int8 calibration
///   codegen.hpp   generate_header(): one standalone C++ header (weights as constexpr arrays, one
///                 function, only `<cmath>`) for firmware and trigger code bases

// ---- end tapir/deploy/deploy.hpp ----
// ---- begin tapir/extern_templates.hpp ----
/// Opt-in precompiled instantiations of the costliest templates above the SIMD layer (the backward
/// driver, the layers and containers, fit/predict, the optimisers), for float and double.
/// Header-only use is unchanged by default. A program that defines TAPIR_EXTERN_TEMPLATES in every
/// file and TAPIR_INSTANTIATE_KERNELS in exactly one file that includes <tapir/tapir.hpp> compiles
/// them (and the kernels of simd/) once: a user file then compiles in a fraction of the time.

#include <cstddef>
#include <vector>


#if defined(TAPIR_INSTANTIATE_KERNELS) || defined(TAPIR_EXTERN_TEMPLATES)
#if defined(TAPIR_INSTANTIATE_KERNELS)
#define TAPIR_INSTANTIATE_X template
#else
#define TAPIR_INSTANTIATE_X extern template
#endif
/// Whole classes: their out-of-line and virtual members (not inlined calls) come from the one file.
#define TAPIR_INSTANTIATE_ALL(T)                                                                        \
    TAPIR_INSTANTIATE_X void detail::run_eager<T>(Tape<T>&, std::vector<Ref<T>>&, const Var<T>*, std::size_t, const Var<T>*, bool); \
    TAPIR_INSTANTIATE_X class nn::Module<T>;                                                              \
    TAPIR_INSTANTIATE_X class nn::Sequential<T>;                                                          \
    TAPIR_INSTANTIATE_X class nn::Dense<T>;                                                               \
    TAPIR_INSTANTIATE_X nn::History nn::fit<T, nn::BceWithLogitsLoss>(                                    \
        nn::Module<T>&, const Tensor<T>&, const Tensor<T>&, optim::Optimizer<T>&, const nn::FitOptions<T>&, \
        nn::BceWithLogitsLoss);                                                                           \
    TAPIR_INSTANTIATE_X nn::History nn::fit<T, nn::MseLoss>(nn::Module<T>&, const Tensor<T>&, const Tensor<T>&, \
                                                            optim::Optimizer<T>&, const nn::FitOptions<T>&, \
                                                            nn::MseLoss);                                 \
    TAPIR_INSTANTIATE_X Tensor<T> nn::predict<T>(nn::Module<T>&, const Tensor<T>&, std::size_t);         \
    TAPIR_INSTANTIATE_X class optim::Optimizer<T>;                                                        \
    TAPIR_INSTANTIATE_X class optim::detail::AdamCore<T>;                                                 \
    TAPIR_INSTANTIATE_X class optim::Adam<T>;                                                             \
    TAPIR_INSTANTIATE_X class optim::AdamW<T>;                                                            \
    TAPIR_INSTANTIATE_X class optim::SGD<T>;                                                              \
    TAPIR_INSTANTIATE_X class optim::RMSprop<T>;                                                          \
    TAPIR_INSTANTIATE_X class optim::Adagrad<T>;

namespace tapir {
TAPIR_INSTANTIATE_ALL(float)
TAPIR_INSTANTIATE_ALL(double)
} // namespace tapir

#undef TAPIR_INSTANTIATE_ALL
#undef TAPIR_INSTANTIATE_X
#endif
// ---- end tapir/extern_templates.hpp ----
// ---- end tapir/tapir.hpp ----
