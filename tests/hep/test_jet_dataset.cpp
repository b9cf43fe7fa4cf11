#include <doctest/doctest.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include <tapir/error.hpp>
#include <tapir/hep/jet_dataset.hpp>
#include <tapir/hep/jets.hpp>

namespace hep = tapir::hep;
using hep::FourVector;

namespace {
// The header of a pandas to_csv export of the reference dataset: an unnamed index column, then
// the 806 named columns.
std::string real_header(std::size_t n = 200) {
    std::string h;
    for (const auto& name : hep::top_tagging_columns(n)) h += "," + name;
    return h + "\n";
}
std::string zeros(std::size_t k) {
    std::string s;
    for (std::size_t i = 0; i < k; ++i) s += ",0";
    return s;
}
} // namespace

TEST_CASE("top-tagging CSV: column names of the reference dataset") {
    const auto c = hep::top_tagging_columns();
    REQUIRE(c.size() == 806);
    CHECK(c[0] == "E_0");
    CHECK(c[3] == "PZ_0");
    CHECK(c[4] == "E_1");
    CHECK(c[799] == "PZ_199");
    CHECK(c[800] == "truthE");
    CHECK(c[804] == "ttv");
    CHECK(c[805] == "is_signal_new");
}

TEST_CASE("top-tagging CSV: generated jets round-trip exactly through a file") {
    const auto jets = hep::generate_jets(40, 11);
    const std::string path = "tapir_test_top_tagging.csv";
    hep::write_top_tagging_csv(path, jets);
    const auto back = hep::read_top_tagging_csv(path);
    std::remove(path.c_str());
    REQUIRE(back.size() == jets.size());
    for (std::size_t i = 0; i < jets.size(); ++i) {
        CHECK(back[i].label == jets[i].label);
        REQUIRE(back[i].constituents.size() == jets[i].constituents.size());
        for (std::size_t k = 0; k < jets[i].constituents.size(); ++k) {
            const FourVector& a = jets[i].constituents[k];
            const FourVector& b = back[i].constituents[k];
            CHECK((a.px == b.px && a.py == b.py && a.pz == b.pz && a.e == b.e));
        }
        if (jets[i].label == 1) CHECK(back[i].truth.e == jets[i].truth.e);
        else CHECK(back[i].truth.e == 0.0);
    }
}

TEST_CASE("top-tagging CSV: the real file's layout (pandas index, 200 padded slots) reads back") {
    std::string text = real_header();
    // Jet 0: a top with two constituents; jet 1: QCD with one.
    text += "0,500,300,200,-100,50,30,20,-10" + zeros(4 * 198) + ",600,350,220,-110,1,1\n";
    text += "1,400,0,400,0" + zeros(4 * 199) + ",0,0,0,0,0,0\n";
    const auto jets = hep::parse_top_tagging_csv(text, "real.csv");
    REQUIRE(jets.size() == 2);
    CHECK(jets[0].label == 1);
    REQUIRE(jets[0].constituents.size() == 2);
    CHECK(jets[0].constituents[1].e == 50.0);
    CHECK(jets[0].constituents[1].pz == -10.0);
    CHECK(jets[0].truth.px == 350.0);
    CHECK(jets[1].label == 0);
    REQUIRE(jets[1].constituents.size() == 1);
    CHECK(jets[1].constituents[0].py == 400.0);
    // A layout with fewer constituent slots (a user's reduced file) reads too.
    const auto small = hep::parse_top_tagging_csv("E_0,PX_0,PY_0,PZ_0,is_signal_new\n3,0,3,0,1\n", "small.csv");
    REQUIRE(small.size() == 1);
    CHECK(small[0].constituents.size() == 1);
}

TEST_CASE("top-tagging CSV: bad files give errors with line and column") {
    CHECK_THROWS_WITH_AS(hep::parse_top_tagging_csv("E_0,PX_0,PY_0,PZ_0,is_signal_new\n1,2,x,4,0\n", "bad.csv"),
                         doctest::Contains("bad.csv:2: column 3 (PY_0): 'x' is not a number"), tapir::parse_error);
    CHECK_THROWS_WITH_AS(hep::parse_top_tagging_csv("E_0,PX_0,PY_0,PZ_0,is_signal_new\n1,0,1,0,2\n", "lab.csv"),
                         doctest::Contains("lab.csv: data row 1, column 5 (is_signal_new): 2 is not 0 or 1"), tapir::parse_error);
    CHECK_THROWS_WITH_AS(hep::parse_top_tagging_csv("E_0,PX_0,PZ_0,is_signal_new\n1,0,0,1\n", "miss.csv"),
                         doctest::Contains("miss.csv: missing column 'PY_0'"), tapir::parse_error);
    CHECK_THROWS_WITH_AS(hep::parse_top_tagging_csv("E_0,PX_0,PY_0,PZ_0\n1,0,1,0\n", "nolab.csv"),
                         doctest::Contains("missing column 'is_signal_new'"), tapir::parse_error);
    CHECK_THROWS_WITH_AS(hep::parse_top_tagging_csv("a,b\n1,2\n", "other.csv"),
                         doctest::Contains("other.csv: no constituent columns"), tapir::parse_error);
    CHECK_THROWS_WITH_AS(hep::parse_top_tagging_csv("E_0,PX_0,PY_0,PZ_0,is_signal_new\n-1,0,1,0,1\n", "neg.csv"),
                         doctest::Contains("neg.csv: data row 1, column 1 (E_0): negative energy"), tapir::parse_error);
    CHECK_THROWS_WITH_AS(hep::parse_top_tagging_csv("E_0,PX_0,PY_0,PZ_0,is_signal_new\n1,0,1,0\n", "short.csv"),
                         doctest::Contains("short.csv:2"), tapir::parse_error);
}

TEST_CASE("top-tagging NumPy: jets round-trip exactly through .npz and through two .npy files") {
    const auto jets = hep::generate_jets(30, 7);
    const hep::TopTaggingArrays a = hep::top_tagging_arrays(jets);
    CHECK(a.constituents.shape() == tapir::Shape{30, 200, 4});
    CHECK(a.constituents.type() == tapir::io::NpyType::float64);
    CHECK(a.is_signal_new.type() == tapir::io::NpyType::int64);
    CHECK(a.truth.shape() == tapir::Shape{30, 4});
    const std::string npz = "tapir_test_top_tagging.npz", c = "tapir_test_top_tagging_c.npy", l = "tapir_test_top_tagging_l.npy";
    hep::write_top_tagging_npz(npz, jets);
    hep::write_top_tagging_npy(c, l, jets);
    const auto from_npz = hep::read_top_tagging_npz(npz);
    const auto from_npy = hep::read_top_tagging_npy(c, l);
    std::remove(npz.c_str()), std::remove(c.c_str()), std::remove(l.c_str());
    for (const auto* back : {&from_npz, &from_npy}) {
        REQUIRE(back->size() == jets.size());
        for (std::size_t i = 0; i < jets.size(); ++i) {
            CHECK((*back)[i].label == jets[i].label);
            REQUIRE((*back)[i].constituents.size() == jets[i].constituents.size());
            for (std::size_t k = 0; k < jets[i].constituents.size(); ++k) {
                const FourVector& x = jets[i].constituents[k];
                const FourVector& y = (*back)[i].constituents[k];
                CHECK((x.px == y.px && x.py == y.py && x.pz == y.pz && x.e == y.e));
            }
        }
    }
    for (std::size_t i = 0; i < jets.size(); ++i) CHECK(from_npz[i].truth.e == (jets[i].label == 1 ? jets[i].truth.e : 0.0));
    // The first constituent of jet 0 sits at [0, 0, :] as (E, px, py, pz), the same as the CSV columns E_0 ... PZ_0.
    const tapir::io::CsvTable t = hep::top_tagging_table(jets);
    const std::vector<double> v = a.constituents.values<double>();
    CHECK(v[0] == t(0, t.index("E_0")));
    CHECK(v[3] == t(0, t.index("PZ_0")));
    CHECK(v[4 * 200 + 5] == t(1, t.index("PX_1")));
}

TEST_CASE("top-tagging NumPy: arrays of the wrong shape or labels are refused by name") {
    namespace io = tapir::io;
    const auto jets = hep::generate_jets(3, 2);
    const hep::TopTaggingArrays a = hep::top_tagging_arrays(jets, 5);
    CHECK_THROWS_WITH_AS(hep::jets_from_top_tagging_arrays(io::NpyArray::from(tapir::Shape{3, 20}, std::vector<double>(60)), a.is_signal_new),
                         "array: constituents must have shape (jets, constituents, 4) of (E, px, py, pz), got (3, 20)", tapir::shape_error);
    CHECK_THROWS_WITH_AS(hep::jets_from_top_tagging_arrays(a.constituents, io::NpyArray::from(tapir::Shape{2}, std::vector<std::int64_t>{0, 1})),
                         "array: is_signal_new must have shape (3,) for the 3 jets of the constituents, got (2,)", tapir::shape_error);
    CHECK_THROWS_WITH_AS(hep::jets_from_top_tagging_arrays(a.constituents, io::NpyArray::from(tapir::Shape{3}, std::vector<std::int64_t>{0, 2, 1})),
                         "array: is_signal_new of jet 1 is 2, not 0 or 1", tapir::value_error);
}
