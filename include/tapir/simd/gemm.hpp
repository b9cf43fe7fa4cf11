#pragma once
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

#include "../error.hpp"
#include "arch.hpp"
#include "thread_pool.hpp"
#include "vec.hpp"

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

/// Elements of T the serial driver needs: one packed A block (transposed A) and one packed B block.
template <class V> constexpr std::size_t gemm_work_elems(std::size_t, std::size_t n, std::size_t k) {
    using B = gemm_blocking<V>;
    constexpr std::size_t NR = B::NV * V::W;
    const std::size_t kc = k_block<B::KC>(k);
    const std::size_t nc = round_up(std::min(n, B::NC), NR);
    return round_up(B::MC * kc, 64) + nc * kc;
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

    /// How the micro-kernel reads A: a packed MR-row panel (a[p*MR + i]) or rows of a row-major A
    /// (a[i*lda + p], rows past the edge clamped to the last valid one).
    enum class amode { packed, rows };

    /// Clears the MR x NV accumulator block of the micro-kernels.
    template <class V, std::size_t MR, std::size_t NV>
    static TAPIR_ALWAYS_INLINE void zero_acc(typename V::reg (&acc)[MR][NV]) {
#pragma GCC unroll 16
        for (std::size_t i = 0; i < MR; ++i)
#pragma GCC unroll 8
            for (std::size_t j = 0; j < NV; ++j) acc[i][j] = V::zero();
    }

    /// The valid lanes of each of the NV vectors of an nr-column tile row.
    template <class V, std::size_t NV>
    static TAPIR_ALWAYS_INLINE void lane_counts(std::size_t nr, std::size_t (&bcnt)[NV]) {
#pragma GCC unroll 8
        for (std::size_t j = 0; j < NV; ++j) bcnt[j] = nr > j * V::W ? std::min(V::W, nr - j * V::W) : 0;
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
        lane_counts<V>(nr, bcnt);
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
        for (std::size_t p = 0; p < kc; ++p, b += ldb) fma_broadcast<V>(a + p, lda, b, acc);
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

    /// Packs op(A)[i0 .. i0+mc, p0 .. p0+kc) for a transposed A (op(A) rows are A's columns) into
    /// MR-row panels of MR x kc, p-major, the last zero-padded. Once per block, reading A by its rows:
    /// read in place, each of A's columns strides a whole row of A per step, and at 1024 columns every
    /// step of every tile was a new page (wide layers' weight gradients, dW = X^T dZ, ran at 2/3 speed).
    template <std::size_t MR>
    static TAPIR_ALWAYS_INLINE void pack_a_block(const gemm_args<T>& g, std::size_t i0, std::size_t mc,
                                                 std::size_t p0, std::size_t kc, T* TAPIR_RESTRICT d) {
        const std::size_t full = mc / MR * MR;
        for (std::size_t p = 0; p < kc; ++p) {
            const T* s = g.a + (p0 + p) * g.lda + i0;
            for (std::size_t i = 0; i < full; i += MR)
#pragma GCC unroll 16
                for (std::size_t r = 0; r < MR; ++r) d[i * kc + p * MR + r] = s[i + r];
            if (full < mc)
                for (std::size_t r = 0; r < MR; ++r) d[full * kc + p * MR + r] = full + r < mc ? s[full + r] : T(0);
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

    /// One MC x nc block of C for one K block: A read in place by rows, or (transposed A) packed.
    /// B in place (direct) or packed is a run-time flag, not a template one: the tiles of both are
    /// then inlined once per instruction set, not twice (a sixth less GEMM code to compile).
    template <class V>
    static TAPIR_ALWAYS_INLINE void block(bool direct, const gemm_args<T>& g, std::size_t ic, std::size_t mc,
                                          std::size_t jc, std::size_t nc, std::size_t pc, std::size_t kc, T beta,
                                          const T* bsrc, std::size_t ldb, T* apanel) {
        using B = gemm_blocking<V>;
        constexpr std::size_t MR = B::MR, NV = B::NV, NR = NV * V::W;
        if (g.ta) pack_a_block<MR>(g, ic, mc, pc, kc, apanel);
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
                } else {
                    const T* ap = apanel + ir * kc;  // packed once per block by pack_a_block
                    if (direct && nr < NR)
                        micro<V, MR, NV, amode::packed, true>(kc, ap, MR, bp, ldb, mr, nr, g.alpha, beta, cp, g.ldc);
                    else
                        micro<V, MR, NV, amode::packed, false>(kc, ap, MR, bp, ldb, mr, nr, g.alpha, beta, cp, g.ldc);
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
        // One row panel (m <= MR) uses each element of B once: packing it would only copy it (the
        // weight gradient of a layer with few inputs, x^T dZ, spent two thirds of its time there).
        const bool direct = direct_b<V>(g) || (!g.tb && g.m <= B::MR);
        if (!work && (g.ta || !direct))
            work = static_cast<T*>(gemm_buffer().get(gemm_work_elems<V>(g.m, g.n, g.k) * sizeof(T)));
        T* const apanel = work;
        T* const bbuf = work ? work + round_up(B::MC * kcb, 64) : nullptr;
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

    /// C = alpha A B + beta C with row p of B at b + rows[p] (gemm_rows): micro()'s chains, A read
    /// in place by rows (past the edge clamped to the last row), B's last vectors read partially.
    struct rows_b {
        using value_type = T;
        template <class V, std::size_t MR, std::size_t NV, bool Edge>
        static TAPIR_ALWAYS_INLINE void tile(std::size_t kc, const T* a, std::size_t lda, const T* b,
                                             const std::ptrdiff_t* rows, std::size_t mr, std::size_t nr, T alpha,
                                             T beta, T* c, std::size_t ldc) {
            constexpr std::size_t W = V::W;
            using R = typename V::reg;
            R acc[MR][NV];
            zero_acc<V>(acc);
            std::size_t bcnt[NV];
            lane_counts<V>(nr, bcnt);
            if constexpr (!Edge) {
                for (std::size_t p = 0; p < kc; ++p) fma_broadcast<V>(a + p, lda, b + rows[p], acc);
            } else {
                const T* ar[MR];
#pragma GCC unroll 16
                for (std::size_t i = 0; i < MR; ++i) ar[i] = a + std::min(i, mr - 1) * lda;
                for (std::size_t p = 0; p < kc; ++p) {
                    const T* bp = b + rows[p];
                    R bv[NV];
#pragma GCC unroll 8
                    for (std::size_t j = 0; j < NV; ++j)
                        bv[j] = bcnt[j] == W ? V::load(bp + j * W) : bcnt[j] ? V::load_partial(bp + j * W, bcnt[j]) : V::zero();
#pragma GCC unroll 16
                    for (std::size_t i = 0; i < MR; ++i) {
                        const R av = V::set1(ar[i][p]);
#pragma GCC unroll 8
                        for (std::size_t j = 0; j < NV; ++j) acc[i][j] = V::fma(av, bv[j], acc[i][j]);
                    }
                }
            }
            const bool full = mr == MR && nr == NV * W;
            if (beta == T(0))
                store_tile<V, MR, NV, 1>(acc, alpha, beta, c, ldc, mr, bcnt, full);
            else
                store_tile<V, MR, NV, 4>(acc, alpha, beta, c, ldc, mr, bcnt, full);
        }
        template <class V> static TAPIR_ALWAYS_INLINE void run(const gemm_args<T>* gp, const std::ptrdiff_t* rows) {
            using B = gemm_blocking<V>;
            constexpr std::size_t MR = B::MR, NV = B::NV, NR = NV * V::W;
            const gemm_args<T>& g = *gp;
            const std::size_t kcb = k_block<B::KC>(g.k);
            for (std::size_t pc = 0; pc < g.k; pc += kcb) {
                const std::size_t kc = std::min(kcb, g.k - pc);
                const T beta = pc == 0 ? g.beta : T(1);
                // Column tiles outside: one tile's B rows (kc x NR, overlapping for a convolution)
                // stay in L1 for every row tile.
                for (std::size_t j = 0; j < g.n; j += NR) {
                    const std::size_t nr = std::min(NR, g.n - j);
                    for (std::size_t i = 0; i < g.m; i += MR) {
                        const std::size_t mr = std::min(MR, g.m - i);
                        const T* a = g.a + i * g.lda + pc;
                        T* c = g.c + i * g.ldc + j;
                        if (mr == MR && nr == NR)
                            tile<V, MR, NV, false>(kc, a, g.lda, g.b + j, rows + pc, mr, nr, g.alpha, beta, c, g.ldc);
                        else
                            tile<V, MR, NV, true>(kc, a, g.lda, g.b + j, rows + pc, mr, nr, g.alpha, beta, c, g.ldc);
                    }
                }
            }
        }
    };

    /// C(i, j) = alpha sum_p A(i, p) B(j, p) + beta C(i, j) with row j of B at b + rows[j] (gemm_rows_nt):
    /// MA x NB dot products at a time, each along the rows in vectors, summed across lanes at the end.
    struct rows_nt {
        using value_type = T;
        template <class V> static TAPIR_ALWAYS_INLINE void run(const gemm_args<T>* gp, const std::ptrdiff_t* rows) {
            constexpr std::size_t W = V::W, MA = W >= 16 ? 4 : 2, NB = 4;
            using R = typename V::reg;
            const gemm_args<T>& g = *gp;
            const std::size_t kv = g.k / W * W, tail = g.k - kv;
            for (std::size_t i0 = 0; i0 < g.m; i0 += MA)
                for (std::size_t j0 = 0; j0 < g.n; j0 += NB) {
                    const T* ar[MA];
                    const T* br[NB];
#pragma GCC unroll 8
                    for (std::size_t i = 0; i < MA; ++i) ar[i] = g.a + std::min(i0 + i, g.m - 1) * g.lda;
#pragma GCC unroll 8
                    for (std::size_t j = 0; j < NB; ++j) br[j] = g.b + rows[std::min(j0 + j, g.n - 1)];
                    R acc[MA][NB];
                    zero_acc<V>(acc);
                    for (std::size_t p = 0; p < kv; p += W) {
                        R av[MA], bv[NB];
#pragma GCC unroll 8
                        for (std::size_t i = 0; i < MA; ++i) av[i] = V::load(ar[i] + p);
#pragma GCC unroll 8
                        for (std::size_t j = 0; j < NB; ++j) bv[j] = V::load(br[j] + p);
#pragma GCC unroll 8
                        for (std::size_t i = 0; i < MA; ++i)
#pragma GCC unroll 8
                            for (std::size_t j = 0; j < NB; ++j) acc[i][j] = V::fma(av[i], bv[j], acc[i][j]);
                    }
                    if (tail) {
                        R av[MA], bv[NB];
#pragma GCC unroll 8
                        for (std::size_t i = 0; i < MA; ++i) av[i] = V::load_partial(ar[i] + kv, tail);
#pragma GCC unroll 8
                        for (std::size_t j = 0; j < NB; ++j) bv[j] = V::load_partial(br[j] + kv, tail);
#pragma GCC unroll 8
                        for (std::size_t i = 0; i < MA; ++i)
#pragma GCC unroll 8
                            for (std::size_t j = 0; j < NB; ++j) acc[i][j] = V::fma(av[i], bv[j], acc[i][j]);
                    }
#pragma GCC unroll 8
                    for (std::size_t i = 0; i < MA; ++i)
#pragma GCC unroll 8
                        for (std::size_t j = 0; j < NB; ++j) {
                            if (i0 + i >= g.m || j0 + j >= g.n) continue;
                            T* c = g.c + (i0 + i) * g.ldc + j0 + j;
                            const T v = g.alpha * V::hsum(acc[i][j]);
                            *c = g.beta == T(0) ? v : v + g.beta * *c;
                        }
                }
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

/// Products below this many multiply-adds stay on the calling thread (waking the pool's parked
/// workers costs a few microseconds; 2^24 multiply-adds take ~150 us on one AVX-512 core). Tests lower it.
inline std::atomic<std::size_t>& gemm_parallel_min() noexcept {
    static std::atomic<std::size_t> v{std::size_t(1) << 24};
    return v;
}

/// At most this many stripes per product (and so threads): the stripes live on the stack.
constexpr std::size_t gemm_max_parts = 64;

/// The threaded driver (out of line, so the serial call keeps a small frame): splits the longer of
/// M and N into stripes of C, which are independent, one per thread of the pool (thread_pool.hpp).
/// False when the product is too narrow to split.
template <class T> TAPIR_NOINLINE bool gemm_parallel(isa which, const gemm_args<T>& g, unsigned nt) {
    using K = gemm_kernel<T>;
    const bool split_m = g.m >= g.n;
    const std::size_t len = split_m ? g.m : g.n, quantum = 64;
    const std::size_t max_parts = std::min((len + quantum - 1) / quantum, gemm_max_parts);
    nt = static_cast<unsigned>(std::min<std::size_t>(nt, max_parts));
    if (nt < 2) return false;
    const std::size_t step = round_up((len + nt - 1) / nt, quantum);
    gemm_args<T> parts[gemm_max_parts];
    std::size_t np = 0;
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
        parts[np++] = p;
    }
    if (np < 2) return false;
    const std::size_t per = dispatch_to<typename K::work_size>(which, split_m ? step : g.m, split_m ? g.n : step, g.k);
    const std::size_t stride = round_up(per, 64);
    T* work = static_cast<T*>(gemm_buffer().get(stride * np * sizeof(T)));
    /// Const, as gemm() passes it: a gemm_args<T>* would instantiate every kernel entry a second time.
    const gemm_args<T>* const part = parts;
    parallel_run(np, [&](std::size_t t) { dispatch_to<K>(which, part + t, work + t * stride); });
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
    // Inside a part of a parallel region (a data-parallel worker) the product stays on this thread.
    const unsigned nt = in_parallel_region() ? 1u : num_threads();
    if (nt > 1 && m * n * k >= detail::gemm_parallel_min().load(std::memory_order_relaxed) &&
        detail::gemm_parallel(which, g, nt))
        return;
    dispatch_to<K>(which, &g, static_cast<T*>(nullptr));
}

namespace detail {
/// The checks and dispatch of gemm_rows (Kernel rows_b, B k x n) and gemm_rows_nt (rows_nt, B n x k).
template <class Kernel, class T>
void gemm_rows_run(bool tb, std::size_t m, std::size_t n, std::size_t k, T alpha, const T* a, std::size_t lda, const T* b,
                   const std::ptrdiff_t* b_rows, T beta, T* c, std::size_t ldc) {
    static_assert(std::is_same<T, float>::value || std::is_same<T, double>::value, "gemm: float or double");
    if (m == 0 || n == 0) return;
    const std::size_t ldb = tb ? k : n;  // rows are as long as they need be: only lda and ldc can be wrong
    if (TAPIR_UNLIKELY((k > 0 && (lda < k || !a || !b || !b_rows)) || ldc < n || !c))
        gemm_check(false, tb, m, n, k, a, lda, b_rows ? b : nullptr, ldb, c, ldc);
    if (k == 0 || alpha == T(0)) {
        scale_c(m, n, beta, c, ldc);
        return;
    }
    const gemm_args<T> g{false, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc};
    dispatch_to<Kernel>(active_isa(), &g, b_rows);
}
} // namespace detail

/// C = alpha * A * B + beta * C (row-major, A m x k in place) with B given by rows: row p of the
/// k x n operand B is the n values at b + b_rows[p] (offsets may repeat and rows may overlap). An
/// implicit GEMM operand: a stride-1 convolution's unfolded input is its padded input read at one
/// offset per tap, so no im2col copy is made (the implicit GEMM of cuDNN, Chetlur et al.,
/// arXiv:1410.0759). Each element's multiply-add chain and K blocks are gemm()'s, so the bits are the
/// same as gemm() on the rows copied out.
template <class T>
void gemm_rows(std::size_t m, std::size_t n, std::size_t k, T alpha, const T* a, std::size_t lda, const T* b,
               const std::ptrdiff_t* b_rows, T beta, T* c, std::size_t ldc) {
    detail::gemm_rows_run<typename detail::gemm_kernel<T>::rows_b>(false, m, n, k, alpha, a, lda, b, b_rows, beta, c, ldc);
}

/// C = alpha * A * B^T + beta * C (row-major, A m x k in place, C m x n) with B given by rows: row j
/// of the n x k operand B is the k values at b + b_rows[j]. Dot products along the rows, summed across
/// the vector lanes (not gemm()'s order): a weight gradient, an implicit GEMM over a long k.
template <class T>
void gemm_rows_nt(std::size_t m, std::size_t n, std::size_t k, T alpha, const T* a, std::size_t lda, const T* b,
                  const std::ptrdiff_t* b_rows, T beta, T* c, std::size_t ldc) {
    detail::gemm_rows_run<typename detail::gemm_kernel<T>::rows_nt>(true, m, n, k, alpha, a, lda, b, b_rows, beta, c, ldc);
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
