#pragma once
/// Model files: a model's named parameters, its buffers (BatchNorm running statistics) and,
/// optionally, an optimiser's state in a versioned, portable binary format with a CRC-32. Loading validates the whole file against the model
/// before it changes anything (all or nothing); every failure is a format_error naming the file
/// and the problem.
///
/// io/ knows no optimiser: an optimiser's section is an OptimizerState (name, iteration count,
/// learning rate, named tensors) that optim/model_file.hpp fills from an optimiser and applies
/// back to it (optim::save_model(path, params, &adam), found by argument lookup).
///
/// Format version 3, all integers and floats little-endian (IEEE-754 binary32/binary64):
///   offset  size
///        0     6  magic "TAPIR\0"
///        6     4  u32 format version (1, 2 or 3)
///       10     1  u8 dtype: 1 = float32, 2 = float64
///       11     8  u64 total file size in bytes, CRC included
///       19     8  u64 parameter count, then that many tensor records
///                 versions 2 and 3: u64 buffer count, then that many tensor records
///                 u8 optimiser flag: 0 = none, 1 = an optimiser section follows:
///                    string name, u64 iteration count, f64 learning rate,
///                    u64 state tensor count, then that many tensor records
///                 version 3 only: u64 section count, then that many sections:
///                    string name, u64 byte count, the bytes
///   size-4     4  u32 CRC-32/ISO-HDLC of bytes [0, size - 4)
/// tensor record: string name, u8 rank (0..4), rank x u64 dimensions, numel x dtype values.
/// string: u32 byte length, then the bytes (no terminator).
///
/// Version 2 adds the buffers section (non-trained state such as BatchNorm running statistics,
/// which version 1 lost). A model without buffers is still written as version 1, byte for byte
/// as before, so that older tapir builds read it. Version-1 files load as before; loading one
/// with buffers given leaves the buffers as they are (the file holds none).
///
/// Version 3 adds named sections: opaque bytes that the layers above io give a meaning to (nn's
/// whole-model files keep the architecture and the input scaler there, nn/model_file.hpp). The
/// weights-only loaders skip them, so a version-3 file loads into a model built by hand. A file
/// without sections is written as version 1 or 2, as before.

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

#include "../autodiff/tape.hpp"
#include "../config.hpp"
#include "../error.hpp"
#include "../tensor/shape.hpp"
#include "../tensor/tensor.hpp"
#include "crc32.hpp"
#include "detail/file.hpp"
#include "text.hpp"

namespace tapir {
namespace io {

/// (name, parameter) pairs in model order, as returned by nn models' named_parameters().
template <class T>
using NamedParameters = std::vector<std::pair<std::string, Parameter<T>*>>;

/// (name, tensor) pairs of non-trained state, as returned by nn models' named_buffers().
template <class T>
using NamedBuffers = std::vector<std::pair<std::string, Tensor<T>*>>;

/// The newest format version, written when there are sections; 2 with buffers, 1 otherwise.
constexpr std::uint32_t model_format_version = 3;

/// A named section of a version-3 model file: bytes that io stores and checks (CRC, bounds)
/// without interpreting them.
struct ModelSection {
    std::string name;
    std::string data;
};

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
    std::vector<std::pair<std::string, Shape>> buffers;  // version 2 only
    bool has_optimizer = false;
    std::string optimizer;
    std::uint64_t iterations = 0;
    double learning_rate = 0.0;
    std::vector<std::pair<std::string, Shape>> optimizer_state;
    std::vector<std::pair<std::string, std::size_t>> sections;  // version 3 only: name, byte count
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

/// A name from the file as it may appear in a message (names are cut at 80 characters).
inline std::string model_printable(const std::string& s) { return printable(s, 80); }

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

/// No null pointers, no name used twice; `what` is "parameter" or "buffer".
template <class Named>
void check_names(const Named& list, const char* fn, const char* what) {
    for (std::size_t i = 0; i < list.size(); ++i) {
        if (list[i].second == nullptr)
            throw value_error(std::string(fn) + ": " + what + " #" + std::to_string(i) + " ('" + list[i].first + "') is a null pointer");
        for (std::size_t j = 0; j < i; ++j)
            if (list[j].first == list[i].first)
                throw value_error(std::string(fn) + ": " + what + " name '" + list[i].first + "' is used twice (#" + std::to_string(j) +
                                  " and #" + std::to_string(i) + ")");
    }
}
template <class T>
void check_named_parameters(const NamedParameters<T>& params, const char* fn) {
    check_names(params, fn, "parameter");
}
template <class T>
void check_named_buffers(const NamedBuffers<T>& buffers, const char* fn) {
    check_names(buffers, fn, "buffer");
}

/// Section names: non-empty, each used once.
inline void check_sections(const std::vector<ModelSection>& sections) {
    for (std::size_t i = 0; i < sections.size(); ++i) {
        if (sections[i].name.empty()) throw value_error("save_model: section #" + std::to_string(i) + " has an empty name");
        for (std::size_t j = 0; j < i; ++j)
            if (sections[j].name == sections[i].name)
                throw value_error("save_model: section name '" + sections[i].name + "' is used twice (#" + std::to_string(j) + " and #" +
                                  std::to_string(i) + ")");
    }
}

template <class T>
std::string serialise_model(const NamedParameters<T>& params, const NamedBuffers<T>* buffers, const OptimizerState<T>* opt,
                            const std::vector<ModelSection>* sections = nullptr) {
    check_named_parameters(params, "save_model");
    if (buffers) check_named_buffers(*buffers, "save_model");
    if (sections) check_sections(*sections);
    const bool v3 = sections && !sections->empty();
    const bool v2 = v3 || (buffers && !buffers->empty());
    std::vector<std::pair<std::string, Tensor<T>*>> st;
    std::string opt_name;
    std::size_t total = model_header_size + 1 + 4;
    for (const auto& np : params) total += model_record_size(np.first, np.second->value);
    if (v2) {
        total += 8;
        if (buffers)
            for (const auto& b : *buffers) total += model_record_size(b.first, *b.second);
    }
    if (opt) {
        st = opt->tensors;
        opt_name = opt->name;
        total += 4 + opt_name.size() + 8 + 8 + 8;
        for (const auto& s : st) total += model_record_size(s.first, *s.second);
    }
    if (v3) {
        total += 8;
        for (const ModelSection& s : *sections) total += 4 + s.name.size() + 8 + s.data.size();
    }
    ModelWriter w(total);
    w.bytes(model_magic, sizeof model_magic);
    w.u32(v3 ? 3u : (v2 ? 2u : 1u));
    w.u8(dtype_code<T>());
    w.u64(total);
    w.u64(params.size());
    for (const auto& np : params) write_model_record(w, np.first, np.second->value);
    if (v2) {
        w.u64(buffers ? buffers->size() : 0);
        if (buffers)
            for (const auto& b : *buffers) write_model_record(w, b.first, *b.second);
    }
    w.u8(opt ? 1 : 0);
    if (opt) {
        w.str(opt_name);
        w.u64(opt->iterations);
        w.f64(opt->learning_rate);
        w.u64(st.size());
        for (const auto& s : st) write_model_record(w, s.first, *s.second);
    }
    if (v3) {
        w.u64(sections->size());
        for (const ModelSection& s : *sections) {
            if (s.name.size() > 0xFFFFFFFFu) throw value_error("save_model: section name longer than 4 GiB");
            w.str(s.name);
            w.u64(s.data.size());
            w.bytes(s.data.data(), s.data.size());
        }
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

struct SectionRecord {
    std::string name;
    std::size_t offset = 0;
    std::size_t size = 0;
};

struct ParsedModelFile {
    std::uint32_t version = 0;
    std::uint8_t dtype = 0;
    std::uint64_t declared_size = 0;
    std::vector<ModelRecord> params;
    std::vector<ModelRecord> buffers;
    bool has_opt = false;
    std::string opt_name;
    std::uint64_t iterations = 0;
    double lr = 0.0;
    std::vector<ModelRecord> state;
    std::vector<SectionRecord> sections;
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

/// One tensor record; `what` is "tensor", "buffer" or "optimizer state tensor", `index` its position.
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
    if (out.version >= 2) {
        const std::uint64_t nb = r.u64("the buffer count");
        for (std::uint64_t i = 0; i < nb; ++i)
            out.buffers.push_back(read_model_record(r, elem, "buffer", static_cast<std::size_t>(i)));
    }
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
    if (out.version >= 3) {
        const std::uint64_t count_s = r.u64("the section count");
        for (std::uint64_t i = 0; i < count_s; ++i) {
            SectionRecord s;
            s.name = r.str("the name of section #" + std::to_string(i));
            const std::string label = "section '" + model_printable(s.name) + "'";
            if (s.name.empty()) r.fail("section #" + std::to_string(i) + " has an empty name");
            for (const SectionRecord& o : out.sections)
                if (o.name == s.name) r.fail(label + " appears twice");
            const std::uint64_t size = r.u64("the size of " + label);
            if (size > r.left())
                r.fail("truncated: expected " + std::to_string(size) + " bytes of data for " + label + ", file ends after " +
                       std::to_string(r.left()));
            s.size = static_cast<std::size_t>(size);
            s.offset = r.pos();
            r.skip(s.size);
            out.sections.push_back(std::move(s));
        }
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
    if (out.version < 1 || out.version > model_format_version)
        r.fail("unsupported format version " + std::to_string(out.version) + " (this build of tapir reads versions 1 to " +
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
        r.fail(std::to_string(body_reader.left()) + " unexpected bytes after the " +
               (out.version >= 3 ? "sections" : (out.has_opt ? "optimizer section" : (out.version >= 2 ? "buffers" : "parameters"))));
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
    for (const ModelRecord& r : p.buffers) info.buffers.emplace_back(r.name, r.shape);
    info.has_optimizer = p.has_opt;
    info.optimizer = p.opt_name;
    info.iterations = p.iterations;
    info.learning_rate = p.lr;
    for (const ModelRecord& r : p.state) info.optimizer_state.emplace_back(r.name, r.shape);
    for (const SectionRecord& s : p.sections) info.sections.emplace_back(s.name, s.size);
    return info;
}

template <class T>
void load_model_into(const unsigned char* data, std::size_t n, const NamedParameters<T>& params, const NamedBuffers<T>* buffers,
                     OptimizerState<T>* opt, const std::string& src) {
    check_named_parameters(params, "load_model");
    if (buffers) check_named_buffers(*buffers, "load_model");
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
    // A version-1 file holds no buffers: the model's stay as they are.
    const bool load_buffers = buffers && f.version >= 2;
    if (load_buffers) {
        const NamedBuffers<T>& bs = *buffers;
        if (f.buffers.size() != bs.size())
            fail("the file has " + std::to_string(f.buffers.size()) + " buffers but the model has " + std::to_string(bs.size()));
        for (std::size_t i = 0; i < bs.size(); ++i) {
            const ModelRecord& r = f.buffers[i];
            if (r.name != bs[i].first)
                fail("buffer #" + std::to_string(i) + " is '" + model_printable(r.name) + "' in the file but '" + bs[i].first + "' in the model");
            if (r.shape != bs[i].second->shape())
                fail("buffer '" + bs[i].first + "' has shape " + r.shape.str() + " in the file but " + bs[i].second->shape().str() +
                     " in the model");
        }
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
    if (load_buffers)
        for (std::size_t i = 0; i < buffers->size(); ++i)
            decode_model_values(data + f.buffers[i].offset, (*buffers)[i].second->data(), (*buffers)[i].second->size());
    if (opt) {
        for (std::size_t i = 0; i < st.size(); ++i) decode_model_values(data + f.state[i].offset, st[i].second->data(), st[i].second->size());
        opt->iterations = f.iterations;
        opt->learning_rate = f.lr;
    }
}

TAPIR_COMPILED_ONCE(std::string serialise_model<float>(const NamedParameters<float>&, const NamedBuffers<float>*,
                                                      const OptimizerState<float>*, const std::vector<ModelSection>*))
TAPIR_COMPILED_ONCE(std::string serialise_model<double>(const NamedParameters<double>&, const NamedBuffers<double>*,
                                                       const OptimizerState<double>*, const std::vector<ModelSection>*))

inline std::string read_model_file(const std::string& path, const char* fn) { return read_file(path, fn); }

/// Writes to path + ".tmp" and renames: a crash mid-write never leaves a half-written model file.
inline void write_model_file(const std::string& path, const std::string& data, const char* fn = "save_model") {
    write_file_atomic(path, data, fn);
}

} // namespace detail

// ---- public API ----------------------------------------------------------------------------------

/// The model file as bytes (the in-memory form of save_model).
template <class T>
std::string save_model_to_string(const NamedParameters<T>& params, typename detail::model_type_identity<const OptimizerState<T>>::type* optimizer_state = nullptr) {
    return detail::serialise_model<T>(params, nullptr, optimizer_state);
}
/// With buffers (named_buffers()): version 2 when there are any.
template <class T>
std::string save_model_to_string(const NamedParameters<T>& params, const typename detail::model_type_identity<NamedBuffers<T>>::type& buffers,
                                 typename detail::model_type_identity<const OptimizerState<T>>::type* optimizer_state = nullptr) {
    return detail::serialise_model<T>(params, &buffers, optimizer_state);
}
template <class T>
std::vector<std::uint8_t> save_model_to_bytes(const NamedParameters<T>& params,
                                              typename detail::model_type_identity<const OptimizerState<T>>::type* optimizer_state = nullptr) {
    const std::string s = detail::serialise_model<T>(params, nullptr, optimizer_state);
    return std::vector<std::uint8_t>(s.begin(), s.end());
}
template <class T>
std::vector<std::uint8_t> save_model_to_bytes(const NamedParameters<T>& params, const typename detail::model_type_identity<NamedBuffers<T>>::type& buffers,
                                              typename detail::model_type_identity<const OptimizerState<T>>::type* optimizer_state = nullptr) {
    const std::string s = detail::serialise_model<T>(params, &buffers, optimizer_state);
    return std::vector<std::uint8_t>(s.begin(), s.end());
}

/// Saves the parameters (and an optimiser's section: optim::save_model fills it from an optimiser).
template <class T>
void save_model(const std::string& path, const NamedParameters<T>& params,
                typename detail::model_type_identity<const OptimizerState<T>>::type* optimizer_state = nullptr) {
    detail::write_model_file(path, detail::serialise_model<T>(params, nullptr, optimizer_state));
}
/// Saves parameters and buffers: save_model(path, m.named_parameters(), m.named_buffers()).
template <class T>
void save_model(const std::string& path, const NamedParameters<T>& params, const typename detail::model_type_identity<NamedBuffers<T>>::type& buffers,
                typename detail::model_type_identity<const OptimizerState<T>>::type* optimizer_state = nullptr) {
    detail::write_model_file(path, detail::serialise_model<T>(params, &buffers, optimizer_state));
}

/// Loads into the given parameters (and optimiser): names, order, shapes and dtype must match the
/// file exactly. Throws format_error before changing anything if the file is not a tapir model
/// file, is truncated, corrupted, or does not fit. An optimiser section is ignored when no
/// optimizer_state is passed; one is required when it is (optim::load_model passes an
/// optimiser's and applies the iteration count and learning rate read into it). A buffers
/// section is ignored by the overloads without buffers; the overloads with buffers check and
/// fill them from a version-2 file (a version-1 file leaves them as they are).
template <class T>
void load_model_from_bytes(const void* data, std::size_t size, const NamedParameters<T>& params,
                           typename detail::model_type_identity<OptimizerState<T>>::type* optimizer_state = nullptr,
                           const std::string& source = "<memory>") {
    detail::load_model_into<T>(static_cast<const unsigned char*>(data), size, params, nullptr, optimizer_state, source);
}
template <class T>
void load_model_from_bytes(const void* data, std::size_t size, const NamedParameters<T>& params,
                           const typename detail::model_type_identity<NamedBuffers<T>>::type& buffers,
                           typename detail::model_type_identity<OptimizerState<T>>::type* optimizer_state = nullptr,
                           const std::string& source = "<memory>") {
    detail::load_model_into<T>(static_cast<const unsigned char*>(data), size, params, &buffers, optimizer_state, source);
}
template <class T>
void load_model_from_string(const std::string& data, const NamedParameters<T>& params,
                            typename detail::model_type_identity<OptimizerState<T>>::type* optimizer_state = nullptr,
                            const std::string& source = "<memory>") {
    detail::load_model_into<T>(reinterpret_cast<const unsigned char*>(data.data()), data.size(), params, nullptr, optimizer_state, source);
}
template <class T>
void load_model_from_string(const std::string& data, const NamedParameters<T>& params,
                            const typename detail::model_type_identity<NamedBuffers<T>>::type& buffers,
                            typename detail::model_type_identity<OptimizerState<T>>::type* optimizer_state = nullptr,
                            const std::string& source = "<memory>") {
    detail::load_model_into<T>(reinterpret_cast<const unsigned char*>(data.data()), data.size(), params, &buffers, optimizer_state, source);
}
template <class T>
void load_model_from_bytes(const std::vector<std::uint8_t>& data, const NamedParameters<T>& params,
                           typename detail::model_type_identity<OptimizerState<T>>::type* optimizer_state = nullptr,
                           const std::string& source = "<memory>") {
    detail::load_model_into<T>(data.data(), data.size(), params, nullptr, optimizer_state, source);
}
template <class T>
void load_model_from_bytes(const std::vector<std::uint8_t>& data, const NamedParameters<T>& params,
                           const typename detail::model_type_identity<NamedBuffers<T>>::type& buffers,
                           typename detail::model_type_identity<OptimizerState<T>>::type* optimizer_state = nullptr,
                           const std::string& source = "<memory>") {
    detail::load_model_into<T>(data.data(), data.size(), params, &buffers, optimizer_state, source);
}
template <class T>
void load_model(const std::string& path, const NamedParameters<T>& params,
                typename detail::model_type_identity<OptimizerState<T>>::type* optimizer_state = nullptr) {
    const std::string data = detail::read_model_file(path, "load_model");
    detail::load_model_into<T>(reinterpret_cast<const unsigned char*>(data.data()), data.size(), params, nullptr, optimizer_state, path);
}
template <class T>
void load_model(const std::string& path, const NamedParameters<T>& params, const typename detail::model_type_identity<NamedBuffers<T>>::type& buffers,
                typename detail::model_type_identity<OptimizerState<T>>::type* optimizer_state = nullptr) {
    const std::string data = detail::read_model_file(path, "load_model");
    detail::load_model_into<T>(reinterpret_cast<const unsigned char*>(data.data()), data.size(), params, &buffers, optimizer_state, path);
}

// ---- version 3: named sections -----------------------------------------------------------------

/// Parameters, buffers, an optional optimiser section and named sections (format version 3 when
/// there are sections), as bytes.
template <class T>
std::string save_model_to_string(const NamedParameters<T>& params, const typename detail::model_type_identity<NamedBuffers<T>>::type& buffers,
                                 typename detail::model_type_identity<const OptimizerState<T>>::type* optimizer_state,
                                 const std::vector<ModelSection>& sections) {
    return detail::serialise_model<T>(params, &buffers, optimizer_state, &sections);
}
/// The same, written atomically.
template <class T>
void save_model(const std::string& path, const NamedParameters<T>& params, const typename detail::model_type_identity<NamedBuffers<T>>::type& buffers,
                typename detail::model_type_identity<const OptimizerState<T>>::type* optimizer_state, const std::vector<ModelSection>& sections) {
    detail::write_model_file(path, detail::serialise_model<T>(params, &buffers, optimizer_state, &sections));
}
/// The named sections of a model file (none before version 3), after the whole file has been
/// checked as load_model checks it (magic, version, size, CRC, structure).
inline std::vector<ModelSection> read_model_sections_from_bytes(const void* data, std::size_t size, const std::string& source = "<memory>") {
    const auto* p = static_cast<const unsigned char*>(data);
    const detail::ParsedModelFile f = detail::parse_model_file(p, size, source);
    std::vector<ModelSection> out;
    for (const detail::SectionRecord& s : f.sections)
        out.push_back(ModelSection{s.name, std::string(reinterpret_cast<const char*>(p + s.offset), s.size)});
    return out;
}
/// The bytes of a file, for loaders above io that parse a model file more than once; fn names
/// the caller in errors.
inline std::string read_model_bytes(const std::string& path, const char* fn = "load_model") { return detail::read_model_file(path, fn); }
inline std::vector<ModelSection> read_model_sections(const std::string& path) {
    const std::string data = detail::read_model_file(path, "read_model_sections");
    return read_model_sections_from_bytes(data.data(), data.size(), path);
}

/// Every parameter and buffer a model file holds, by name, as tensors of type T (the file's dtype
/// must be T's): for loading part of a model (nn::load_pretrained) or reading weights by hand.
template <class T>
struct ModelTensors {
    std::uint32_t version = 0;
    std::vector<std::pair<std::string, Tensor<T>>> parameters;
    std::vector<std::pair<std::string, Tensor<T>>> buffers;
};
template <class T>
ModelTensors<T> read_model_tensors_from_string(const std::string& data, const std::string& source = "<memory>") {
    const auto* p = reinterpret_cast<const unsigned char*>(data.data());
    const detail::ParsedModelFile f = detail::parse_model_file(p, data.size(), source);
    if (f.dtype != detail::dtype_code<T>())
        throw format_error(source + ": the file holds " + detail::dtype_name(f.dtype) + " values but " +
                           detail::dtype_name(detail::dtype_code<T>()) + " were asked for");
    ModelTensors<T> out;
    out.version = f.version;
    auto take = [p](const std::vector<detail::ModelRecord>& rs, std::vector<std::pair<std::string, Tensor<T>>>& dst) {
        for (const detail::ModelRecord& r : rs) {
            Tensor<T> t(r.shape);
            detail::decode_model_values(p + r.offset, t.data(), t.size());
            dst.emplace_back(r.name, std::move(t));
        }
    };
    take(f.params, out.parameters);
    take(f.buffers, out.buffers);
    return out;
}
template <class T>
ModelTensors<T> read_model_tensors(const std::string& path) {
    return read_model_tensors_from_string<T>(detail::read_model_file(path, "read_model_tensors"), path);
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
