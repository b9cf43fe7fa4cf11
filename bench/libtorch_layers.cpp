// libtorch's C++ API side of bench_inference's structured-layer rows: bench/torch_layers.py's
// architectures and shapes, built with torch::nn (libtorch's own initialisation: only the time is
// compared), one thread, eval mode. Each row tries torch::NoGradGuard and c10::InferenceMode (and,
// for the CNN, channels-last weights and images) and reports the fastest, as the Python peer does.
// Built only when CMake finds Debian's libtorch-dev; bench_inference --layers runs it.
// Usage: libtorch_layers REPEATS CLOCK   (CLOCK: "thread" for process CPU time, or "wall")
// Prints torch_layers.py's lines: one JSON object per row with name, batch1_s, batched_s (null
// where a row has no batched case), variant and torch (libtorch's version).
#include <torch/torch.h>
#include <torch/version.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <string>
#include <utility>

#include "peer.hpp"

namespace {

namespace nn = torch::nn;

int g_repeats = 15;
bool g_wall = false;

/// Median seconds per call, the inner loop grown until one sample takes 20 ms (torch_layers.py's
/// median_time, on the same clock).
double median_time(const std::function<void()>& fn) {
    fn();  // warm-up
    return bench::time_calls(fn, g_repeats, 0.02, g_wall).median;
}

/// A variant's timing: batch 1 and batched (NaN where the row has none).
struct Times {
    double b1 = NAN, bb = NAN;
};

/// Runs `time` under both grad modes; returns the variants' times keyed "<variant> <mode>".
void both_modes(const std::string& variant, const std::function<Times()>& time, std::map<std::string, Times>& out) {
    {
        torch::NoGradGuard no_grad;
        out[variant + " no_grad"] = time();
    }
    {
        c10::InferenceMode inference;
        out[variant + " inference_mode"] = time();
    }
}

/// One row as torch_layers.py prints it: the best batch-1 time and its variant, the best batched time.
void print_row(const char* name, const std::map<std::string, Times>& variants) {
    std::string best;
    double b1 = NAN, bb = NAN;
    for (const auto& [variant, t] : variants) {
        if (!(t.b1 >= b1)) b1 = t.b1, best = variant;
        if (!(t.bb >= bb)) bb = t.bb;
    }
    char batched[32] = "null";
    if (!std::isnan(bb)) std::snprintf(batched, sizeof batched, "%.9g", bb);
    std::printf("{\"name\": \"%s\", \"batch1_s\": %.9g, \"batched_s\": %s, \"variant\": \"%s\", \"torch\": \"%s\"}\n", name, b1, batched,
                best.c_str(), TORCH_VERSION);
    std::fflush(stdout);
}

nn::Sequential cnn() {
    nn::Sequential net(nn::Conv2d(nn::Conv2dOptions(1, 8, 3).padding(1)), nn::ReLU(), nn::MaxPool2d(2),
                       nn::Conv2d(nn::Conv2dOptions(8, 16, 3).padding(1)), nn::ReLU(), nn::MaxPool2d(2), nn::Flatten(),
                       nn::Linear(16 * 10 * 10, 64), nn::ReLU(), nn::Linear(64, 1));
    net->eval();
    return net;
}

} // namespace

int main(int argc, char** argv) {
    if (argc > 1) g_repeats = std::atoi(argv[1]);
    g_wall = argc > 2 && std::string(argv[2]) == "wall";
    torch::set_num_threads(1);
    torch::manual_seed(1);

    {  // LSTM / GRU hidden 64, 8 inputs, one step with the state carried by the caller.
        const torch::Tensor x = torch::randn({1, 8}), x3 = x.reshape({1, 1, 8});
        const torch::Tensor h = torch::zeros({1, 64}), c = torch::zeros({1, 64}), h1 = torch::zeros({1, 1, 64});
        nn::LSTMCell cell(8, 64);
        nn::LSTM lstm(nn::LSTMOptions(8, 64).batch_first(true));
        cell->eval();
        lstm->eval();
        std::map<std::string, Times> v;
        both_modes("LSTMCell", [&] { return Times{median_time([&] { cell(x, std::make_tuple(h, c)); }), NAN}; }, v);
        both_modes("LSTM", [&] { return Times{median_time([&] { lstm(x3, std::make_tuple(h1, h1)); }), NAN}; }, v);
        print_row("lstm64_step", v);

        nn::GRUCell gcell(8, 64);
        nn::GRU gru(nn::GRUOptions(8, 64).batch_first(true));
        gcell->eval();
        gru->eval();
        v.clear();
        both_modes("GRUCell", [&] { return Times{median_time([&] { gcell(x, h); }), NAN}; }, v);
        both_modes("GRU", [&] { return Times{median_time([&] { gru(x3, h1); }), NAN}; }, v);
        print_row("gru64_step", v);
    }
    {  // The top-tagging CNN on 40 x 40 images, batch 1 and 256; contiguous and channels-last.
        nn::Sequential net = cnn();
        const torch::Tensor img = torch::randn({1, 1, 40, 40}), imgs = torch::randn({256, 1, 40, 40});
        std::map<std::string, Times> v;
        const auto time_net = [&](const torch::Tensor& one, const torch::Tensor& many) {
            return Times{median_time([&] { net->forward(one); }), median_time([&] { net->forward(many); }) / 256};
        };
        both_modes("eager", [&] { return time_net(img, imgs); }, v);
        {
            torch::NoGradGuard no_grad;
            for (torch::Tensor& p : net->parameters())
                if (p.dim() == 4) p.set_data(p.contiguous(torch::MemoryFormat::ChannelsLast));
        }
        const torch::Tensor img_cl = img.contiguous(torch::MemoryFormat::ChannelsLast);
        const torch::Tensor imgs_cl = imgs.contiguous(torch::MemoryFormat::ChannelsLast);
        both_modes("channels_last", [&] { return time_net(img_cl, imgs_cl); }, v);
        print_row("cnn40", v);
    }
    {  // PFN on 100 particles (4 features), phi 100-100-64, F 100-1, batch 1: the per-particle
       // network as one batched product over the particles, masked sum, F.
        nn::Sequential phi(nn::Linear(4, 100), nn::ReLU(), nn::Linear(100, 100), nn::ReLU(), nn::Linear(100, 64), nn::ReLU());
        nn::Sequential f(nn::Linear(64, 100), nn::ReLU(), nn::Linear(100, 1));
        phi->eval();
        f->eval();
        const torch::Tensor parts = torch::randn({1, 100, 4}), mask = torch::ones({1, 100, 1});
        std::map<std::string, Times> v;
        both_modes("eager", [&] { return Times{median_time([&] { f->forward((phi->forward(parts) * mask).sum(1)); }), NAN}; }, v);
        print_row("pfn100", v);
    }
    {  // Conv1d, 64 channels in and out, kernel 3, 128 samples ('same' padding), batch 1.
        nn::Conv1d conv(nn::Conv1dOptions(64, 64, 3).padding(1));
        conv->eval();
        const torch::Tensor seq = torch::randn({1, 64, 128});
        std::map<std::string, Times> v;
        both_modes("eager", [&] { return Times{median_time([&] { conv(seq); }), NAN}; }, v);
        print_row("conv1d64", v);
    }
    return 0;
}
