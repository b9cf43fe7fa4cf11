#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include <tapir/data/random.hpp>
#include <tapir/io/csv.hpp>

#include "support/alloc_counter.hpp"
#include "support/data_path.hpp"
#include "support/message_of.hpp"

using tapir_test::message_of;

namespace {

const char* const course_text =
    ",pt_y1,eta_y1,phi_y1,e_y1,pt_y2,eta_y2,phi_y2,e_y2,myy,label\n"
    "0,62.2385,1.2206,2.02509,114.652,58.7416,0.879753,-1.23967,82.9781,122.464,0\n"
    "1,69.5362,-1.0435,-2.29563,110.958,48.7077,-2.01968,1.48524,186.759,125.308,1\n";

std::string parse_error_of(const std::string& text, const tapir::io::CsvOptions& opt = {}) {
    return message_of<tapir::parse_error>([&] { tapir::io::parse_csv(text, "t.csv", opt); });
}

std::string temp_path(const char* name) { return std::string("/tmp/tapir_test_csv_") + name; }

} // namespace

TEST_CASE("course format: unnamed index column skipped, named columns in file order") {
    const auto t = tapir::io::parse_csv(course_text, "course.csv");
    CHECK(t.source == "course.csv");
    REQUIRE(t.cols() == 10);
    CHECK(t.names.front() == "pt_y1");
    CHECK(t.names.back() == "label");
    REQUIRE(t.rows == 2);
    REQUIRE(t.values.size() == 20);
    CHECK(t(0, 0) == 62.2385);
    CHECK(t(0, 2) == 2.02509);
    CHECK(t(1, 1) == -1.0435);
    CHECK(t(1, 8) == 125.308);
    CHECK(t(1, 9) == 1.0);
    CHECK(t.index("myy") == 8);
    CHECK(t.has("eta_y2"));
    CHECK_FALSE(t.has(""));
    CHECK(t.column("myy") == std::vector<double>{122.464, 125.308});
}

TEST_CASE("columns selected by name, in the requested order; to_tensor") {
    tapir::io::CsvOptions opt;
    opt.columns = {"myy", "pt_y1", "label"};
    const auto t = tapir::io::parse_csv(course_text, "course.csv", opt);
    REQUIRE(t.names == std::vector<std::string>{"myy", "pt_y1", "label"});
    REQUIRE(t.rows == 2);
    CHECK(t.values == std::vector<double>{122.464, 62.2385, 0, 125.308, 69.5362, 1});

    const auto x = t.to_tensor<float>({"pt_y1", "myy"});
    REQUIRE(x.shape() == tapir::Shape{2, 2});
    CHECK(x(0, 0) == 62.2385f);
    CHECK(x(0, 1) == 122.464f);
    CHECK(x(1, 1) == 125.308f);
    const auto all = t.to_tensor<double>();
    REQUIRE(all.shape() == tapir::Shape{2, 3});
    CHECK(all(1, 2) == 1.0);

    CHECK(message_of<tapir::value_error>([&] { t.index("eta_y1"); }) ==
          "course.csv: unknown column 'eta_y1' (available: myy, pt_y1, label)");
    const auto big = tapir::io::parse_csv("a\n1e300\n", "big.csv");
    CHECK(message_of<tapir::value_error>([&] { big.to_tensor<float>({"a"}); }) ==
          "big.csv: to_tensor: value 1e+300 in row 1, column 'a' overflows the tensor's float type");
    CHECK(big.to_tensor<double>({"a"})[0] == 1e300);
}

TEST_CASE("unknown and duplicate column requests list the names") {
    tapir::io::CsvOptions opt;
    opt.columns = {"pt_y1", "mass"};
    CHECK(message_of<tapir::value_error>([&] { tapir::io::parse_csv(course_text, "course.csv", opt); }) ==
          "course.csv: unknown column 'mass' (available: pt_y1, eta_y1, phi_y1, e_y1, pt_y2, eta_y2, phi_y2, e_y2, "
          "myy, label)");
    opt.columns = {"foo", "a", "bar"};
    CHECK(message_of<tapir::value_error>([&] { tapir::io::parse_csv("a,b\n1,2\n", "t.csv", opt); }) ==
          "t.csv: unknown columns 'foo', 'bar' (available: a, b)");
    opt.columns = {"a", "b", "a"};
    CHECK(message_of<tapir::value_error>([&] { tapir::io::parse_csv("a,b\n1,2\n", "t.csv", opt); }) ==
          "t.csv: column 'a' is requested twice");
    // The unnamed index column cannot be requested.
    opt.columns = {""};
    CHECK(message_of<tapir::value_error>([&] { tapir::io::parse_csv(",a\n0,1\n", "t.csv", opt); }) ==
          "t.csv: unknown column '' (available: a)");
}

TEST_CASE("quoted fields, escaped quotes, delimiters and newlines inside quotes") {
    const std::string text = "\"a,1\",note,\"b\"\"q\"\n"
                             "\"1.5\",\"x, \"\"y\"\"\",  2 \n"
                             "\" -3 \",\"two\nlines\",+4e2\n"
                             "7,,8\n";
    tapir::io::CsvOptions opt;
    opt.columns = {"a,1", "b\"q"};
    const auto t = tapir::io::parse_csv(text, "q.csv", opt);
    REQUIRE(t.rows == 3);
    CHECK(t.values == std::vector<double>{1.5, 2, -3, 400, 7, 8});
    // The embedded newline counts as a line: the error after it names line 5.
    const std::string bad = text + "1,z,abc\n";
    CHECK(message_of<tapir::parse_error>([&] { tapir::io::parse_csv(bad, "q.csv", opt); }) ==
          "q.csv:6: column 3 (b\"q): 'abc' is not a number");
}

TEST_CASE("line ends, blank lines, BOM, spaces, missing final newline") {
    const auto crlf = tapir::io::parse_csv("a,b\r\n1,2\r\n\r\n3 , 4\r\n", "t.csv");
    CHECK(crlf.rows == 2);
    CHECK(crlf.values == std::vector<double>{1, 2, 3, 4});
    const auto cr = tapir::io::parse_csv("a,b\r1,2\r3,4", "t.csv");
    CHECK(cr.values == std::vector<double>{1, 2, 3, 4});
    const auto bom = tapir::io::parse_csv("\xEF\xBB\xBF\n\na\n\n5\n\n", "t.csv");
    REQUIRE(bom.names == std::vector<std::string>{"a"});
    CHECK(bom.values == std::vector<double>{5});
    // Line numbers stay physical across CRLF and blank lines.
    CHECK(parse_error_of("a,b\r\n1,2\r\n\r\n3,x\r\n") == "t.csv:4: column 2 (b): 'x' is not a number");
    CHECK(parse_error_of("a,b\r1,2\r\r3,x") == "t.csv:4: column 2 (b): 'x' is not a number");
}

TEST_CASE("lines of only spaces and tabs are blank lines, wherever they are") {
    const auto t = tapir::io::parse_csv("  \t\na,b\n1,2\n   \n\t\n \t \r\n3,4\n  ", "t.csv");
    CHECK(t.names == std::vector<std::string>{"a", "b"});
    CHECK(t.rows == 2);
    CHECK(t.values == std::vector<double>{1, 2, 3, 4});
    CHECK(tapir::io::parse_csv("a\n5\n \t", "t.csv").values == std::vector<double>{5});
    // Line numbers stay physical across them.
    CHECK(parse_error_of("a,b\n  \n\t\n3,x\n") == "t.csv:4: column 2 (b): 'x' is not a number");
    CHECK(parse_error_of("   \n\t\n") == "t.csv: empty file (no header row)");
    CHECK(parse_error_of("a,b\n \n") == "t.csv: no data rows (the file has only a header)");
    // A line of tabs in a tab-separated file is a row of empty fields, not a blank line.
    tapir::io::CsvOptions tsv;
    tsv.delimiter = '\t';
    CHECK(parse_error_of("x\ty\n1\t2\n\t\n", tsv) == "t.csv:3: column 1 (x): empty field (expected a number)");
    CHECK(tapir::io::parse_csv("x\ty\n1\t2\n  \n", "t.tsv", tsv).rows == 1);
}

TEST_CASE("other delimiters") {
    tapir::io::CsvOptions opt;
    opt.delimiter = '\t';
    const auto t = tapir::io::parse_csv("x\ty\n1\t 2\n", "t.tsv", opt);
    CHECK(t.values == std::vector<double>{1, 2});
    opt.delimiter = ';';
    CHECK(tapir::io::parse_csv("x;\"y;z\"\n-1;2,\n", "t.csv", [] {
              tapir::io::CsvOptions o;
              o.delimiter = ';';
              o.columns = {"x"};
              return o;
          }()).values == std::vector<double>{-1});
    CHECK(parse_error_of("x;y\n1,5;2\n", opt) == "t.csv:2: column 1 (x): '1,5' is not a number");
}

TEST_CASE("number syntax: exponents, signs, underflow to zero, overflow is an error") {
    const auto t = tapir::io::parse_csv("a\n1e3\n-2.5E-1\n.5\n5.\n+7\n1e-400\n-1e-400\n0.000000000001e-320\n4e-320\n", "n.csv");
    REQUIRE(t.rows == 9);
    CHECK(t.values[0] == 1000.0);
    CHECK(t.values[1] == -0.25);
    CHECK(t.values[2] == 0.5);
    CHECK(t.values[3] == 5.0);
    CHECK(t.values[4] == 7.0);
    CHECK(t.values[5] == 0.0);
    CHECK_FALSE(std::signbit(t.values[5]));
    CHECK(t.values[6] == 0.0);
    CHECK(std::signbit(t.values[6]));
    CHECK(t.values[7] == 0.0);
    CHECK(t.values[8] == 4e-320);
    CHECK(parse_error_of("a\n1\n1e999\n") == "t.csv:3: column 1 (a): '1e999' is out of the range of double");
    CHECK(parse_error_of("a\n-1" + std::string(400, '0') + ".5\n") ==
          "t.csv:2: column 1 (a): '-1" + std::string(38, '0') + "...' is out of the range of double");
    for (const char* bad : {"1.5e", "+-1", "++1", "0x10", "1,5", "-", "e5", "1 2", "1e5x", "NA"}) {
        const std::string field = std::string(bad);
        CHECK(parse_error_of(std::string("a;b\n1;") + bad + "\n", [] {
                  tapir::io::CsvOptions o;
                  o.delimiter = ';';
                  return o;
              }()) == "t.csv:2: column 2 (b): '" + field + "' is not a number");
    }
}

TEST_CASE("error messages name file, line, column number and name") {
    // The example: a non-numeric field.
    const std::string bad_eta = std::string(course_text) + "2,40.1,abc,0.1,50,30,0.2,0.3,40,110,0\n";
    CHECK(message_of<tapir::parse_error>([&] { tapir::io::parse_csv(bad_eta, "file.csv"); }) ==
          "file.csv:4: column 3 (eta_y1): 'abc' is not a number");
    // Ragged rows: too few and too many fields.
    CHECK(message_of<tapir::parse_error>([&] {
              tapir::io::parse_csv(std::string(course_text) + "2,40.1,1,0.1,50,30,0.2,0.3,40,110\n", "file.csv");
          }) == "file.csv:4: column 11 (label) is missing (the row has 10 fields, the header 11)");
    CHECK(message_of<tapir::parse_error>([&] {
              tapir::io::parse_csv(std::string(course_text) + "2,40.1,1,0.1,50,30,0.2,0.3,40,110,1,7,\"8\"\n", "file.csv");
          }) == "file.csv:4: column 12: unexpected extra field (the row has 13 fields, the header 11)");
    CHECK(parse_error_of("a,b\n1\n") == "t.csv:2: column 2 (b) is missing (the row has 1 field, the header 2)");
    // Empty fields are errors, not NaN.
    CHECK(parse_error_of("a,b\n1,\n") == "t.csv:2: column 2 (b): empty field (expected a number)");
    CHECK(parse_error_of("a,b\n1,\"  \"\n") == "t.csv:2: column 2 (b): empty field (expected a number)");
    // Quoting errors.
    CHECK(parse_error_of("a,b\n1,2\n3,\"4\n\n") == "t.csv:3: column 2 (b): unterminated quoted field");
    CHECK(parse_error_of("a,b\n1,\"2\"x\n") == "t.csv:2: column 2 (b): unexpected character 'x' after a closing quote");
    // Unprintable bytes are escaped and long fields shortened.
    CHECK(parse_error_of(std::string("a\n1\x01\n")) == "t.csv:2: column 1 (a): '1\\x01' is not a number");
    CHECK(parse_error_of(std::string("a\n1\0\n", 5)) == "t.csv:2: column 1 (a): '1\\x00' is not a number");
    CHECK(parse_error_of("a\n" + std::string(50, 'z') + "\n") ==
          "t.csv:2: column 1 (a): '" + std::string(40, 'z') + "...' is not a number");
    // Header problems.
    CHECK(parse_error_of("a,b,a\n1,2,3\n") == "t.csv:1: column 3: duplicate column name 'a' (also column 1)");
    CHECK(parse_error_of("\n,\n1,2\n") == "t.csv:2: the header names no columns");
    CHECK(message_of<tapir::value_error>([] {
              tapir::io::CsvOptions o;
              o.delimiter = '"';
              tapir::io::parse_csv("a\n1\n", "t.csv", o);
          }) == "t.csv: invalid CSV delimiter '\"'");
}

TEST_CASE("empty and header-only files") {
    CHECK(parse_error_of("") == "t.csv: empty file (no header row)");
    CHECK(parse_error_of("\n\r\n\n") == "t.csv: empty file (no header row)");
    CHECK(parse_error_of("\xEF\xBB\xBF") == "t.csv: empty file (no header row)");
    CHECK(parse_error_of("a,b") == "t.csv: no data rows (the file has only a header)");
    CHECK(parse_error_of("a,b\n\n\n") == "t.csv: no data rows (the file has only a header)");
}

TEST_CASE("non-finite values are rejected with their position unless allowed") {
    const std::string text = "a,b\n1,2\nnan,3\n4,-inf\nInfinity,NaN\n";
    CHECK(parse_error_of(text) == "t.csv:3: column 1 (a): non-finite value 'nan' (set CsvOptions::allow_non_finite to "
                                  "accept it)");
    CHECK(parse_error_of("a,b\n1,+inf\n") ==
          "t.csv:2: column 2 (b): non-finite value '+inf' (set CsvOptions::allow_non_finite to accept it)");
    CHECK(parse_error_of("a,b\n1,\"inf\"\n") ==
          "t.csv:2: column 2 (b): non-finite value 'inf' (set CsvOptions::allow_non_finite to accept it)");
    tapir::io::CsvOptions opt;
    opt.allow_non_finite = true;
    const auto t = tapir::io::parse_csv(text, "t.csv", opt);
    REQUIRE(t.rows == 4);
    CHECK(std::isnan(t(1, 0)));
    CHECK(t(2, 1) == -std::numeric_limits<double>::infinity());
    CHECK(t(3, 0) == std::numeric_limits<double>::infinity());
    CHECK(std::isnan(t(3, 1)));
}

TEST_CASE("files: read, write round trip, errors with the path") {
    const std::string path = temp_path("roundtrip.csv");
    tapir::Rng rng(11);
    std::vector<double> a, b;
    for (int i = 0; i < 500; ++i) {
        a.push_back(rng.normal() * std::pow(10.0, static_cast<double>(rng.uniform_int(40)) - 20.0));
        b.push_back(static_cast<double>(static_cast<float>(rng.uniform())));
    }
    a[0] = 0.1;
    a[1] = -0.0;
    a[2] = std::numeric_limits<double>::denorm_min();
    a[3] = std::numeric_limits<double>::max();
    a[4] = -std::numeric_limits<double>::min();
    tapir::io::write_csv(path, {"a, quoted \"name\"", "b"}, {a, b});
    const auto t = tapir::io::read_csv(path);
    REQUIRE(t.names == std::vector<std::string>{"a, quoted \"name\"", "b"});
    REQUIRE(t.rows == 500);
    bool same = true;
    for (std::size_t i = 0; i < 500; ++i) {
        same = same && std::memcmp(&t.values[2 * i], &a[i], sizeof(double)) == 0;
        same = same && t(i, 1) == b[i];
    }
    CHECK(same);
    // A table writes back to the same table.
    tapir::io::write_csv(temp_path("roundtrip2.csv"), t);
    const auto t2 = tapir::io::read_csv(temp_path("roundtrip2.csv"));
    CHECK(t2.names == t.names);
    CHECK(t2.values == t.values);
    std::remove(path.c_str());
    std::remove(temp_path("roundtrip2.csv").c_str());

    CHECK(message_of<tapir::parse_error>([] { tapir::io::read_csv("/nonexistent/dir/x.csv"); }) ==
          "read_csv: cannot open '/nonexistent/dir/x.csv': No such file or directory");
    CHECK(message_of<tapir::parse_error>([] { tapir::io::read_csv("/tmp"); }) ==
          "read_csv: cannot read '/tmp': Is a directory");
    CHECK(message_of<tapir::parse_error>([] { tapir::io::write_csv("/nonexistent/dir/x.csv", {"a"}, {{1.0}}); }) ==
          "write_csv: cannot open '/nonexistent/dir/x.csv' for writing: No such file or directory");
    CHECK(message_of<tapir::value_error>([] { tapir::io::write_csv(temp_path("never.csv"), {"a", "b"}, {{1.0}}); }) ==
          "write_csv: 2 names but 1 columns");
    CHECK(message_of<tapir::value_error>([] {
              tapir::io::write_csv(temp_path("never.csv"), {"a", "b"}, {{1.0, 2.0}, {1.0}});
          }) == "write_csv: column 'b' has 1 values but column 'a' has 2");
    // Errors in a file name the path.
    const std::string bad = temp_path("bad.csv");
    {
        std::FILE* f = std::fopen(bad.c_str(), "wb");
        REQUIRE(f);
        std::fputs(",x,y\n0,1,2\n1,3,zz\n", f);
        std::fclose(f);
    }
    CHECK(message_of<tapir::parse_error>([&] { tapir::io::read_csv(bad); }) ==
          bad + ":3: column 3 (y): 'zz' is not a number");
    std::remove(bad.c_str());
}

TEST_CASE("no per-field allocation: the allocation count does not grow with the rows") {
    const auto make = [](int rows, bool quoted) {
        std::string s = ",a,b,c\n";
        const std::string qt = quoted ? "\"" : "";
        for (int i = 0; i < rows; ++i)
            s += std::to_string(i) + "," + qt + "1.25" + qt + ", " + qt + " " + std::to_string(i) + ".5" + qt + ",+3e-2\n";
        return s;
    };
    for (bool quoted : {false, true}) {
        CAPTURE(quoted);
        const std::string small = make(10, quoted), large = make(20000, quoted);
        long long n_small, n_large;
        {
            tapir_test::AllocationScope scope;
            const auto t = tapir::io::parse_csv(small, "s.csv");
            n_small = scope.count();
            CHECK(t.rows == 10);
        }
        {
            tapir_test::AllocationScope scope;
            const auto t = tapir::io::parse_csv(large, "l.csv");
            n_large = scope.count();
            CHECK(t.rows == 20000);
            CHECK(t(19999, 1) == 19999.5);
            CHECK(t(19999, 2) == 0.03);
        }
        CHECK(n_large == n_small);
        CHECK(n_small < 30);
    }
}

TEST_CASE("malformed input never crashes: mutated text parses or throws parse_error / value_error") {
    const std::string base = ",a,\"b\"\n0,1.5,\"2\"\n1,-3e2,4\n";
    const char alphabet[] = {',', '"', '\n', '\r', ' ', '1', '.', 'e', '-', '+', 'n', 'a', 'x', '\0', '\t'};
    tapir::Rng rng(5);
    int ok = 0, failed = 0;
    for (int it = 0; it < 3000; ++it) {
        std::string s = base;
        const int edits = 1 + static_cast<int>(rng.uniform_int(4));
        for (int e = 0; e < edits; ++e) {
            const std::size_t pos = static_cast<std::size_t>(rng.uniform_int(s.size() + 1));
            const char c = alphabet[rng.uniform_int(sizeof alphabet)];
            switch (rng.uniform_int(3)) {
            case 0: s.insert(s.begin() + static_cast<std::ptrdiff_t>(pos), c); break;
            case 1: if (pos < s.size()) s.erase(pos, 1); break;
            default: if (pos < s.size()) s[pos] = c; break;
            }
        }
        try {
            const auto t = tapir::io::parse_csv(s, "fuzz.csv");
            CHECK(t.values.size() == t.rows * t.cols());
            for (double v : t.values) CHECK(std::isfinite(v));
            ++ok;
        } catch (const tapir::parse_error&) {
            ++failed;
        } catch (const tapir::value_error&) {
            ++failed;
        }
    }
    CHECK(ok > 100);
    CHECK(failed > 100);
}

TEST_CASE("the H->gamma gamma course file") {
    const std::string path = tapir_test::shared_data("higgs_diphoton_50k.csv");
    if (path.empty()) {
        MESSAGE("shared/data/higgs_diphoton_50k.csv not found; skipped");
        return;
    }
    const auto t = tapir::io::read_csv(path);
    REQUIRE(t.rows == 49999);
    REQUIRE(t.names == std::vector<std::string>{"pt_y1", "eta_y1", "phi_y1", "e_y1", "pt_y2", "eta_y2", "phi_y2",
                                                "e_y2", "myy", "label"});
    CHECK(t(0, 0) == 62.2385);
    CHECK(t(0, 8) == 122.464);
    const auto label = t.column("label");
    const auto myy = t.column("myy");
    double nsig = 0, mmin = 1e9, mmax = -1e9;
    for (std::size_t i = 0; i < t.rows; ++i) {
        CHECK((label[i] == 0.0 || label[i] == 1.0));
        nsig += label[i];
        mmin = std::min(mmin, myy[i]);
        mmax = std::max(mmax, myy[i]);
    }
    CHECK(nsig > 0.4 * 49999);
    CHECK(nsig < 0.6 * 49999);
    CHECK(mmin >= 105.0);
    CHECK(mmax <= 160.0);
}
