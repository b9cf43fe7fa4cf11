#pragma once
/// Architectures as text: a module tree written as layer type names and constructor
/// configuration, and rebuilt from it. nn/model_file.hpp keeps this text in a model file's
/// "architecture" section next to the weights (nn::save, nn::load_model), as Keras keeps a
/// model's config next to its weights. The library's layers are known; a user's own layer is
/// saved and loaded once registered:
///
///     tapir::nn::register_layer<Scale<float>>(
///         "Scale", [](const Scale<float>& l, tapir::nn::LayerConfig& c) { c.set_size("features", l.features()); },
///         [](const tapir::nn::LayerConfig& c) { return std::make_unique<Scale<float>>(c.get_size("features")); });
///
/// The text has one layer per line (the indentation is for people):
///
///     tapir-config 1
///     Sequential fusion=1 {
///       Dense in=4 out=8 activation=relu alpha=0 bias=1
///       BatchNorm features=8 momentum=0.10000000000000001 eps=1.0000000000000001e-05
///     }
///
/// A line is a type name, then key=value pairs, then "{" when children follow (closed by a line
/// "}"). Values are percent-encoded (bytes up to the space, DEL and '%' itself); numbers have 17
/// significant digits in the C locale, so that every double comes back bit for bit.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cctype>
#include <functional>
#include <initializer_list>
#include <limits>
#include <locale>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <typeindex>
#include <typeinfo>
#include <type_traits>
#include <utility>
#include <vector>

#include "../error.hpp"
#include "../io/text.hpp"
#include "../random.hpp"
#include "attention.hpp"
#include "conv.hpp"
#include "graph.hpp"
#include "layers.hpp"
#include "lorentz.hpp"
#include "model.hpp"
#include "module.hpp"
#include "recurrent.hpp"
#include "sequential.hpp"
#include "sets.hpp"

namespace tapir {
namespace nn {

namespace detail {
/// Text of a configuration for a message (cut at 60 characters).
inline std::string config_printable(const std::string& s) { return io::printable(s, 60); }
/// A double with 17 significant digits in the C locale (exact round trip); nan and inf by name.
inline std::string config_number(double v) {
    if (std::isnan(v)) return "nan";
    if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
    std::ostringstream os;
    os.imbue(std::locale::classic());
    os.precision(17);
    os << v;
    return os.str();
}
inline bool parse_config_number(const std::string& s, double& v) {
    if (s == "nan") return v = std::numeric_limits<double>::quiet_NaN(), true;
    if (s == "inf") return v = std::numeric_limits<double>::infinity(), true;
    if (s == "-inf") return v = -std::numeric_limits<double>::infinity(), true;
    if (s.empty() || !(std::isdigit(static_cast<unsigned char>(s[0])) || s[0] == '-' || s[0] == '.')) return false;
    std::istringstream is(s);
    is.imbue(std::locale::classic());
    is >> v;
    return !is.fail() && is.peek() == std::char_traits<char>::eof();
}
inline bool parse_config_size(const std::string& s, std::size_t& v) {
    if (s.empty() || s.size() > 20) return false;
    std::size_t r = 0;
    for (char ch : s) {
        if (ch < '0' || ch > '9') return false;
        const auto d = static_cast<std::size_t>(ch - '0');
        if (r > (std::numeric_limits<std::size_t>::max() - d) / 10) return false;
        r = r * 10 + d;
    }
    v = r;
    return true;
}
/// Keys are [A-Za-z0-9_]; those starting with '_' are the loader's own ("_frozen").
inline bool valid_config_key(const std::string& k) {
    if (k.empty()) return false;
    for (char ch : k)
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_')) return false;
    return true;
}
/// Type names: printable, no space, '=', '%', braces.
inline bool valid_type_name(const std::string& t) {
    if (t.empty()) return false;
    for (char ch : t) {
        const unsigned char c = static_cast<unsigned char>(ch);
        if (c <= 0x20 || c == 0x7F || ch == '=' || ch == '%' || ch == '{' || ch == '}') return false;
    }
    return true;
}
/// A saturating product: a configuration's value count, which must not wrap around.
inline std::size_t config_product(std::initializer_list<std::size_t> xs) {
    std::size_t p = 1;
    for (std::size_t x : xs) {
        if (x != 0 && p > std::numeric_limits<std::size_t>::max() / x) return std::numeric_limits<std::size_t>::max();
        p *= x;
    }
    return p;
}
inline std::size_t config_sum(std::size_t a, std::size_t b) {
    return a > std::numeric_limits<std::size_t>::max() - b ? std::numeric_limits<std::size_t>::max() : a + b;
}
} // namespace detail

/// One layer's type name, configuration (key, value text) and child layers. Writing uses the
/// set_ functions; reading the get_ functions, which throw format_error naming the layer, its
/// line and the key when a key is missing or its value does not parse. A loader refuses keys
/// that no get_ function read (a file from a newer tapir, or a typo in a registered factory).
class LayerConfig {
public:
    LayerConfig() = default;
    explicit LayerConfig(std::string type_name) : type_(std::move(type_name)) {}

    const std::string& type() const noexcept { return type_; }
    const std::vector<std::pair<std::string, std::string>>& entries() const noexcept { return entries_; }
    std::vector<LayerConfig>& children() noexcept { return children_; }
    const std::vector<LayerConfig>& children() const noexcept { return children_; }
    void add_child(LayerConfig c) { children_.push_back(std::move(c)); }
    /// "model.tpr: architecture line 3 (Dense)": where messages say the layer is.
    const std::string& where() const noexcept { return where_; }

    // ---- writing ---------------------------------------------------------------------------------
    LayerConfig& set_string(const std::string& key, const std::string& value) {
        if (!detail::valid_config_key(key))
            throw value_error("LayerConfig::set: key '" + detail::config_printable(key) + "' of " + type_ +
                              " must be letters, digits and '_'");
        for (const auto& e : entries_)
            if (e.first == key) throw value_error("LayerConfig::set: key '" + key + "' of " + type_ + " is set twice");
        entries_.emplace_back(key, value);
        return *this;
    }
    LayerConfig& set_size(const std::string& key, std::size_t v) { return set_string(key, std::to_string(v)); }
    LayerConfig& set_int(const std::string& key, std::int64_t v) { return set_string(key, std::to_string(v)); }
    LayerConfig& set_bool(const std::string& key, bool v) { return set_string(key, v ? "1" : "0"); }
    LayerConfig& set_double(const std::string& key, double v) { return set_string(key, detail::config_number(v)); }
    LayerConfig& set_sizes(const std::string& key, const std::vector<std::size_t>& v) {
        std::string s;
        for (std::size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
        return set_string(key, s);
    }
    LayerConfig& set_doubles(const std::string& key, const std::vector<double>& v) {
        std::string s;
        for (std::size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + detail::config_number(v[i]);
        return set_string(key, s);
    }

    // ---- reading ---------------------------------------------------------------------------------
    bool has(const std::string& key) const noexcept {
        for (const auto& e : entries_)
            if (e.first == key) return true;
        return false;
    }
    const std::string& get_string(const std::string& key) const {
        for (std::size_t i = 0; i < entries_.size(); ++i)
            if (entries_[i].first == key) {
                if (used_.size() < entries_.size()) used_.resize(entries_.size(), false);
                used_[i] = true;
                return entries_[i].second;
            }
        fail("missing key '" + key + "'");
    }
    std::size_t get_size(const std::string& key) const {
        std::size_t v = 0;
        const std::string& s = get_string(key);
        if (!detail::parse_config_size(s, v)) bad_value(key, s, "a non-negative integer");
        return v;
    }
    std::int64_t get_int(const std::string& key) const {
        const std::string& s = get_string(key);
        std::size_t v = 0;
        const bool neg = !s.empty() && s[0] == '-';
        if (!detail::parse_config_size(neg ? s.substr(1) : s, v) || v > static_cast<std::size_t>(std::numeric_limits<std::int64_t>::max()))
            bad_value(key, s, "an integer");
        return neg ? -static_cast<std::int64_t>(v) : static_cast<std::int64_t>(v);
    }
    bool get_bool(const std::string& key) const {
        const std::string& s = get_string(key);
        if (s != "0" && s != "1") bad_value(key, s, "0 or 1");
        return s == "1";
    }
    double get_double(const std::string& key) const {
        double v = 0.0;
        const std::string& s = get_string(key);
        if (!detail::parse_config_number(s, v)) bad_value(key, s, "a number");
        return v;
    }
    std::vector<std::size_t> get_sizes(const std::string& key) const {
        const std::string& s = get_string(key);
        std::vector<std::size_t> out;
        for (const std::string& part : split(s)) {
            std::size_t v = 0;
            if (!detail::parse_config_size(part, v)) bad_value(key, s, "a list of non-negative integers");
            out.push_back(v);
        }
        return out;
    }
    std::vector<double> get_doubles(const std::string& key) const {
        const std::string& s = get_string(key);
        std::vector<double> out;
        for (const std::string& part : split(s)) {
            double v = 0.0;
            if (!detail::parse_config_number(part, v)) bad_value(key, s, "a list of numbers");
            out.push_back(v);
        }
        return out;
    }
    /// get_sizes with exactly n entries.
    std::vector<std::size_t> get_sizes(const std::string& key, std::size_t n) const {
        std::vector<std::size_t> v = get_sizes(key);
        if (v.size() != n) fail("key '" + key + "' has " + std::to_string(v.size()) + " values, expected " + std::to_string(n));
        return v;
    }
    /// The layer owns `count` parameter and buffer values. A loader gives the tree the number of
    /// values its file holds, and each claim takes from it: a configuration that would allocate
    /// more than the file can fill is refused before anything is allocated (registered factories
    /// of large layers should claim too).
    void claim(std::size_t count) const {
        if (!budget_) return;
        if (count > *budget_)
            fail("the configuration needs " + std::to_string(count) + " parameter and buffer values but the file holds only " +
                 std::to_string(*budget_) + " more");
        *budget_ -= count;
    }
    /// Throws format_error naming the layer: for a factory's own checks.
    [[noreturn]] void fail(const std::string& what) const { throw format_error((where_.empty() ? type_ : where_) + ": " + what); }

    /// Keys never read by a get_ function (after a factory ran).
    std::vector<std::string> unread_keys() const {
        std::vector<std::string> out;
        for (std::size_t i = 0; i < entries_.size(); ++i)
            if ((i >= used_.size() || !used_[i]) && entries_[i].first[0] != '_') out.push_back(entries_[i].first);
        return out;
    }

    /// For the parser and the loader: the message prefix and the shared value budget.
    void set_where(std::string w) { where_ = std::move(w); }
    void set_budget(std::size_t* b) {
        budget_ = b;
        for (LayerConfig& c : children_) c.set_budget(b);
    }

private:
    [[noreturn]] void bad_value(const std::string& key, const std::string& v, const char* want) const {
        fail("key '" + key + "' is '" + detail::config_printable(v) + "', not " + want);
    }
    /// A comma-separated list; the empty text is the empty list.
    static std::vector<std::string> split(const std::string& s) { return s.empty() ? std::vector<std::string>{} : io::split(s, ","); }

    std::string type_;
    std::vector<std::pair<std::string, std::string>> entries_;
    std::vector<LayerConfig> children_;
    std::string where_;
    mutable std::vector<bool> used_;
    std::size_t* budget_ = nullptr;
};

// ---- text ------------------------------------------------------------------------------------------

namespace detail {
inline std::string config_encode(const std::string& v) {
    static const char hex[] = "0123456789ABCDEF";
    std::string out;
    for (char ch : v) {
        const unsigned char c = static_cast<unsigned char>(ch);
        if (c <= 0x20 || c == 0x7F || ch == '%') {
            out += '%';
            out += hex[c >> 4];
            out += hex[c & 15];
        } else {
            out += ch;
        }
    }
    return out;
}
inline int config_hex(char c) {
    return c >= '0' && c <= '9' ? c - '0' : (c >= 'A' && c <= 'F' ? c - 'A' + 10 : (c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1));
}
inline void write_config_node(std::string& out, const LayerConfig& c, std::size_t depth) {
    out.append(2 * depth, ' ');
    out += c.type();
    for (const auto& e : c.entries()) out += " " + e.first + "=" + config_encode(e.second);
    if (c.children().empty()) {
        out += "\n";
        return;
    }
    out += " {\n";
    for (const LayerConfig& ch : c.children()) write_config_node(out, ch, depth + 1);
    out.append(2 * depth, ' ');
    out += "}\n";
}

constexpr std::size_t max_config_depth = 64;
/// Bounds that keep a damaged or hostile file from costing minutes: layers per configuration
/// (a Sequential renames its parameters on every add) and sizes in one list of layer sizes.
constexpr std::size_t max_config_layers = 4096;
constexpr std::size_t max_config_list = 256;

/// The line-based parser; `what` names the section in messages ("architecture").
class ConfigParser {
public:
    ConfigParser(const std::string& text, std::string prefix) : prefix_(std::move(prefix)) {
        std::size_t start = 0;
        while (start <= text.size()) {
            std::size_t e = text.find('\n', start);
            if (e == std::string::npos) e = text.size();
            std::string line = text.substr(start, e - start);
            if (!line.empty() && line.back() == '\r') line.pop_back();
            lines_.push_back(std::move(line));
            start = e + 1;
        }
    }
    LayerConfig parse() {
        std::vector<std::string> head;
        if (!next(head)) fail(0, "empty (no layer)");
        if (head.size() != 2 || head[0] != "tapir-config")
            fail(line_, "not a tapir configuration (the first line must be 'tapir-config 1')");
        if (head[1] != "1") fail(line_, "unsupported configuration version '" + config_printable(head[1]) + "' (this build reads version 1)");
        std::vector<std::string> tokens;
        if (!next(tokens)) fail(line_, "no layer after the header");
        LayerConfig root = node(tokens, 0);
        if (next(tokens)) fail(line_, "unexpected text after the last layer: '" + config_printable(tokens[0]) + "'");
        return root;
    }

private:
    [[noreturn]] void fail(std::size_t line, const std::string& what) const {
        throw format_error(prefix_ + (line ? " line " + std::to_string(line) : std::string()) + ": " + what);
    }
    /// The tokens of the next non-blank line; false at the end.
    bool next(std::vector<std::string>& tokens) {
        while (pos_ < lines_.size()) {
            const std::string& l = lines_[pos_++];
            line_ = pos_;
            tokens.clear();
            std::size_t i = 0;
            while (i < l.size()) {
                while (i < l.size() && (l[i] == ' ' || l[i] == '\t')) ++i;
                const std::size_t s = i;
                while (i < l.size() && l[i] != ' ' && l[i] != '\t') ++i;
                if (i > s) tokens.push_back(l.substr(s, i - s));
            }
            if (!tokens.empty()) return true;
        }
        return false;
    }
    std::string decode(const std::string& v) const {
        std::string out;
        for (std::size_t i = 0; i < v.size(); ++i) {
            if (v[i] != '%') {
                out += v[i];
                continue;
            }
            if (i + 2 >= v.size() || config_hex(v[i + 1]) < 0 || config_hex(v[i + 2]) < 0)
                fail(line_, "bad percent escape in value '" + config_printable(v) + "'");
            out += static_cast<char>(config_hex(v[i + 1]) * 16 + config_hex(v[i + 2]));
            i += 2;
        }
        return out;
    }
    LayerConfig node(const std::vector<std::string>& tokens, std::size_t depth) {
        const std::size_t at = line_;
        if (depth >= max_config_depth) fail(at, "layers nested deeper than " + std::to_string(max_config_depth) + " levels");
        if (tokens[0] == "}") fail(at, "unexpected '}' (no layer is open)");
        if (++nodes_ > max_config_layers) fail(at, "more than " + std::to_string(max_config_layers) + " layers");
        if (!valid_type_name(tokens[0]) || tokens[0] == "tapir-config") fail(at, "invalid layer type name '" + config_printable(tokens[0]) + "'");
        LayerConfig c(tokens[0]);
        c.set_where(prefix_ + " line " + std::to_string(at) + " (" + tokens[0] + ")");
        bool open = false;
        for (std::size_t k = 1; k < tokens.size(); ++k) {
            const std::string& t = tokens[k];
            if (t == "{" && k + 1 == tokens.size()) {
                open = true;
                break;
            }
            const std::size_t eq = t.find('=');
            if (eq == std::string::npos || eq == 0 || !valid_config_key(t.substr(0, eq)))
                fail(at, tokens[0] + ": expected key=value, got '" + config_printable(t) + "'");
            const std::string key = t.substr(0, eq);
            if (c.has(key)) fail(at, tokens[0] + ": key '" + key + "' appears twice");
            c.set_string(key, decode(t.substr(eq + 1)));
        }
        if (!open) return c;
        std::vector<std::string> child;
        for (;;) {
            if (!next(child)) fail(at, tokens[0] + ": its '{' is never closed by a line '}'");
            if (child.size() == 1 && child[0] == "}") break;
            c.add_child(node(child, depth + 1));
        }
        return c;
    }

    std::vector<std::string> lines_;
    std::size_t pos_ = 0, line_ = 0, nodes_ = 0;
    std::string prefix_;
};
} // namespace detail

/// The configuration tree as text (the format in this header's comment).
inline std::string config_text(const LayerConfig& root) {
    std::string out = "tapir-config 1\n";
    detail::write_config_node(out, root, 0);
    return out;
}
/// Parses config_text's output; `prefix` starts every message ("model.tpr: architecture").
inline LayerConfig parse_config_text(const std::string& text, const std::string& prefix) {
    return detail::ConfigParser(text, prefix).parse();
}

// ---- the registry ------------------------------------------------------------------------------------

/// How one layer type is written and rebuilt: its name in files, its C++ type (matched exactly:
/// a class derived from a registered one needs its own entry), a function that fills the
/// configuration from a layer and one that builds a layer from a configuration.
template <class T>
struct LayerCodec {
    std::string name;
    std::type_index type;
    std::function<void(const Module<T>&, LayerConfig&)> save;
    std::function<std::unique_ptr<Module<T>>(const LayerConfig&)> load;
    /// Adds a copy of a layer of this type to a functional Model under a name, as its own type
    /// (so that Model finds the layer's forward of several values, e.g. DeepSet's (x, mask)).
    std::function<std::size_t(Model<T>&, const std::string&, const Module<T>&)> attach;
};

namespace detail {
template <class T>
void add_builtin_layers(std::vector<LayerCodec<T>>& r);

/// Built-in layers first, then registered ones. Registering is not thread-safe: do it before
/// saving or loading on other threads (at start-up).
template <class T>
std::vector<LayerCodec<T>>& layer_registry() {
    static std::vector<LayerCodec<T>> r = [] {
        std::vector<LayerCodec<T>> v;
        add_builtin_layers<T>(v);
        return v;
    }();
    return r;
}

template <class L>
void put_codec(std::vector<LayerCodec<typename L::value_type>>& r, const std::string& name,
               std::function<void(const L&, LayerConfig&)> save, std::function<std::unique_ptr<L>(const LayerConfig&)> load) {
    using T = typename L::value_type;
    if (!valid_type_name(name) || name == "tapir-config")
        throw value_error("register_layer: invalid layer name '" + config_printable(name) + "' (printable, without spaces, '=', '%' or braces)");
    if (!save || !load) throw value_error("register_layer: '" + name + "' needs both a save and a load function");
    LayerCodec<T> c{name, std::type_index(typeid(L)),
                    [save](const Module<T>& m, LayerConfig& cfg) { save(static_cast<const L&>(m), cfg); },
                    [load](const LayerConfig& cfg) -> std::unique_ptr<Module<T>> { return load(cfg); },
                    [](Model<T>& m, const std::string& n, const Module<T>& l) { return m.layer(n, static_cast<const L&>(l)).id; }};
    for (LayerCodec<T>& e : r) {
        if (e.type == c.type) {
            if (e.name != name)
                for (const LayerCodec<T>& o : r)
                    if (o.name == name) throw value_error("register_layer: the name '" + name + "' is taken by another layer type");
            e = std::move(c);
            return;
        }
        if (e.name == name) throw value_error("register_layer: the name '" + name + "' is taken by another layer type");
    }
    r.push_back(std::move(c));
}
} // namespace detail

/// Makes a user's layer L (a Module) savable in whole-model files: `save` writes its constructor
/// configuration, `load` constructs it from one (the weights are loaded afterwards). Registering
/// the same type again replaces its entry; a name taken by another type is refused.
template <class L>
void register_layer(const std::string& name, std::function<void(const L&, LayerConfig&)> save,
                    std::function<std::unique_ptr<L>(const LayerConfig&)> load) {
    static_assert(std::is_base_of<Module<typename L::value_type>, L>::value, "register_layer: L must derive from tapir::nn::Module<T>");
    detail::put_codec<L>(detail::layer_registry<typename L::value_type>(), name, std::move(save), std::move(load));
}

/// A layer's configuration tree (children included). Throws value_error for a layer type that
/// has no codec, naming it.
template <class T>
LayerConfig layer_config(const Module<T>& m) {
    const std::type_index type(typeid(m));
    for (const LayerCodec<T>& c : detail::layer_registry<T>()) {
        if (c.type != type) continue;
        LayerConfig cfg(c.name);
        c.save(m, cfg);
        if (!m.is_trainable()) cfg.set_bool("_frozen", true);
        return cfg;
    }
    throw value_error("nn::save: layer type '" + m.type_name() + "' (" + m.describe() +
                      ") has no architecture codec; register it with nn::register_layer<YourLayer>(name, save, load)");
}

/// Builds a layer (and its children) from a configuration. Throws format_error naming the layer
/// (its line) for an unknown type, a missing or malformed key, a key no one read, or a value the
/// layer's constructor refuses.
template <class T>
std::unique_ptr<Module<T>> build_layer(const LayerConfig& c) {
    const LayerCodec<T>* codec = nullptr;
    for (const LayerCodec<T>& e : detail::layer_registry<T>())
        if (e.name == c.type()) codec = &e;
    if (!codec)
        c.fail("unknown layer type '" + detail::config_printable(c.type()) +
               "' (a layer of the user's: register it with nn::register_layer before loading)");
    std::unique_ptr<Module<T>> m;
    try {
        m = codec->load(c);
    } catch (const format_error&) {
        throw;
    } catch (const std::invalid_argument& e) {  // value_error, shape_error from the constructor
        c.fail(e.what());
    } catch (const std::length_error& e) {
        c.fail(e.what());
    }
    if (!m) c.fail("the factory returned no layer");
    const std::vector<std::string> unread = c.unread_keys();
    if (!unread.empty()) c.fail("unknown key '" + unread[0] + "' (written by a newer tapir, or not read by the layer's factory)");
    if (c.has("_frozen")) (void)c.get_bool("_frozen");  // checked here, applied by apply_frozen
    return m;
}

/// Puts back the freeze() marks a configuration records: pre-order, so that a layer unfrozen
/// inside a frozen container is trainable again. (Only modules with their own configuration
/// carry a mark; the inner parts of a composite layer such as DeepSet's phi do not.)
template <class T>
void apply_frozen(Module<T>& m, const LayerConfig& c) {
    const bool frozen = c.has("_frozen") && c.get_bool("_frozen");
    if (frozen || !m.is_trainable()) m.set_trainable(!frozen);
    if (c.children().empty()) return;
    std::vector<NamedModule<T>> kids = m.named_children();
    if (kids.size() != c.children().size()) return;
    for (std::size_t i = 0; i < kids.size(); ++i) apply_frozen(*kids[i].second, c.children()[i]);
}

namespace detail {
/// A child with no children of its own, for codecs of leaf layers.
inline void no_children(const LayerConfig& c) {
    if (!c.children().empty()) c.fail("takes no child layers, got " + std::to_string(c.children().size()));
}
/// Lists of layer sizes (DeepSet's phi and f, EdgeConv's channels): at least one each is the
/// constructors' own check; at most max_config_list.
inline void check_sizes_list(const LayerConfig& c, std::size_t n) {
    if (n > max_config_list) c.fail(std::to_string(n) + " layer sizes, more than " + std::to_string(max_config_list));
}
inline const char* pooling_name(SetPooling p) { return p == SetPooling::sum ? "sum" : "mean"; }
inline Activation activation_from(const LayerConfig& c, const std::string& key) {
    const std::string& s = c.get_string(key);
    const Activation all[] = {Activation::none, Activation::relu, Activation::leaky_relu, Activation::elu,
                              Activation::tanh, Activation::sigmoid, Activation::softplus};
    for (Activation a : all)
        if (s == activation_name(a)) return a;
    c.fail("key '" + key + "' is '" + config_printable(s) + "', not an activation (linear, relu, leaky_relu, elu, tanh, sigmoid, softplus)");
}
inline Size2 size2_from(const LayerConfig& c, const std::string& key) {
    const std::vector<std::size_t> v = c.get_sizes(key, 2);
    return Size2(v[0], v[1]);
}
inline void set_size2(LayerConfig& c, const std::string& key, Size2 s) { c.set_sizes(key, {s.h, s.w}); }
inline void put_conv_options(LayerConfig& c, const ConvOptions& o) {
    set_size2(c, "stride", o.stride);
    c.set_sizes("padding", {o.padding.top, o.padding.bottom, o.padding.left, o.padding.right});
    c.set_bool("same", o.same);
    set_size2(c, "dilation", o.dilation);
    c.set_size("groups", o.groups);
    c.set_bool("bias", o.bias);
    set_size2(c, "output_padding", o.output_padding);
}
inline ConvOptions conv_options_from(const LayerConfig& c) {
    ConvOptions o;
    o.stride = size2_from(c, "stride");
    const std::vector<std::size_t> p = c.get_sizes("padding", 4);
    o.padding = Pad2d(p[0], p[1], p[2], p[3]);
    o.same = c.get_bool("same");
    o.dilation = size2_from(c, "dilation");
    o.groups = c.get_size("groups");
    o.bias = c.get_bool("bias");
    o.output_padding = size2_from(c, "output_padding");
    return o;
}
/// The out sizes of a stack of Dense layers (DeepSet's phi and f, EdgeConv's edge layers).
template <class T>
std::vector<std::size_t> dense_sizes(const Sequential<T>& s) {
    std::vector<std::size_t> out;
    for (const Module<T>* m : s.layers()) {
        const auto* d = dynamic_cast<const Dense<T>*>(m);
        if (!d) throw value_error("nn::save: expected a stack of Dense layers, found " + m->describe());
        out.push_back(d->out_features());
    }
    return out;
}
/// Values of an MLP in -> sizes (weights and biases).
inline std::size_t mlp_values(std::size_t in, const std::vector<std::size_t>& sizes) {
    std::size_t n = 0;
    for (std::size_t s : sizes) {
        n = config_sum(n, config_sum(config_product({in, s}), s));
        in = s;
    }
    return n;
}
/// The two MLPs of a set layer (phi per element, f after pooling) from `in` features: each needs
/// a layer, the lists are bounded, and their values count against the configuration's budget.
inline void claim_set_mlps(const LayerConfig& c, std::size_t in, const std::vector<std::size_t>& phi, const std::vector<std::size_t>& f) {
    if (phi.empty() || f.empty()) c.fail("keys 'phi' and 'f' need at least one layer size each");
    check_sizes_list(c, phi.size() + f.size());
    c.claim(config_sum(mlp_values(in, phi), mlp_values(phi.back(), f)));
}
template <class T>
Activation first_activation(const Sequential<T>& s) {
    const auto* d = s.empty() ? nullptr : dynamic_cast<const Dense<T>*>(&s[0]);
    return d ? d->activation() : Activation::relu;
}

template <class L, class T, class Save, class Load>
void add_codec(std::vector<LayerCodec<T>>& r, const char* name, Save save, Load load) {
    r.push_back(LayerCodec<T>{name, std::type_index(typeid(L)),
                              [save](const Module<T>& m, LayerConfig& c) { save(static_cast<const L&>(m), c); },
                              [load](const LayerConfig& c) -> std::unique_ptr<Module<T>> {
                                  if (!std::is_same<L, Sequential<T>>::value && !std::is_same<L, Residual<T>>::value &&
                                      !std::is_same<L, Model<T>>::value)
                                      no_children(c);
                                  return load(c);
                              },
                              [](Model<T>& m, const std::string& n, const Module<T>& l) { return m.layer(n, static_cast<const L&>(l)).id; }});
}
/// A layer without configuration (Flatten, ReLU, ...).
template <class L, class T>
void add_plain(std::vector<LayerCodec<T>>& r, const char* name) {
    add_codec<L>(r, name, [](const L&, LayerConfig&) {}, [](const LayerConfig&) { return std::make_unique<L>(); });
}
/// A layer L(n, m, rng) whose only values are its (n, m) matrix `weight` (Embedding, CoLa): the two
/// sizes under keys `rows` and `cols`.
template <class L, class T>
void add_matrix_layer(std::vector<LayerCodec<T>>& r, const char* name, const char* rows, const char* cols) {
    add_codec<L>(
        r, name, [rows, cols](const L& l, LayerConfig& c) { c.set_size(rows, l.weight.value.shape()[0]).set_size(cols, l.weight.value.shape()[1]); },
        [rows, cols](const LayerConfig& c) {
            const std::size_t n = c.get_size(rows), m = c.get_size(cols);
            c.claim(config_product({n, m}));
            Rng rng(0);
            return std::make_unique<L>(n, m, rng);
        });
}

template <class T, bool IsMax, bool OneD>
void add_pool(std::vector<LayerCodec<T>>& r, const char* name) {
    using P = Pool<T, IsMax, OneD>;
    add_codec<P>(
        r, name,
        [](const P& p, LayerConfig& c) {
            if (OneD) {
                c.set_size("kernel", p.kernel_size().w).set_size("stride", p.stride().w).set_size("padding", p.padding().left);
            } else {
                set_size2(c, "kernel", p.kernel_size());
                set_size2(c, "stride", p.stride());
                set_size2(c, "padding", Size2(p.padding().top, p.padding().left));
            }
        },
        [](const LayerConfig& c) {
            if (OneD) return std::make_unique<P>(Size2(1, c.get_size("kernel")), Size2(1, c.get_size("stride")), Size2(0, c.get_size("padding")));
            return std::make_unique<P>(size2_from(c, "kernel"), size2_from(c, "stride"), size2_from(c, "padding"));
        });
}

/// Conv2d and ConvTranspose2d: channels, kernel and every option; the weight is (out, in/groups,
/// kh, kw), transposed (in, out/groups, kh, kw).
template <class L, class T>
void add_conv2d(std::vector<LayerCodec<T>>& r, const char* name) {
    add_codec<L>(
        r, name,
        [](const L& l, LayerConfig& c) {
            c.set_size("in", l.in_channels()).set_size("out", l.out_channels());
            set_size2(c, "kernel", l.kernel_size());
            put_conv_options(c, l.options());
        },
        [](const LayerConfig& c) {
            const std::size_t in = c.get_size("in"), out = c.get_size("out");
            const Size2 k = size2_from(c, "kernel");
            const ConvOptions o = conv_options_from(c);
            const std::size_t g = o.groups ? o.groups : 1;
            const bool tr = std::is_same<L, ConvTranspose2d<T>>::value;
            c.claim(config_sum(config_product({tr ? in : out, (tr ? out : in) / g, k.h, k.w}), o.bias ? out : 0));
            Rng rng(0);
            return std::make_unique<L>(in, out, k, rng, o);
        });
}

/// A functional Model: its layers (children, in the order they were added, each under key
/// layer<i>) and its nodes in run order (n<i>_kind, n<i>_name, and n<i>_layer, n<i>_in, n<i>_shape
/// as the kind needs), then its output node. Function nodes (Model::apply) hold C++ code and are
/// refused when saving.
template <class T>
void add_model_codec(std::vector<LayerCodec<T>>& r) {
    using M = Model<T>;
    add_codec<M>(
        r, "Model",
        [](const M& m, LayerConfig& c) {
            c.set_size("layers", m.num_layers());
            for (std::size_t i = 0; i < m.num_layers(); ++i) {
                c.set_string("layer" + std::to_string(i), m.layer_name(i));
                c.add_child(layer_config(m.layer_at(i)));
            }
            c.set_size("nodes", m.num_nodes());
            for (std::size_t i = 0; i < m.num_nodes(); ++i) {
                const typename M::NodeInfo n = m.node(i);
                const std::string k = "n" + std::to_string(i) + "_";
                static const char* const kinds[] = {"input", "call", "add", "multiply", "concat", "function"};
                if (n.kind == M::NodeKind::function)
                    throw value_error("nn::save: the Model's node '" + n.name +
                                      "' is a function (Model::apply), C++ code a file cannot hold; use a layer (a registered Module) instead");
                c.set_string(k + "kind", kinds[static_cast<std::size_t>(n.kind)]).set_string(k + "name", n.name);
                if (n.kind == M::NodeKind::input) {
                    std::vector<std::size_t> dims;
                    for (std::size_t d = 0; d < n.features.rank(); ++d) dims.push_back(n.features[d]);
                    if (!dims.empty()) c.set_sizes(k + "shape", dims);
                    continue;
                }
                if (n.kind == M::NodeKind::call) c.set_size(k + "layer", n.layer_index);
                c.set_sizes(k + "in", n.inputs);
            }
            c.set_size("output", m.output_node());
        },
        [](const LayerConfig& c) {
            auto m = std::make_unique<M>();
            const std::size_t nl = c.get_size("layers");
            if (nl != c.children().size())
                c.fail("declares " + std::to_string(nl) + " layers but holds " + std::to_string(c.children().size()));
            for (std::size_t i = 0; i < nl; ++i) {
                const LayerConfig& ch = c.children()[i];
                const std::unique_ptr<Module<T>> l = build_layer<T>(ch);
                const LayerCodec<T>* codec = nullptr;
                for (const LayerCodec<T>& e : layer_registry<T>())
                    if (e.name == ch.type()) codec = &e;
                codec->attach(*m, c.get_string("layer" + std::to_string(i)), *l);  // build_layer found it
            }
            const std::size_t count = c.get_size("nodes");
            for (std::size_t i = 0; i < count; ++i) {
                const std::string k = "n" + std::to_string(i) + "_", kind = c.get_string(k + "kind"), name = c.get_string(k + "name");
                if (kind == "input") {
                    Shape features{};
                    if (c.has(k + "shape"))
                        for (std::size_t d : c.get_sizes(k + "shape")) features.push_back(d);
                    (void)m->input(name, features);
                    continue;
                }
                std::vector<typename M::Value> ins;
                for (std::size_t j : c.get_sizes(k + "in")) {
                    if (j >= i) c.fail("node " + std::to_string(i) + " ('" + name + "') reads node " + std::to_string(j) + ", which does not come before it");
                    ins.push_back(typename M::Value{j});
                }
                if (kind == "call") {
                    const std::size_t l = c.get_size(k + "layer");
                    if (l >= nl) c.fail("node " + std::to_string(i) + " ('" + name + "') calls layer " + std::to_string(l) + " of " + std::to_string(nl));
                    (void)m->call(typename M::Layer{l}, ins, name);
                } else if (kind == "add" || kind == "multiply") {
                    if (ins.size() != 2) c.fail("node " + std::to_string(i) + " ('" + name + "', " + kind + ") needs 2 inputs, got " + std::to_string(ins.size()));
                    (void)(kind == "add" ? m->add(ins[0], ins[1], name) : m->multiply(ins[0], ins[1], name));
                } else if (kind == "concat") {
                    (void)m->concat(ins, name);
                } else {
                    c.fail("node " + std::to_string(i) + " ('" + name + "') has the unknown kind '" + config_printable(kind) + "'");
                }
            }
            const std::size_t out = c.get_size("output");
            if (out >= count) c.fail("the output is node " + std::to_string(out) + " of " + std::to_string(count));
            m->output(typename M::Value{out});
            return m;
        });
}

template <class T>
void add_builtin_layers(std::vector<LayerCodec<T>>& r) {
    // Containers.
    add_codec<Sequential<T>>(
        r, "Sequential",
        [](const Sequential<T>& s, LayerConfig& c) {
            c.set_bool("fusion", s.fusion());
            for (const Module<T>* l : s.layers()) c.add_child(layer_config(*l));
        },
        [](const LayerConfig& c) {
            auto s = std::make_unique<Sequential<T>>();
            s->set_fusion(c.get_bool("fusion"));
            for (const LayerConfig& ch : c.children()) s->add(build_layer<T>(ch));
            return s;
        });
    add_codec<Residual<T>>(
        r, "Residual", [](const Residual<T>& l, LayerConfig& c) { c.add_child(layer_config(const_cast<Residual<T>&>(l).inner())); },
        [](const LayerConfig& c) {
            if (c.children().size() != 1) c.fail("wraps exactly one layer, got " + std::to_string(c.children().size()));
            return std::make_unique<Residual<T>>(build_layer<T>(c.children()[0]));
        });

    add_model_codec<T>(r);

    // Dense, activations, Softmax, Dropout, normalisation.
    add_codec<Dense<T>>(
        r, "Dense",
        [](const Dense<T>& d, LayerConfig& c) {
            c.set_size("in", d.in_features()).set_size("out", d.out_features());
            c.set_string("activation", activation_name(d.activation())).set_double("alpha", static_cast<double>(d.alpha()));
            c.set_bool("bias", d.has_bias());
        },
        [](const LayerConfig& c) {
            const std::size_t in = c.get_size("in"), out = c.get_size("out");
            DenseOptions o;
            o.activation = activation_from(c, "activation");
            o.alpha = c.get_double("alpha");
            o.bias = c.get_bool("bias");
            c.claim(config_sum(config_product({in, out}), o.bias ? out : 0));
            Rng rng(0);
            return std::make_unique<Dense<T>>(in, out, rng, o);
        });
    add_codec<ActivationLayer<T>>(
        r, "Activation",
        [](const ActivationLayer<T>& a, LayerConfig& c) {
            c.set_string("activation", activation_name(a.activation())).set_double("alpha", static_cast<double>(a.alpha()));
        },
        [](const LayerConfig& c) {
            const Activation a = activation_from(c, "activation");
            return std::make_unique<ActivationLayer<T>>(a, static_cast<T>(c.get_double("alpha")));
        });
    add_plain<ReLU<T>>(r, "ReLU");
    add_plain<Sigmoid<T>>(r, "Sigmoid");
    add_plain<Tanh<T>>(r, "Tanh");
    add_plain<Softplus<T>>(r, "Softplus");
    add_plain<Identity<T>>(r, "Identity");
    add_codec<LeakyReLU<T>>(
        r, "LeakyReLU", [](const LeakyReLU<T>& a, LayerConfig& c) { c.set_double("alpha", static_cast<double>(a.alpha())); },
        [](const LayerConfig& c) { return std::make_unique<LeakyReLU<T>>(static_cast<T>(c.get_double("alpha"))); });
    add_codec<ELU<T>>(
        r, "ELU", [](const ELU<T>& a, LayerConfig& c) { c.set_double("alpha", static_cast<double>(a.alpha())); },
        [](const LayerConfig& c) { return std::make_unique<ELU<T>>(static_cast<T>(c.get_double("alpha"))); });
    add_codec<Softmax<T>>(
        r, "Softmax", [](const Softmax<T>& s, LayerConfig& c) { c.set_int("axis", s.axis()); },
        [](const LayerConfig& c) { return std::make_unique<Softmax<T>>(c.get_int("axis")); });
    add_codec<Dropout<T>>(
        r, "Dropout", [](const Dropout<T>& d, LayerConfig& c) { c.set_double("p", d.p()); },
        [](const LayerConfig& c) { return std::make_unique<Dropout<T>>(c.get_double("p")); });
    add_codec<BatchNorm<T>>(
        r, "BatchNorm",
        [](const BatchNorm<T>& b, LayerConfig& c) {
            c.set_size("features", b.features()).set_double("momentum", b.momentum()).set_double("eps", b.eps());
        },
        [](const LayerConfig& c) {
            const std::size_t f = c.get_size("features");
            c.claim(config_product({f, 4}));
            return std::make_unique<BatchNorm<T>>(f, c.get_double("momentum"), c.get_double("eps"));
        });
    add_codec<LayerNorm<T>>(
        r, "LayerNorm", [](const LayerNorm<T>& b, LayerConfig& c) { c.set_size("features", b.features()).set_double("eps", b.eps()); },
        [](const LayerConfig& c) {
            const std::size_t f = c.get_size("features");
            c.claim(config_product({f, 2}));
            return std::make_unique<LayerNorm<T>>(f, c.get_double("eps"));
        });

    // Convolutions, pooling, reshaping.
    add_conv2d<Conv2d<T>>(r, "Conv2d");
    add_codec<Conv1d<T>>(
        r, "Conv1d",
        [](const Conv1d<T>& l, LayerConfig& c) {
            c.set_size("in", l.in_channels()).set_size("out", l.out_channels()).set_size("kernel", l.kernel_size().w);
            put_conv_options(c, l.options());
        },
        [](const LayerConfig& c) {
            const std::size_t in = c.get_size("in"), out = c.get_size("out"), k = c.get_size("kernel");
            const ConvOptions o = conv_options_from(c);
            const std::size_t g = o.groups ? o.groups : 1;
            c.claim(config_sum(config_product({out, in / g, k}), o.bias ? out : 0));
            Rng rng(0);
            return std::make_unique<Conv1d<T>>(in, out, k, rng, o);
        });
    add_conv2d<ConvTranspose2d<T>>(r, "ConvTranspose2d");
    add_pool<T, true, false>(r, "MaxPool2d");
    add_pool<T, false, false>(r, "AvgPool2d");
    add_pool<T, true, true>(r, "MaxPool1d");
    add_pool<T, false, true>(r, "AvgPool1d");
    add_plain<GlobalAvgPool<T>>(r, "GlobalAvgPool");
    add_plain<GlobalMaxPool<T>>(r, "GlobalMaxPool");
    add_plain<Flatten<T>>(r, "Flatten");
    add_codec<Reshape<T>>(
        r, "Reshape",
        [](const Reshape<T>& l, LayerConfig& c) {
            std::vector<std::size_t> v;
            for (std::size_t i = 0; i < l.target().rank(); ++i) v.push_back(l.target()[i]);
            c.set_sizes("target", v);
        },
        [](const LayerConfig& c) {
            const std::vector<std::size_t> v = c.get_sizes("target");
            if (v.empty() || v.size() > 3) c.fail("key 'target' needs 1 to 3 sizes, got " + std::to_string(v.size()));
            Shape s;
            for (std::size_t d : v) s.push_back(d);
            return std::make_unique<Reshape<T>>(s);
        });
    add_codec<Upsample<T>>(
        r, "Upsample", [](const Upsample<T>& u, LayerConfig& c) { set_size2(c, "scale", u.scale()); },
        [](const LayerConfig& c) { return std::make_unique<Upsample<T>>(size2_from(c, "scale")); });

    // Recurrent layers and Embedding.
    const auto put_rnn = [](const RecurrentLayer<T>& l, LayerConfig& c) {
        c.set_size("in", l.input_size()).set_size("hidden", l.hidden_size());
        c.set_bool("return_sequences", l.return_sequences()).set_bool("bias", l.bias_ih.value.size() != 0);
    };
    const auto rnn_args = [](const LayerConfig& c, RnnCell cell, std::size_t& in, std::size_t& hidden) {
        in = c.get_size("in");
        hidden = c.get_size("hidden");
        RecurrentOptions o;
        o.return_sequences = c.get_bool("return_sequences");
        o.bias = c.get_bool("bias");
        const std::size_t gh = config_product({rnn_gates(cell), hidden});
        c.claim(config_sum(config_product({gh, config_sum(in, hidden)}), o.bias ? config_product({gh, 2}) : 0));
        return o;
    };
    add_codec<SimpleRNN<T>>(r, "SimpleRNN", put_rnn, [rnn_args](const LayerConfig& c) {
        std::size_t in = 0, h = 0;
        const RecurrentOptions o = rnn_args(c, RnnCell::rnn_tanh, in, h);
        Rng rng(0);
        return std::make_unique<SimpleRNN<T>>(in, h, rng, o);
    });
    add_codec<LSTM<T>>(r, "LSTM", put_rnn, [rnn_args](const LayerConfig& c) {
        std::size_t in = 0, h = 0;
        const RecurrentOptions o = rnn_args(c, RnnCell::lstm, in, h);
        Rng rng(0);
        return std::make_unique<LSTM<T>>(in, h, rng, o);
    });
    add_codec<GRU<T>>(r, "GRU", put_rnn, [rnn_args](const LayerConfig& c) {
        std::size_t in = 0, h = 0;
        const RecurrentOptions o = rnn_args(c, RnnCell::gru, in, h);
        Rng rng(0);
        return std::make_unique<GRU<T>>(in, h, rng, o);
    });
    add_matrix_layer<Embedding<T>>(r, "Embedding", "num", "dim");

    // Sets and graphs.
    add_codec<DeepSet<T>>(
        r, "DeepSet",
        [](const DeepSet<T>& s, LayerConfig& c) {
            c.set_size("in", s.in_features()).set_sizes("phi", dense_sizes(s.phi)).set_sizes("f", dense_sizes(s.f));
            c.set_string("activation", activation_name(first_activation(s.phi))).set_string("pooling", pooling_name(s.pooling()));
        },
        [](const LayerConfig& c) {
            const std::size_t in = c.get_size("in");
            const std::vector<std::size_t> phi = c.get_sizes("phi"), f = c.get_sizes("f");
            const Activation a = activation_from(c, "activation");
            const std::string& p = c.get_string("pooling");
            if (p != "sum" && p != "mean") c.fail("key 'pooling' is '" + config_printable(p) + "', not sum or mean");
            claim_set_mlps(c, in, phi, f);
            Rng rng(0);
            return std::make_unique<DeepSet<T>>(in, phi, f, rng, a, p == "sum" ? SetPooling::sum : SetPooling::mean);
        });
    add_codec<EnergyFlowNetwork<T>>(
        r, "EnergyFlowNetwork",
        [](const EnergyFlowNetwork<T>& s, LayerConfig& c) {
            c.set_size("angular", s.in_features() - 1).set_sizes("phi", dense_sizes(s.phi)).set_sizes("f", dense_sizes(s.f));
            c.set_string("activation", activation_name(first_activation(s.phi)));
        },
        [](const LayerConfig& c) {
            const std::size_t a = c.get_size("angular");
            const std::vector<std::size_t> phi = c.get_sizes("phi"), f = c.get_sizes("f");
            const Activation act = activation_from(c, "activation");
            claim_set_mlps(c, a, phi, f);
            Rng rng(0);
            return std::make_unique<EnergyFlowNetwork<T>>(a, phi, f, rng, act);
        });
    add_codec<EdgeConv<T>>(
        r, "EdgeConv",
        [](const EdgeConv<T>& e, LayerConfig& c) {
            std::vector<std::size_t> ch{e.edge_in.out_features()};
            for (std::size_t s : dense_sizes(e.edge)) ch.push_back(s);
            c.set_size("in", e.shortcut.in_features()).set_sizes("channels", ch).set_size("k", e.k());
        },
        [](const LayerConfig& c) {
            const std::size_t in = c.get_size("in");
            const std::vector<std::size_t> ch = c.get_sizes("channels");
            if (ch.empty()) c.fail("key 'channels' needs at least one size");
            check_sizes_list(c, ch.size());
            c.claim(config_sum(mlp_values(config_product({in, 2}), ch), mlp_values(in, {ch.back()})));
            Rng rng(0);
            return std::make_unique<EdgeConv<T>>(in, ch, c.get_size("k"), rng);
        });
    add_codec<ParticleNetLite<T>>(
        r, "ParticleNetLite",
        [](const ParticleNetLite<T>& p, LayerConfig& c) {
            const std::vector<std::size_t> head = dense_sizes(p.head);
            c.set_size("coordinates", p.coordinates()).set_size("features", p.block1.shortcut.in_features());
            c.set_size("outputs", head.back()).set_size("k", p.block1.k());
        },
        [](const LayerConfig& c) {
            const std::size_t co = c.get_size("coordinates"), f = c.get_size("features"), out = c.get_size("outputs"), k = c.get_size("k");
            c.claim(config_sum(config_sum(mlp_values(config_product({f, 2}), {32, 32, 32}), config_product({f, 32})), config_product({out, 129})));
            Rng rng(0);
            return std::make_unique<ParticleNetLite<T>>(co, f, out, rng, k);
        });

    // Lorentz layers.
    add_matrix_layer<CoLa<T>>(r, "CoLa", "particles", "combinations");
    add_codec<LoLa<T>>(
        r, "LoLa", [](const LoLa<T>& l, LayerConfig& c) { c.set_size("particles", l.particles()); },
        [](const LayerConfig& c) {
            const std::size_t n = c.get_size("particles");
            c.claim(config_product({n, n, 2}));
            Rng rng(0);
            return std::make_unique<LoLa<T>>(n, rng);
        });
    add_codec<LorentzBoostNetwork<T>>(
        r, "LorentzBoostNetwork",
        [](const LorentzBoostNetwork<T>& l, LayerConfig& c) { c.set_size("particles", l.particles()).set_size("combinations", l.combinations()); },
        [](const LayerConfig& c) {
            const std::size_t n = c.get_size("particles"), m = c.get_size("combinations");
            c.claim(config_product({n, m, 2}));
            if (m > 1024) c.fail("at most 1024 combinations (the pair list grows as their square), got " + std::to_string(m));
            Rng rng(0);
            return std::make_unique<LorentzBoostNetwork<T>>(n, m, rng);
        });

    // Attention.
    add_codec<MultiHeadAttention<T>>(
        r, "MultiHeadAttention",
        [](const MultiHeadAttention<T>& a, LayerConfig& c) { c.set_size("embed_dim", a.embed_dim()).set_size("heads", a.heads()); },
        [](const LayerConfig& c) {
            const std::size_t e = c.get_size("embed_dim");
            c.claim(config_product({e, e, 4}));
            Rng rng(0);
            return std::make_unique<MultiHeadAttention<T>>(e, c.get_size("heads"), rng);
        });
    const auto put_block = [](const TransformerBlock<T>& b, LayerConfig& c) {
        c.set_size("embed_dim", b.attn.embed_dim()).set_size("heads", b.attn.heads()).set_size("hidden", b.fc1.out_features());
    };
    add_codec<TransformerBlock<T>>(r, "TransformerBlock", put_block, [](const LayerConfig& c) {
        const std::size_t e = c.get_size("embed_dim"), h = c.get_size("hidden");
        c.claim(config_sum(config_product({e, e, 4}), config_product({e, h, 2})));
        Rng rng(0);
        return std::make_unique<TransformerBlock<T>>(e, c.get_size("heads"), h, rng);
    });
    add_codec<ParticleBlock<T>>(r, "ParticleBlock", put_block, [](const LayerConfig& c) {
        const std::size_t e = c.get_size("embed_dim"), h = c.get_size("hidden");
        c.claim(config_sum(config_product({e, e, 4}), config_product({e, h, 2})));
        Rng rng(0);
        return std::make_unique<ParticleBlock<T>>(e, c.get_size("heads"), h, rng);
    });
}
} // namespace detail

} // namespace nn
} // namespace tapir
