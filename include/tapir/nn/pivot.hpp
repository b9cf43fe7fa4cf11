#pragma once
/// Adversarial decorrelation, "learning to pivot" (Louppe, Kagan, Cranmer, arXiv 1611.01046):
/// a gradient-reversal layer, a mixture-density adversary module and a trainer for the paper's
/// Algorithm 1 on E = L_f - lambda L_r. Models and training live in nn/; the losses they use
/// (loss::mdn_nll, loss::binary_cross_entropy_with_logits) stay functions in loss/.
///
///     tapir::nn::Sequential<float> clf;  // x -> one logit
///     tapir::nn::MdnAdversary<float> adv(1, {20, 20}, 5, rng);
///     tapir::optim::Adam<float> oc(clf.parameters(), 1e-3f), oa(adv.parameters(), 1e-3f);
///     tapir::nn::PivotTrainer<float> tr(clf, adv, oc, oa, options);
///     tr.set_data(x, y, m);  // m: the variable to decorrelate, scaled to [0, 1] for truncation
///     tr.run();              // pretrain f, pretrain r on frozen f, then K r-steps per f-step

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "../autodiff/backward.hpp"
#include "../autodiff/ops.hpp"
#include "../autodiff/tape.hpp"
#include "../error.hpp"
#include "../random.hpp"
#include "../simd/fp_mode.hpp"
#include "../loss/classification.hpp"
#include "../loss/mdn.hpp"
#include "../optim/optimizer.hpp"
#include "../tensor/tensor.hpp"
#include "layers.hpp"
#include "module.hpp"
#include "sequential.hpp"

namespace tapir {
namespace nn {
namespace detail {
inline void check_finite_hyper(const char* fn, const char* what, double v) {
    if (!std::isfinite(v)) throw value_error(std::string(fn) + ": " + what + " must be finite, got " + std::to_string(v));
}
} // namespace detail

// ---- gradient reversal ------------------------------------------------------------------------

/// The op grad_reverse (identity forward, gradient times -lambda backward; Ganin & Lempitsky,
/// arXiv 1409.7495) as a layer, for use inside a Sequential. Placed between the classifier output
/// and the adversary, one backward pass of L_f + L_r(reverse(f)) trains the adversary on L_r and
/// the classifier on L_f - lambda L_r.
template <class T>
class GradientReversal : public Module<T> {
public:
    explicit GradientReversal(T lambda = T(1)) : lambda_(lambda) {
        detail::check_finite_hyper("GradientReversal", "lambda", static_cast<double>(lambda));
    }
    Var<T> forward(const Var<T>& x) override { return grad_reverse(x, lambda_); }
    std::string type_name() const override { return "GradientReversal"; }
    std::string describe() const override { return "GradientReversal(" + tapir::detail::number_text(static_cast<double>(lambda_)) + ")"; }
    Shape output_shape(const Shape& in) const override { return in; }
    std::unique_ptr<Module<T>> clone() const override { return std::make_unique<GradientReversal>(*this); }
    T lambda() const noexcept { return lambda_; }
    void set_lambda(T l) {
        detail::check_finite_hyper("GradientReversal", "lambda", static_cast<double>(l));
        lambda_ = l;
    }

private:
    T lambda_;
};

// ---- mixture density adversary -----------------------------------------------------------------

/// The three heads of a K-component mixture, each (N, K).
template <class T>
struct MdnHeads {
    Var<T> logits;     ///< mixture weights pi = softmax(logits)
    Var<T> mu;         ///< means
    Var<T> raw_sigma;  ///< widths sigma = softplus(raw_sigma) + floor
};

/// Mixture density network r(m | z): input z (N, in) -> hidden Dense layers -> one Dense head of
/// 3K outputs, split into mixture logits, means and raw widths (see mdn_nll). The paper and the
/// course use K = 5; the course's adversary is 1 -> 200 -> 100 -> 50 -> 5 components.
template <class T>
class MdnAdversary : public Module<T> {
public:
    MdnAdversary(std::size_t in, const std::vector<std::size_t>& hidden, std::size_t components, Rng& rng,
                 Activation act = Activation::relu)
        : k_(components) {
        if (in == 0 || components == 0)
            throw value_error("MdnAdversary: input size and number of components must be positive, got " + std::to_string(in) + " and " +
                              std::to_string(components));
        std::size_t prev = in;
        for (std::size_t h : hidden) {
            body_.template add<Dense<T>>(prev, h, rng, act);
            prev = h;
        }
        head_ = std::make_unique<Dense<T>>(prev, 3 * components, rng);
    }
    MdnAdversary(const MdnAdversary& o) : Module<T>(o), body_(o.body_), head_(std::make_unique<Dense<T>>(*o.head_)), k_(o.k_) {}
    MdnAdversary& operator=(const MdnAdversary& o) {
        if (this != &o) {
            Module<T>::operator=(o);
            body_ = o.body_;
            head_ = std::make_unique<Dense<T>>(*o.head_);
            k_ = o.k_;
        }
        return *this;
    }

    std::size_t components() const noexcept { return k_; }

    /// The raw head outputs (N, 3K): [logits | means | raw widths].
    Var<T> forward(const Var<T>& z) override {
        const Var<T> in = z.shape().rank() == 1 ? reshape(z, Shape{z.shape()[0], 1}) : z;
        return (*head_)(body_.empty() ? in : body_(in));
    }
    MdnHeads<T> heads(const Var<T>& z) {
        const Var<T> out = forward(z);
        return MdnHeads<T>{slice(out, 1, 0, k_), slice(out, 1, k_, k_), slice(out, 1, 2 * k_, k_)};
    }
    /// -sum_i w_i log p(m_i | z_i) / sum_i w_i (see mdn_nll).
    Var<T> nll(const Var<T>& z, const Var<T>& m, const Var<T>* weights = nullptr, const loss::MdnOptions<T>& opt = loss::MdnOptions<T>{}) {
        const MdnHeads<T> h = heads(z);
        return loss::mdn_nll(h.logits, h.mu, h.raw_sigma, m, weights, opt);
    }

    std::string type_name() const override { return "MdnAdversary"; }
    std::string describe() const override { return "MdnAdversary(" + std::to_string(k_) + " components)"; }
    std::unique_ptr<Module<T>> clone() const override { return std::make_unique<MdnAdversary>(*this); }
    void summary_rows(const Shape& input, std::vector<SummaryRow>& rows) const override {
        Shape s = input;
        if (!body_.empty()) {
            s = body_.output_shape(s);
            rows.push_back(SummaryRow{"body", body_.describe(), s, body_.num_parameters()});
        }
        rows.push_back(SummaryRow{"head", "Dense(" + std::to_string(k_) + " x [logit, mean, width])", head_->output_shape(s),
                                  head_->num_parameters()});
    }

protected:
    void collect_children(std::vector<NamedModule<T>>& out) override {
        out.emplace_back("body", &body_);
        out.emplace_back("head", head_.get());
    }

private:
    Sequential<T> body_;
    std::unique_ptr<Dense<T>> head_;
    std::size_t k_;
};

// ---- Algorithm 1 --------------------------------------------------------------------------------

/// Which events the adversary sees. The physics use (decorrelating a mass from a classifier
/// on background) is `background`; the paper's toy (a nuisance acting on signal) uses `all`.
enum class PivotEvents { background, signal, all };

template <class T>
struct PivotOptions {
    T lambda = T(50);                          ///< E = L_f - lambda L_r
    std::size_t adversary_steps = 5;           ///< K adversary steps per classifier step
    std::size_t pretrain_classifier_steps = 500;
    std::size_t pretrain_adversary_steps = 500;
    std::size_t steps = 1000;                  ///< classifier steps of the adversarial phase
    std::size_t batch_size = 128;
    PivotEvents adversary_events = PivotEvents::background;
    loss::MdnOptions<T> mdn{};                       ///< widths floor, optional truncation to [lo, hi]
    std::uint64_t seed = 1;                    ///< mini-batch sampling
};

/// Per-step losses of a run (pretraining and adversarial phase, in order).
template <class T>
struct PivotHistory {
    std::vector<T> classifier_pretrain;  ///< L_f
    std::vector<T> adversary_pretrain;   ///< L_r
    std::vector<T> classifier;           ///< E = L_f - lambda L_r at each classifier step
    std::vector<T> adversary;            ///< L_r at the last adversary step before each classifier step
};

/// Trains a classifier f (any Module mapping x (N, D) to one logit per event) against an MDN
/// adversary r(m | sigmoid(f(x))) with the paper's Algorithm 1 (arXiv 1611.01046): pretrain f on
/// L_f (weighted BCE from logits), pretrain r on L_r with f frozen, then alternate K steps of r
/// (minimising L_r, f frozen) with one step of f on L_f - lambda L_r (r frozen). The adversary's
/// event weights are the event weights times the `adversary_events` selection, so with the
/// default it sees background only. Mini-batches are drawn at random with replacement of batches
/// (without replacement inside one batch). The optimisers must hold the classifier's and the
/// adversary's parameters respectively.
template <class T>
class PivotTrainer {
public:
    PivotTrainer(Module<T>& classifier, MdnAdversary<T>& adversary, optim::Optimizer<T>& classifier_opt,
                 optim::Optimizer<T>& adversary_opt, const PivotOptions<T>& opt = PivotOptions<T>{})
        : clf_(classifier), adv_(adversary), copt_(classifier_opt), aopt_(adversary_opt), opt_(opt), rng_(opt.seed) {
        detail::check_finite_hyper("PivotTrainer", "lambda", static_cast<double>(opt.lambda));
        if (opt.batch_size == 0) throw value_error("PivotTrainer: batch_size must be positive");
    }

    const PivotOptions<T>& options() const noexcept { return opt_; }
    void set_lambda(T lambda) {
        detail::check_finite_hyper("PivotTrainer", "lambda", static_cast<double>(lambda));
        opt_.lambda = lambda;
    }

    /// Training data: features x (N, D), labels y (N) in {0, 1}, the variable to decorrelate m (N)
    /// (scaled to the truncation interval if truncation is on), optional event weights w (N).
    /// The tensors are copied.
    void set_data(const Tensor<T>& x, const Tensor<T>& y, const Tensor<T>& m, const Tensor<T>* w = nullptr) {
        const char* fn = "PivotTrainer::set_data";
        if (x.rank() != 2 || x.dim(0) == 0) throw shape_error(std::string(fn) + ": features must be (N, D), got " + x.shape().str());
        const std::size_t n = x.dim(0);
        if (y.size() != n || m.size() != n || (w && w->size() != n))
            throw shape_error(std::string(fn) + ": " + std::to_string(n) + " events in x but labels " + y.shape().str() + ", m " +
                              m.shape().str() + (w ? ", weights " + w->shape().str() : std::string()));
        for (std::size_t i = 0; i < n; ++i)
            if (!(y[i] == T(0) || y[i] == T(1)))
                throw value_error(std::string(fn) + ": label of event " + std::to_string(i) + " is " + std::to_string(y[i]) +
                                  ", expected 0 or 1");
        x_ = x;
        y_ = y.reshaped(Shape{n});
        m_ = m.reshaped(Shape{n, 1});
        w_ = w ? w->reshaped(Shape{n}) : Tensor<T>(Shape{n}, T(1));
        wa_ = Tensor<T>(Shape{n});
        for (std::size_t i = 0; i < n; ++i) {
            const bool use = opt_.adversary_events == PivotEvents::all || (opt_.adversary_events == PivotEvents::background) == (y_[i] == T(0));
            wa_[i] = use ? w_[i] : T(0);
        }
        const std::size_t b = opt_.batch_size < n ? opt_.batch_size : n;
        bx_ = Tensor<T>(Shape{b, x.dim(1)});
        by_ = Tensor<T>(Shape{b});
        bm_ = Tensor<T>(Shape{b, 1});
        bw_ = Tensor<T>(Shape{b});
        bwa_ = Tensor<T>(Shape{b});
    }

    /// One step of f on L_f alone. Returns L_f.
    T pretrain_classifier_step() { return classifier_step_impl(false); }
    /// One step of r on L_r with f frozen. Returns L_r (0 if the batch has no adversary events).
    T adversary_step() {
        const simd::FlushDenormals flush;  // the whole step, forward included (simd/fp_mode.hpp)
        sample();
        if (!batch_has_adversary_weight()) return T(0);
        tape_.clear();
        Var<T> z;
        {
            NoGradGuard<T> guard(tape_);
            z = sigmoid(clf_(tape_.view(bx_)));
        }
        const Var<T> wa = tape_.view(bwa_);
        const Var<T> lr = adv_.nll(z, tape_.view(bm_), &wa, opt_.mdn);
        aopt_.zero_grad();
        backward(lr);
        aopt_.step();
        return lr.item();
    }
    /// One step of f on E = L_f - lambda L_r with r frozen. Returns E.
    T classifier_step() { return classifier_step_impl(true); }

    /// The whole algorithm with the configured numbers of steps.
    PivotHistory<T> run() {
        check_data();
        PivotHistory<T> h;
        for (std::size_t i = 0; i < opt_.pretrain_classifier_steps; ++i) h.classifier_pretrain.push_back(pretrain_classifier_step());
        for (std::size_t i = 0; i < opt_.pretrain_adversary_steps; ++i) h.adversary_pretrain.push_back(adversary_step());
        for (std::size_t s = 0; s < opt_.steps; ++s) {
            T la = T(0);
            for (std::size_t k = 0; k < opt_.adversary_steps; ++k) la = adversary_step();
            h.adversary.push_back(la);
            h.classifier.push_back(classifier_step());
        }
        return h;
    }

    /// Classifier outputs sigmoid(f(x)) (N,) without recording gradients.
    Tensor<T> predict(const Tensor<T>& x) {
        Tape<T> t;
        NoGradGuard<T> guard(t);
        const Var<T> p = sigmoid(clf_(t.view(x)));
        return p.value().reshaped(Shape{p.size()});
    }

    /// L_r of the current adversary on a data set (all adversary events), without training.
    T adversary_loss(const Tensor<T>& x, const Tensor<T>& y, const Tensor<T>& m) {
        Tape<T> t;
        NoGradGuard<T> guard(t);
        const std::size_t n = x.dim(0);
        Tensor<T> wa(Shape{n});
        for (std::size_t i = 0; i < n; ++i) {
            const bool use = opt_.adversary_events == PivotEvents::all || (opt_.adversary_events == PivotEvents::background) == (y[i] == T(0));
            wa[i] = use ? T(1) : T(0);
        }
        const Var<T> z = sigmoid(clf_(t.view(x)));
        const Var<T> wv = t.view(wa);
        return adv_.nll(z, t.constant(m.reshaped(Shape{n, 1})), &wv, opt_.mdn).item();
    }

private:
    void check_data() const {
        if (x_.empty()) throw value_error("PivotTrainer: no data (call set_data first)");
    }
    bool batch_has_adversary_weight() const {
        double s = 0.0;
        for (std::size_t i = 0; i < bwa_.size(); ++i) s += static_cast<double>(bwa_[i]);
        return s != 0.0;
    }
    /// A random mini-batch (distinct events) into the batch buffers.
    void sample() {
        check_data();
        const std::size_t n = x_.dim(0), d = x_.dim(1), b = bx_.dim(0);
        if (perm_.size() != n || pos_ + b > n) {
            perm_ = rng_.permutation(n);
            pos_ = 0;
        }
        for (std::size_t r = 0; r < b; ++r) {
            const std::size_t i = perm_[pos_ + r];
            for (std::size_t j = 0; j < d; ++j) bx_[r * d + j] = x_[i * d + j];
            by_[r] = y_[i];
            bm_[r] = m_[i];
            bw_[r] = w_[i];
            bwa_[r] = wa_[i];
        }
        pos_ += b;
    }
    /// Marks a module's parameters as constants for a scope (r while f trains).
    struct Freeze {
        std::vector<Parameter<T>*> params;
        std::vector<bool> saved;
        explicit Freeze(Module<T>& m) : params(m.parameters()) {
            for (Parameter<T>* p : params) {
                saved.push_back(p->requires_grad);
                p->requires_grad = false;
            }
        }
        ~Freeze() {
            for (std::size_t i = 0; i < params.size(); ++i) params[i]->requires_grad = saved[i];
        }
        Freeze(const Freeze&) = delete;
        Freeze& operator=(const Freeze&) = delete;
    };

    T classifier_step_impl(bool adversarial) {
        const simd::FlushDenormals flush;
        sample();
        tape_.clear();
        const Freeze frozen(adv_);
        const Var<T> logits = clf_(tape_.view(bx_));
        const Var<T> wv = tape_.view(bw_);
        Var<T> e = loss::binary_cross_entropy_with_logits(logits, tape_.view(by_), &wv);
        if (adversarial && opt_.lambda != T(0) && batch_has_adversary_weight()) {
            const Var<T> wa = tape_.view(bwa_);
            const Var<T> lr = adv_.nll(sigmoid(logits), tape_.view(bm_), &wa, opt_.mdn);
            e = sub(e, scale(lr, opt_.lambda));
        }
        copt_.zero_grad();
        backward(e);
        copt_.step();
        return e.item();
    }

    Module<T>& clf_;
    MdnAdversary<T>& adv_;
    optim::Optimizer<T>& copt_;
    optim::Optimizer<T>& aopt_;
    PivotOptions<T> opt_;
    Rng rng_;
    Tape<T> tape_;
    Tensor<T> x_, y_, m_, w_, wa_;
    Tensor<T> bx_, by_, bm_, bw_, bwa_;
    std::vector<std::size_t> perm_;
    std::size_t pos_ = 0;
};

} // namespace nn
} // namespace tapir
