// Code generation (deploy/codegen.hpp): the generated header's text is stable (golden file), it
// computes what tapir computes (bitwise with fused multiply-adds), and, with host compilers when
// they are usable (not under emulation), it compiles alone with -fno-exceptions -fno-rtti and
// strict warnings under GCC and Clang, for aarch64 with the cross compiler (run under qemu when
// present), and reproduces the dynamic model's outputs; the fixed-size and quantised headers
// build without exceptions and RTTI too.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include <tapir/deploy/codegen.hpp>
#include <tapir/deploy/codegen_model.hpp>
#include <tapir/deploy/convert.hpp>
#include <tapir/deploy/fixed.hpp>
#include <tapir/simd/activation.hpp>

#include "deploy/deploy_fixture.hpp"

// The generated code in this translation unit always fuses (std::fma is exact everywhere), so it
// must agree bitwise with the fused reference order.
#define TAPIR_GEN_FMA 1
#include "deploy/golden_mlp.hpp"

using namespace tapir;
using deploy_test::count_different;
using deploy_test::max_rel_diff;

namespace {

/// A model exercising every activation, from uniform random numbers only (portable bits), with
/// input standardisation: the source of tests/deploy/golden_mlp.hpp.
deploy::ModelSpec<float> golden_spec() {
    using A = Activation;
    const std::vector<std::size_t> sizes = {6, 10, 9, 8, 7, 5, 3, 2};
    const std::vector<A> acts = {A::tanh, A::elu, A::leaky_relu, A::softplus, A::relu, A::sigmoid, A::none};
    Rng rng(2024);
    deploy::ModelSpec<float> spec;
    for (std::size_t i = 0; i + 1 < sizes.size(); ++i) {
        const double limit = std::sqrt(6.0 / static_cast<double>(sizes[i] + sizes[i + 1]));
        std::vector<float> w(sizes[i] * sizes[i + 1]), b(sizes[i + 1]);
        for (float& v : w) v = static_cast<float>(rng.uniform(-limit, limit));
        for (float& v : b) v = static_cast<float>(rng.uniform(-0.3, 0.3));
        const float alpha = acts[i] == A::elu ? 0.7f : (acts[i] == A::leaky_relu ? 0.1f : 0.0f);
        spec.add(sizes[i], sizes[i + 1], std::move(w), std::move(b), acts[i], alpha);
    }
    std::vector<double> mean(6), scale(6);
    for (std::size_t i = 0; i < 6; ++i) {
        mean[i] = rng.uniform(-1.0, 1.0);
        scale[i] = rng.uniform(0.5, 2.0);
    }
    spec.set_input_scaling(mean, scale);
    return spec;
}

deploy::CodegenOptions golden_options() {
    deploy::CodegenOptions o;
    o.name_space = "golden_mlp";
    o.comment = "Golden file of tests/deploy/test_codegen.cpp (TAPIR_UPDATE_GOLDEN=1 rewrites it).";
    return o;
}

std::string read_text(const std::filesystem::path& p) {
    std::ifstream f(p, std::ios::binary);
    std::ostringstream s;
    s << f.rdbuf();
    return s.str();
}

const char* const strict_flags = " -O2 -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Werror -fno-exceptions -fno-rtti";

/// A driver that runs one of the generated headers on a binary file of inputs.
const char* const driver_source = R"(#include <cstdio>
#include <cstdlib>
#include <vector>
#include "golden_mlp.hpp"
#include "higgs_classifier.hpp"

int main(int argc, char** argv) {
    if (argc != 5) return 2;
    const bool higgs_model = argv[1][0] == 'h';
    const long n = std::atol(argv[4]);
    const int nin = higgs_model ? higgs::n_inputs : golden_mlp::n_inputs;
    const int nout = higgs_model ? higgs::n_outputs : golden_mlp::n_outputs;
    std::vector<float> x(static_cast<std::size_t>(n * nin)), y(static_cast<std::size_t>(n * nout));
    std::FILE* f = std::fopen(argv[2], "rb");
    if (!f || std::fread(x.data(), sizeof(float), x.size(), f) != x.size()) return 3;
    std::fclose(f);
    if (higgs_model) higgs::predict_batch(x.data(), y.data(), n);
    else golden_mlp::predict_batch(x.data(), y.data(), n);
    f = std::fopen(argv[3], "wb");
    if (!f || std::fwrite(y.data(), sizeof(float), y.size(), f) != y.size()) return 4;
    std::fclose(f);
    return 0;
}
)";

} // namespace

TEST_CASE("the generated header's text is stable (golden file)") {
    const std::string text = deploy::generate_header(golden_spec(), golden_options());
    const std::filesystem::path golden = std::filesystem::path(deploy_test::source_dir()) / "tests" / "deploy" / "golden_mlp.hpp";
    if (std::getenv("TAPIR_UPDATE_GOLDEN")) {
        deploy::write_header(golden.string(), golden_spec(), golden_options());
        MESSAGE("rewrote " << golden.string());
    }
    const std::string stored = read_text(golden);
    if (stored.empty()) {
        MESSAGE("golden file not found at " << golden.string() << " (source tree not available): skipped");
        return;
    }
    CHECK_MESSAGE(text == stored, "the generator's output changed; if intended, rerun with TAPIR_UPDATE_GOLDEN=1");
    CHECK(text.find("#include <tapir") == std::string::npos);
    CHECK(text.find("#include <cmath>") != std::string::npos);
    CHECK(text.find("constexpr float w0[6][10]") != std::string::npos);
}

TEST_CASE("the golden header computes the reference order bitwise, and the fixed-size model does too") {
    const deploy::ModelSpec<float> spec = golden_spec();
    const std::size_t n = 41;
    const Tensor<float> x = deploy_test::random_inputs<float>(n, 6, 5, 3.0);
    std::vector<float> gen(n * 2), ref(n * 2), fixed(n * 2);
    golden_mlp::predict_batch(x.data(), gen.data(), static_cast<long>(n));
    spec.forward(x.data(), ref.data(), n);
    CHECK(count_different(gen, ref) == 0);
    const auto m = deploy::to_fixed<deploy::Mlp<float, 6, 10, 9, 8, 7, 5, 3, 2>>(spec);
    m->forward(x.data(), fixed.data(), n);
    if (m->isa() != simd::isa::scalar) CHECK(count_different(fixed, gen) == 0);
    MESSAGE("golden header vs fixed-size model [" << std::string(simd::isa_name(m->isa())) << "]: max relative difference "
                                                  << max_rel_diff(fixed, gen));
    CHECK(max_rel_diff(fixed, gen) <= 1e-6);
    CHECK(golden_mlp::n_inputs == 6);
    CHECK(golden_mlp::n_outputs == 2);
}

TEST_CASE("the generated tanh, sigmoid and model are the library's, bitwise, on every fused instruction set") {
    // golden_mlp.hpp is compiled here with TAPIR_GEN_FMA=1: it must reproduce simd/activation.hpp
    // (through simd::activate_on) and the fixed-size model on each kernel family that fuses.
    std::vector<float> x;
    for (int i = -4400; i <= 4400; ++i) x.push_back(static_cast<float>(i) * 0.00625f);  // [-27.5, 27.5]
    const float inf = std::numeric_limits<float>::infinity();
    for (const float v : {0.0f, -0.0f, 1e-30f, -1e-30f, std::numeric_limits<float>::denorm_min(), 8.99f, 9.01f, 10.0f,
                          -10.0f, 88.7f, -88.7f, 103.9f, -103.9f, 1e30f, -1e30f, inf, -inf, std::nanf("")})
        x.push_back(v);
    const std::size_t n = x.size();
    const auto bits_equal = [](float a, float b) {
        std::uint32_t ua = 0, ub = 0;
        std::memcpy(&ua, &a, sizeof ua);
        std::memcpy(&ub, &b, sizeof ub);
        return ua == ub;
    };
    std::vector<float> gen_t(n), gen_s(n);
    for (std::size_t i = 0; i < n; ++i) {
        gen_t[i] = golden_mlp::detail::tanh_poly(x[i]);
        gen_s[i] = golden_mlp::detail::sigmoid_poly(x[i]);
    }
    const deploy::ModelSpec<float> spec = golden_spec();
    const std::size_t rows = 57;
    const Tensor<float> xm = deploy_test::random_inputs<float>(rows, 6, 17, 3.0);
    std::vector<float> gen_m(rows * 2), fixed_m(rows * 2);
    golden_mlp::predict_batch(xm.data(), gen_m.data(), static_cast<long>(rows));
    const auto m = deploy::to_fixed<deploy::Mlp<float, 6, 10, 9, 8, 7, 5, 3, 2>>(spec);
    std::size_t checked = 0;
    for (const simd::isa isa : {simd::isa::scalar, simd::isa::avx2, simd::isa::avx512, simd::isa::neon}) {
        if (!simd::isa_supported(isa)) continue;
        CAPTURE(std::string(simd::isa_name(isa)));
        if (isa == simd::isa::scalar && !TAPIR_SIMD_SCALAR_FUSED) {
            MESSAGE("scalar kernels of this build do not fuse: compared by the no-FMA compile below");
            continue;
        }
        std::vector<float> lib_t(n), lib_s(n);
        simd::activate_on(isa, Activation::tanh, x.data(), lib_t.data(), n, 0.0f);
        simd::activate_on(isa, Activation::sigmoid, x.data(), lib_s.data(), n, 0.0f);
        std::size_t diff_t = 0, diff_s = 0;
        for (std::size_t i = 0; i < n; ++i) {
            diff_t += !bits_equal(lib_t[i], gen_t[i]);
            diff_s += !bits_equal(lib_s[i], gen_s[i]);
        }
        CHECK(diff_t == 0);
        CHECK(diff_s == 0);
        REQUIRE(m->set_isa(isa) == deploy::Status::ok);
        m->forward(xm.data(), fixed_m.data(), rows);
        CHECK(count_different(fixed_m, gen_m) == 0);
        ++checked;
    }
    CHECK(checked >= 1);
}

TEST_CASE("generate_header rejects bad options and reports write errors") {
    const deploy::ModelSpec<float> spec = golden_spec();
    deploy::CodegenOptions o;
    o.name_space = "1bad";
    CHECK_THROWS_WITH_AS(deploy::generate_header(spec, o), doctest::Contains("'1bad'"), value_error);
    o.name_space = "a::b-c";
    CHECK_THROWS_AS(deploy::generate_header(spec, o), value_error);
    o.name_space = "outer::inner";
    o.function = "run model";
    CHECK_THROWS_AS(deploy::generate_header(spec, o), value_error);
    o.function = "classify";
    const std::string text = deploy::generate_header(spec, o);
    CHECK(text.find("namespace outer {\nnamespace inner {") != std::string::npos);
    CHECK(text.find("inline void classify(const float* x, float* y) noexcept") != std::string::npos);
    CHECK(text.find("#ifndef TAPIR_GENERATED_OUTER_INNER_HPP") != std::string::npos);
    CHECK_THROWS_AS(deploy::write_header("/nonexistent-dir/x.hpp", spec, o), format_error);
    deploy::ModelSpec<float> empty;
    CHECK_THROWS_AS(deploy::generate_header(empty), value_error);
}

TEST_CASE("generated headers compile alone (GCC, Clang, aarch64) and reproduce the dynamic model") {
    if (!deploy_test::host_tools_usable()) {
        MESSAGE("emulated build: host compilers are not used, skipped");
        return;
    }
    const deploy_test::Higgs& h = deploy_test::higgs();
    const std::filesystem::path dir = deploy_test::scratch_dir("codegen");
    deploy::CodegenOptions ho;
    ho.name_space = "higgs";
    deploy::write_header((dir / "higgs_classifier.hpp").string(), h.spec, ho);
    deploy::write_header((dir / "golden_mlp.hpp").string(), golden_spec(), golden_options());
    std::ofstream(dir / "driver.cpp") << driver_source;

    const std::size_t n_h = h.y_test.size(), n_g = 101;
    deploy_test::write_binary(dir / "x_higgs.bin", std::vector<float>(h.x_test.data(), h.x_test.data() + n_h * 8));
    const Tensor<float> xg = deploy_test::random_inputs<float>(n_g, 6, 9, 3.0);
    deploy_test::write_binary(dir / "x_golden.bin", std::vector<float>(xg.data(), xg.data() + n_g * 6));
    // References: fused (the reference order) and unfused (the scalar kernels), for both models.
    std::vector<float> ref_g(n_g * 2), ref_g_unfused(n_g * 2);
    golden_spec().forward(xg.data(), ref_g.data(), n_g);
    const auto golden_fixed = deploy::to_fixed<deploy::Mlp<float, 6, 10, 9, 8, 7, 5, 3, 2>>(golden_spec());
    REQUIRE(golden_fixed->set_isa(simd::isa::scalar) == deploy::Status::ok);
    golden_fixed->forward(xg.data(), ref_g_unfused.data(), n_g);
    nn::Sequential<float> net = h.net;
    const std::vector<float> p_scalar = deploy_test::dynamic_forward_on(simd::isa::scalar, net, h.scaler.transform(h.x_test));
    const bool dynamic_fused = deploy_test::matching_isa() != simd::isa::scalar;

    struct Variant {
        std::string cxx, flags, runner, name;
        bool fused, same_libm;
    };
    std::vector<Variant> variants;
    const bool x86 =
#if defined(__x86_64__)
        true;
#else
        false;
#endif
    for (const std::string cxx : {"g++", "clang++"}) {
        if (!deploy_test::have_program(cxx) || !deploy_test::compiler_matches_arch(cxx)) {
            MESSAGE(cxx << " not available for this architecture: skipped");
            continue;
        }
        if (x86 && simd::isa_supported(simd::isa::avx2))
            variants.push_back({cxx, "-std=c++11 -mfma -DTAPIR_GEN_FMA=1", "", cxx + " -mfma", true, true});
        if (cxx == "g++" || !x86) variants.push_back({cxx, "-std=c++11", "", cxx + (x86 ? " (no FMA)" : ""), !x86, true});
        if (deploy_test::quick()) break;
    }
    if (x86 && deploy_test::have_program("aarch64-linux-gnu-g++")) {
        const bool qemu = deploy_test::have_program("qemu-aarch64") && std::filesystem::exists("/usr/aarch64-linux-gnu");
        variants.push_back({"aarch64-linux-gnu-g++", "-std=c++11", qemu ? "qemu-aarch64 -L /usr/aarch64-linux-gnu " : "",
                            "aarch64-linux-gnu-g++", true, false});
    } else {
        MESSAGE("aarch64-linux-gnu-g++ not available: aarch64 compile skipped");
    }

    for (std::size_t k = 0; k < variants.size(); ++k) {
        const Variant& v = variants[k];
        CAPTURE(v.name);
        const std::string exe = (dir / ("driver_" + std::to_string(k))).string();
        std::string log;
        const bool cross = !v.same_libm;
        const bool ok = deploy_test::compile(v.cxx + " " + v.flags + strict_flags + " -I'" + dir.string() + "' '" +
                                                 (dir / "driver.cpp").string() + "' -o '" + exe + "'",
                                             log, dir);
        CHECK_MESSAGE(ok, log);
        if (!ok || (cross && v.runner.empty())) continue;
        const std::string yh = (dir / ("y_higgs_" + std::to_string(k))).string(), yg = (dir / ("y_golden_" + std::to_string(k))).string();
        REQUIRE(deploy_test::run(v.runner + "'" + exe + "' h '" + (dir / "x_higgs.bin").string() + "' '" + yh + "' " + std::to_string(n_h)) == 0);
        REQUIRE(deploy_test::run(v.runner + "'" + exe + "' g '" + (dir / "x_golden.bin").string() + "' '" + yg + "' " + std::to_string(n_g)) == 0);
        const std::vector<float> out_h = deploy_test::read_binary<float>(yh, n_h), out_g = deploy_test::read_binary<float>(yg, n_g * 2);
        REQUIRE(out_h.size() == n_h);
        REQUIRE(out_g.size() == n_g * 2);
        const std::vector<float>& want_h = v.fused ? h.p_test : p_scalar;
        const std::vector<float>& want_g = v.fused ? ref_g : ref_g_unfused;
        const double rel_h = max_rel_diff(out_h, h.p_test), rel_g = max_rel_diff(out_g, ref_g);
        MESSAGE("generated header [" << v.name << "]: Higgs classifier: " << count_different(out_h, want_h) << " of " << n_h
                                     << " outputs differ from the dynamic model on " << std::string(v.fused ? "fused" : "scalar")
                                     << " kernels, max relative difference to its default kernels " << rel_h
                                     << "; all-activation model: " << count_different(out_g, want_g) << " of " << out_g.size()
                                     << " differ from the " << std::string(v.fused ? "fused" : "unfused") << " reference");
        // Within 1e-6 when the header fuses multiply-adds as the dynamic kernels do; 2e-6 otherwise.
        const double tol = v.fused == dynamic_fused ? 1e-6 : 2e-6;
        CHECK(rel_h <= tol);
        CHECK(rel_g <= (v.fused ? 1e-6 : 2e-6));
        if (!v.fused || dynamic_fused) CHECK(count_different(out_h, want_h) == 0);  // relu + sigmoid: no libm
        if (v.same_libm) CHECK(count_different(out_g, want_g) == 0);
    }

    // The fixed-size and quantised headers without exceptions and RTTI.
    const std::string inc = " -I'" + deploy_test::source_dir() + "/include' '" + deploy_test::source_dir() + "/tests/deploy/noexcept_main.cpp'";
    if (!std::filesystem::exists(deploy_test::source_dir() + "/tests/deploy/noexcept_main.cpp")) {
        MESSAGE("source tree not available: -fno-exceptions build skipped");
    } else {
        for (const std::string cxx : {"g++", "clang++", "aarch64-linux-gnu-g++"}) {
            const bool cross = cxx == "aarch64-linux-gnu-g++";
            if (!deploy_test::have_program(cxx) || (!cross && !deploy_test::compiler_matches_arch(cxx)) || (cross && !x86)) continue;
            CAPTURE(cxx);
            const std::string exe = (dir / ("noexcept_" + std::to_string(cxx.size()))).string();
            std::string log;
            const bool ok = deploy_test::compile(cxx + " -std=c++17" + strict_flags + inc + (cross ? " -c" : "") + " -o '" + exe + "'", log, dir);
            CHECK_MESSAGE(ok, log);
            if (ok && !cross) CHECK(deploy_test::run("'" + exe + "'") == 0);
            if (deploy_test::quick()) break;
        }
    }
    std::filesystem::remove_all(dir);
}

// Layer-list models (deploy/codegen_model.hpp): convolution, pooling, flatten, activations and
// recurrent cells in a generated header, against the ModelT they were generated from.
namespace {

using Cnn1d = deploy::ModelT<float, deploy::Conv1dT<float, 3, 16, 4, 3, 1, 1>, deploy::MaxPool1dT<float, 4, 16, 2>,
                             deploy::FlattenT<float, 32>, deploy::DenseT<float, 32, 8>, deploy::DenseT<float, 8, 1>>;
using Cnn2d = deploy::ModelT<float, deploy::Conv2dT<float, 2, 8, 8, 4, 3, 3, 1, 1, 1, 1>, deploy::AvgPool2dT<float, 4, 8, 8, 2, 2>,
                             deploy::Conv2dT<float, 4, 4, 4, 3, 3, 3, 2, 2, 1, 1>, deploy::FlattenT<float, 12>,
                             deploy::ActivationT<float, 12, Activation::sigmoid>, deploy::DenseT<float, 12, 2>>;
// 64 x 3 x 3 = 576 taps per output: longer than any K block, so the chains restart.
using CnnLongK = deploy::ModelT<float, deploy::Conv2dT<float, 64, 3, 3, 2, 3, 3, 1, 1, 1, 1>, deploy::FlattenT<float, 18>,
                                deploy::DenseT<float, 18, 1>>;
using GruNet = deploy::ModelT<float, deploy::GruT<float, 4, 8, 6>, deploy::DenseT<float, 8, 1>>;
using LstmNet = deploy::ModelT<float, deploy::LstmT<float, 4, 6, 5>, deploy::DenseT<float, 6, 2>>;

void fill(float* v, std::size_t n, Rng& rng, double limit) {
    for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<float>(rng.uniform(-limit, limit));
}

template <class T, std::size_t In, std::size_t Out>
void fill_dense(deploy::Dense<T, In, Out>& d, Rng& rng, Activation act, bool bias = true) {
    std::vector<T> w(In * Out), b(Out);
    fill(w.data(), w.size(), rng, std::sqrt(6.0 / static_cast<double>(In + Out)));
    fill(b.data(), b.size(), rng, 0.3);
    deploy::LayerView<T> v;
    v.weight = w.data();
    v.bias = bias ? b.data() : nullptr;
    v.in = In;
    v.out = Out;
    v.act = act;
    v.alpha = act == Activation::elu ? T(0.7) : T(0.1);
    REQUIRE(d.set(v) == deploy::Status::ok);
}

template <class L>
void fill_conv(L& c, Rng& rng, Activation act) {
    fill(&c.weight[0][0], L::out_channels * L::K, rng, std::sqrt(3.0 / static_cast<double>(L::K)));
    fill(c.bias, L::out_channels, rng, 0.3);
    c.act = act;
    c.alpha = 0.7f;
}

template <class L>
void fill_recurrent(L& r, Rng& rng) {
    fill_dense(r.input, rng, Activation::none, false);
    fill_dense(r.hidden, rng, Activation::none);
    fill(r.bias_ih, L::GH, rng, 0.3);
}

struct LayerModels {
    Cnn1d cnn1;
    Cnn2d cnn2;
    CnnLongK cnnk;
    GruNet gru;
    LstmNet lstm;
    LayerModels() {
        Rng rng(77);
        fill_conv(cnn1.layer<0>(), rng, Activation::relu);
        fill_dense(cnn1.layer<3>().dense, rng, Activation::tanh);
        fill_dense(cnn1.layer<4>().dense, rng, Activation::sigmoid);
        fill_conv(cnn2.layer<0>(), rng, Activation::elu);
        fill_conv(cnn2.layer<2>(), rng, Activation::leaky_relu);
        fill_dense(cnn2.layer<5>().dense, rng, Activation::none);
        fill_conv(cnnk.layer<0>(), rng, Activation::tanh);
        fill_dense(cnnk.layer<2>().dense, rng, Activation::none);
        fill_recurrent(gru.layer<0>(), rng);
        fill_dense(gru.layer<1>().dense, rng, Activation::sigmoid);
        fill_recurrent(lstm.layer<0>(), rng);
        fill_dense(lstm.layer<1>().dense, rng, Activation::softplus);
    }
};

deploy::CodegenOptions named(const char* ns) {
    deploy::CodegenOptions o;
    o.name_space = ns;
    return o;
}

/// Runs the four generated headers: argv model letter, input file, output file, n; for the
/// recurrent ones the outputs of predict_step + predict_head follow those of predict_batch.
const char* const layers_driver_source = R"(#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <vector>
#include "cnn1.hpp"
#include "cnn2.hpp"
#include "cnnk.hpp"
#include "gru.hpp"
#include "lstm.hpp"

int main(int argc, char** argv) {
    if (argc != 5) return 2;
    const char m = argv[1][0];
    const long n = std::atol(argv[4]);
    const int nin = m == '1' ? cnn1::n_inputs : m == '2' ? cnn2::n_inputs : m == 'k' ? cnnk::n_inputs : m == 'g' ? gru::n_inputs : lstm::n_inputs;
    const int nout = m == '1' ? cnn1::n_outputs : m == '2' ? cnn2::n_outputs : m == 'k' ? cnnk::n_outputs : m == 'g' ? gru::n_outputs : lstm::n_outputs;
    const bool rec = m == 'g' || m == 'l';
    std::vector<float> x(static_cast<std::size_t>(n * nin)), y(static_cast<std::size_t>((rec ? 2 : 1) * n * nout));
    std::FILE* f = std::fopen(argv[2], "rb");
    if (!f || std::fread(x.data(), sizeof(float), x.size(), f) != x.size()) return 3;
    std::fclose(f);
    if (m == '1') cnn1::predict_batch(x.data(), y.data(), n);
    if (m == '2') cnn2::predict_batch(x.data(), y.data(), n);
    if (m == 'k') cnnk::predict_batch(x.data(), y.data(), n);
    if (m == 'g') gru::predict_batch(x.data(), y.data(), n);
    if (m == 'l') lstm::predict_batch(x.data(), y.data(), n);
    for (long i = 0; rec && i < n; ++i) {
        float state[gru::n_state > lstm::n_state ? gru::n_state : lstm::n_state] = {};
        const int ns = m == 'g' ? gru::n_step_inputs : lstm::n_step_inputs;
        for (int t = 0; t < nin / ns; ++t) {
            if (m == 'g') gru::predict_step(&x[static_cast<std::size_t>(i * nin + t * ns)], state);
            else lstm::predict_step(&x[static_cast<std::size_t>(i * nin + t * ns)], state);
        }
        float* out = &y[static_cast<std::size_t>((n + i) * nout)];
        if (m == 'g') gru::predict_head(state, out);
        else lstm::predict_head(state, out);
    }
    std::ofstream out(argv[3], std::ios::binary);
    out.write(reinterpret_cast<const char*>(y.data()), static_cast<std::streamsize>(y.size() * sizeof(float)));
    return out ? 0 : 4;
}
)";

/// A host compiler and flags for a generated header built with -mfma -DTAPIR_GEN_FMA=1.
struct Variant {
    std::string cxx, flags;
    bool gates_bitwise;  ///< plain multiply-adds (gates, set pooling) contracted as this build's library contracts them
};

/// g++ and clang++ when usable: the plain arithmetic outside the fused kernels (recurrent gates,
/// set pooling) is compiled by its flags on both sides; this build's library contracts none of it
/// when compiled without FMA, so the header built with -ffp-contract=off is then bitwise too.
std::vector<Variant> fused_variants() {
#if defined(__FMA__)
    const bool library_contracts = true;
#else
    const bool library_contracts = false;
#endif
    std::vector<Variant> variants;
    for (const std::string cxx : {"g++", "clang++"}) {
        if (!deploy_test::have_program(cxx) || !deploy_test::compiler_matches_arch(cxx)) continue;
        if (!library_contracts) variants.push_back({cxx, " -ffp-contract=off", true});
        variants.push_back({cxx, "", false});
        if (deploy_test::quick()) break;
    }
    return variants;
}

/// Whether generated headers are compiled and compared fused on this host (host compilers usable,
/// x86-64 with FMA); says why not.
bool fused_host() {
    if (!deploy_test::host_tools_usable()) {
        MESSAGE("emulated build: host compilers are not used, skipped");
        return false;
    }
#if !defined(__x86_64__)
    MESSAGE("the fused comparison below runs on x86-64 hosts: skipped");
    return false;
#else
    if (!simd::isa_supported(simd::isa::avx2)) {
        MESSAGE("no FMA on this host: skipped");
        return false;
    }
    return true;
#endif
}

/// dir/driver.cpp and the headers beside it built with -mfma -DTAPIR_GEN_FMA=1 and the strict flags into exe.
bool compile_fused(const Variant& v, const std::filesystem::path& dir, const std::string& exe) {
    std::string log;
    const bool ok = deploy_test::compile(v.cxx + " -std=c++11 -mfma -DTAPIR_GEN_FMA=1" + v.flags + strict_flags + " -I'" + dir.string() + "' '" +
                                             (dir / "driver.cpp").string() + "' -o '" + exe + "'",
                                         log, dir);
    CHECK_MESSAGE(ok, log);
    return ok;
}

} // namespace

TEST_CASE("generate_header for a ModelT: the text is standalone and names every layer") {
    static LayerModels m;
    const std::string c1 = deploy::generate_header(m.cnn1, named("cnn1"));
    CHECK(c1.find("#include <tapir") == std::string::npos);
    CHECK(c1.find("#include <cmath>") != std::string::npos);
    CHECK(c1.find("constexpr float w0[4][9]") != std::string::npos);  // Cout x (Cin kernel)
    CHECK(c1.find("conv2d<3, 1, 16, 4, 1, 3, 1, 1, 0, 1, 9>") != std::string::npos);
    CHECK(c1.find("pool2d<4, 1, 16, 1, 2, 1, 2, true>") != std::string::npos);
    CHECK(c1.find("predict_step") == std::string::npos);
    CHECK(c1.find("new ") == std::string::npos);
    const std::string g = deploy::generate_header(m.gru, named("gru"));
    CHECK(g.find("constexpr int n_state = 8;") != std::string::npos);
    CHECK(g.find("inline void predict_step(const float* x, float* state) noexcept") != std::string::npos);
    CHECK(g.find("inline void predict_head(const float* state, float* y) noexcept") != std::string::npos);
    CHECK(deploy::generate_header(m.lstm, named("lstm")).find("constexpr int n_state = 12;") != std::string::npos);
    CHECK_THROWS_WITH_AS(deploy::generate_header(m.cnn2, named("2d")), doctest::Contains("'2d'"), value_error);
    deploy::CodegenOptions o = named("cnn2");
    o.sum_block = 0;
    CHECK_THROWS_WITH_AS(deploy::generate_header(m.cnn2, o), doctest::Contains("sum_block"), value_error);
    CHECK_THROWS_AS(deploy::write_header("/nonexistent-dir/x.hpp", m.cnn2, named("cnn2")), format_error);
}

TEST_CASE("generated headers of convolutional and recurrent ModelTs compile alone and reproduce the ModelT") {
    if (!fused_host()) return;
    static LayerModels m;
    const std::filesystem::path dir = deploy_test::scratch_dir("codegen_layers");
    deploy::write_header((dir / "cnn1.hpp").string(), m.cnn1, named("cnn1"));
    deploy::write_header((dir / "cnn2.hpp").string(), m.cnn2, named("cnn2"));
    // The chains restart where this build's convolution kernel restarts them (CodegenOptions::sum_block).
    deploy::CodegenOptions ko = named("cnnk");
    ko.sum_block = simd::gemm_kc(m.cnnk.isa(), sizeof(float));
    CHECK(deploy::generate_header(m.cnnk, ko).find("conv2d<64, 3, 3, 2, 3, 3, 1, 1, 1, 1, " + std::to_string(simd::gemm_k_block(576, ko.sum_block)) +
                                                   ">") != std::string::npos);
    deploy::write_header((dir / "cnnk.hpp").string(), m.cnnk, ko);
    deploy::write_header((dir / "gru.hpp").string(), m.gru, named("gru"));
    deploy::write_header((dir / "lstm.hpp").string(), m.lstm, named("lstm"));
    std::ofstream(dir / "driver.cpp") << layers_driver_source;

    struct Case {
        char letter;
        std::size_t nin, nout;
        bool recurrent;
        std::vector<float> x, want;
    };
    const std::size_t n = 53;
    std::vector<Case> cases = {{'1', Cnn1d::inputs, Cnn1d::outputs, false, {}, {}},
                               {'2', Cnn2d::inputs, Cnn2d::outputs, false, {}, {}},
                               {'k', CnnLongK::inputs, CnnLongK::outputs, false, {}, {}},
                               {'g', GruNet::inputs, GruNet::outputs, true, {}, {}},
                               {'l', LstmNet::inputs, LstmNet::outputs, true, {}, {}}};
    for (Case& c : cases) {
        const Tensor<float> x = deploy_test::random_inputs<float>(n, c.nin, 31 + static_cast<std::uint64_t>(c.letter), 2.0);
        c.x.assign(x.data(), x.data() + n * c.nin);
        c.want.resize(n * c.nout);
        if (c.letter == '1') m.cnn1.forward(c.x.data(), c.want.data(), n);
        if (c.letter == '2') m.cnn2.forward(c.x.data(), c.want.data(), n);
        if (c.letter == 'k') m.cnnk.forward(c.x.data(), c.want.data(), n);
        if (c.letter == 'g') m.gru.forward(c.x.data(), c.want.data(), n);
        if (c.letter == 'l') m.lstm.forward(c.x.data(), c.want.data(), n);
        deploy_test::write_binary(dir / (std::string("x_") + c.letter + ".bin"), c.x);
    }
    const bool fused = m.cnn1.isa() != simd::isa::scalar;
    const std::vector<Variant> variants = fused_variants();
    std::size_t compiled = 0, tried = 0;
    for (std::size_t k = 0; k < variants.size(); ++k) {
        const Variant& v = variants[k];
        const std::string name = v.cxx + " -mfma" + v.flags;
        CAPTURE(name);
        ++tried;
        const std::string exe = (dir / ("driver_" + std::to_string(k))).string();
        if (!compile_fused(v, dir, exe)) continue;
        ++compiled;
        for (const Case& c : cases) {
            CAPTURE(std::string(1, c.letter));
            const std::string yp = (dir / (std::string("y_") + c.letter + "_" + std::to_string(k))).string();
            REQUIRE(deploy_test::run("'" + exe + "' " + c.letter + " '" + (dir / (std::string("x_") + c.letter + ".bin")).string() + "' '" + yp +
                                     "' " + std::to_string(n)) == 0);
            const std::vector<float> all = deploy_test::read_binary<float>(yp, (c.recurrent ? 2 : 1) * n * c.nout);
            REQUIRE(all.size() == (c.recurrent ? 2 : 1) * n * c.nout);
            const std::vector<float> out(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(n * c.nout));
            MESSAGE("generated header [" << name << "] model " << std::string(1, c.letter) << ": " << count_different(out, c.want) << " of " << out.size()
                                         << " outputs differ from the ModelT, max relative difference " << max_rel_diff(out, c.want));
            CHECK(max_rel_diff(out, c.want) <= 1e-6);
            // Convolution, pooling, dense and activations: the same fused chains, bit for bit.
            if (fused && (!c.recurrent || v.gates_bitwise)) CHECK(count_different(out, c.want) == 0);
            if (c.recurrent) {
                // Streaming, step by step and then the head, is the whole-sequence function.
                const std::vector<float> streamed(all.begin() + static_cast<std::ptrdiff_t>(n * c.nout), all.end());
                CHECK(count_different(streamed, out) == 0);
            }
        }
    }
    CHECK(compiled == tried);
    std::filesystem::remove_all(dir);
}

// The newer layers in generated headers: dilated and grouped convolutions, padded pools, masked
// (variable-length) recurrent sequences, and the set models (EFN, PFN).
namespace {

// 9 x 9 under a 5 x 5 dilated window padded by 2: 9 x 9; padded max pool 3 / 2: 5 x 5; grouped
// dilated: 5 x 5; padded average pool 2 / 2: 3 x 3.
using DilGroup2d = deploy::ModelT<float, deploy::Conv2dT<float, 2, 9, 9, 4, 3, 3, 1, 1, 2, 2, 2, 2, 2, 2>,
                                  deploy::MaxPool2dT<float, 4, 9, 9, 3, 3, 2, 2, 1, 1>,
                                  deploy::GroupedConv2dT<float, 2, 4, 5, 5, 6, 3, 3, 1, 1, 2, 2, 2, 2, 2, 2>,
                                  deploy::AvgPool2dT<float, 6, 5, 5, 2, 2, 2, 2, 1, 1>, deploy::FlattenT<float, 54>, deploy::DenseT<float, 54, 2>>;
using DilGroup1d = deploy::ModelT<float, deploy::GroupedConv1dT<float, 3, 3, 16, 6, 3, 1, 2, 2, 2>, deploy::MaxPool1dT<float, 6, 16, 3, 2, 1>,
                                  deploy::FlattenT<float, 48>, deploy::DenseT<float, 48, 1>>;
using MaskedGru = deploy::ModelT<float, deploy::GruT<float, 4, 8, 6>, deploy::DenseT<float, 8, 1>>;
using MaskedLstmSeq = deploy::ModelT<float, deploy::LstmT<float, 4, 6, 5, true>, deploy::FlattenT<float, 30>, deploy::DenseT<float, 30, 2>>;
using Efn = deploy::EnergyFlowT<float, 10, deploy::Mlp<float, 2, 8, 6>, deploy::Mlp<float, 6, 5, 1>>;
using Pfn = deploy::DeepSetT<float, 10, deploy::Mlp<float, 3, 8, 6>, deploy::Mlp<float, 6, 4, 2>, true>;

template <class M>
void fill_mlp(M& m, Rng& rng, Activation first, Activation last) {
    fill_dense(m.template layer<0>(), rng, first);
    fill_dense(m.template layer<1>(), rng, last);
}

struct NewLayerModels {
    DilGroup2d d2;
    DilGroup1d d1;
    MaskedGru gru;
    MaskedLstmSeq lstm;
    Efn efn;
    Pfn pfn;
    NewLayerModels() {
        Rng rng(78);
        fill_conv(d2.layer<0>(), rng, Activation::relu);
        for (auto& q : d2.layer<2>().group) fill_conv(q, rng, Activation::tanh);
        fill_dense(d2.layer<5>().dense, rng, Activation::none);
        for (auto& q : d1.layer<0>().group) fill_conv(q, rng, Activation::elu);
        fill_dense(d1.layer<3>().dense, rng, Activation::sigmoid);
        // Heads away from zero, as LayerModels': the contracted gates are compared by relative difference.
        fill_recurrent(gru.layer<0>(), rng);
        fill_dense(gru.layer<1>().dense, rng, Activation::sigmoid);
        fill_recurrent(lstm.layer<0>(), rng);
        fill_dense(lstm.layer<2>().dense, rng, Activation::softplus);
        fill_mlp(efn.phi, rng, Activation::relu, Activation::tanh);
        fill_mlp(efn.rho, rng, Activation::relu, Activation::none);
        fill_mlp(pfn.phi, rng, Activation::elu, Activation::relu);
        fill_mlp(pfn.rho, rng, Activation::tanh, Activation::none);
    }
};

/// Runs the generated headers: argv model letter, inputs, masks, outputs, n. Masked models read
/// one mask row per sample; 'f' is the EFN without a mask.
const char* const new_layers_driver_source = R"(#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <vector>
#include "d2.hpp"
#include "d1.hpp"
#include "mgru.hpp"
#include "mlstm.hpp"
#include "efn.hpp"
#include "pfn.hpp"

int main(int argc, char** argv) {
    if (argc != 6) return 2;
    const char m = argv[1][0];
    const long n = std::atol(argv[5]);
    const int nin = m == 'd' ? d2::n_inputs : m == 'o' ? d1::n_inputs : m == 'm' ? mgru::n_inputs : m == 's' ? mlstm::n_inputs
                  : m == 'p' ? pfn::n_inputs : efn::n_inputs;
    const int nout = m == 'd' ? d2::n_outputs : m == 'o' ? d1::n_outputs : m == 'm' ? mgru::n_outputs : m == 's' ? mlstm::n_outputs
                   : m == 'p' ? pfn::n_outputs : efn::n_outputs;
    const int nmask = m == 'm' ? mgru::n_inputs / mgru::n_step_inputs : m == 's' ? mlstm::n_inputs / mlstm::n_step_inputs
                    : m == 'p' ? pfn::n_particles : m == 'e' ? efn::n_particles : 0;
    std::vector<float> x(static_cast<std::size_t>(n * nin)), mask(static_cast<std::size_t>(n * nmask + 1)), y(static_cast<std::size_t>(n * nout));
    std::FILE* f = std::fopen(argv[2], "rb");
    if (!f || std::fread(x.data(), sizeof(float), x.size(), f) != x.size()) return 3;
    std::fclose(f);
    f = std::fopen(argv[3], "rb");
    if (nmask && (!f || std::fread(mask.data(), sizeof(float), mask.size() - 1, f) != mask.size() - 1)) return 3;
    if (f) std::fclose(f);
    for (long i = 0; i < n; ++i) {
        const float* xi = &x[static_cast<std::size_t>(i * nin)];
        const float* mi = &mask[static_cast<std::size_t>(i * nmask)];
        float* yi = &y[static_cast<std::size_t>(i * nout)];
        if (m == 'd') d2::predict(xi, yi);
        if (m == 'o') d1::predict(xi, yi);
        if (m == 'm') mgru::predict(xi, mi, yi);
        if (m == 's') mlstm::predict(xi, mi, yi);
        if (m == 'e') efn::predict(xi, mi, yi);
        if (m == 'f') efn::predict(xi, yi);
        if (m == 'p') pfn::predict(xi, mi, yi);
    }
    std::ofstream out(argv[4], std::ios::binary);
    out.write(reinterpret_cast<const char*>(y.data()), static_cast<std::streamsize>(y.size() * sizeof(float)));
    return out ? 0 : 4;
}
)";

} // namespace

TEST_CASE("generated headers of dilated and grouped convolutions, padded pools, masked sequences, EFN and PFN reproduce the deployed models") {
    static NewLayerModels m;
    const std::string h2 = deploy::generate_header(m.d2, named("d2"));
    CHECK(h2.find("conv2d<2, 9, 9, 4, 3, 3, 1, 1, 2, 2, 18, 2, 2, 2, 2>(x, w0, b0, y)") != std::string::npos);  // dilation 2 x 2
    CHECK(h2.find("conv2d<2, 5, 5, 3, 3, 3, 1, 1, 2, 2, 18, 2, 2, 2, 2>(x + 50, w2_1, b2_1, y + 75)") != std::string::npos);  // group 1
    CHECK(h2.find("pool2d<4, 9, 9, 3, 3, 2, 2, true, 1, 1>") != std::string::npos);
    CHECK(h2.find("pool2d<6, 5, 5, 2, 2, 2, 2, false, 1, 1>") != std::string::npos);
    CHECK(h2.find("dilation 2x2, groups 2") != std::string::npos);
    const std::string hg = deploy::generate_header(m.gru, named("mgru"));
    CHECK(hg.find("inline void predict(const float* x, const float* mask, float* y) noexcept") != std::string::npos);
    const std::string he = deploy::generate_header(m.efn, named("efn"));
    CHECK(he.find("constexpr int n_particles = 10;") != std::string::npos);
    CHECK(he.find("constexpr int n_features = 3;") != std::string::npos);
    CHECK(he.find("if (z == float(0)) continue;") != std::string::npos);
    CHECK(he.find("#include <tapir") == std::string::npos);
    CHECK(deploy::generate_header(m.pfn, named("pfn")).find("count ? float(1) / static_cast<float>(count) : float(0)") != std::string::npos);
    Efn scaled = m.efn;
    const double mean[2] = {0.0, 0.0}, scale[2] = {1.0, 2.0};
    REQUIRE(scaled.phi.set_input_scaling(mean, scale) == deploy::Status::ok);
    CHECK_THROWS_WITH_AS(deploy::generate_header(scaled, named("s")), doctest::Contains("phi standardises its inputs"), value_error);

    if (!fused_host()) return;
    const std::filesystem::path dir = deploy_test::scratch_dir("codegen_new_layers");
    deploy::write_header((dir / "d2.hpp").string(), m.d2, named("d2"));
    deploy::write_header((dir / "d1.hpp").string(), m.d1, named("d1"));
    deploy::write_header((dir / "mgru.hpp").string(), m.gru, named("mgru"));
    deploy::write_header((dir / "mlstm.hpp").string(), m.lstm, named("mlstm"));
    deploy::write_header((dir / "efn.hpp").string(), m.efn, named("efn"));
    deploy::write_header((dir / "pfn.hpp").string(), m.pfn, named("pfn"));
    std::ofstream(dir / "driver.cpp") << new_layers_driver_source;

    struct Case {
        char letter;
        std::size_t nin, nout, nmask;
        bool plain;  ///< plain multiply-adds outside the fused kernels (gates, set pooling)
        std::vector<float> x, mask, want;
    };
    const std::size_t n = 37;
    std::vector<Case> cases = {{'d', DilGroup2d::inputs, DilGroup2d::outputs, 0, false, {}, {}, {}},
                               {'o', DilGroup1d::inputs, DilGroup1d::outputs, 0, false, {}, {}, {}},
                               {'m', MaskedGru::inputs, MaskedGru::outputs, 6, true, {}, {}, {}},
                               {'s', MaskedLstmSeq::inputs, MaskedLstmSeq::outputs, 5, true, {}, {}, {}},
                               {'e', 30, 1, 10, true, {}, {}, {}},
                               {'f', 30, 1, 0, true, {}, {}, {}},
                               {'p', 30, 2, 10, false, {}, {}, {}}};
    Rng mask_rng(79);
    for (Case& c : cases) {
        const Tensor<float> x = deploy_test::random_inputs<float>(n, c.nin, 41 + static_cast<std::uint64_t>(c.letter), 2.0);
        c.x.assign(x.data(), x.data() + n * c.nin);
        if (c.letter == 'e' || c.letter == 'f')  // a few particles of zero energy fraction (padding)
            for (std::size_t i = 0; i < n * 10; i += 4) c.x[i * 3] = 0.0f;
        c.mask.resize(n * c.nmask);
        for (float& v : c.mask) v = mask_rng.uniform() < 0.3 ? 0.0f : 1.0f;
        c.want.resize(n * c.nout);
        for (std::size_t i = 0; i < n; ++i) {
            const float* xi = c.x.data() + i * c.nin;
            const float* mi = c.mask.data() + i * c.nmask;
            float* yi = c.want.data() + i * c.nout;
            if (c.letter == 'd') m.d2.forward(xi, yi);
            if (c.letter == 'o') m.d1.forward(xi, yi);
            if (c.letter == 'm') m.gru.forward(xi, mi, yi);
            if (c.letter == 's') m.lstm.forward(xi, mi, yi);
            if (c.letter == 'e') m.efn.forward(xi, mi, yi);
            if (c.letter == 'f') m.efn.forward(xi, yi);
            if (c.letter == 'p') m.pfn.forward(xi, mi, yi);
        }
        deploy_test::write_binary(dir / (std::string("x_") + c.letter + ".bin"), c.x);
        deploy_test::write_binary(dir / (std::string("m_") + c.letter + ".bin"), c.mask);
    }
    const bool fused = m.d2.isa() != simd::isa::scalar;
    const std::vector<Variant> variants = fused_variants();
    std::size_t compiled = 0;
    for (std::size_t k = 0; k < variants.size(); ++k) {
        const Variant& v = variants[k];
        const std::string name = v.cxx + " -mfma" + v.flags;
        CAPTURE(name);
        const std::string exe = (dir / ("driver_" + std::to_string(k))).string();
        if (!compile_fused(v, dir, exe)) continue;
        ++compiled;
        for (const Case& c : cases) {
            CAPTURE(std::string(1, c.letter));
            const std::string yp = (dir / (std::string("y_") + c.letter + "_" + std::to_string(k))).string();
            REQUIRE(deploy_test::run("'" + exe + "' " + c.letter + " '" + (dir / (std::string("x_") + c.letter + ".bin")).string() + "' '" +
                                     (dir / (std::string("m_") + c.letter + ".bin")).string() + "' '" + yp + "' " + std::to_string(n)) == 0);
            const std::vector<float> out = deploy_test::read_binary<float>(yp, n * c.nout);
            REQUIRE(out.size() == n * c.nout);
            MESSAGE("generated header [" << name << "] model " << std::string(1, c.letter) << ": " << count_different(out, c.want) << " of " << out.size()
                                         << " outputs differ from the deployed model, max relative difference " << max_rel_diff(out, c.want));
            CHECK(max_rel_diff(out, c.want) <= 1e-6);
            if (fused && (!c.plain || v.gates_bitwise)) CHECK(count_different(out, c.want) == 0);
        }
    }
    CHECK(compiled == variants.size());
    std::filesystem::remove_all(dir);
}

// Quantised layers (deploy/quantize_model.hpp) in a generated header: integer code, bitwise the library.
namespace {

using QBase = deploy::ModelT<float, deploy::Conv2dT<float, 2, 9, 9, 4, 4, 4, 1, 1, 1, 1, 2, 2>, deploy::MaxPool2dT<float, 4, 9, 9, 3, 3>,
                             deploy::FlattenT<float, 36>, deploy::DenseT<float, 36, 8>, deploy::DenseT<float, 8, 2>>;
using QInt8 = deploy::QuantizedT<deploy::Int8, QBase>;
using QFx16 = deploy::QuantizedT<deploy::FixedPoint<16, 6>, QBase>;
using QFx8 = deploy::QuantizedT<deploy::FixedPoint<8, 3, deploy::Quant::rnd, deploy::Ovf::sat>, QBase>;

const char* const quantized_driver_source = R"(#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <vector>
#include "q8.hpp"
#include "q16.hpp"
#include "q83.hpp"

int main(int argc, char** argv) {
    if (argc != 4) return 2;
    const long n = std::atol(argv[3]);
    std::vector<float> x(static_cast<std::size_t>(n * q8::n_inputs)), y(static_cast<std::size_t>(3 * n * q8::n_outputs));
    std::FILE* f = std::fopen(argv[1], "rb");
    if (!f || std::fread(x.data(), sizeof(float), x.size(), f) != x.size()) return 3;
    std::fclose(f);
    q8::predict_batch(x.data(), y.data(), n);
    q16::predict_batch(x.data(), y.data() + n * q8::n_outputs, n);
    q83::predict_batch(x.data(), y.data() + 2 * n * q8::n_outputs, n);
    std::ofstream out(argv[2], std::ios::binary);
    out.write(reinterpret_cast<const char*>(y.data()), static_cast<std::streamsize>(y.size() * sizeof(float)));
    return out ? 0 : 4;
}
)";

} // namespace

TEST_CASE("generated headers of int8 and ap_fixed ModelTs are integer code, bitwise the library") {
    QBase base;
    Rng rng(91);
    fill_conv(base.layer<0>(), rng, Activation::relu);
    fill_dense(base.layer<3>().dense, rng, Activation::relu);
    fill_dense(base.layer<4>().dense, rng, Activation::none);
    const std::size_t n = 41;
    const Tensor<float> xt = deploy_test::random_inputs<float>(n, QBase::inputs, 92, 2.0);
    const std::vector<float> x(xt.data(), xt.data() + n * QBase::inputs);
    static QInt8 q8;
    static QFx16 q16;
    static QFx8 q83;
    deploy::QuantizeOptions qo;
    qo.per_channel = true;
    REQUIRE(deploy::quantize_model(q8, base, x.data(), n, qo) == deploy::Status::ok);
    REQUIRE(deploy::quantize_model(q16, base, nullptr, 0) == deploy::Status::ok);
    REQUIRE(deploy::quantize_model(q83, base, nullptr, 0) == deploy::Status::ok);
    const std::string h8 = deploy::generate_header(q8, named("q8")), h16 = deploy::generate_header(q16, named("q16"));
    CHECK(h8.find("constexpr signed char w0[4][32]") != std::string::npos);
    CHECK(h8.find("conv2d_i8<2, 9, 9, 4, 4, 4, 1, 1, 1, 1, 2, 2>") != std::string::npos);
    CHECK(h16.find("ap_fixed<16, 6, AP_TRN, AP_WRAP>") != std::string::npos);
    CHECK(h16.find("conv2d_fx<2, 9, 9, 4, 4, 4, 1, 1, 1, 1, 2, 2, true>") != std::string::npos);
    CHECK(h16.find("float w") == std::string::npos);  // no float weights
    // ap_fixed layers are generated with none or relu only; one format per header.
    QFx16 tanh_model = q16;
    tanh_model.layer<4>().q.act = Activation::tanh;
    CHECK_THROWS_WITH_AS(deploy::generate_header(tanh_model, named("t")), doctest::Contains("none or relu activations, not tanh"), value_error);
    deploy::ModelT<float, deploy::QDenseT<deploy::FixedPoint<16, 6>, 4, 3>, deploy::QDenseT<deploy::FixedPoint<12, 4>, 3, 1>> mixed;
    CHECK_THROWS_WITH_AS(deploy::generate_header(mixed, named("m")), doctest::Contains("one header holds one ap_fixed format"), value_error);

    if (!deploy_test::host_tools_usable()) {
        MESSAGE("emulated build: host compilers are not used, skipped");
        return;
    }
    const std::filesystem::path dir = deploy_test::scratch_dir("codegen_quantized");
    deploy::write_header((dir / "q8.hpp").string(), q8, named("q8"));
    deploy::write_header((dir / "q16.hpp").string(), q16, named("q16"));
    deploy::write_header((dir / "q83.hpp").string(), q83, named("q83"));
    std::ofstream(dir / "driver.cpp") << quantized_driver_source;
    deploy_test::write_binary(dir / "x.bin", x);
    std::vector<float> want(3 * n * QBase::outputs);
    q8.forward(x.data(), want.data(), n);
    q16.forward(x.data(), want.data() + n * QBase::outputs, n);
    q83.forward(x.data(), want.data() + 2 * n * QBase::outputs, n);
    std::size_t compiled = 0;
    for (const std::string cxx : {"g++", "clang++"}) {
        if (!deploy_test::have_program(cxx) || !deploy_test::compiler_matches_arch(cxx)) continue;
        CAPTURE(cxx);
        const std::string exe = (dir / ("driver_" + std::to_string(cxx.size()))).string();
        std::string log;
        const bool ok = deploy_test::compile(cxx + " -std=c++11" + strict_flags + " -I'" + dir.string() + "' '" + (dir / "driver.cpp").string() +
                                                 "' -o '" + exe + "'",
                                             log, dir);
        CHECK_MESSAGE(ok, log);
        if (!ok) continue;
        ++compiled;
        const std::string yp = (dir / ("y_" + std::to_string(cxx.size()))).string();
        REQUIRE(deploy_test::run("'" + exe + "' '" + (dir / "x.bin").string() + "' '" + yp + "' " + std::to_string(n)) == 0);
        const std::vector<float> got = deploy_test::read_binary<float>(yp, want.size());
        REQUIRE(got.size() == want.size());
        CHECK(count_different(got, want) == 0);
        if (deploy_test::quick()) break;
    }
    CHECK(compiled > 0);
    std::filesystem::remove_all(dir);
}
