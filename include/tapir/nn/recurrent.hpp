#pragma once
/// Recurrent layers over batch-first sequences (B, T, F): SimpleRNN (tanh), LSTM (Hochreiter and
/// Schmidhuber 1997; forget gate of Gers et al. 2000) and GRU (Cho et al., arXiv:1406.1078), each
/// one fused op with backpropagation through time (autodiff/recurrent.hpp); and Embedding.
///
/// Parameters have PyTorch's names, layout and gate order, so a state dict copies either way:
/// weight_ih (G H, F), weight_hh (G H, H), bias_ih, bias_hh (G H,); LSTM gates i, f, g, o; GRU
/// r, z, n. Initialised as PyTorch: uniform(-1/sqrt(H), 1/sqrt(H)) for every parameter.
///
///     tapir::Rng rng(1);
///     tapir::nn::LSTM<float> lstm(7, 64, rng);           // last state: (B, 64)
///     tapir::nn::Dense<float> head(64, 1, rng);
///     Var<float> logits = head(lstm(x));                   // x (B, 20, 7)
///     Var<float> masked = head(lstm(x, mask));             // mask (B, 20) of 1 and 0
///
/// With a mask (or sequence_mask(tape, lengths, T)) the state stops at each sequence's end, so the
/// last state is the one after its last element, as with pack_padded_sequence in PyTorch.

#include <cmath>
#include <cstddef>
#include <memory>
#include <string>

#include "../autodiff/ops.hpp"
#include "../autodiff/recurrent.hpp"
#include "../autodiff/tape.hpp"
#include "../error.hpp"
#include "../random.hpp"
#include "init.hpp"
#include "module.hpp"

namespace tapir {
namespace nn {

struct RecurrentOptions {
    bool return_sequences = false;  ///< every step's output (B, T, H) instead of the last (B, H)
    bool bias = true;
};

/// The common body of SimpleRNN, LSTM and GRU.
template <class T>
class RecurrentLayer : public Module<T> {
public:
    Parameter<T> weight_ih;  ///< (G H, F)
    Parameter<T> weight_hh;  ///< (G H, H)
    Parameter<T> bias_ih;    ///< (G H,); empty without bias
    Parameter<T> bias_hh;    ///< (G H,); empty without bias

    RnnCell cell() const noexcept { return cell_; }
    std::size_t input_size() const noexcept { return weight_ih.value.shape()[1]; }
    std::size_t hidden_size() const noexcept { return weight_hh.value.shape()[1]; }
    bool return_sequences() const noexcept { return opt_.return_sequences; }

    Var<T> forward(const Var<T>& x) override { return run(x, nullptr, nullptr); }
    /// With a (B, T) mask of 1 (step present) and 0 (padding).
    Var<T> forward(const Var<T>& x, const Var<T>& mask) { return run(x, &mask, nullptr); }
    /// With an initial state (B, S H): [h0 | c0] for the LSTM, h0 otherwise; mask may be null.
    Var<T> forward(const Var<T>& x, const Var<T>* mask, const Var<T>& state0) { return run(x, mask, &state0); }
    /// (x) or (x, mask), as nn::Model and multi-input fit() call it.
    Var<T> forward_many(const std::vector<Var<T>>& in) override { return this->template forward_by_arity<1, 2>(*this, in); }
    std::size_t num_inputs() const override { return 0; }
    using Module<T>::operator();
    Var<T> operator()(const Var<T>& x, const Var<T>& mask) { return forward(x, mask); }

    Shape output_shape(const Shape& in) const override {
        check_input(in);
        return opt_.return_sequences ? Shape{in[0], in[1], hidden_size()} : Shape{in[0], hidden_size()};
    }
    std::string type_name() const override {
        return cell_ == RnnCell::lstm ? "LSTM" : (cell_ == RnnCell::gru ? "GRU" : "SimpleRNN");
    }
    std::string describe() const override {
        return this->type_name() + "(" + std::to_string(input_size()) + " -> " + std::to_string(hidden_size()) +
               (opt_.return_sequences ? ", sequences)" : ")");
    }

protected:
    RecurrentLayer(RnnCell cell, std::size_t in, std::size_t hidden, Rng& rng, const RecurrentOptions& opt)
        : weight_ih("weight_ih", Tensor<T>(Shape{rnn_gates(cell) * hidden, in})),
          weight_hh("weight_hh", Tensor<T>(Shape{rnn_gates(cell) * hidden, hidden})),
          cell_(cell),
          opt_(opt) {
        if (in == 0 || hidden == 0)
            throw value_error(std::string(rnn_cell_name(cell)) + ": input and hidden sizes must be positive, got " + std::to_string(in) +
                              " -> " + std::to_string(hidden));
        const double k = 1.0 / std::sqrt(static_cast<double>(hidden));
        init::uniform(weight_ih.value, rng, -k, k);
        init::uniform(weight_hh.value, rng, -k, k);
        if (opt.bias) {
            bias_ih = Parameter<T>("bias_ih", Tensor<T>(Shape{rnn_gates(cell) * hidden}));
            bias_hh = Parameter<T>("bias_hh", Tensor<T>(Shape{rnn_gates(cell) * hidden}));
            init::uniform(bias_ih.value, rng, -k, k);
            init::uniform(bias_hh.value, rng, -k, k);
        }
    }
    void collect_parameters(std::vector<NamedParameter<T>>& out) override {
        out.emplace_back("weight_ih", &weight_ih);
        out.emplace_back("weight_hh", &weight_hh);
        if (opt_.bias) {
            out.emplace_back("bias_ih", &bias_ih);
            out.emplace_back("bias_hh", &bias_hh);
        }
    }

private:
    void check_input(const Shape& s) const {
        if (TAPIR_UNLIKELY(s.rank() != 3 || s[2] != input_size() || s[1] == 0))
            throw shape_error(this->type_name() + "(" + std::to_string(input_size()) + " -> " + std::to_string(hidden_size()) +
                              "): expected input of shape (batch, steps, " + std::to_string(input_size()) + "), got " + s.str());
    }
    Var<T> run(const Var<T>& x, const Var<T>* mask, const Var<T>* state0) {
        check_input(x.shape());
        Tape<T>& t = x.tape();
        const Var<T> wi = this->use(t, weight_ih), wh = this->use(t, weight_hh);
        Var<T> bi, bh;
        if (opt_.bias) {
            bi = this->use(t, bias_ih);
            bh = this->use(t, bias_hh);
        }
        const Var<T> states = recurrent_sequence(cell_, x, wi, wh, opt_.bias ? &bi : nullptr, opt_.bias ? &bh : nullptr, state0, mask);
        return recurrent_output(cell_, states, opt_.return_sequences, mask);
    }

    RnnCell cell_;
    RecurrentOptions opt_;
};

namespace detail {
/// SimpleRNN, LSTM and GRU: a RecurrentLayer whose cell is fixed by the type.
template <class Derived, class T, RnnCell Cell>
class FixedCell : public Cloneable<Derived, RecurrentLayer<T>> {
public:
    FixedCell(std::size_t in, std::size_t hidden, Rng& rng, const RecurrentOptions& opt = {})
        : Cloneable<Derived, RecurrentLayer<T>>(Cell, in, hidden, rng, opt) {}
};
} // namespace detail

/// h_t = tanh(W_ih x_t + b_ih + W_hh h_(t-1) + b_hh), as torch.nn.RNN(nonlinearity='tanh').
template <class T>
class SimpleRNN : public detail::FixedCell<SimpleRNN<T>, T, RnnCell::rnn_tanh> {
public:
    using SimpleRNN::FixedCell::FixedCell;
};
/// The LSTM as torch.nn.LSTM: gates i, f, g, o; c_t = f c_(t-1) + i g, h_t = o tanh(c_t).
template <class T>
class LSTM : public detail::FixedCell<LSTM<T>, T, RnnCell::lstm> {
public:
    using LSTM::FixedCell::FixedCell;
};
/// The GRU as torch.nn.GRU: gates r, z, n; h_t = (1 - z) n + z h_(t-1).
template <class T>
class GRU : public detail::FixedCell<GRU<T>, T, RnnCell::gru> {
public:
    using GRU::FixedCell::FixedCell;
};

/// A lookup table (num, dim) as torch.nn.Embedding (weights normal(0, 1)): integer ids of any
/// shape up to rank 3, held as values of T, give their rows, shape ids + (dim,).
template <class T>
class Embedding : public detail::WeightMatrixLayer<Embedding<T>, T> {
public:
    using Embedding::WeightMatrixLayer::weight;  ///< (num, dim)

    Embedding(std::size_t num, std::size_t dim, Rng& rng) : Embedding::WeightMatrixLayer("Embedding", "table sizes", num, dim) {
        init::normal(weight.value, rng, 0.0, 1.0);
    }
    std::size_t num_embeddings() const noexcept { return this->rows(); }
    std::size_t embedding_dim() const noexcept { return this->cols(); }

    Var<T> forward(const Var<T>& ids) override { return embedding(this->use(ids.tape(), weight), ids); }
    Shape output_shape(const Shape& in) const override {
        if (in.rank() >= max_rank)
            throw shape_error("Embedding(" + std::to_string(num_embeddings()) + ", " + std::to_string(embedding_dim()) +
                              "): ids of shape " + in.str() + " give a rank above 4");
        Shape out = in;
        out.push_back(embedding_dim());
        return out;
    }
    std::string type_name() const override { return "Embedding"; }
    std::string describe() const override {
        return "Embedding(" + std::to_string(num_embeddings()) + ", " + std::to_string(embedding_dim()) + ")";
    }
};

} // namespace nn
} // namespace tapir
