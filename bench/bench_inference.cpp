// Inference of deployed MLPs, batch-1 latency and batched throughput, side by side in one run:
//   dynamic   the trained model on the tape in no-grad mode (Tape<float> + NoGradGuard, dense ops)
//   fixed     deploy::Mlp<float, ...> (compile-time sizes, SIMD kernels chosen at run time)
//   header    the generated standalone header (deploy::generate_header), compiled at run time by
//             the host compiler (--cxx, default c++) with -O3 -march=native as a trigger build
//             would be, in a small timing driver; skipped when no compiler works
//   int8      deploy::Int8Mlp (calibrated on the events)
//   PyTorch   bench/torch_inference.py under /usr/bin/python3 with torch, one thread, same weights
//             and events; "PyTorch: not installed" otherwise. Run as shipped and tuned
//             (OPENBLAS_CORETYPE=SkylakeX; glibc malloc thresholds raised with GLIBC_TUNABLES;
//             both); every ratio is against the fastest of these settings (--quick: as shipped
//             and both)
// Models: the course classifier 8 -> 24 -> 16 -> 8 -> 1 (ReLU, sigmoid), and 3 x 64, 3 x 256
// ReLU MLPs (8 inputs, 1 linear output). Times are medians over repeats of a loop over 1024
// events (batch 1: one call per event), in thread CPU time by default (robust on a shared,
// loaded machine; every path, PyTorch included, is timed the same way) or wall time (--wall).
// Every path's outputs are checked against the dynamic model's: max |y - y_dynamic| / max |y_dynamic|
// and how many of the 1024 outputs differ at all.
// Structured layers (deploy::ModelT, model.hpp), then against bench/torch_layers.py (PyTorch's own
// weights: time only; tests/deploy/test_model.cpp checks the numbers): LSTM and GRU hidden 64,
// one step with state; the top-tagging CNN on 40 x 40 images at batch 1 and 256; a PFN on 100
// particles at batch 1; Conv1d 64 -> 64 channels, kernel 3, 128 samples. --layers runs only these.
// The same rows run on libtorch's C++ API too (bench/libtorch_layers.cpp, built only when CMake
// finds Debian's libtorch-dev; --no-libtorch skips it): the cost of PyTorch without Python.
// Usage: bench_inference [--quick] [--wall] [--json FILE] [--cxx COMPILER] [--python PYTHON] [--no-torch] [--no-header] [--layers] [--no-libtorch]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <time.h>
#include <unistd.h>

#include <tapir/autodiff/ops.hpp>
#include <tapir/autodiff/tape.hpp>
#include <tapir/data/random.hpp>
#include <tapir/deploy/codegen.hpp>
#include <tapir/deploy/convert.hpp>
#include <tapir/deploy/convert_model.hpp>
#include <tapir/deploy/fixed.hpp>
#include <tapir/deploy/model.hpp>
#include <tapir/deploy/quantize.hpp>
#include <tapir/nn/conv.hpp>
#include <tapir/nn/layers.hpp>
#include <tapir/nn/recurrent.hpp>
#include <tapir/nn/sequential.hpp>
#include <tapir/nn/sets.hpp>

#include "harness.hpp"

namespace {

using namespace tapir;
namespace fs = std::filesystem;

constexpr std::size_t n_events = 1024;
volatile float g_sink = 0.0f;

struct Timing {
    double batch1 = NAN, batched = NAN;  // seconds per event
    double max_rel = NAN;                // against the dynamic model
    std::size_t differ = 0;
    std::string note;
};

struct Result {
    std::string model;
    std::map<std::string, Timing> paths;
    std::vector<std::string> order;
    void add(const std::string& path, const Timing& t) {
        paths[path] = t;
        order.push_back(path);
    }
};

/// The fastest PyTorch setting's time (field: batch1 or batched); NaN when PyTorch did not run.
double best_torch(const Result& r, double Timing::*field) {
    double best = NAN;
    for (const auto& kv : r.paths)
        if (kv.first.rfind("PyTorch", 0) == 0 && !std::isnan(kv.second.*field) && !(kv.second.*field >= best)) best = kv.second.*field;
    return best;
}

struct Options : bench::PeerOptions {
    bool header = true;
    bool layers_only = false;
    bool libtorch = true;  // the libtorch_layers peer, when built
    std::string cxx = "c++";
};

/// max |a - b| / max |b|, and how many entries differ.
double max_rel_diff(const std::vector<float>& a, const std::vector<float>& b, std::size_t* differ = nullptr) {
    double m = 0.0, scale = 0.0;
    std::size_t d = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
        m = std::max(m, std::fabs(static_cast<double>(a[i]) - static_cast<double>(b[i])));
        scale = std::max(scale, std::fabs(static_cast<double>(b[i])));
        d += a[i] != b[i];
    }
    if (differ) *differ = d;
    return scale > 0.0 ? m / scale : m;
}

double now(bool wall) {
    timespec ts;
    clock_gettime(wall ? CLOCK_MONOTONIC : CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

/// Median seconds per call over `repeats` samples of about 20 ms each, after a warm-up.
template <class F>
double median_per_call(F&& call, const Options& o) {
    const double target = o.quick ? 0.005 : 0.02;
    long inner = 1;
    for (;;) {
        const double t0 = now(o.wall);
        for (long i = 0; i < inner; ++i) call();
        if (now(o.wall) - t0 > target || inner > (1L << 24)) break;
        inner *= 2;
    }
    std::vector<double> s;
    for (int r = 0; r < o.repeats; ++r) {
        const double t0 = now(o.wall);
        for (long i = 0; i < inner; ++i) call();
        s.push_back((now(o.wall) - t0) / static_cast<double>(inner));
    }
    std::sort(s.begin(), s.end());
    return s[s.size() / 2];
}

/// Median seconds per event of fn(i) called for events i = 0, 1, ... (wrapping).
template <class F>
double per_event(F&& fn, const Options& o) {
    std::size_t i = 0;
    return median_per_call([&] {
        fn(i);
        i = i + 1 == n_events ? 0 : i + 1;
    }, o);
}
template <class F>
double per_batch_event(F&& fn, const Options& o) {
    return median_per_call([&] { fn(); }, o) / n_events;
}

int sh(const std::string& cmd) { return std::system(cmd.c_str()); }

std::string slurp(const fs::path& p) {
    std::ifstream f(p);
    std::ostringstream s;
    s << f.rdbuf();
    return s.str();
}

template <class T>
void write_floats(const fs::path& p, const std::vector<T>& v) {
    std::ofstream f(p, std::ios::binary);
    f.write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(v.size() * sizeof(T)));
}
std::vector<float> read_floats(const fs::path& p, std::size_t n) {
    std::vector<float> v(n);
    std::ifstream f(p, std::ios::binary);
    f.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(n * sizeof(float)));
    if (!f) v.clear();
    return v;
}

struct ModelDef {
    std::string name, label;
    std::vector<std::size_t> sizes;
    std::vector<Activation> acts;
};

nn::Sequential<float> make_net(const ModelDef& d, std::uint64_t seed) {
    Rng rng(seed);
    nn::Sequential<float> net;
    for (std::size_t i = 0; i + 1 < d.sizes.size(); ++i) {
        auto& l = net.emplace<nn::Dense<float>>(d.sizes[i], d.sizes[i + 1], rng);
        for (std::size_t j = 0; j < l.bias.value.size(); ++j) l.bias.value[j] = static_cast<float>(rng.uniform(-0.1, 0.1));
        if (d.acts[i] == Activation::relu) net.add<nn::ReLU<float>>();
        if (d.acts[i] == Activation::sigmoid) net.add<nn::Sigmoid<float>>();
    }
    return net;
}

/// Times the dynamic, fixed-size and int8 paths of one model.
template <class Fixed, class Int8>
Result run_model(const ModelDef& d, nn::Sequential<float>& net, const std::vector<float>& x, const Options& o,
                 std::vector<float>& ref) {
    Result res;
    res.model = d.label;
    const std::size_t nin = d.sizes.front();

    // Dynamic: the tape in no-grad mode, as a trained model is evaluated in tapir.
    Tape<float> tape;
    NoGradGuard<float> guard(tape);
    net.eval();
    {
        tape.clear();
        const Var<float> y = net(tape.constant(x.data(), Shape{n_events, nin}));
        ref.assign(y.data(), y.data() + n_events);
    }
    Timing dyn;
    dyn.batch1 = per_event([&](std::size_t i) {
        tape.clear();
        g_sink = g_sink + net(tape.constant(x.data() + i * nin, Shape{1, nin}))[0];
    }, o);
    dyn.batched = per_batch_event([&] {
        tape.clear();
        g_sink = g_sink + net(tape.constant(x.data(), Shape{n_events, nin}))[0];
    }, o);
    dyn.max_rel = 0.0;
    res.add("dynamic (tape, no-grad)", dyn);

    const deploy::ModelSpec<float> spec = deploy::spec_from(net);
    const std::unique_ptr<const Fixed> fixed = deploy::to_fixed<Fixed>(spec);
    std::vector<float> y(n_events);
    fixed->forward(x.data(), y.data(), n_events);
    Timing fx;
    fx.max_rel = max_rel_diff(y, ref, &fx.differ);
    fx.batch1 = per_event([&](std::size_t i) {
        float out;
        fixed->forward(x.data() + i * nin, &out);
        g_sink = g_sink + out;
    }, o);
    fx.batched = per_batch_event([&] { fixed->forward(x.data(), y.data(), n_events); }, o);
    res.add(std::string("fixed-size Mlp (") + simd::isa_name(fixed->isa()) + ")", fx);

    const std::unique_ptr<const Int8> q = deploy::to_int8<Int8>(spec, x.data(), n_events);
    q->forward(x.data(), y.data(), n_events);
    Timing iq;
    iq.max_rel = max_rel_diff(y, ref, &iq.differ);
    iq.batch1 = per_event([&](std::size_t i) {
        float out;
        q->forward(x.data() + i * nin, &out);
        g_sink = g_sink + out;
    }, o);
    iq.batched = per_batch_event([&] { q->forward(x.data(), y.data(), n_events); }, o);
    res.add("int8 (Int8Mlp)", iq);
    return res;
}

/// The timing driver compiled against the generated headers.
std::string driver_source(const std::vector<ModelDef>& defs) {
    std::string s = "#include <algorithm>\n#include <cstdio>\n#include <cstdlib>\n#include <cstring>\n#include <vector>\n#include <time.h>\n";
    for (const auto& d : defs) s += "#include \"" + d.name + ".hpp\"\n";
    s += R"(
static volatile float sink = 0.0f;
static bool wall = false;
static double now() {
    timespec ts;
    clock_gettime(wall ? CLOCK_MONOTONIC : CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}
template <class F> static double median_per_call(F fn, int repeats) {
    long inner = 1;
    for (;;) {  // calibrate: one sample of about 20 ms
        const double t0 = now();
        for (long i = 0; i < inner; ++i) fn();
        if (now() - t0 > 0.02 || inner > (1L << 24)) break;
        inner *= 2;
    }
    std::vector<double> s;
    for (int r = 0; r < repeats; ++r) {
        const double t0 = now();
        for (long i = 0; i < inner; ++i) fn();
        s.push_back((now() - t0) / static_cast<double>(inner));
    }
    std::sort(s.begin(), s.end());
    return s[s.size() / 2];
}
template <int NIN, int NOUT, class P, class B>
static int run(P predict, B predict_batch, const char* in, const char* out, long n, int repeats) {
    std::vector<float> x(static_cast<std::size_t>(n * NIN)), y(static_cast<std::size_t>(n * NOUT));
    std::FILE* f = std::fopen(in, "rb");
    if (!f || std::fread(x.data(), sizeof(float), x.size(), f) != x.size()) return 3;
    std::fclose(f);
    predict_batch(x.data(), y.data(), n);
    f = std::fopen(out, "wb");
    if (!f || std::fwrite(y.data(), sizeof(float), y.size(), f) != y.size()) return 4;
    std::fclose(f);
    long i = 0;
    const double b1 = median_per_call([&] {
        float o[NOUT];
        predict(x.data() + i * NIN, o);
        sink = sink + o[0];
        i = i + 1 == n ? 0 : i + 1;
    }, repeats);
    const double bb = median_per_call([&] { predict_batch(x.data(), y.data(), n); }, repeats) / static_cast<double>(n);
    std::printf("%.6e %.6e\n", b1, bb);
    return 0;
}
int main(int argc, char** argv) {
    if (argc != 7) return 2;
    wall = argv[6][0] == 'w';
    const long n = std::atol(argv[4]);
    const int repeats = std::atoi(argv[5]);
)";
    for (const auto& d : defs) {
        const std::string ns = "gen_" + d.name;
        s += "    if (!std::strcmp(argv[1], \"" + d.name + "\")) return run<" + ns + "::n_inputs, " + ns + "::n_outputs>(" + ns +
             "::predict, " + ns + "::predict_batch, argv[2], argv[3], n, repeats);\n";
    }
    s += "    return 5;\n}\n";
    return s;
}

/// Generates the headers, compiles the driver, runs it per model.
void run_headers(const std::vector<ModelDef>& defs, std::vector<nn::Sequential<float>>& nets, const std::vector<float>& x,
                 const std::vector<std::vector<float>>& refs, std::vector<Result>& results, const Options& o, const fs::path& dir) {
    for (std::size_t k = 0; k < defs.size(); ++k) {
        deploy::CodegenOptions co;
        co.name_space = "gen_" + defs[k].name;
        deploy::write_header((dir / (defs[k].name + ".hpp")).string(), deploy::spec_from(nets[k]), co);
    }
    std::ofstream(dir / "driver.cpp") << driver_source(defs);
    const std::string exe = (dir / "driver").string();
    const std::string base = o.cxx + " -std=c++17 -O3 -fno-exceptions -fno-rtti -I'" + dir.string() + "' '" + (dir / "driver.cpp").string() +
                             "' -o '" + exe + "' > '" + (dir / "cc.log").string() + "' 2>&1";
    std::string flags = "-O3 -march=native";
    const auto c0 = std::chrono::steady_clock::now();
    bool ok = sh(o.cxx + " -march=native -std=c++17 -O3 -fno-exceptions -fno-rtti -I'" + dir.string() + "' '" +
                 (dir / "driver.cpp").string() + "' -o '" + exe + "' > '" + (dir / "cc.log").string() + "' 2>&1") == 0;
    if (!ok) {
        flags = "-O3";
        ok = sh(base) == 0;
    }
    const double compile_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - c0).count();
    if (!ok) {
        std::printf("# generated header: '%s' failed to compile it, skipped:\n%s\n", o.cxx.c_str(), slurp(dir / "cc.log").c_str());
        return;
    }
    std::printf("# generated headers compiled by '%s %s' in %.1f s\n", o.cxx.c_str(), flags.c_str(), compile_s);
    for (std::size_t k = 0; k < defs.size(); ++k) {
        const fs::path xin = dir / (defs[k].name + "_x.bin"), yout = dir / (defs[k].name + "_y.bin"), times = dir / "times.txt";
        write_floats(xin, x);
        const int rc = sh("'" + exe + "' " + defs[k].name + " '" + xin.string() + "' '" + yout.string() + "' " +
                          std::to_string(n_events) + " " + std::to_string(o.repeats) + (o.wall ? " wall" : " cpu") + " > '" +
                          times.string() + "'");
        Timing t;
        std::istringstream in(slurp(times));
        if (rc != 0 || !(in >> t.batch1 >> t.batched)) {
            std::printf("# generated header driver failed for %s (exit %d)\n", defs[k].name.c_str(), rc);
            continue;
        }
        const std::vector<float> y = read_floats(yout, n_events);
        if (y.size() == n_events) t.max_rel = max_rel_diff(y, refs[k], &t.differ);
        results[k].add("generated header (" + flags + ")", t);
    }
}

/// PyTorch: one run of torch_inference.py over all models, with `env` (VAR=value ...) set for the
/// Python process and `label` naming the setting in the table.
void run_torch(const std::vector<ModelDef>& defs, std::vector<nn::Sequential<float>>& nets, const std::vector<float>& x,
               const std::vector<std::vector<float>>& refs, std::vector<Result>& results, const Options& o, const fs::path& dir,
               const std::string& env, const std::string& label) {
    fs::path script = fs::path(__FILE__).parent_path() / "torch_inference.py";
    if (!fs::exists(script)) {
        std::printf("PyTorch: bench/torch_inference.py not found next to %s\n", __FILE__);
        return;
    }
    if (sh(o.python + " -c 'import torch' > /dev/null 2>&1") != 0) {
        std::printf("PyTorch: not installed (%s -c 'import torch' failed)\n", o.python.c_str());
        return;
    }
    std::printf("# PyTorch run: %s\n", env.empty() ? "default environment" : env.c_str());
    std::fflush(stdout);
    std::ostringstream m;
    m << "{\"repeats\": " << o.repeats << ", \"clock\": \"" << (o.wall ? "wall" : "thread") << "\", \"models\": [";
    for (std::size_t k = 0; k < defs.size(); ++k) {
        const auto spec = deploy::spec_from(nets[k]);
        std::vector<float> w;
        for (const auto& l : spec.layers) {
            w.insert(w.end(), l.weight.begin(), l.weight.end());
            w.insert(w.end(), l.bias.begin(), l.bias.end());
        }
        const fs::path wf = dir / (defs[k].name + "_w.bin"), xf = dir / (defs[k].name + "_tx.bin"), yf = dir / (defs[k].name + "_ty.bin");
        write_floats(wf, w);
        write_floats(xf, x);
        m << (k ? ", " : "") << "{\"name\": \"" << defs[k].name << "\", \"sizes\": [";
        for (std::size_t i = 0; i < defs[k].sizes.size(); ++i) m << (i ? ", " : "") << defs[k].sizes[i];
        m << "], \"activations\": [";
        for (std::size_t i = 0; i < defs[k].acts.size(); ++i) m << (i ? ", " : "") << "\"" << activation_name(defs[k].acts[i]) << "\"";
        m << "], \"weights\": \"" << wf.string() << "\", \"events\": \"" << xf.string() << "\", \"outputs\": \"" << yf.string()
          << "\", \"batch1_calls\": " << (o.quick ? 128 : 512) << "}";
    }
    m << "]}";
    std::ofstream(dir / "manifest.json") << m.str();
    // One thread: torch.set_num_threads(1) in the script does not reach OpenBLAS's own pool.
    const std::string cmd = "env OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 " + env + (env.empty() ? "" : " ") +
                            o.python + " '" + script.string() + "' '" + (dir / "manifest.json").string() + "'";
    std::FILE* p = popen(cmd.c_str(), "r");
    if (!p) {
        std::printf("PyTorch: could not run %s\n", cmd.c_str());
        return;
    }
    char line[4096];
    std::string version;
    while (std::fgets(line, sizeof line, p)) {
        const std::string s(line);
        auto field = [&](const std::string& key) {
            const std::size_t at = s.find("\"" + key + "\": ");
            return at == std::string::npos ? std::string() : s.substr(at + key.size() + 4);
        };
        const std::string name = field("name").substr(1, field("name").find('"', 1) - 1);
        for (std::size_t k = 0; k < defs.size(); ++k) {
            if (defs[k].name != name) continue;
            Timing t;
            t.batch1 = std::atof(field("batch1_s").c_str());
            t.batched = std::atof(field("batched_s").c_str());
            const std::string v = field("torch");
            version = v.substr(1, v.find('"', 1) - 1);
            const int os_threads = std::atoi(field("os_threads").c_str());
            if (os_threads > 1) t.note = std::to_string(os_threads) + " OS threads";
            const std::vector<float> y = read_floats(dir / (name + "_ty.bin"), n_events);
            if (y.size() == n_events) t.max_rel = max_rel_diff(y, refs[k], &t.differ);
            results[k].add("PyTorch " + version + " (1 thread" + (label.empty() ? "" : ", " + label) + ")" +
                               (t.note.empty() ? "" : " [" + t.note + "]"), t);
        }
    }
    const int rc = pclose(p);
    if (rc != 0) std::printf("PyTorch: torch_inference.py exited with status %d\n", rc);
}

/// One peer's times for a structured-layer row (seconds per sample or step) and its fastest variant.
struct PeerTime {
    double b1 = NAN, bb = NAN;
    std::string variant;
};

struct LayerRow {
    std::string name, what;
    double b1 = NAN, bb = NAN, target_b1 = NAN, target_ratio_b1 = NAN;
    PeerTime torch, libtorch;
};

/// Runs a structured-layer peer (bench/torch_layers.py, or libtorch_layers: both print one JSON
/// line per row) on one thread and files its times under `peer`; false if it could not run.
bool read_layer_peer(const std::string& program, const Options& o, PeerTime LayerRow::*peer, std::vector<LayerRow>& rows) {
    const std::string cmd = "env OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 " + program + " " + std::to_string(o.repeats) +
                            " " + (o.wall ? "wall" : "thread");
    std::FILE* p = popen(cmd.c_str(), "r");
    if (!p) return false;
    char line[4096];
    while (std::fgets(line, sizeof line, p)) {
        const std::string s(line);
        auto field = [&](const std::string& key) {
            const std::size_t at = s.find("\"" + key + "\": ");
            return at == std::string::npos ? std::string() : s.substr(at + key.size() + 4);
        };
        auto text = [&](const std::string& key) {
            const std::string v = field(key);
            return v.size() > 1 && v[0] == '"' ? v.substr(1, v.find('"', 1) - 1) : std::string();
        };
        for (LayerRow& r : rows)
            if (r.name == text("name")) {
                PeerTime& t = r.*peer;
                t.b1 = std::atof(field("batch1_s").c_str());
                const std::string bb = field("batched_s");
                t.bb = bb.rfind("null", 0) == 0 ? NAN : std::atof(bb.c_str());
                t.variant = text("torch") + " " + text("variant");
            }
    }
    return pclose(p) == 0;
}

/// The structured-layer rows: tapir's fixed-size models against PyTorch's and libtorch's best variants.
std::vector<LayerRow> run_layers(const Options& o) {
    namespace dp = deploy;
    Rng rng(7);
    std::vector<LayerRow> rows;
    auto randv = [&](std::size_t n) {
        std::vector<float> v(n);
        for (float& e : v) e = static_cast<float>(rng.normal());
        return v;
    };
    {  // LSTM and GRU hidden 64, 8 inputs: one step with a caller-held state.
        nn::Sequential<float> l, g;
        l.add<nn::LSTM<float>>(8, 64, rng);
        g.add<nn::GRU<float>>(8, 64, rng);
        const auto lstm = dp::to_model<dp::ModelT<float, dp::LstmT<float, 8, 64>>>(l);
        const auto gru = dp::to_model<dp::ModelT<float, dp::GruT<float, 8, 64>>>(g);
        const std::vector<float> x = randv(8 * 64);
        std::size_t i = 0;
        const auto time_steps = [&](const auto& layer, const char* name, const char* what) {
            std::vector<float> state(128, 0.0f);
            LayerRow r{name, what, NAN, NAN, 1e-6, NAN, {}, {}};
            r.b1 = median_per_call([&] { layer.step(x.data() + 8 * (i++ & 63), state.data()); }, o);
            g_sink = state[0];
            rows.push_back(r);
        };
        time_steps(lstm->layer<0>(), "lstm64_step", "LSTM hidden 64, 8 inputs, one step with state");
        time_steps(gru->layer<0>(), "gru64_step", "GRU hidden 64, 8 inputs, one step with state");
    }
    {  // The top-tagging CNN: Conv2d 1->8 3x3 same, ReLU, MaxPool 2, Conv2d 8->16 3x3 same, ReLU, MaxPool 2, Dense 1600->64, ReLU, Dense 64->1.
        nn::ConvOptions same;
        same.same = true;
        nn::Sequential<float> net;
        net.add<nn::Conv2d<float>>(1, 8, 3, rng, same).add<nn::ReLU<float>>().add<nn::MaxPool2d<float>>(2);
        net.add<nn::Conv2d<float>>(8, 16, 3, rng, same).add<nn::ReLU<float>>().add<nn::MaxPool2d<float>>(2).add<nn::Flatten<float>>();
        net.add<nn::Dense<float>>(1600, 64, rng).add<nn::ReLU<float>>().add<nn::Dense<float>>(64, 1, rng);
        using Cnn = dp::ModelT<float, dp::Conv2dT<float, 1, 40, 40, 8, 3, 3, 1, 1, 1, 1>, dp::MaxPool2dT<float, 8, 40, 40, 2, 2>,
                               dp::Conv2dT<float, 8, 20, 20, 16, 3, 3, 1, 1, 1, 1>, dp::MaxPool2dT<float, 16, 20, 20, 2, 2>,
                               dp::FlattenT<float, 1600>, dp::DenseT<float, 1600, 64>, dp::DenseT<float, 64, 1>>;
        const auto cnn = dp::to_model<Cnn>(net);
        const std::vector<float> x = randv(256 * 1600);
        std::vector<float> y(256);
        std::size_t i = 0;
        LayerRow r{"cnn40", "top-tagging CNN, one 40x40 image (batch 256: per image)", NAN, NAN, NAN, 10.0, {}, {}};
        r.b1 = median_per_call([&] {
            cnn->forward(x.data() + 1600 * (i & 255), y.data() + (i & 255));
            ++i;
        }, o);
        r.bb = median_per_call([&] { cnn->forward(x.data(), y.data(), 256); }, o) / 256;
        g_sink = y[0];
        rows.push_back(r);
    }
    {  // PFN, 100 particles of 4 features, phi 100-100-64, F 100-1, sum pooling, batch 1.
        nn::DeepSet<float> pfn(4, {100, 100, 64}, {100, 1}, rng);
        using Pfn = dp::DeepSetT<float, 100, dp::Mlp<float, 4, 100, 100, 64>, dp::Mlp<float, 64, 100, 1>>;
        auto fixed = std::make_unique<Pfn>();
        dp::load_model(*fixed, pfn);
        const std::vector<float> x = randv(400);
        const std::vector<float> mask(100, 1.0f);
        float y = 0.0f;
        LayerRow r{"pfn100", "PFN, 100 particles, phi 100-100-64, F 100-1, batch 1", NAN, NAN, NAN, 20.0, {}, {}};
        r.b1 = median_per_call([&] { fixed->forward(x.data(), mask.data(), &y); }, o);
        g_sink = y;
        rows.push_back(r);
    }
    {  // Conv1d 64 -> 64 channels, kernel 3, 'same', 128 samples.
        nn::ConvOptions same;
        same.same = true;
        nn::Sequential<float> net;
        net.add<nn::Conv1d<float>>(64, 64, 3, rng, same);
        using C1 = dp::ModelT<float, dp::Conv1dT<float, 64, 128, 64, 3, 1, 1>>;
        const auto c1 = dp::to_model<C1>(net);
        const std::vector<float> x = randv(64 * 128);
        std::vector<float> y(64 * 128);
        LayerRow r{"conv1d64", "Conv1d 64->64, kernel 3, 128 samples, batch 1", NAN, NAN, NAN, NAN, {}, {}};
        r.b1 = median_per_call([&] { c1->forward(x.data(), y.data()); }, o);
        g_sink = y[0];
        rows.push_back(r);
    }

    const fs::path script = fs::path(__FILE__).parent_path() / "torch_layers.py";
    if (!(o.torch && fs::exists(script) && sh(o.python + " -c 'import torch' > /dev/null 2>&1") == 0 &&
          read_layer_peer(o.python + " '" + script.string() + "'", o, &LayerRow::torch, rows)))
        std::printf("\nPyTorch: not run for the structured layers\n");
#ifdef TAPIR_LIBTORCH_LAYERS
    if (!o.libtorch) std::printf("libtorch: skipped (--no-libtorch)\n");
    else if (!read_layer_peer("'" TAPIR_LIBTORCH_LAYERS "'", o, &LayerRow::libtorch, rows))
        std::printf("libtorch: %s did not run\n", TAPIR_LIBTORCH_LAYERS);
#else
    std::printf("libtorch: not built (install libtorch-dev)\n");
#endif
    std::printf("\nStructured layers (deploy::ModelT; one thread; batch 1 in us per sample or step, batched in us per sample;"
                " x: the peer's time over tapir's)\n");
    std::printf("%-58s %9s %9s %9s %9s %9s %9s %8s %8s %8s %8s  %s\n", "model", "tapir b1", "torch b1", "ltorch b1", "tapir bat",
                "torch bat", "ltorch bt", "torch x", "ltorch x", "t bat x", "lt bat x", "variants / target");
    for (const LayerRow& r : rows) {
        const auto ratio = [](double peer, double tapir) {
            char b[32] = "-";
            if (!std::isnan(peer) && !std::isnan(tapir)) std::snprintf(b, sizeof b, "%.1fx", peer / tapir);
            return std::string(b);
        };
        char target[96] = "";
        if (!std::isnan(r.target_b1))
            std::snprintf(target, sizeof target, "; target <= %.1f us: %s", r.target_b1 * 1e6, r.b1 <= r.target_b1 ? "met" : "NOT met");
        else if (!std::isnan(r.target_ratio_b1) && !std::isnan(r.torch.b1))
            std::snprintf(target, sizeof target, "; target >= %.0fx PyTorch at batch 1: %s", r.target_ratio_b1,
                          r.torch.b1 / r.b1 >= r.target_ratio_b1 ? "met" : "NOT met");
        const std::string variants = (r.torch.variant.empty() ? "" : "PyTorch " + r.torch.variant) +
                                     (r.libtorch.variant.empty() ? "" : "; libtorch " + r.libtorch.variant);
        std::printf("%-58s %9.3f %9.3f %9.3f %9.3f %9.3f %9.3f %8s %8s %8s %8s  %s%s\n", r.what.c_str(), r.b1 * 1e6, r.torch.b1 * 1e6,
                    r.libtorch.b1 * 1e6, r.bb * 1e6, r.torch.bb * 1e6, r.libtorch.bb * 1e6, ratio(r.torch.b1, r.b1).c_str(),
                    ratio(r.libtorch.b1, r.b1).c_str(), ratio(r.torch.bb, r.bb).c_str(), ratio(r.libtorch.bb, r.bb).c_str(),
                    variants.empty() ? "-" : variants.c_str(), target);
    }
    return rows;
}

/// A number for the JSON file: null for NaN.
std::string json_number(double v) {
    char b[32];
    std::snprintf(b, sizeof b, "%.6e", v);
    return std::isnan(v) ? std::string("null") : std::string(b);
}

/// The structured-layer rows as a JSON array: tapir's, PyTorch's and libtorch's seconds per sample.
std::string layers_json(const std::vector<LayerRow>& rows) {
    std::string s = "[";
    for (const LayerRow& r : rows) {
        s += std::string(&r == &rows.front() ? "" : ", ") + "{\"name\": \"" + r.name + "\", \"tapir_batch1_s\": " + json_number(r.b1) +
             ", \"tapir_batched_s\": " + json_number(r.bb);
        for (const auto& [label, t] : {std::make_pair("torch", &r.torch), std::make_pair("libtorch", &r.libtorch)})
            s += std::string(", \"") + label + "_batch1_s\": " + json_number(t->b1) + ", \"" + label + "_batched_s\": " + json_number(t->bb) +
                 ", \"" + label + "_variant\": \"" + t->variant + "\"";
        s += "}";
    }
    return s + "]";
}

} // namespace

int main(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        if (o.parse(i, argc, argv)) continue;
        const std::string a = argv[i];
        if (a == "--no-header") o.header = false;
        else if (a == "--layers") o.layers_only = true;
        else if (a == "--no-libtorch") o.libtorch = false;
        else if (a == "--cxx" && i + 1 < argc) o.cxx = argv[++i];
        else {
            std::fprintf(stderr, "usage: bench_inference [--quick] [--wall] [--json FILE] [--cxx COMPILER] [--python PYTHON] [--no-torch] [--no-header] [--layers] [--no-libtorch]\n");
            return 2;
        }
    }
    using A = Activation;
    const std::vector<ModelDef> defs = {
        {"course", "course classifier 8-24-16-8-1", {8, 24, 16, 8, 1}, {A::relu, A::relu, A::relu, A::sigmoid}},
        {"mlp3x64", "3x64 ReLU MLP 8-64-64-64-1", {8, 64, 64, 64, 1}, {A::relu, A::relu, A::relu, A::none}},
        {"mlp3x256", "3x256 ReLU MLP 8-256-256-256-1", {8, 256, 256, 256, 1}, {A::relu, A::relu, A::relu, A::none}},
    };
    std::vector<float> x(n_events * 8);
    Rng rng(99);
    for (float& v : x) v = static_cast<float>(rng.normal());

    bench::print_machine();
    {
        std::ifstream la("/proc/loadavg");
        std::string l1, l5;
        la >> l1 >> l5;
        std::printf("# load average %s (1 min) %s (5 min) on %u logical CPUs; medians of %d samples, %s time\n", l1.c_str(),
                    l5.c_str(), static_cast<unsigned>(sysconf(_SC_NPROCESSORS_ONLN)), o.repeats, o.wall ? "wall" : "thread CPU");
    }

    if (o.layers_only) {
        const std::vector<LayerRow> layers = run_layers(o);
        if (!o.json.empty())
            std::ofstream(o.json) << "{\"machine\": " << bench::machine_json() << ", \"layers\": " << layers_json(layers) << "}\n";
        return 0;
    }
    std::vector<nn::Sequential<float>> nets;
    for (std::size_t k = 0; k < defs.size(); ++k) nets.push_back(make_net(defs[k], 1000 + k));
    std::vector<Result> results(defs.size());
    std::vector<std::vector<float>> refs(defs.size());
    results[0] = run_model<deploy::Mlp<float, 8, 24, 16, 8, 1>, deploy::Int8Mlp<8, 24, 16, 8, 1>>(defs[0], nets[0], x, o, refs[0]);
    results[1] = run_model<deploy::Mlp<float, 8, 64, 64, 64, 1>, deploy::Int8Mlp<8, 64, 64, 64, 1>>(defs[1], nets[1], x, o, refs[1]);
    results[2] = run_model<deploy::Mlp<float, 8, 256, 256, 256, 1>, deploy::Int8Mlp<8, 256, 256, 256, 1>>(defs[2], nets[2], x, o, refs[2]);

    const fs::path dir = fs::temp_directory_path() / ("tapir_bench_inference_" + std::to_string(static_cast<long long>(getpid())));
    fs::create_directories(dir);
    if (o.header) run_headers(defs, nets, x, refs, results, o, dir);
    if (o.torch) {
        // PyTorch as shipped, then tuned as a careful user would: OpenBLAS's AVX-512 kernels
        // forced, and glibc's malloc kept from returning memory to the OS between calls
        // (large thresholds for mmap and trim). Ratios are against the fastest setting.
        const std::string blas = "OPENBLAS_CORETYPE=SkylakeX";
        const std::string malloc_tune = "GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824";
        run_torch(defs, nets, x, refs, results, o, dir, "", "");
        if (!o.quick) {
            run_torch(defs, nets, x, refs, results, o, dir, blas, "SkylakeX");
            run_torch(defs, nets, x, refs, results, o, dir, malloc_tune, "malloc tuned");
        }
        run_torch(defs, nets, x, refs, results, o, dir, blas + " " + malloc_tune, "SkylakeX, malloc tuned");
    }
    fs::remove_all(dir);

    std::printf("\nTimes per event; ratios: the best PyTorch setting's time over this path's (higher is faster).\n");
    std::printf("%-31s %-50s %12s %14s %10s %10s %20s\n", "model", "path", "batch 1 [us]", "batched [ns]", "b1 vs pt",
                "batch vs pt", "max diff (differ)");
    for (const Result& r : results) {
        const double torch_b1 = best_torch(r, &Timing::batch1), torch_bb = best_torch(r, &Timing::batched);
        for (const std::string& path : r.order) {
            const Timing& t = r.paths.at(path);
            char ratio1[32] = "-", ratiob[32] = "-";
            if (!std::isnan(torch_b1)) std::snprintf(ratio1, sizeof ratio1, "%.1fx", torch_b1 / t.batch1);
            if (!std::isnan(torch_bb)) std::snprintf(ratiob, sizeof ratiob, "%.1fx", torch_bb / t.batched);
            char acc[48] = "(reference)";
            if (path.rfind("dynamic", 0) != 0)
                std::snprintf(acc, sizeof acc, "%.2g (%zu/%zu)", t.max_rel, t.differ, n_events);
            std::printf("%-31s %-50s %12.3f %14.1f %10s %10s %20s\n", (&path == &r.order.front() ? r.model : std::string()).c_str(),
                        path.c_str(), t.batch1 * 1e6, t.batched * 1e9, ratio1, ratiob, acc);
        }
    }
    // The issue's targets, for 3x64 at batch 1.
    const Result& r64 = results[1];
    double fixed_b1 = NAN;
    for (const auto& kv : r64.paths)
        if (kv.first.rfind("fixed-size", 0) == 0) fixed_b1 = kv.second.batch1;
    const double torch_b1 = best_torch(r64, &Timing::batch1);
    std::printf("\n3x64 batch 1, fixed-size: %.3f us per event (target < 0.3 us): %s", fixed_b1 * 1e6, fixed_b1 < 0.3e-6 ? "met" : "NOT met");
    if (!std::isnan(torch_b1))
        std::printf("; %.0fx faster than the best PyTorch setting, %.2f us (target >= 50x): %s\n", torch_b1 / fixed_b1,
                    torch_b1 * 1e6, torch_b1 / fixed_b1 >= 50 ? "met" : "NOT met");
    else
        std::printf("\n");

    const std::vector<LayerRow> layers = run_layers(o);

    if (!o.json.empty()) {
        std::ofstream f(o.json);
        f << "{\"machine\": " << bench::machine_json() << ", \"results\": [";
        for (std::size_t k = 0; k < results.size(); ++k) {
            f << (k ? ", " : "") << "{\"model\": \"" << defs[k].name << "\", \"paths\": [";
            for (std::size_t i = 0; i < results[k].order.size(); ++i) {
                const Timing& t = results[k].paths.at(results[k].order[i]);
                f << (i ? ", " : "") << "{\"path\": \"" << results[k].order[i] << "\", \"batch1_s\": " << json_number(t.batch1)
                  << ", \"batched_s_per_event\": " << json_number(t.batched) << ", \"max_rel_diff\": " << json_number(t.max_rel) << "}";
            }
            f << "]}";
        }
        f << "], \"layers\": " << layers_json(layers) << "}\n";
    }
    return 0;
}
