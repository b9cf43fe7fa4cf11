// The 50-line course classifier: CSV, scaler, fit, AUC, save (compile-time probe).
#include <tapir/tapir.hpp>
#include <cstdio>
#include <string>
#include <vector>
using namespace tapir;
using namespace tapir::nn;
using namespace tapir::data;
using namespace tapir::io;
using namespace tapir::metrics;

int main(int argc, char** argv) {
    const std::string path = argc > 1 ? argv[1] : "higgs.csv";
    const std::vector<std::string> features = {"pt_y1", "eta_y1", "phi_y1", "e_y1", "pt_y2", "eta_y2", "phi_y2", "e_y2"};
    CsvOptions co;
    co.columns = features;
    co.columns.push_back("label");
    const CsvTable table = read_csv(path, co);
    const Tensor<float> x = table.to_tensor<float>(features);
    const Tensor<float> y = table.to_tensor<float>({"label"});
    const std::vector<double> label = table.column("label");
    const TrainTestSplit parts = train_test_split(table.rows, 0.3, 7);
    StandardScaler scaler;
    scaler.fit(take_rows(x, parts.train));
    const Tensor<float> xtr = scaler.transform(take_rows(x, parts.train));
    const Tensor<float> xte = scaler.transform(take_rows(x, parts.test));
    const Tensor<float> ytr = take_rows(y, parts.train);
    std::vector<double> yte;
    for (std::size_t i : parts.test) yte.push_back(label[i]);
    Rng rng(3);
    Sequential<float> m;
    m.add<Dense<float>>(8, 24, rng, Activation::relu)
        .add<Dense<float>>(24, 16, rng, Activation::relu)
        .add<Dense<float>>(16, 8, rng, Activation::relu)
        .add<Dense<float>>(8, 1, rng);
    optim::Adam<float> opt(m.parameters(), 1e-3f);
    FitOptions<float> fo;
    fo.epochs = 40;
    fo.batch_size = 64;
    fo.validation_split = 0.2;
    fit(m, xtr, ytr, opt, fo);
    const Tensor<float> logits = predict(m, xte);
    const std::vector<float> score(logits.data(), logits.data() + logits.size());
    std::printf("test AUC %.4f\n", roc_auc(score, yte));
    io::save_model("course.tpr", m.named_parameters());
    return 0;
}
