// From training to a trigger: one model definition, unchanged in numbers.
//
//  1. trains the course's H -> gamma gamma classifier (8 -> 24 -> 16 -> 8 -> 1, ReLU, sigmoid,
//     Adam 1e-3, binary cross-entropy, standardised photon four-vectors) on generated events;
//  2. converts it to the compile-time-sized deploy::Mlp (no heap, noexcept) and checks it;
//  3. exports a standalone header (weights as constexpr arrays, input standardisation inside,
//     only <cmath>), writes a tiny "trigger" program against that header alone, compiles it with
//     a C++ compiler (--cxx, $CXX, the compiler of this build, or c++/g++/clang++; with
//     -fno-exceptions -fno-rtti; skipped with a message when none works) and runs it on the
//     test events;
//  4. shows that the trigger's accept/reject decisions (and scores) are tapir's;
//  5. does the same for a small convolutional model over the two photons (a Conv1d with kernel
//     1 over the (4 features, 2 photons) sequence, max-pooled over the photons, then dense):
//     trained, loaded into a deploy::ModelT, exported with generate_header (codegen_model.hpp),
//     run as a second stand-alone trigger that also times the header per event.
//
// Usage: trigger [--train N] [--test N] [--epochs E] [--seed S] [--cut-efficiency F] [--cxx COMPILER] [--out DIR]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <tapir/autodiff/backward.hpp>
#include <tapir/autodiff/ops.hpp>
#include <tapir/data/dataset.hpp>
#include <tapir/deploy/codegen.hpp>
#include <tapir/deploy/codegen_model.hpp>
#include <tapir/deploy/convert_model.hpp>
#include <tapir/deploy/convert.hpp>
#include <tapir/deploy/fixed.hpp>
#include <tapir/hep/diphoton.hpp>
#include <tapir/loss/classification.hpp>
#include <tapir/metrics/roc.hpp>
#include <tapir/nn/conv.hpp>
#include <tapir/nn/layers.hpp>
#include <tapir/nn/sequential.hpp>
#include <tapir/optim/adam.hpp>
#include <tapir/simd/arch.hpp>

#include "../common/cli.hpp"
#include "../common/output_dir.hpp"

namespace fs = std::filesystem;
using namespace tapir;

namespace {

struct Args {
    std::size_t train = 30000, test = 10000, epochs = 15;
    std::uint64_t seed = 2024;
    double efficiency = 0.5;  // signal efficiency of the trigger cut
    std::string cxx, out = ".";
};

Tensor<float> features(const std::vector<hep::DiphotonEvent>& ev, std::size_t from, std::size_t n) {
    Tensor<float> x(Shape{n, 8});
    for (std::size_t i = 0; i < n; ++i) {
        const auto& e = ev[from + i];
        const double f[8] = {e.pt1, e.eta1, e.phi1, e.e1, e.pt2, e.eta2, e.phi2, e.e2};
        for (std::size_t j = 0; j < 8; ++j) x[i * 8 + j] = static_cast<float>(f[j]);
    }
    return x;
}

/// |a - b| / |b| (|a| when b is 0).
double relative_difference(float a, float b) {
    const double d = std::fabs(static_cast<double>(a) - static_cast<double>(b));
    return b != 0.0f ? d / std::fabs(static_cast<double>(b)) : d;
}

/// Adam 1e-3 on binary cross-entropy in batches of batch_shape[0] events, each event's row of z
/// viewed as the rest of batch_shape; prints the mean loss of the first, every fifth and the last epoch.
void train(nn::Sequential<float>& net, const Tensor<float>& z, const Tensor<float>& y, const Shape& batch_shape, std::size_t epochs, Rng& rng) {
    optim::Adam<float> opt(net.parameters(), 1e-3f);
    Tape<float> tape;
    const std::size_t n = y.shape()[0], bs = batch_shape[0], d = batch_shape.numel() / bs;
    Tensor<float> xb(batch_shape), yb(Shape{bs, 1});
    for (std::size_t epoch = 0; epoch < epochs; ++epoch) {
        const std::vector<std::size_t> perm = rng.permutation(n);
        double loss_sum = 0.0;
        std::size_t batches = 0;
        for (std::size_t b0 = 0; b0 + bs <= n; b0 += bs, ++batches) {
            for (std::size_t i = 0; i < bs; ++i) {
                for (std::size_t j = 0; j < d; ++j) xb[i * d + j] = z[perm[b0 + i] * d + j];
                yb[i] = y[perm[b0 + i]];
            }
            tape.clear();
            opt.zero_grad();
            const Var<float> loss = loss::binary_cross_entropy(net(tape.view(xb)), tape.view(yb));
            loss_sum += static_cast<double>(loss.item());
            backward(loss);
            opt.step();
        }
        if (epoch + 1 == epochs || epoch % 5 == 0) std::printf("  epoch %2zu  loss %.4f\n", epoch + 1, loss_sum / static_cast<double>(batches));
    }
}

/// The trained model's scores as tapir evaluates it: the tape in no-grad mode.
std::vector<float> evaluate(nn::Sequential<float>& net, const Tensor<float>& z) {
    Tape<float> tape;
    NoGradGuard<float> guard(tape);
    const Var<float> p = net(tape.view(z));
    return std::vector<float>(p.data(), p.data() + z.shape()[0]);  // one score per event
}

bool works(const std::string& cmd) { return std::system((cmd + " > /dev/null 2>&1").c_str()) == 0; }

/// The C++ compiler for the trigger: --cxx, else $CXX, else the compiler this example was built
/// with (TAPIR_CXX_COMPILER, when the build system defines it), else c++, g++, clang++ on the PATH.
/// Each candidate must build a one-line program that runs here (a cross compiler does not).
/// `tried` lists what was tried, for the message.
std::string find_compiler(const std::string& wanted, const fs::path& dir, std::string& tried) {
    std::vector<std::string> candidates;
    if (!wanted.empty()) {
        candidates.push_back(wanted);
    } else {
        if (const char* env = std::getenv("CXX"); env && *env) candidates.push_back(env);
#ifdef TAPIR_CXX_COMPILER
        candidates.push_back(TAPIR_CXX_COMPILER);
#endif
        for (const char* c : {"c++", "g++", "clang++"}) candidates.push_back(c);
    }
    const fs::path probe = dir / "compiler_probe.cpp";
    std::ofstream(probe) << "int main() { return 0; }\n";
    std::string found;
    for (const std::string& c : candidates) {
        tried += (tried.empty() ? "" : ", ") + c;
        const std::string probe_exe = (dir / "compiler_probe").string();
        if (works(c + " -std=c++11 '" + probe.string() + "' -o '" + probe_exe + "'") && works("'" + probe_exe + "'")) {
            found = c;
            break;
        }
    }
    fs::remove(probe);
    fs::remove(dir / "compiler_probe");
    return found;
}

const char* const trigger_source = R"(// A stand-alone trigger: reads events (8 raw photon features per line), writes "decision score".
// Built against the generated header only.
#include <cstdio>
#include "higgs_trigger.hpp"

int main(int argc, char** argv) {
    if (argc != 2) return 2;
    std::FILE* in = std::fopen(argv[1], "r");
    if (!in) return 3;
    float x[higgs_trigger::n_inputs], score[higgs_trigger::n_outputs];
    long accepted = 0, seen = 0;
    for (;;) {
        int got = 0;
        for (int i = 0; i < higgs_trigger::n_inputs; ++i) got += std::fscanf(in, "%f", &x[i]);
        if (got != higgs_trigger::n_inputs) break;
        higgs_trigger::predict(x, score);
        const bool accept = score[0] >= higgs_trigger::threshold;
        accepted += accept;
        ++seen;
        std::printf("%d %.9g\n", accept ? 1 : 0, static_cast<double>(score[0]));
    }
    std::fclose(in);
    std::fprintf(stderr, "trigger: %ld of %ld events accepted\n", accepted, seen);
    return 0;
}
)";

/// The photons as a sequence for Conv1d: (N, 8) standardised (pt, eta, phi, E) x 2 to (N, 4, 2).
Tensor<float> photon_sequence(const Tensor<float>& z) {
    const std::size_t n = z.shape()[0];
    Tensor<float> s(Shape{n, 4, 2});
    for (std::size_t i = 0; i < n; ++i)
        for (std::size_t c = 0; c < 4; ++c)
            for (std::size_t l = 0; l < 2; ++l) s[i * 8 + c * 2 + l] = z[i * 8 + l * 4 + c];
    return s;
}

/// The same arrangement and tapir's standardisation (in double, as StandardScaler) in the second
/// stand-alone trigger, around the generated header; it also times predict per event.
const char* const conv_trigger_source = R"(// A stand-alone trigger on a convolutional model: raw events in (8 photon features per line),
// "decision score" lines out, then "latency <ns per event>". Built against the generated header only.
#include <chrono>
#include <cstdio>
#include <vector>
#include "photon_cnn.hpp"

int main(int argc, char** argv) {
    if (argc != 2) return 2;
    std::FILE* in = std::fopen(argv[1], "r");
    if (!in) return 3;
    std::vector<float> events;
    for (;;) {
        float raw[8];
        int got = 0;
        for (int i = 0; i < 8; ++i) got += std::fscanf(in, "%f", &raw[i]);
        if (got != 8) break;
        for (int c = 0; c < 4; ++c)  // (4 features, 2 photons), standardised as in training
            for (int l = 0; l < 2; ++l) {
                const int j = l * 4 + c;
                events.push_back(static_cast<float>((static_cast<double>(raw[j]) - photon_cnn::input_mean[j]) / photon_cnn::input_scale[j]));
            }
    }
    std::fclose(in);
    const long n = static_cast<long>(events.size() / photon_cnn::n_inputs);
    std::vector<float> score(static_cast<std::size_t>(n));
    for (long i = 0; i < n; ++i) photon_cnn::predict(&events[static_cast<std::size_t>(i * photon_cnn::n_inputs)], &score[static_cast<std::size_t>(i)]);
    for (long i = 0; i < n; ++i) std::printf("%d %.9g\n", score[static_cast<std::size_t>(i)] >= photon_cnn::threshold ? 1 : 0, static_cast<double>(score[static_cast<std::size_t>(i)]));
    // Latency: the best of 5 passes over the events, one event at a time.
    double best = 1e30;
    float sink = 0.0f;
    for (int rep = 0; rep < 5 && n > 0; ++rep) {
        const auto t0 = std::chrono::steady_clock::now();
        for (long i = 0; i < n; ++i) {
            float y = 0.0f;
            photon_cnn::predict(&events[static_cast<std::size_t>(i * photon_cnn::n_inputs)], &y);
            sink += y;
        }
        const double ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count() / static_cast<double>(n);
        best = ns < best ? ns : best;
    }
    std::printf("latency %.1f %g\n", best, static_cast<double>(sink > 0.0f ? 0.0f : 1.0f));
    return 0;
}
)";

/// Step 5: trains the convolutional model, loads it into a ModelT, exports it, runs the second
/// trigger program (built like the first) and compares its decisions with the trained model's.
int conv_trigger(const Args& a, const Tensor<float>& z_train, const Tensor<float>& y_train, const Tensor<float>& z_test,
                 const std::vector<double>& y_test, const data::StandardScaler& scaler, Rng& rng, const std::string& cxx,
                 const std::string& flags, const fs::path& out) {
    using Cnn = deploy::ModelT<float, deploy::Conv1dT<float, 4, 2, 16, 1>, deploy::MaxPool1dT<float, 16, 2, 2>, deploy::FlattenT<float, 16>,
                               deploy::DenseT<float, 16, 8>, deploy::DenseT<float, 8, 1>>;
    nn::Sequential<float> net;
    net.add<nn::Conv1d<float>>(4, 16, 1, rng).add<nn::ReLU<float>>().add<nn::MaxPool1d<float>>(Size2(1, 2)).add<nn::Flatten<float>>();
    net.add<nn::Dense<float>>(16, 8, rng).add<nn::ReLU<float>>();
    net.add<nn::Dense<float>>(8, 1, rng).add<nn::Sigmoid<float>>();
    std::printf("\ntraining a convolutional model, Conv1d(4 -> 16, kernel 1, ReLU) over the 2 photons -> MaxPool1d(2) -> "
                "Dense(16 -> 8, ReLU) -> Dense(8 -> 1, sigmoid) (%zu epochs)\n", a.epochs);
    train(net, photon_sequence(z_train), y_train, Shape{64, 4, 2}, a.epochs, rng);
    const Tensor<float> s_test = photon_sequence(z_test);
    const std::vector<float> p_dyn = evaluate(net, s_test);
    const metrics::RocCurve roc = metrics::roc_curve(p_dyn, y_test);
    const float cut = static_cast<float>(metrics::efficiency_threshold(p_dyn, y_test, {}, a.efficiency));
    std::printf("test AUC %.4f; cut at %.0f%% signal efficiency: score >= %.9g\n", roc.auc(), 100.0 * a.efficiency, static_cast<double>(cut));

    const auto model = deploy::to_model<Cnn>(net);
    std::vector<float> p_model(a.test);
    const auto t0 = std::chrono::steady_clock::now();
    model->forward(s_test.data(), p_model.data(), a.test);
    const double model_ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count() / static_cast<double>(a.test);
    std::size_t model_same = 0;
    for (std::size_t i = 0; i < a.test; ++i) model_same += p_model[i] == p_dyn[i];
    std::printf("deploy::ModelT (%s kernels): %zu of %zu scores bitwise equal to the trained model, %.0f ns per event\n",
                simd::isa_name(model->isa()), model_same, a.test, model_ns);

    deploy::CodegenOptions co;
    co.name_space = "photon_cnn";
    co.comment = "H -> gamma gamma trigger CNN trained by examples/trigger; inputs standardised, (4 features, 2 photons).";
    std::string header = deploy::generate_header(*model, co);
    // The cut and the standardisation travel with the model, as constants in its namespace.
    std::string extra;
    char line[96];
    std::snprintf(line, sizeof line, "constexpr float threshold = %.9gf;  // %.0f%% signal efficiency\n", static_cast<double>(cut),
                  100.0 * a.efficiency);
    extra += line;
    for (const auto& [name, v] : {std::pair<const char*, const std::vector<double>*>{"input_mean", &scaler.mean()}, {"input_scale", &scaler.scale()}}) {
        extra += std::string("constexpr double ") + name + "[8] = {";
        for (std::size_t j = 0; j < 8; ++j) {
            std::snprintf(line, sizeof line, "%s%.17g", j ? ", " : "", (*v)[j]);
            extra += line;
        }
        extra += "};\n";
    }
    header.insert(header.find("namespace detail {"), extra + "\n");
    const fs::path hpp = out / "photon_cnn.hpp", src = out / "conv_trigger_main.cpp", exe = out / "conv_trigger_program",
                   events = out / "test_events.txt", decisions = out / "conv_decisions.txt";
    std::ofstream(hpp) << header;
    std::ofstream(src) << conv_trigger_source;
    // With FMA instructions std::fma is inlined (4x faster here than the library call); the same bits.
    const bool x86_fma =
#if defined(__x86_64__)
        simd::active_isa() != simd::isa::scalar;
#else
        false;
#endif
    const std::string cflags = flags + (x86_fma ? " -mfma" : "");
    const std::string cmd = cxx + " " + cflags + " -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Werror -I'" + out.string() + "' '" +
                            src.string() + "' -o '" + exe.string() + "'";
    std::printf("wrote %s (%zu bytes); compiling the convolutional trigger: %s %s\n", hpp.string().c_str(),
                static_cast<std::size_t>(fs::file_size(hpp)), cxx.c_str(), cflags.c_str());
    std::fflush(stdout);
    if (!works(cmd) || std::system(("'" + exe.string() + "' '" + events.string() + "' > '" + decisions.string() + "'").c_str()) != 0) {
        std::printf("FAILED to build or run the convolutional trigger:\n%s\n", cmd.c_str());
        return 1;
    }
    std::ifstream d(decisions);
    std::size_t n = 0, same_decision = 0, same_score = 0;
    int dec = 0;
    float score = 0.0f;
    while (n < a.test && d >> dec >> score) {
        same_decision += (dec == 1) == (p_dyn[n] >= cut);
        same_score += score == p_dyn[n];
        ++n;
    }
    std::string word;
    double latency = 0.0;
    d >> word >> latency;
    if (n != a.test || word != "latency") {
        std::printf("the convolutional trigger wrote %zu decisions for %zu events\n", n, a.test);
        return 1;
    }
    std::printf("convolutional trigger program vs the trained model on %zu test events: %zu identical decisions, %zu bitwise identical "
                "scores; generated header %.0f ns per event\n",
                n, same_decision, same_score, latency);
    if (same_decision != n) {
        std::printf("FAILED: the convolutional trigger's decisions differ from tapir's\n");
        return 1;
    }
    std::printf("identical decisions: the convolutional trigger runs the trained model unchanged\n");
    return 0;
}

} // namespace

int main(int argc, char** argv) {
    const examples::Cli cli("trigger",
                            "trigger [--train N] [--test N] [--epochs E] [--seed S] [--cut-efficiency F] [--cxx COMPILER]\n"
                            "               [--out DIR] [--help]\n");
    Args a;
    examples::Flags(cli)
        .count("--train", a.train, 100).count("--test", a.test, 100).count("--epochs", a.epochs).seed("--seed", a.seed)
        .number("--cut-efficiency", a.efficiency).text("--cxx", a.cxx).text("--out", a.out)
        .parse(argc, argv);
    if (!(a.efficiency > 0.0 && a.efficiency < 1.0)) cli.usage("--cut-efficiency must be in (0, 1)");
    if (!examples::make_output_dir("trigger", a.out)) return 1;
    const fs::path out = a.out;

    // ---- 1. train -----------------------------------------------------------------------------
    const auto ev = hep::generate_diphoton(a.train + a.test, a.seed);
    const Tensor<float> x_train = features(ev, 0, a.train), x_test = features(ev, a.train, a.test);
    Tensor<float> y_train(Shape{a.train, 1});
    std::vector<double> y_test(a.test);
    for (std::size_t i = 0; i < a.train; ++i) y_train[i] = static_cast<float>(ev[i].label);
    for (std::size_t i = 0; i < a.test; ++i) y_test[i] = ev[a.train + i].label;
    data::StandardScaler scaler;
    const Tensor<float> z_train = scaler.fit(x_train).transform(x_train);

    Rng rng(a.seed + 1);
    nn::Sequential<float> net;
    net.add<nn::Dense<float>>(8, 24, rng).add<nn::ReLU<float>>();
    net.add<nn::Dense<float>>(24, 16, rng).add<nn::ReLU<float>>();
    net.add<nn::Dense<float>>(16, 8, rng).add<nn::ReLU<float>>();
    net.add<nn::Dense<float>>(8, 1, rng).add<nn::Sigmoid<float>>();
    std::printf("training %s on %zu generated H->yy events (%zu epochs)\n", deploy::spec_from(net).describe().c_str(), a.train, a.epochs);
    train(net, z_train, y_train, Shape{64, 8}, a.epochs, rng);

    // The trained model as tapir evaluates it: the tape in no-grad mode, standardised inputs.
    const Tensor<float> z_test = scaler.transform(x_test);
    const std::vector<float> p_dyn = evaluate(net, z_test);
    const metrics::RocCurve roc = metrics::roc_curve(p_dyn, y_test);
    const double cut = metrics::efficiency_threshold(p_dyn, y_test, {}, a.efficiency);
    std::printf("test AUC %.4f; trigger cut at %.0f%% signal efficiency: score >= %.6g (background rejection %.1f)\n", roc.auc(),
                100.0 * a.efficiency, cut, roc.rejection(a.efficiency));

    // ---- 2. fixed-size model --------------------------------------------------------------------
    deploy::ModelSpec<float> spec = deploy::spec_from(net);
    spec.set_input_scaling(scaler.mean(), scaler.scale());  // raw features in, as a trigger sees them
    const auto fixed = deploy::to_fixed<deploy::Mlp<float, 8, 24, 16, 8, 1>>(spec);
    std::vector<float> p_fixed(a.test);
    fixed->forward(x_test.data(), p_fixed.data(), a.test);
    std::size_t fixed_same = 0;
    double fixed_rel = 0.0;
    for (std::size_t i = 0; i < a.test; ++i) {
        fixed_same += p_fixed[i] == p_dyn[i];
        fixed_rel = std::max(fixed_rel, relative_difference(p_fixed[i], p_dyn[i]));
    }
    std::printf("fixed-size Mlp<float, 8, 24, 16, 8, 1> (%s kernels): %zu of %zu scores bitwise equal to the dynamic model "
                "(max relative difference %.3g)\n",
                simd::isa_name(fixed->isa()), fixed_same, a.test, fixed_rel);
    if (fixed_rel > 1e-6) {
        std::printf("FAILED: the fixed-size model differs from the dynamic model by more than 1e-6 relative\n");
        return 1;
    }

    // ---- 3. header, trigger program -------------------------------------------------------------
    deploy::CodegenOptions co;
    co.name_space = "higgs_trigger";
    co.comment = "H -> gamma gamma trigger classifier trained by examples/trigger; accept when score >= threshold.";
    std::string header = deploy::generate_header(spec, co);
    // The cut travels with the model: one more constant in the generated namespace.
    // Written as the float tapir compares with (9 digits round-trip a float exactly).
    const float cut_f = static_cast<float>(cut);
    char cut_line[128];
    std::snprintf(cut_line, sizeof cut_line, "constexpr float threshold = %.9gf;  // %.0f%% signal efficiency\n\n",
                  static_cast<double>(cut_f), 100.0 * a.efficiency);
    const std::size_t at = header.find("namespace detail {");
    header.insert(at, cut_line);
    const fs::path hpp = out / "higgs_trigger.hpp", src = out / "trigger_main.cpp", exe = out / "trigger_program",
                   events = out / "test_events.txt", decisions = out / "decisions.txt";
    std::ofstream(hpp) << header;
    std::ofstream(src) << trigger_source;
    {
        std::ofstream f(events);
        char buf[32];
        for (std::size_t i = 0; i < a.test; ++i) {
            for (std::size_t j = 0; j < 8; ++j) {
                std::snprintf(buf, sizeof buf, "%.9g", static_cast<double>(x_test[i * 8 + j]));
                f << (j ? " " : "") << buf;
            }
            f << "\n";
        }
    }
    std::printf("wrote %s (%zu bytes), %s, %s\n", hpp.string().c_str(), static_cast<std::size_t>(fs::file_size(hpp)),
                src.string().c_str(), events.string().c_str());

    std::fflush(stdout);  // the compiler and the trigger write to the same terminal
    std::string tried;
    const std::string cxx = find_compiler(a.cxx, out, tried);
    if (cxx.empty()) {
        std::printf("SKIPPED the stand-alone trigger: no C++ compiler that builds programs runnable here (tried %s); "
                    "pass --cxx COMPILER or set CXX\n",
                    tried.c_str());
        return 0;
    }
    // Fused multiply-adds in the generated code exactly when tapir's kernels fuse them (AVX2,
    // AVX-512, NEON; std::fma is exact on any target), so the scores match bit for bit.
    const bool fused = simd::active_isa() != simd::isa::scalar;
    const std::string flags = std::string("-std=c++11 -O2 -fno-exceptions -fno-rtti -DTAPIR_GEN_FMA=") + (fused ? "1" : "0");
    const std::string cmd = cxx + " " + flags + " -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Werror -I'" + out.string() + "' '" +
                            src.string() + "' -o '" + exe.string() + "'";
    if (!works(cmd)) {
        std::printf("%s failed to compile the trigger:\n%s\n", cxx.c_str(), cmd.c_str());
        std::fflush(stdout);
        const int rc = std::system((cmd + " 2>&1").c_str());  // again, to show the compiler's messages
        std::printf("(exit status %d)\n", rc);
        return 1;
    }
    std::printf("compiled the trigger against the generated header alone: %s %s\n", cxx.c_str(), flags.c_str());
    std::fflush(stdout);
    if (std::system(("'" + exe.string() + "' '" + events.string() + "' > '" + decisions.string() + "'").c_str()) != 0) {
        std::printf("the trigger program failed\n");
        return 1;
    }

    // ---- 4. compare ---------------------------------------------------------------------------
    std::ifstream d(decisions);
    std::size_t n = 0, same_decision = 0, same_score = 0, accepted = 0, accepted_signal = 0;
    double max_rel = 0.0;
    int dec = 0;
    float score = 0.0f;
    while (n < a.test && d >> dec >> score) {
        const bool tapir_accept = p_dyn[n] >= cut_f;
        same_decision += (dec == 1) == tapir_accept;
        same_score += score == p_dyn[n];
        max_rel = std::max(max_rel, relative_difference(score, p_dyn[n]));
        accepted += dec == 1;
        accepted_signal += dec == 1 && y_test[n] == 1.0;
        ++n;
    }
    if (n != a.test) {
        std::printf("the trigger wrote %zu decisions for %zu events\n", n, a.test);
        return 1;
    }
    std::printf("trigger program vs tapir on %zu test events: %zu identical decisions, %zu bitwise identical scores "
                "(max relative difference %.3g)\n",
                n, same_decision, same_score, max_rel);
    std::printf("trigger accepts %zu events (%.1f%%), %.1f%% of them signal\n", accepted, 100.0 * static_cast<double>(accepted) / static_cast<double>(n),
                accepted ? 100.0 * static_cast<double>(accepted_signal) / static_cast<double>(accepted) : 0.0);
    if (same_decision != n || max_rel > 1e-6) {
        std::printf("FAILED: the trigger's %s from tapir's\n", same_decision != n ? "decisions differ" : "scores differ by more than 1e-6 relative");
        return 1;
    }
    std::printf("identical decisions: the trigger runs the trained model unchanged\n");

    // ---- 5. a convolutional model ---------------------------------------------------------------
    return conv_trigger(a, z_train, y_train, z_test, y_test, scaler, rng, cxx, flags, out);
}
