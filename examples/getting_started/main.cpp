// Getting started: the path every user takes first. CSV -> StandardScaler -> fit with a
// validation split -> test AUC -> save -> reload (same predictions) -> fixed-size deploy model.
// Usage: getting_started [--data FILE.csv] [--out DIR]; without --data it writes generated events first.
#include <tapir/tapir.hpp>

#include "../common/cli.hpp"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <string>
#include <vector>

using namespace tapir;

nn::Sequential<float> make_classifier(Rng& rng) {  // the course classifier, 8-24-16-8-1, logits out
    nn::Sequential<float> net;
    net.add<nn::Dense<float>>(8, 24, rng, Activation::relu).add<nn::Dense<float>>(24, 16, rng, Activation::relu);
    net.add<nn::Dense<float>>(16, 8, rng, Activation::relu).add<nn::Dense<float>>(8, 1, rng);
    return net;
}

int main(int argc, char** argv) try {
    const examples::Cli cli("getting_started", "getting_started [--data FILE.csv] [--out DIR]\n");
    std::string data, out = ".";
    cli.parse(argc, argv, [&](const std::string& a, const auto& value) {
        if (a == "--data") data = value();
        else if (a == "--out") out = value();
        else return false;
        return true;
    });
    std::filesystem::create_directories(out);
    if (data.empty()) {  // no file given: write generated H -> gamma gamma events in the course's format
        data = out + "/diphoton.csv";
        hep::write_diphoton_csv(data, hep::generate_diphoton(20000, 1));
    }
    const io::CsvTable table = io::read_csv(data);
    const std::vector<std::string> features = {"pt_y1", "eta_y1", "phi_y1", "e_y1", "pt_y2", "eta_y2", "phi_y2", "e_y2"};
    const Tensor<float> x = table.to_tensor<float>(features), y = table.to_tensor<float>({"label"});
    const data::TrainTestSplit split = data::stratified_split(table.column("label"), 0.25, 7);
    const Tensor<float> x_train = data::take_rows(x, split.train), y_train = data::take_rows(y, split.train), x_test = data::take_rows(x, split.test);
    const std::vector<double> y_test = data::take(table.column("label"), split.test);

    data::StandardScaler scaler;
    const Tensor<float> z_train = scaler.fit_transform(x_train), z_test = scaler.transform(x_test);
    Rng rng(42);
    nn::Sequential<float> net = make_classifier(rng);
    optim::Adam<float> opt(net.parameters(), 1e-3f);
    nn::FitOptions<float> fo;
    fo.epochs = 40, fo.batch_size = 64, fo.validation_split = 0.2, fo.patience = 5;
    fo.metrics = {nn::binary_accuracy<float>()};
    const nn::History h = nn::fit(net, z_train, y_train, opt, fo);  // binary cross-entropy on logits by default
    const std::size_t last = h.epochs() - 1;
    std::printf("%s: %zu events (%zu train, %zu test); %zu epochs, loss %.4f, val_loss %.4f, val_accuracy %.4f\n",
                data.c_str(), table.rows, split.train.size(), split.test.size(), h.epochs(), h["loss"][last], h["val_loss"][last],
                h["val_accuracy"][last]);
    const Tensor<float> score = nn::predict(net, z_test);
    std::printf("test AUC %.4f\n", metrics::roc_auc(score, y_test));

    io::save_model(out + "/classifier.tpr", net.named_parameters());
    Rng other(7);
    nn::Sequential<float> reloaded = make_classifier(other);  // fresh weights, then the file's
    io::load_model(out + "/classifier.tpr", reloaded.named_parameters());
    const Tensor<float> score2 = nn::predict(reloaded, z_test);
    const bool same = std::memcmp(score.data(), score2.data(), score.size() * sizeof(float)) == 0;
    std::printf("saved and reloaded %s: predictions %s\n", (out + "/classifier.tpr").c_str(), same ? "identical" : "DIFFER");

    deploy::ModelSpec<float> spec = deploy::spec_from(net);
    spec.set_input_scaling(scaler.mean(), scaler.scale());  // the deploy model takes raw features
    const auto fixed = deploy::to_fixed<deploy::Mlp<float, 8, 24, 16, 8, 1>>(spec);
    std::vector<float> p(x_test.dim(0));
    fixed->forward(x_test.data(), p.data(), p.size());
    double worst = 0.0;
    for (std::size_t i = 0; i < p.size(); ++i) worst = std::fmax(worst, std::fabs(static_cast<double>(p[i] - score[i])));
    std::printf("deploy::Mlp<float, 8, 24, 16, 8, 1>: max |difference| to the trained model %.2g\n", worst);
    return same && worst < 1e-4 ? 0 : 1;
} catch (const std::exception& e) {  // tapir reports bad input by exceptions that say what and where
    std::fprintf(stderr, "getting_started: %s\n", e.what());
    return 1;
}
