// Model files: CRC-32, the byte layout, bit-exact round trips, resumed training, and every failure
// mode with its exact message; loading is all or nothing.
#include <doctest/doctest.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <tapir/data/random.hpp>
#include <tapir/io/crc32.hpp>
#include <tapir/io/model_file.hpp>
#include <tapir/nn/fit.hpp>
#include <tapir/nn/layers.hpp>
#include <tapir/nn/model_file.hpp>
#include <tapir/nn/sequential.hpp>
#include <tapir/optim/optim.hpp>
#include <vector>

using namespace tapir;
using namespace tapir::io;

namespace {

/// Three tensors shaped like a small MLP's: 0.weight (8, 24), 0.bias (8,), 2.weight (32, 32).
template <class T>
struct Net {
    Parameter<T> w0, b0, w2;
    explicit Net(std::uint64_t seed, std::size_t in = 24) : w0("w0", Tensor<T>(Shape{8, in})), b0("b0", Tensor<T>(Shape{8})), w2("w2", Tensor<T>(Shape{32, 32})) {
        Rng r(seed);
        for (Parameter<T>* p : params())
            for (T& x : p->value) x = static_cast<T>(r.normal());
    }
    NamedParameters<T> named() { return {{"0.weight", &w0}, {"0.bias", &b0}, {"2.weight", &w2}}; }
    std::vector<Parameter<T>*> params() { return {&w0, &b0, &w2}; }
};

template <class T>
bool bit_equal(const Tensor<T>& a, const Tensor<T>& b) {
    return a.shape() == b.shape() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

std::string temp_path(const char* stem) {
    const auto tick = std::chrono::steady_clock::now().time_since_epoch().count();
    return (std::filesystem::temp_directory_path() /
            (std::string("tapir_") + stem + "_" + std::to_string(tick) + "_" + std::to_string(reinterpret_cast<std::uintptr_t>(&tick)) + ".tpr"))
        .string();
}

std::string message_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const format_error& e) {
        return e.what();
    }
    return "(no format_error)";
}

/// A deterministic, non-linear gradient coupling all three tensors (no tape needed: the file, not
/// the autodiff, is under test): g = tanh(w) + 0.1 x[k] + 0.01 * sum(b0).
template <class T>
void compute_grad(Net<T>& n, const Tensor<T>& x) {
    T sb = T(0);
    for (const T v : n.b0.value) sb += v;
    std::size_t k = 0;
    for (Parameter<T>* p : n.params())
        for (std::size_t i = 0; i < p->size(); ++i, ++k)
            p->grad[i] = std::tanh(p->value[i]) + T(0.1) * x[k % x.size()] + T(0.01) * sb;
}

} // namespace

TEST_CASE("CRC-32/ISO-HDLC check value and incremental use") {
    CHECK(crc32("123456789", 9) == 0xCBF43926u);
    CHECK(crc32("", 0) == 0u);
    CHECK(crc32("a", 1) == 0xE8B7BE43u);
    const std::string s = "The quick brown fox jumps over the lazy dog";
    CHECK(crc32(s.data(), s.size()) == 0x414FA339u);
    CHECK(crc32_update(crc32(s.data(), 10), s.data() + 10, s.size() - 10) == 0x414FA339u);
}

TEST_CASE("The byte layout is little-endian and explicit (a file written by hand)") {
    Parameter<double> w("w", Tensor<double>(Shape{2}, {1.0, -2.0}));
    const NamedParameters<double> np{{"w", &w}};
    // Built by hand from the format description (CRC from Python's zlib.crc32).
    const unsigned char expect[] = {0x54, 0x41, 0x50, 0x49, 0x52, 0x00, 0x01, 0x00, 0x00, 0x00, 0x02, 0x3e, 0x00, 0x00, 0x00, 0x00,
                                    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x77,
                                    0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xf0,
                                    0x3f, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc0, 0x00, 0x8c, 0x4e, 0xb2, 0xe3};
    const std::vector<std::uint8_t> bytes = save_model_to_bytes(np);
    REQUIRE(bytes.size() == sizeof expect);
    CHECK(std::memcmp(bytes.data(), expect, sizeof expect) == 0);
    w.value.fill(0.0);
    load_model_from_bytes(expect, sizeof expect, np);
    CHECK(w.value[0] == 1.0);
    CHECK(w.value[1] == -2.0);
    const ModelFileInfo info = inspect_model_bytes(expect, sizeof expect);
    CHECK(info.version == 1);
    CHECK(info.dtype == "float64");
    REQUIRE(info.parameters.size() == 1);
    CHECK(info.parameters[0].first == "w");
    CHECK(info.parameters[0].second == Shape{2});
    CHECK_FALSE(info.has_optimizer);
}

TEST_CASE_TEMPLATE("Round trips are bit-exact, special values included (file and memory)", T, float, double) {
    Net<T> a(1);
    a.b0.value[0] = std::numeric_limits<T>::quiet_NaN();
    a.b0.value[1] = -T(0);
    a.b0.value[2] = std::numeric_limits<T>::infinity();
    a.b0.value[3] = std::numeric_limits<T>::denorm_min();
    a.b0.value[4] = std::numeric_limits<T>::max();
    const Net<T> saved = a;
    const std::string path = temp_path("roundtrip");
    save_model(path, a.named());
    const std::string mem = save_model_to_string(a.named());
    for (Parameter<T>* p : a.params()) p->value.fill(T(7));  // modify
    SUBCASE("file") { load_model(path, a.named()); }
    SUBCASE("string") { load_model_from_string(mem, a.named()); }
    CHECK(bit_equal(a.w0.value, saved.w0.value));
    CHECK(bit_equal(a.b0.value, saved.b0.value));
    CHECK(bit_equal(a.w2.value, saved.w2.value));
    const ModelFileInfo info = inspect_model(path);
    CHECK(info.dtype == (sizeof(T) == 4 ? "float32" : "float64"));
    CHECK(info.parameters[2].first == "2.weight");
    CHECK(info.parameters[2].second == Shape{32, 32});
    std::remove(path.c_str());
}

TEST_CASE("Optimiser state round trip: a resumed run is bit-identical to an uninterrupted one") {
    Rng r(3);
    Tensor<double> x(Shape{4, 24});
    for (double& v : x) v = r.normal();
    using Make = std::function<std::unique_ptr<optim::Optimizer<double>>(std::vector<Parameter<double>*>)>;
    const std::vector<std::pair<const char*, Make>> makers = {
        {"Adam", [](std::vector<Parameter<double>*> p) { return std::unique_ptr<optim::Optimizer<double>>(new optim::Adam<double>(p, 1e-2)); }},
        {"AdamW keras", [](std::vector<Parameter<double>*> p) {
             return std::unique_ptr<optim::Optimizer<double>>(new optim::AdamW<double>(p, 1e-2, 0.9, 0.99, 1e-7, 0.1, optim::AdamEps::keras));
         }},
        {"SGD Nesterov", [](std::vector<Parameter<double>*> p) {
             return std::unique_ptr<optim::Optimizer<double>>(new optim::SGD<double>(p, 1e-2, 0.9, 0.0, 1e-4, true));
         }},
        {"RMSprop centered", [](std::vector<Parameter<double>*> p) {
             return std::unique_ptr<optim::Optimizer<double>>(new optim::RMSprop<double>(p, 1e-3, 0.9, 1e-8, 0.0, 0.5, true));
         }},
        {"Adagrad", [](std::vector<Parameter<double>*> p) {
             return std::unique_ptr<optim::Optimizer<double>>(new optim::Adagrad<double>(p, 1e-2, 0.01, 0.0, 0.1));
         }},
    };
    for (const auto& mk : makers) {
        INFO(mk.first);
        // Uninterrupted: 10 steps, with a per-step schedule.
        Net<double> ref(11);
        auto opt_ref = mk.second(ref.params());
        optim::InverseTimeLR<double> sched_ref(*opt_ref, 0.05);
        for (int s = 0; s < 10; ++s) {
            compute_grad(ref, x);
            opt_ref->step();
            sched_ref.step();
        }
        // Interrupted: 5 steps, save, load into a fresh model and optimiser, 5 more steps.
        Net<double> first(11);
        auto opt_first = mk.second(first.params());
        optim::InverseTimeLR<double> sched_first(*opt_first, 0.05);
        for (int s = 0; s < 5; ++s) {
            compute_grad(first, x);
            opt_first->step();
            sched_first.step();
        }
        const std::string path = temp_path("resume");
        save_model(path, first.named(), opt_first.get());

        Net<double> resumed(99);  // different initial values, overwritten by the load
        auto opt_resumed = mk.second(resumed.params());
        optim::InverseTimeLR<double> sched(*opt_resumed, 0.05);  // built before the load: base rate 1e-2 etc.
        load_model(path, resumed.named(), opt_resumed.get());
        std::remove(path.c_str());
        CHECK(opt_resumed->iterations() == 5);
        CHECK(opt_resumed->learning_rate() == opt_first->learning_rate());  // the scheduled rate was saved
        sched.set_count(opt_resumed->iterations());
        CHECK(opt_resumed->learning_rate() == opt_first->learning_rate());
        for (int s = 0; s < 5; ++s) {
            compute_grad(resumed, x);
            opt_resumed->step();
            sched.step();
        }
        CHECK(opt_resumed->iterations() == 10);
        CHECK(bit_equal(resumed.w0.value, ref.w0.value));
        CHECK(bit_equal(resumed.b0.value, ref.b0.value));
        CHECK(bit_equal(resumed.w2.value, ref.w2.value));
        // And the run did move: the parameters are not the initial ones.
        CHECK_FALSE(bit_equal(resumed.w2.value, Net<double>(11).w2.value));
    }
}

TEST_CASE("Float Adam: 5 steps + save + load + 5 steps == 10 steps, bit for bit (in memory)") {
    Rng r(5);
    Tensor<float> x(Shape{4, 24});
    for (float& v : x) v = static_cast<float>(r.normal());
    Net<float> ref(2), run(2);
    optim::Adam<float> opt_ref(ref.params(), 1e-2f), opt_run(run.params(), 1e-2f);
    for (int s = 0; s < 10; ++s) {
        compute_grad(ref, x);
        opt_ref.step();
    }
    for (int s = 0; s < 5; ++s) {
        compute_grad(run, x);
        opt_run.step();
    }
    const std::vector<std::uint8_t> file = save_model_to_bytes(run.named(), &opt_run);
    Net<float> fresh(8);
    optim::Adam<float> opt_fresh(fresh.params(), 1e-3f);
    load_model_from_bytes(file, fresh.named(), &opt_fresh);
    CHECK(opt_fresh.learning_rate() == 1e-2f);
    for (int s = 0; s < 5; ++s) {
        compute_grad(fresh, x);
        opt_fresh.step();
    }
    CHECK(bit_equal(fresh.w0.value, ref.w0.value));
    CHECK(bit_equal(fresh.w2.value, ref.w2.value));
    const ModelFileInfo info = inspect_model_bytes(file.data(), file.size());
    CHECK(info.has_optimizer);
    CHECK(info.optimizer == "Adam");
    CHECK(info.iterations == 5);
    CHECK(info.learning_rate == static_cast<double>(1e-2f));
    REQUIRE(info.optimizer_state.size() == 6);
    CHECK(info.optimizer_state[5].first == "exp_avg_sq[2]");
    // Loading weights only (no optimiser) ignores the optimiser section.
    Net<float> weights_only(9);
    load_model_from_bytes(file, weights_only.named());
    CHECK(bit_equal(weights_only.w0.value, run.w0.value));
}

TEST_CASE("Failure modes: each with its message, and nothing is modified") {
    Net<float> a(1);
    const std::string good = save_model_to_string(a.named());
    Net<float> b(2);
    const Net<float> b_before = b;
    auto load = [&b](const std::string& data) { return message_of([&] { load_model_from_string(data, b.named(), nullptr, "model.tpr"); }); };
    auto unchanged = [&] { return bit_equal(b.w0.value, b_before.w0.value) && bit_equal(b.b0.value, b_before.b0.value) && bit_equal(b.w2.value, b_before.w2.value); };
    // Layout: 27-byte header; 0.weight: 4 + 8 + 1 + 16 + 768 = 797; 0.bias: 4 + 6 + 1 + 8 + 32 = 51;
    // 2.weight: 4 + 8 + 1 + 16 = 29 bytes before its 4096 bytes of data at offset 904.
    REQUIRE(good.size() == 27 + 797 + 51 + 29 + 4096 + 1 + 4);

    SUBCASE("truncated in a tensor's data") {
        CHECK(load(good.substr(0, 904 + 100)) == "model.tpr: truncated: expected 4096 bytes of data for tensor '2.weight', file ends after 100");
    }
    SUBCASE("truncated elsewhere") {
        CHECK(load(good.substr(0, 10)) == "model.tpr: truncated: file ends inside the 27-byte header, after 10 bytes");
        CHECK(load(good.substr(0, 3)) == "model.tpr: truncated: file ends inside the 27-byte header, after 3 bytes");
        CHECK(load(good.substr(0, 27 + 797 + 6)) == "model.tpr: truncated: file ends inside the name of tensor #1, after 830 bytes");
        CHECK(load(good.substr(0, 27 + 797 + 51 + 20)) == "model.tpr: truncated: file ends inside the shape of tensor '2.weight', after 895 bytes");
        CHECK(load(good.substr(0, good.size() - 5)) == "model.tpr: truncated: file ends inside the optimizer section flag, after 5000 bytes");
        CHECK(load(good.substr(0, good.size() - 2)) == "model.tpr: truncated: file ends inside the CRC-32 checksum, after 5003 bytes");
        CHECK(load(good.substr(0, 30)) == "model.tpr: truncated: file ends inside the name of tensor #0, after 30 bytes");
    }
    SUBCASE("corrupted: any changed byte after the magic and version") {
        std::string bad = good;
        bad[2000] = static_cast<char>(bad[2000] ^ 0x10);
        CHECK(load(bad) == "model.tpr: CRC mismatch (file is corrupted)");
        bad = good;
        bad[10] = 1 ^ 3;  // dtype
        CHECK(load(bad) == "model.tpr: CRC mismatch (file is corrupted)");
        bad = good;
        bad[11] = static_cast<char>(bad[11] + 1);  // declared size one too large
        CHECK(load(bad) == "model.tpr: CRC mismatch (file is corrupted)");
        bad = good;
        bad[11] = static_cast<char>(bad[11] - 1);  // one too small
        CHECK(load(bad) == "model.tpr: CRC mismatch (file is corrupted)");
        bad = good;
        bad[good.size() - 1] = static_cast<char>(bad[good.size() - 1] ^ 1);  // the CRC itself
        CHECK(load(bad) == "model.tpr: CRC mismatch (file is corrupted)");
    }
    SUBCASE("trailing bytes") {
        CHECK(load(good + "xyz") == "model.tpr: 3 unexpected bytes after the end of the model data (the header declares 5005 bytes, the file has 5008)");
    }
    SUBCASE("not a tapir file, other version") {
        CHECK(load("") == "model.tpr: not a tapir model file (the file is empty)");
        CHECK(load("PK\x03\x04 a zip file") == "model.tpr: not a tapir model file (no \"TAPIR\" magic at the start)");
        CHECK(load("TAPIS") == "model.tpr: not a tapir model file (no \"TAPIR\" magic at the start)");
        std::string v2 = good;
        v2[6] = 2;
        v2[6] = 4;  // versions 2 (buffers) and 3 (sections) are read now: the next one is refused
        CHECK(load(v2) == "model.tpr: unsupported format version 4 (this build of tapir reads versions 1 to 3)");
    }
    SUBCASE("mismatched model: shape, names, count, dtype") {
        Net<float> other(3, 32);
        const std::string f = save_model_to_string(other.named());
        CHECK(load(f) == "model.tpr: parameter '0.weight' has shape (8, 32) in the file but (8, 24) in the model");
        Net<float> c(4);
        CHECK(load(save_model_to_string(NamedParameters<float>{{"0.weight", &c.w0}, {"0.b", &c.b0}, {"2.weight", &c.w2}})) ==
              "model.tpr: parameter #1 is '0.b' in the file but '0.bias' in the model");
        CHECK(load(save_model_to_string(NamedParameters<float>{{"0.weight", &c.w0}, {"0.bias", &c.b0}})) ==
              "model.tpr: the file has 2 parameters but the model has 3");
        Net<double> d(5);
        CHECK(load(save_model_to_string(d.named())) == "model.tpr: the file holds float64 values but the model is float32");
    }
    SUBCASE("the last tensor mismatching leaves the earlier ones untouched") {
        Net<float> c(6);
        Parameter<float> w2_small("w2", Tensor<float>(Shape{32, 31}));
        CHECK(load(save_model_to_string(NamedParameters<float>{{"0.weight", &c.w0}, {"0.bias", &c.b0}, {"2.weight", &w2_small}})) ==
              "model.tpr: parameter '2.weight' has shape (32, 31) in the file but (32, 32) in the model");
    }
    CHECK(unchanged());
}

TEST_CASE("Optimiser section mismatches fail before anything is loaded") {
    Net<double> a(1), b(2);
    const Net<double> b_before = b;
    optim::Adam<double> adam_a(a.params(), 1e-3);
    optim::SGD<double> sgd_b(b.params(), 0.1, 0.9);
    optim::Adam<double> adam_b(b.params(), 1e-3);
    auto msg = [](const std::string& data, NamedParameters<double> np, optim::Optimizer<double>* o) {
        return message_of([&] { load_model_from_string(data, np, o, "ckpt.tpr"); });
    };
    CHECK(msg(save_model_to_string(a.named()), b.named(), &adam_b) ==
          "ckpt.tpr: the file holds no optimizer state (it was saved without an optimizer)");
    CHECK(msg(save_model_to_string(a.named(), &adam_a), b.named(), &sgd_b) ==
          "ckpt.tpr: the file holds the state of optimizer 'Adam' but the optimizer is 'SGD'");
    // An optimiser over fewer parameters: fewer state tensors.
    optim::Adam<double> adam_two(std::vector<Parameter<double>*>{&b.w0, &b.b0}, 1e-3);
    CHECK(msg(save_model_to_string(a.named(), &adam_a), b.named(), &adam_two) ==
          "ckpt.tpr: the file has 6 Adam state tensors but the optimizer has 4");
    // Same count, different order of parameters in the optimiser: a state shape differs.
    optim::Adam<double> adam_swapped(std::vector<Parameter<double>*>{&b.b0, &b.w0, &b.w2}, 1e-3);
    CHECK(msg(save_model_to_string(a.named(), &adam_a), b.named(), &adam_swapped) ==
          "ckpt.tpr: optimizer state 'exp_avg[0]' has shape (8, 24) in the file but (8,) in the optimizer");
    CHECK(bit_equal(b.w0.value, b_before.w0.value));
    CHECK(bit_equal(b.w2.value, b_before.w2.value));
    CHECK(adam_b.iterations() == 0);
}

TEST_CASE("Bad arguments and I/O errors") {
    Net<float> a(1);
    CHECK_THROWS_WITH_AS(save_model_to_string(NamedParameters<float>{{"x", &a.w0}, {"x", &a.b0}}),
                         "save_model: parameter name 'x' is used twice (#0 and #1)", value_error);
    CHECK_THROWS_WITH_AS(save_model_to_string(NamedParameters<float>{{"x", nullptr}}), "save_model: parameter #0 ('x') is a null pointer",
                         value_error);
    const std::string missing = (std::filesystem::temp_directory_path() / "tapir_no_such_dir" / "m.tpr").string();
    CHECK(message_of([&] { load_model(missing, a.named()); }) == "load_model: cannot open '" + missing + "': No such file or directory");
    CHECK(message_of([&] { save_model(missing, a.named()); }) ==
          "save_model: cannot open '" + missing + ".tmp' for writing: No such file or directory");
}

TEST_CASE("Robustness: every truncation and many random corruptions give format_error, never a crash") {
    Parameter<double> w("w", Tensor<double>(Shape{3, 2}, {1, 2, 3, 4, 5, 6})), v("v", Tensor<double>(Shape{2}, {7, 8}));
    optim::RMSprop<double> opt({&w, &v}, 0.01, 0.99, 1e-8, 0.0, 0.9, true);
    w.grad.fill(0.5);
    v.grad.fill(-0.25);
    opt.step();
    const NamedParameters<double> np{{"w", &w}, {"v", &v}};
    const std::vector<std::uint8_t> good = save_model_to_bytes(np, &opt);
    const Tensor<double> w_before = w.value;
    int errors = 0;
    for (std::size_t n = 0; n < good.size(); ++n) {
        try {
            load_model_from_bytes(good.data(), n, np, &opt);
        } catch (const format_error&) {
            ++errors;
        }
    }
    CHECK(errors == static_cast<int>(good.size()));
    Rng r(17);
    int ok = 0;
    for (int trial = 0; trial < 3000; ++trial) {
        std::vector<std::uint8_t> bad = good;
        const int flips = 1 + static_cast<int>(r.uniform_int(3));
        for (int f = 0; f < flips; ++f) bad[r.uniform_int(bad.size())] ^= static_cast<std::uint8_t>(1 + r.uniform_int(255));
        if (bad == good) continue;  // two flips cancelled out
        try {
            (void)inspect_model_bytes(bad.data(), bad.size());
            load_model_from_bytes(bad, np, &opt);
            ++ok;
        } catch (const format_error&) {
        }
    }
    CHECK(ok == 0);
    CHECK(bit_equal(w.value, w_before));
    CHECK(opt.iterations() == 1);
}

// ---- format version 2: buffers ------------------------------------------------------------------

namespace {
/// A version-1 file written by tapir before buffers were saved (parameters "0.weight" (2, 3) =
/// -0.5, -0.25, ..., 0.75 and "0.bias" (3,) = 1.5, 2.5, 3.5, float64), kept byte for byte.
const unsigned char version1_file[] = {
    0x54, 0x41, 0x50, 0x49, 0x52, 0x00, 0x01, 0x00, 0x00, 0x00, 0x02, 0x98, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x30,
    0x2e, 0x77, 0x65, 0x69, 0x67, 0x68, 0x74, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xe0, 0xbf,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xd0, 0xbf, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xd0, 0x3f, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xe0, 0x3f,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xe8, 0x3f, 0x06, 0x00, 0x00, 0x00, 0x30, 0x2e, 0x62, 0x69,
    0x61, 0x73, 0x01, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0xf8, 0x3f, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x40, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x0c, 0x40, 0x00, 0x97, 0x4b, 0x32, 0x5f};

/// Puts a correct size field and CRC on a file edited by hand, so that the parser sees the edit.
void repair(std::string& f) {
    for (int k = 0; k < 8; ++k) f[11 + static_cast<std::size_t>(k)] = static_cast<char>(static_cast<std::uint64_t>(f.size()) >> (8 * k));
    const std::uint32_t c = crc32(f.data(), f.size() - 4);
    for (int k = 0; k < 4; ++k) f[f.size() - 4 + static_cast<std::size_t>(k)] = static_cast<char>(c >> (8 * k));
}

/// 3 -> 4 -> BatchNorm -> ReLU -> 1, trained by fit() so that the running statistics move.
nn::Sequential<double> batch_norm_model(std::uint64_t seed) {
    Rng rng(seed);
    nn::Sequential<double> m;
    m.add<nn::Dense<double>>(3, 4, rng).add<nn::BatchNorm<double>>(4).add<nn::ReLU<double>>().add<nn::Dense<double>>(4, 1, rng);
    return m;
}
} // namespace

TEST_CASE("Version 2 keeps BatchNorm running statistics: a trained model predicts identically after a round trip") {
    nn::Sequential<double> m = batch_norm_model(1);
    Rng rng(2);
    Tensor<double> x(Shape{128, 3}), y(Shape{128, 1});
    for (std::size_t i = 0; i < 128; ++i) {
        for (std::size_t k = 0; k < 3; ++k) x[i * 3 + k] = rng.normal(2.0, 3.0);
        y[i] = x[i * 3] > 2.0 ? 1.0 : 0.0;
    }
    optim::Adam<double> adam(m.parameters(), 0.01);
    nn::FitOptions<double> o;
    o.epochs = 3;
    o.verbose = nn::Verbosity::quiet;
    nn::fit(m, x, y, adam, o);
    const auto& bn = static_cast<const nn::BatchNorm<double>&>(m[1]);
    CHECK(std::abs(bn.running_mean[0]) > 0.1);  // far from the initial (0, 1)

    const std::string path = temp_path("bn");
    nn::save_model(path, m);
    const ModelFileInfo info = inspect_model(path);
    CHECK(info.version == 2);
    REQUIRE(info.buffers.size() == 2);
    CHECK(info.buffers[0].first == "1.running_mean");
    CHECK(info.buffers[1].first == "1.running_var");
    CHECK(info.buffers[1].second == Shape{4});

    nn::Sequential<double> fresh = batch_norm_model(3);
    nn::load_model(path, fresh);
    const Tensor<double> p0 = nn::predict(m, x), p1 = nn::predict(fresh, x);
    CHECK(bit_equal(p0, p1));

    // Parameters alone (version 1, what every save wrote before) lose the statistics.
    nn::Sequential<double> params_only = batch_norm_model(3);
    save_model(path, m.named_parameters());
    CHECK(inspect_model(path).version == 1);
    load_model(path, params_only.named_parameters(), params_only.named_buffers());  // a version-1 file: buffers untouched
    const Tensor<double> p2 = nn::predict(params_only, x);
    double worst = 0.0;
    for (std::size_t i = 0; i < p0.size(); ++i) worst = std::max(worst, std::abs(p0[i] - p2[i]));
    CHECK(worst > 1e-3);

    // With the optimiser: parameters, buffers and Adam's state resume together.
    nn::save_model(path, m, &adam);
    nn::Sequential<double> resumed = batch_norm_model(4);
    optim::Adam<double> adam2(resumed.parameters(), 0.01);
    nn::load_model(path, resumed, &adam2);
    CHECK(adam2.iterations() == adam.iterations());
    CHECK(bit_equal(nn::predict(resumed, x), p0));
    std::remove(path.c_str());
}

TEST_CASE("A version-1 file written before buffers existed still loads") {
    Parameter<double> w("w", Tensor<double>(Shape{2, 3})), b("b", Tensor<double>(Shape{3}));
    Tensor<double> stat(Shape{3}, 7.0);
    const NamedParameters<double> np{{"0.weight", &w}, {"0.bias", &b}};
    const NamedBuffers<double> nb{{"1.running_mean", &stat}};
    const ModelFileInfo info = inspect_model_bytes(version1_file, sizeof version1_file);
    CHECK(info.version == 1);
    CHECK(info.buffers.empty());
    load_model_from_bytes(version1_file, sizeof version1_file, np, nb);
    for (std::size_t i = 0; i < 6; ++i) CHECK(w.value[i] == 0.25 * static_cast<double>(i) - 0.5);
    CHECK(b.value[2] == 3.5);
    CHECK(stat[0] == 7.0);  // the file holds no buffers: left as they were
    // The same parameters are still written as this very version-1 file.
    const std::vector<std::uint8_t> again = save_model_to_bytes(np);
    REQUIRE(again.size() == sizeof version1_file);
    CHECK(std::memcmp(again.data(), version1_file, sizeof version1_file) == 0);
    CHECK(save_model_to_bytes(np, NamedBuffers<double>{}) == again);  // no buffers: still version 1
}

TEST_CASE("Version-2 buffer sections: layout, corruption and mismatches are refused with clear errors") {
    Parameter<double> w("w", Tensor<double>(Shape{2}, {1.0, -2.0}));
    Tensor<double> stat(Shape{3}, {0.5, 1.5, 2.5});
    const NamedParameters<double> np{{"w", &w}};
    const NamedBuffers<double> nb{{"b0", &stat}};
    const std::string good = save_model_to_string(np, nb);
    // 27-byte header, "w": 4 + 1 + 1 + 8 + 16 = 30; u64 buffer count at 57; "b0": name at 65,
    // rank at 71, dimension at 72, data at 80..104; optimiser flag at 104; CRC; 109 bytes.
    REQUIRE(good.size() == 109);
    CHECK(good[6] == 2);
    CHECK(good[57] == 1);
    CHECK(good[71] == 1);

    Parameter<double> w2("w", Tensor<double>(Shape{2}));
    Tensor<double> stat2(Shape{3});
    const NamedParameters<double> np2{{"w", &w2}};
    load_model_from_string(good, np2, NamedBuffers<double>{{"b0", &stat2}});
    CHECK(bit_equal(stat2, stat));
    CHECK(w2.value[1] == -2.0);
    Parameter<double> w3("w", Tensor<double>(Shape{2}));
    load_model_from_string(good, NamedParameters<double>{{"w", &w3}});  // buffers ignored when none are asked for
    CHECK(w3.value[0] == 1.0);

    Tensor<double> target(Shape{3}, 9.0);
    Parameter<double> wt("w", Tensor<double>(Shape{2}, 4.0));
    auto load = [&](const std::string& data, const NamedBuffers<double>& bufs) {
        return message_of([&] { load_model_from_string(data, NamedParameters<double>{{"w", &wt}}, bufs, nullptr, "bn.tpr"); });
    };
    const NamedBuffers<double> mine{{"b0", &target}};
    std::string bad = good;
    bad[90] = static_cast<char>(bad[90] ^ 0x40);  // inside the buffer's values
    CHECK(load(bad, mine) == "bn.tpr: CRC mismatch (file is corrupted)");
    bad = good;
    bad[57] = 2;  // two buffers announced, one written
    repair(bad);
    CHECK(load(bad, mine) == "bn.tpr: truncated: file ends inside the name of buffer #1, after 105 bytes");
    bad = good;
    bad[71] = 9;  // rank 9
    repair(bad);
    CHECK(load(bad, mine) == "bn.tpr: buffer 'b0' has rank 9; the maximum rank is 4");
    bad = good;
    bad[72] = 5;  // 5 values declared, 3 written
    repair(bad);
    CHECK(load(bad, mine) == "bn.tpr: truncated: expected 40 bytes of data for buffer 'b0', file ends after 25");

    Tensor<double> wrong(Shape{4});
    CHECK(load(good, NamedBuffers<double>{{"b0", &wrong}}) == "bn.tpr: buffer 'b0' has shape (3,) in the file but (4,) in the model");
    CHECK(load(good, NamedBuffers<double>{{"running_mean", &target}}) == "bn.tpr: buffer #0 is 'b0' in the file but 'running_mean' in the model");
    CHECK(load(good, NamedBuffers<double>{{"b0", &target}, {"b1", &wrong}}) == "bn.tpr: the file has 1 buffers but the model has 2");
    // All or nothing: the parameter and the buffer are untouched by every failed load.
    CHECK(wt.value[0] == 4.0);
    CHECK(target[0] == 9.0);
    CHECK_THROWS_WITH_AS(save_model_to_string(np, NamedBuffers<double>{{"b0", &stat}, {"b0", &stat}}),
                         "save_model: buffer name 'b0' is used twice (#0 and #1)", value_error);
}
