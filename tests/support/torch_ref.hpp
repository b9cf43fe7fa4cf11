#pragma once
// Reference values from PyTorch (float64): a test hands named tensors and a Python snippet to
// /usr/bin/python3, the snippet computes with torch and fills `out`, and the results come back
// as tensors. Tests that use it skip with a message when /usr/bin/python3 has no torch.
//
//     auto r = tapir_test::torch_eval({{"x", x}, {"w", w}},
//                                     "out['y'] = torch.nn.functional.conv2d(x, w, stride=2)\n");
//     if (!r.ran) return;           // skipped, message already printed
//     CHECK(tapir_test::max_abs_diff(r["y"], y) < 1e-10);
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <map>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <unistd.h>

#include <tapir/tensor/tensor.hpp>

namespace tapir_test {

using TorchTensors = std::map<std::string, tapir::Tensor<double>>;

struct TorchResult {
    bool ran = false;  ///< false: torch is missing (the test was told so)
    TorchTensors out;
    const tapir::Tensor<double>& operator[](const std::string& k) const {
        const auto it = out.find(k);
        if (it == out.end()) throw std::runtime_error("torch_eval: the snippet set no out['" + k + "']");
        return it->second;
    }
};

namespace detail {
inline const char* python() { return "/usr/bin/python3"; }

inline bool torch_present() {
    static const int ok = std::system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") == 0 ? 1 : 0;
    return ok == 1;
}

// File format, both ways: u32 count, then per tensor: u32 name length, name, u32 rank,
// rank x u64 dims, numel x f64 (little-endian, the machine's own order on x86 and aarch64).
inline void write_tensors(const std::string& path, const TorchTensors& ts) {
    std::ofstream f(path, std::ios::binary);
    auto u32 = [&](std::uint32_t v) { f.write(reinterpret_cast<const char*>(&v), 4); };
    u32(static_cast<std::uint32_t>(ts.size()));
    for (const auto& kv : ts) {
        u32(static_cast<std::uint32_t>(kv.first.size()));
        f.write(kv.first.data(), static_cast<std::streamsize>(kv.first.size()));
        const tapir::Shape& s = kv.second.shape();
        u32(static_cast<std::uint32_t>(s.rank()));
        for (std::size_t i = 0; i < s.rank(); ++i) {
            const std::uint64_t d = s[i];
            f.write(reinterpret_cast<const char*>(&d), 8);
        }
        f.write(reinterpret_cast<const char*>(kv.second.data()), static_cast<std::streamsize>(kv.second.size() * sizeof(double)));
    }
}

inline TorchTensors read_tensors(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw std::runtime_error("torch_eval: no output file " + path);
    auto u32 = [&]() {
        std::uint32_t v = 0;
        f.read(reinterpret_cast<char*>(&v), 4);
        return v;
    };
    TorchTensors out;
    const std::uint32_t n = u32();
    for (std::uint32_t k = 0; k < n && f; ++k) {
        std::string name(u32(), '\0');
        f.read(&name[0], static_cast<std::streamsize>(name.size()));
        const std::uint32_t rank = u32();
        if (rank > tapir::max_rank) throw std::runtime_error("torch_eval: output '" + name + "' has rank above 4");
        tapir::Shape s;
        for (std::uint32_t i = 0; i < rank; ++i) {
            std::uint64_t d = 0;
            f.read(reinterpret_cast<char*>(&d), 8);
            s.push_back(static_cast<std::size_t>(d));
        }
        tapir::Tensor<double> t(s);
        f.read(reinterpret_cast<char*>(t.data()), static_cast<std::streamsize>(t.size() * sizeof(double)));
        out.emplace(name, std::move(t));
    }
    if (!f) throw std::runtime_error("torch_eval: truncated output file " + path);
    return out;
}

inline const char* prelude() {
    return "import struct, sys, torch\n"
           "torch.set_default_dtype(torch.float64)\n"
           "torch.set_num_threads(1)\n"
           "def _rd(p):\n"
           "    b = open(p, 'rb').read(); o = 0; d = {}\n"
           "    (n,) = struct.unpack_from('<I', b, o); o += 4\n"
           "    for _ in range(n):\n"
           "        (l,) = struct.unpack_from('<I', b, o); o += 4\n"
           "        k = b[o:o + l].decode(); o += l\n"
           "        (r,) = struct.unpack_from('<I', b, o); o += 4\n"
           "        dims = list(struct.unpack_from('<%dQ' % r, b, o)); o += 8 * r\n"
           "        m = 1\n"
           "        for x in dims: m *= x\n"
           "        v = struct.unpack_from('<%dd' % m, b, o); o += 8 * m\n"
           "        d[k] = torch.tensor(v, dtype=torch.float64).reshape(dims)\n"
           "    return d\n"
           "def _wr(p, d):\n"
           "    f = open(p + '.part', 'wb'); f.write(struct.pack('<I', len(d)))\n"
           "    for k, t in d.items():\n"
           "        t = torch.as_tensor(t).detach().to(torch.float64).contiguous()\n"
           "        kb = k.encode(); f.write(struct.pack('<I', len(kb))); f.write(kb)\n"
           "        f.write(struct.pack('<I', t.dim())); f.write(struct.pack('<%dQ' % t.dim(), *t.shape))\n"
           "        f.write(struct.pack('<%dd' % t.numel(), *t.flatten().tolist()))\n"
           "    f.close()\n"
           "    import os; os.replace(p + '.part', p)\n"
           "inp = _rd(sys.argv[1])\n"
           "globals().update(inp)\n"
           "out = {}\n";
}
} // namespace detail

/// True when /usr/bin/python3 imports torch; otherwise prints why the caller skips.
inline bool torch_available() {
    if (detail::torch_present()) return true;
    MESSAGE("skipped: /usr/bin/python3 has no torch (Debian: apt-get install python3-torch)");
    return false;
}

/// Runs `snippet` with the inputs bound as float64 torch tensors of the same names; the snippet
/// stores its results in the dict `out`. Throws (the test fails) when Python fails.
inline TorchResult torch_eval(const TorchTensors& inputs, const std::string& snippet) {
    TorchResult r;
    if (!torch_available()) return r;
    static int counter = 0;
    const char* tmp = std::getenv("TMPDIR");
    const std::string base = std::string(tmp ? tmp : "/tmp") + "/tapir_torch_" + std::to_string(static_cast<long>(::getpid())) + "_" +
                             std::to_string(counter++);
    const std::string in = base + ".in", out = base + ".out", py = base + ".py", log = base + ".log";
    detail::write_tensors(in, inputs);
    {
        std::ofstream f(py);
        f << detail::prelude() << snippet << "\n_wr(sys.argv[2], out)\n";
    }
    const std::string cmd = std::string(detail::python()) + " " + py + " " + in + " " + out + " >" + log + " 2>&1";
    const int rc = std::system(cmd.c_str());
    if (rc != 0) {
        std::ifstream lf(log);
        const std::string msg((std::istreambuf_iterator<char>(lf)), std::istreambuf_iterator<char>());
        std::remove(in.c_str()), std::remove(py.c_str()), std::remove(log.c_str());
        throw std::runtime_error("torch_eval: python failed:\n" + msg);
    }
    r.out = detail::read_tensors(out);
    r.ran = true;
    std::remove(in.c_str()), std::remove(out.c_str()), std::remove(py.c_str()), std::remove(log.c_str());
    return r;
}

/// Largest |a - b| over two tensors of the same shape (infinity when the shapes differ).
inline double max_abs_diff(const tapir::Tensor<double>& a, const tapir::Tensor<double>& b) {
    if (!(a.shape() == b.shape())) return INFINITY;
    double m = 0;
    for (std::size_t i = 0; i < a.size(); ++i) m = std::fmax(m, std::fabs(a.data()[i] - b.data()[i]));
    return m;
}

} // namespace tapir_test
