#pragma once
/// Keras' ModelCheckpoint(save_best_only=True) as a fit() callback. Apart from callbacks.hpp so
/// that the training loop does not depend on io/.

#include <memory>
#include <string>

#include "../error.hpp"
#include "../io/model_file.hpp"
#include "callbacks.hpp"

namespace tapir {
namespace nn {

struct CheckpointOptions {
    std::string monitor;  ///< default: "val_loss" with validation data, else "loss"
    MonitorMode mode = MonitorMode::automatic;
    double min_delta = 0.0;
};

/// Keras' ModelCheckpoint(save_best_only=True): after each epoch whose monitored value beats the
/// best so far, writes the model's parameters and buffers to `path` with io::save_model (a
/// temporary file renamed over the old one, so a crash never leaves half a checkpoint). Load it
/// with nn::load_model(path, model) (nn/model_file.hpp) or io::load_model(path,
/// model.named_parameters(), model.named_buffers()).
template <class T>
Callback<T> checkpoint_best(std::string path, const CheckpointOptions& o = CheckpointOptions{}) {
    if (path.empty()) throw value_error("checkpoint_best: empty path");
    auto mon = std::make_shared<detail::MonitorState>();
    mon->monitor = o.monitor;
    mon->mode = o.mode;
    mon->min_delta = o.min_delta;
    return [mon, path](EpochEnd<T>& e) {
        if (mon->improved(e.history)) io::save_model(path, e.model.named_parameters(), e.model.named_buffers());
    };
}

} // namespace nn
} // namespace tapir
