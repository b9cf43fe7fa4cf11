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
///     auto g = tr.check_game(2000);  // did the adversary keep up? (g.lost)
///
/// The scale of lambda: L_f is the weighted mean binary cross-entropy per event of the
/// classifier's batch and L_r the weighted mean negative log-likelihood per adversary event of
/// m under the mixture, both in nats. lambda = 10 thus trades 1 nat of L_f per event for 0.1 nat
/// of L_r per background event. A constant rescaling of m shifts L_r by a constant and leaves
/// the gradients, hence the meaning of lambda, unchanged. The learning rates are those of the
/// two optimisers; the adversary must be able to keep up with the classifier (a faster adversary
/// optimiser, K adversary steps per classifier step, batches of several hundred adversary events
/// for a 5-component mixture), else the game is lost: check_game() says so.

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
#include "../optim/adam.hpp"
#include "../optim/optimizer.hpp"
#include "../optim/schedule.hpp"
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
class GradientReversal : public Cloneable<GradientReversal<T>, Module<T>> {
public:
    explicit GradientReversal(T lambda = T(1)) : lambda_(lambda) {
        detail::check_finite_hyper("GradientReversal", "lambda", static_cast<double>(lambda));
    }
    Var<T> forward(const Var<T>& x) override { return grad_reverse(x, lambda_); }
    std::string type_name() const override { return "GradientReversal"; }
    std::string describe() const override { return "GradientReversal(" + tapir::detail::number_text(static_cast<double>(lambda_)) + ")"; }
    Shape output_shape(const Shape& in) const override { return in; }
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
class MdnAdversary : public Cloneable<MdnAdversary<T>, Module<T>> {
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
    MdnAdversary(const MdnAdversary& o) : MdnAdversary::Cloneable(o), body_(o.body_), head_(std::make_unique<Dense<T>>(*o.head_)), k_(o.k_) {}
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
    /// Adversary events per adversary batch, drawn from the adversary events alone (background by
    /// default), fresh for every adversary step and for the L_r term of every classifier step.
    /// A 5-component mixture needs several hundred events to resolve a mass shape. 0: the adversary
    /// sees the adversary events inside the classifier's batch of batch_size events.
    std::size_t adversary_batch_size = 0;
    /// Train the adversary on the frozen classifier to convergence before the game: after the
    /// pretrain_adversary_steps, go on up to this many steps in all until the mean L_r of a window
    /// of convergence_window steps improves on the previous window's by less than
    /// convergence_tolerance nats. 0: exactly pretrain_adversary_steps.
    std::size_t pretrain_adversary_max_steps = 0;
    std::size_t convergence_window = 100;
    T convergence_tolerance = T(1e-3);
    /// check_game() calls the game lost when the adversary's L_r exceeds that of an adversary
    /// refit from scratch on the frozen classifier by more than this many nats.
    T lost_game_tolerance = T(0.01);
    /// Anneal the classifier optimiser's learning rate over the game's steps by half a cosine
    /// from its rate at the start of the game to 0 (Loshchilov and Hutter, arXiv 1608.03983), and
    /// restore that rate afterwards. At a large lambda the classifier, at a constant rate, keeps
    /// finding mass information the adversary has not learnt yet faster than the adversary catches
    /// up, and the game oscillates: where it ends is chance. Annealing lets the end of the game
    /// settle with an adversary that keeps up (the classifier moves ever less per adversary step).
    bool anneal_classifier_lr = false;
};

/// Per-step losses of a run (pretraining and adversarial phase, in order).
template <class T>
struct PivotHistory {
    std::vector<T> classifier_pretrain;  ///< L_f
    std::vector<T> adversary_pretrain;   ///< L_r
    std::vector<T> classifier;           ///< E = L_f - lambda L_r at each classifier step
    std::vector<T> classifier_bce;       ///< L_f alone at each classifier step of the adversarial phase
    std::vector<T> adversary;            ///< L_r at the last adversary step before each classifier step
    std::vector<T> classifier_lr;        ///< the classifier optimiser's learning rate at each classifier step of the game
    /// Whether the adversary's pretraining met the convergence test (always true without one).
    bool adversary_converged = true;
};

/// Whether the adversary kept up with the classifier (PivotTrainer::check_game). All losses are
/// mean NLL per adversary event, in nats, on the half of the training data the refits did not see.
template <class T>
struct PivotGameCheck {
    T adversary_loss = T(0);  ///< the trained adversary's L_r
    T refit_loss = T(0);      ///< L_r of an adversary refit from scratch on the frozen classifier
    T marginal_loss = T(0);   ///< L_r of the same refit blind to the classifier: the mass shape alone
    T gap = T(0);             ///< adversary_loss - refit_loss: how far the adversary is from what it could reach
    /// marginal_loss - refit_loss: what the classifier output still tells about m (0: a pivot).
    T information = T(0);
    bool lost = false;        ///< gap above PivotOptions::lost_game_tolerance
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
        : clf_(classifier), adv_(adversary), initial_adv_(adversary), copt_(classifier_opt), aopt_(adversary_opt), opt_(opt),
          rng_(opt.seed) {
        detail::check_finite_hyper("PivotTrainer", "lambda", static_cast<double>(opt.lambda));
        detail::check_finite_hyper("PivotTrainer", "convergence_tolerance", static_cast<double>(opt.convergence_tolerance));
        detail::check_finite_hyper("PivotTrainer", "lost_game_tolerance", static_cast<double>(opt.lost_game_tolerance));
        if (opt.batch_size == 0) throw value_error("PivotTrainer: batch_size must be positive");
        if (opt.pretrain_adversary_max_steps > 0 && opt.convergence_window == 0)
            throw value_error("PivotTrainer: convergence_window must be positive when pretrain_adversary_max_steps is set");
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
        if (opt_.adversary_batch_size > 0) {
            bool any = false;
            for (std::size_t i = 0; i < n && !any; ++i) any = adversary_event(y[i]) && (!w || (*w)[i] != T(0));
            if (!any) throw value_error(std::string(fn) + ": no adversary events (none of the selected class, or all of weight 0)");
        }
        x_ = x;
        y_ = y.reshaped(Shape{n});
        m_ = m.reshaped(Shape{n, 1});
        w_ = w ? w->reshaped(Shape{n}) : Tensor<T>(Shape{n}, T(1));
        wa_ = Tensor<T>(Shape{n});
        for (std::size_t i = 0; i < n; ++i) {
            const bool use = opt_.adversary_events == PivotEvents::all || (opt_.adversary_events == PivotEvents::background) == (y_[i] == T(0));
            wa_[i] = use ? w_[i] : T(0);
        }
        adv_idx_.clear();
        for (std::size_t i = 0; i < n; ++i)
            if (wa_[i] != T(0)) adv_idx_.push_back(i);
        if (opt_.adversary_batch_size > 0) {
            const std::size_t ba = opt_.adversary_batch_size < adv_idx_.size() ? opt_.adversary_batch_size : adv_idx_.size();
            ax_ = Tensor<T>(Shape{ba, x.dim(1)});
            am_ = Tensor<T>(Shape{ba, 1});
            aw_ = Tensor<T>(Shape{ba});
        }
        aperm_.clear();
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
        const bool own = opt_.adversary_batch_size > 0;
        if (own) sample_adversary();
        else sample();
        if (!own && !batch_has_adversary_weight()) return T(0);
        tape_.clear();
        Var<T> z;
        {
            NoGradGuard<T> guard(tape_);
            z = sigmoid(clf_(tape_.view(own ? ax_ : bx_)));
        }
        const Var<T> wa = tape_.view(own ? aw_ : bwa_);
        const Var<T> lr = adv_.nll(z, tape_.view(own ? am_ : bm_), &wa, opt_.mdn);
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
        if (opt_.pretrain_adversary_max_steps > 0) h.adversary_converged = pretrain_adversary_to_convergence(h.adversary_pretrain);
        const T base_lr = copt_.learning_rate();
        std::unique_ptr<optim::CosineAnnealingLR<T>> anneal;
        if (opt_.anneal_classifier_lr && opt_.steps > 0) anneal = std::make_unique<optim::CosineAnnealingLR<T>>(copt_, opt_.steps);
        for (std::size_t s = 0; s < opt_.steps; ++s) {
            T la = T(0);
            for (std::size_t k = 0; k < opt_.adversary_steps; ++k) la = adversary_step();
            h.adversary.push_back(la);
            h.classifier_lr.push_back(copt_.learning_rate());
            h.classifier.push_back(classifier_step());
            h.classifier_bce.push_back(last_bce_);
            if (anneal) anneal->step();
        }
        if (anneal) copt_.set_learning_rate(base_lr);
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

    /// Whether the game is lost: refits an adversary from scratch (the adversary's state when the
    /// trainer was built) for `steps` Adam steps at learning_rate on the frozen classifier, and
    /// once more with the classifier output replaced by a constant (the marginal mass shape),
    /// both on batches of half of the adversary events of the training data; then compares the
    /// three adversaries' losses on the other half. A trained adversary far above the refit has lost the game: the classifier's
    /// apparent decorrelation is the adversary's failure, not the classifier's independence.
    PivotGameCheck<T> check_game(std::size_t steps, T learning_rate = T(1e-3)) {
        check_data();
        if (steps == 0) throw value_error("PivotTrainer::check_game: steps must be positive");
        detail::check_finite_hyper("PivotTrainer::check_game", "learning_rate", static_cast<double>(learning_rate));
        if (adv_idx_.size() < 2) throw value_error("PivotTrainer::check_game: fewer than 2 adversary events in the data");
        const simd::FlushDenormals flush;
        // The refits learn on every other adversary event and all losses are measured on the rest:
        // a refit judged on its own training events would look better than it is (overfitting).
        Tensor<T> zf, mf, wf, ze, me, we;
        adversary_inputs(0, zf, mf, wf);
        adversary_inputs(1, ze, me, we);
        PivotGameCheck<T> g;
        g.adversary_loss = mdn_loss(adv_, ze, me, we);
        const std::size_t nf = zf.dim(0);
        const std::size_t b = opt_.adversary_batch_size > 0 ? opt_.adversary_batch_size : opt_.batch_size;
        g.refit_loss = refit(zf, mf, wf, ze, me, we, steps, learning_rate, b < nf ? b : nf, false);
        g.marginal_loss = refit(zf, mf, wf, ze, me, we, steps, learning_rate, b < nf ? b : nf, true);
        g.gap = g.adversary_loss - g.refit_loss;
        g.information = g.marginal_loss - g.refit_loss;
        g.lost = g.gap > opt_.lost_game_tolerance;
        return g;
    }

private:
    /// L_r of adversary a on inputs z (N, 1), targets m (N, 1), weights w (N), without training.
    T mdn_loss(MdnAdversary<T>& a, const Tensor<T>& z, const Tensor<T>& m, const Tensor<T>& w) {
        Tape<T> t;
        NoGradGuard<T> guard(t);
        const Var<T> wv = t.view(w);
        return a.nll(t.view(z), t.view(m), &wv, opt_.mdn).item();
    }
    /// The classifier outputs z = sigmoid(f(x)) (frozen), m and weights of the adversary events
    /// of one parity of their order (half = 0: even, 1: odd).
    void adversary_inputs(std::size_t half, Tensor<T>& z, Tensor<T>& m, Tensor<T>& w) {
        const std::size_t n = (adv_idx_.size() + 1 - half) / 2, d = x_.dim(1);
        Tensor<T> x(Shape{n, d});
        m = Tensor<T>(Shape{n, 1});
        w = Tensor<T>(Shape{n});
        for (std::size_t r = 0; r < n; ++r) {
            const std::size_t i = adv_idx_[2 * r + half];
            for (std::size_t j = 0; j < d; ++j) x[r * d + j] = x_[i * d + j];
            m[r] = m_[i];
            w[r] = wa_[i];
        }
        Tape<T> t;
        NoGradGuard<T> guard(t);
        const Var<T> p = sigmoid(clf_(t.view(x)));
        z = p.value().reshaped(Shape{n, 1});
    }
    /// An adversary from the initial state, fitted for `steps` Adam steps on batches of b events
    /// of (z, m) (z = 1/2 throughout when blind); returns its L_r on the evaluation events.
    T refit(const Tensor<T>& z, const Tensor<T>& m, const Tensor<T>& w, const Tensor<T>& ze, const Tensor<T>& me, const Tensor<T>& we,
            std::size_t steps, T lr, std::size_t b, bool blind) {
        MdnAdversary<T> a = initial_adv_;
        optim::Adam<T> opt(a.parameters(), lr);
        const std::size_t n = z.dim(0);
        Tensor<T> zb(Shape{b, 1}, T(0.5)), mb(Shape{b, 1}), wb(Shape{b});
        Rng rng(opt_.seed ^ 0x5851f42d4c957f2dULL);
        std::vector<std::size_t> perm;
        std::size_t pos = n;
        Tape<T> t;
        for (std::size_t s = 0; s < steps; ++s) {
            if (pos + b > n) {
                perm = rng.permutation(n);
                pos = 0;
            }
            for (std::size_t r = 0; r < b; ++r) {
                const std::size_t i = perm[pos + r];
                if (!blind) zb[r] = z[i];
                mb[r] = m[i];
                wb[r] = w[i];
            }
            pos += b;
            t.clear();
            const Var<T> wv = t.view(wb);
            const Var<T> l = a.nll(t.view(zb), t.view(mb), &wv, opt_.mdn);
            opt.zero_grad();
            backward(l);
            opt.step();
        }
        if (!blind) return mdn_loss(a, ze, me, we);
        return mdn_loss(a, Tensor<T>(ze.shape(), T(0.5)), me, we);
    }
    /// Goes on with adversary steps in windows until a window's mean L_r improves on the previous
    /// window's by less than the tolerance, or the step budget is spent. Returns whether it converged.
    bool pretrain_adversary_to_convergence(std::vector<T>& losses) {
        const std::size_t w = opt_.convergence_window;
        const auto window_mean = [&](std::size_t end) {
            double s = 0.0;
            for (std::size_t i = end - w; i < end; ++i) s += static_cast<double>(losses[i]);
            return s / static_cast<double>(w);
        };
        while (losses.size() < opt_.pretrain_adversary_max_steps) {
            if (losses.size() >= 2 * w &&
                window_mean(losses.size() - w) - window_mean(losses.size()) < static_cast<double>(opt_.convergence_tolerance))
                return true;
            for (std::size_t i = 0; i < w && losses.size() < opt_.pretrain_adversary_max_steps; ++i) losses.push_back(adversary_step());
        }
        return losses.size() >= 2 * w &&
               window_mean(losses.size() - w) - window_mean(losses.size()) < static_cast<double>(opt_.convergence_tolerance);
    }
    /// A random batch of adversary events (distinct) into the adversary buffers.
    void sample_adversary() {
        check_data();
        const std::size_t n = adv_idx_.size(), d = x_.dim(1), b = ax_.dim(0);
        if (aperm_.size() != n || apos_ + b > n) {
            aperm_ = rng_.permutation(n);
            apos_ = 0;
        }
        for (std::size_t r = 0; r < b; ++r) {
            const std::size_t i = adv_idx_[aperm_[apos_ + r]];
            for (std::size_t j = 0; j < d; ++j) ax_[r * d + j] = x_[i * d + j];
            am_[r] = m_[i];
            aw_[r] = wa_[i];
        }
        apos_ += b;
    }
    bool adversary_event(T label) const {
        return opt_.adversary_events == PivotEvents::all || (opt_.adversary_events == PivotEvents::background) == (label == T(0));
    }
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
        last_bce_ = e.item();
        if (adversarial && opt_.lambda != T(0) && opt_.adversary_batch_size > 0) {
            sample_adversary();  // a fresh batch of adversary events for L_r
            const Var<T> wa = tape_.view(aw_);
            const Var<T> lr = adv_.nll(sigmoid(clf_(tape_.view(ax_))), tape_.view(am_), &wa, opt_.mdn);
            e = sub(e, scale(lr, opt_.lambda));
        } else if (adversarial && opt_.lambda != T(0) && batch_has_adversary_weight()) {
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
    MdnAdversary<T> initial_adv_;  ///< the adversary's state at construction, for check_game's refits
    optim::Optimizer<T>& copt_;
    optim::Optimizer<T>& aopt_;
    PivotOptions<T> opt_;
    Rng rng_;
    Tape<T> tape_;
    Tensor<T> x_, y_, m_, w_, wa_;
    Tensor<T> bx_, by_, bm_, bw_, bwa_;
    std::vector<std::size_t> perm_;
    std::size_t pos_ = 0;
    std::vector<std::size_t> adv_idx_;   ///< events with adversary weight
    Tensor<T> ax_, am_, aw_;             ///< the adversary's own batch (adversary_batch_size > 0)
    std::vector<std::size_t> aperm_;
    std::size_t apos_ = 0;
    T last_bce_ = T(0);                  ///< L_f of the last classifier step
};

} // namespace nn
} // namespace tapir
