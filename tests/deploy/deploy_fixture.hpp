#pragma once
// Shared by the deploy tests: the course's Higgs classifier (8 -> 24 -> 16 -> 8 -> 1, ReLU,
// sigmoid, Adam 1e-3, BCE, standardised photon four-vectors) trained once per run on generated
// diphoton events; dynamic-model reference outputs; random MLPs; helpers to run host compilers.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <unistd.h>

#include <tapir/autodiff/backward.hpp>
#include <tapir/autodiff/ops.hpp>
#include <tapir/autodiff/tape.hpp>
#include <tapir/data/dataset.hpp>
#include <tapir/data/random.hpp>
#include <tapir/deploy/convert.hpp>
#include <tapir/hep/diphoton.hpp>
#include <tapir/loss/classification.hpp>
#include <tapir/metrics/roc.hpp>
#include <tapir/nn/layers.hpp>
#include <tapir/nn/sequential.hpp>
#include <tapir/optim/adam.hpp>

namespace deploy_test {

/// Shorter runs under emulation (qemu), sanitizers' quick mode, or TAPIR_TEST_QUICK.
inline bool quick() {
#if defined(TAPIR_TEST_EMULATED)
    return true;
#else
    return std::getenv("TAPIR_TEST_QUICK") != nullptr;
#endif
}

/// Outputs of a Sequential on the tape in no-grad mode (the dynamic inference path).
inline std::vector<float> dynamic_forward(tapir::nn::Sequential<float>& net, const tapir::Tensor<float>& x) {
    tapir::Tape<float> tape;
    tapir::NoGradGuard<float> guard(tape);
    net.eval();
    const tapir::Var<float> y = net(tape.view(x));
    return std::vector<float>(y.data(), y.data() + y.size());
}
inline std::vector<double> dynamic_forward(tapir::nn::Sequential<double>& net, const tapir::Tensor<double>& x) {
    tapir::Tape<double> tape;
    tapir::NoGradGuard<double> guard(tape);
    net.eval();
    const tapir::Var<double> y = net(tape.view(x));
    return std::vector<double>(y.data(), y.data() + y.size());
}

/// The dynamic model run with the simd kernels of one instruction set (empty if unsupported).
template <class T>
std::vector<T> dynamic_forward_on(tapir::simd::isa want, tapir::nn::Sequential<T>& net, const tapir::Tensor<T>& x) {
    const tapir::simd::isa prev = tapir::simd::active_isa();
    if (!tapir::simd::isa_supported(want)) return {};
    tapir::simd::set_active_isa(want);
    std::vector<T> y = dynamic_forward(net, x);
    tapir::simd::set_active_isa(prev);
    return y;
}

/// Largest |a - b| / |b| (b == 0 counts |a|).
template <class T>
double max_rel_diff(const std::vector<T>& a, const std::vector<T>& b) {
    double m = 0.0;
    for (std::size_t i = 0; i < a.size(); ++i) {
        const double d = std::fabs(static_cast<double>(a[i]) - static_cast<double>(b[i]));
        const double r = b[i] != T(0) ? d / std::fabs(static_cast<double>(b[i])) : d;
        m = std::max(m, r);
    }
    return m;
}
template <class T>
std::size_t count_different(const std::vector<T>& a, const std::vector<T>& b) {
    std::size_t n = 0;
    for (std::size_t i = 0; i < a.size(); ++i) n += !(a[i] == b[i]);
    return n;
}

/// The kernel family of the deploy path that computes like the dynamic model's active simd kernels
/// (the same family: deploy runs simd's).
inline tapir::simd::isa matching_isa() { return tapir::simd::active_isa(); }

struct Higgs {
    tapir::nn::Sequential<float> net;
    tapir::data::StandardScaler scaler;
    tapir::Tensor<float> x_train, x_test;  ///< raw features (n x 8)
    std::vector<double> y_test;
    std::vector<float> p_test;  ///< dynamic model on the standardised test events
    tapir::deploy::ModelSpec<float> spec;  ///< with the input standardisation inside
    std::size_t epochs = 0;
};

inline tapir::Tensor<float> features(const std::vector<tapir::hep::DiphotonEvent>& ev, std::size_t from, std::size_t n) {
    tapir::Tensor<float> x(tapir::Shape{n, 8});
    for (std::size_t i = 0; i < n; ++i) {
        const auto& e = ev[from + i];
        const double f[8] = {e.pt1, e.eta1, e.phi1, e.e1, e.pt2, e.eta2, e.phi2, e.e2};
        for (std::size_t j = 0; j < 8; ++j) x[i * 8 + j] = static_cast<float>(f[j]);
    }
    return x;
}

inline const Higgs& higgs() {
    static const Higgs h = [] {
        using namespace tapir;
        Higgs out;
        const std::size_t n_train = quick() ? 6000 : 20000, n_test = quick() ? 4000 : 10000;
        out.epochs = quick() ? 6 : 12;
        const auto ev = hep::generate_diphoton(n_train + n_test, 20240607);
        out.x_train = features(ev, 0, n_train);
        out.x_test = features(ev, n_train, n_test);
        Tensor<float> y_train(Shape{n_train, 1});
        for (std::size_t i = 0; i < n_train; ++i) y_train[i] = static_cast<float>(ev[i].label);
        for (std::size_t i = 0; i < n_test; ++i) out.y_test.push_back(ev[n_train + i].label);
        const Tensor<float> z_train = out.scaler.fit(out.x_train).transform(out.x_train);

        Rng rng(7);
        out.net.add<nn::Dense<float>>(8, 24, rng).add<nn::ReLU<float>>();
        out.net.add<nn::Dense<float>>(24, 16, rng).add<nn::ReLU<float>>();
        out.net.add<nn::Dense<float>>(16, 8, rng).add<nn::ReLU<float>>();
        out.net.add<nn::Dense<float>>(8, 1, rng).add<nn::Sigmoid<float>>();
        optim::Adam<float> opt(out.net.parameters(), 1e-3f);
        Tape<float> tape;
        const std::size_t bs = 64;
        Tensor<float> xb(Shape{bs, 8}), yb(Shape{bs, 1});
        for (std::size_t epoch = 0; epoch < out.epochs; ++epoch) {
            const std::vector<std::size_t> perm = rng.permutation(n_train);
            for (std::size_t b0 = 0; b0 + bs <= n_train; b0 += bs) {
                for (std::size_t i = 0; i < bs; ++i) {
                    for (std::size_t j = 0; j < 8; ++j) xb[i * 8 + j] = z_train[perm[b0 + i] * 8 + j];
                    yb[i] = y_train[perm[b0 + i]];
                }
                tape.clear();
                opt.zero_grad();
                const Var<float> p = out.net(tape.view(xb));
                backward(loss::binary_cross_entropy(p, tape.view(yb)));
                opt.step();
            }
        }
        out.p_test = dynamic_forward(out.net, out.scaler.transform(out.x_test));
        out.spec = deploy::spec_from(out.net);
        out.spec.set_input_scaling(out.scaler.mean(), out.scaler.scale());
        return out;
    }();
    return h;
}

inline double auc(const std::vector<float>& scores, const std::vector<double>& labels) {
    return tapir::metrics::roc_auc(scores, labels);
}

/// A Sequential MLP with the given sizes and one activation per dense layer (Dense + activation
/// layer, as Sequential fuses them), weights Glorot-uniform from a seed, biases uniform.
template <class T>
tapir::nn::Sequential<T> random_mlp(const std::vector<std::size_t>& sizes, const std::vector<tapir::Activation>& acts,
                                    std::uint64_t seed) {
    using namespace tapir;
    Rng rng(seed);
    nn::Sequential<T> net;
    for (std::size_t i = 0; i + 1 < sizes.size(); ++i) {
        auto& d = net.template emplace<nn::Dense<T>>(sizes[i], sizes[i + 1], rng);
        for (std::size_t j = 0; j < d.bias.value.size(); ++j) d.bias.value[j] = static_cast<T>(rng.uniform(-0.5, 0.5));
        switch (acts[i]) {
        case Activation::none: break;
        case Activation::relu: net.template add<nn::ReLU<T>>(); break;
        case Activation::leaky_relu: net.template add<nn::LeakyReLU<T>>(T(0.1)); break;
        case Activation::elu: net.template add<nn::ELU<T>>(T(0.7)); break;
        case Activation::tanh: net.template add<nn::Tanh<T>>(); break;
        case Activation::sigmoid: net.template add<nn::Sigmoid<T>>(); break;
        case Activation::softplus: net.template add<nn::Softplus<T>>(); break;
        }
    }
    return net;
}

template <class T>
tapir::Tensor<T> random_inputs(std::size_t n, std::size_t d, std::uint64_t seed, double scale = 2.0) {
    tapir::Rng rng(seed);
    tapir::Tensor<T> x(tapir::Shape{n, d});
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<T>(rng.uniform(-scale, scale));
    return x;
}

// ---- host compilers -------------------------------------------------------------------------

/// Whether tests may run host compilers: not when emulated / cross-compiled (qemu), not when the
/// host compiler targets another architecture than this binary.
inline bool host_tools_usable() {
#if defined(TAPIR_TEST_EMULATED)
    return false;
#else
    return true;
#endif
}

inline int run(const std::string& cmd) {
    const int rc = std::system((cmd + " > /dev/null 2>&1").c_str());
    return rc;
}
inline bool have_program(const std::string& name) { return run("command -v " + name) == 0; }

/// The host compiler's target triple starts with this binary's architecture.
inline bool compiler_matches_arch(const std::string& cxx) {
#if defined(__x86_64__)
    const char* arch = "x86_64";
#elif defined(__aarch64__)
    const char* arch = "aarch64";
#else
    const char* arch = "";
#endif
    return *arch && run(cxx + " -dumpmachine | grep -q '^" + std::string(arch) + "'") == 0;
}

/// Compiles and optionally links; on failure returns the compiler's output.
inline bool compile(const std::string& cmd, std::string& log, const std::filesystem::path& dir) {
    const std::filesystem::path out = dir / "compile.log";
    const int rc = std::system((cmd + " > '" + out.string() + "' 2>&1").c_str());
    std::ifstream f(out);
    log.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
    return rc == 0;
}

/// A fresh scratch directory under the system temp dir.
inline std::filesystem::path scratch_dir(const std::string& name) {
    const std::filesystem::path d = std::filesystem::temp_directory_path() /
                                    ("tapir_deploy_" + name + "_" + std::to_string(static_cast<long long>(::getpid())));
    std::filesystem::remove_all(d);
    std::filesystem::create_directories(d);
    return d;
}

template <class T>
void write_binary(const std::filesystem::path& p, const std::vector<T>& v) {
    std::ofstream f(p, std::ios::binary);
    f.write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(v.size() * sizeof(T)));
}
template <class T>
std::vector<T> read_binary(const std::filesystem::path& p, std::size_t n) {
    std::vector<T> v(n);
    std::ifstream f(p, std::ios::binary);
    f.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(n * sizeof(T)));
    if (!f) v.clear();
    return v;
}

/// Where the repository's sources are (the test is compiled with TAPIR_SOURCE_DIR).
inline std::string source_dir() {
#ifdef TAPIR_SOURCE_DIR
    return TAPIR_SOURCE_DIR;
#else
    return ".";
#endif
}

} // namespace deploy_test
