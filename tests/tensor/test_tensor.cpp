#include <doctest/doctest.h>

#include <cstdint>
#include <tapir/tensor/tensor.hpp>

using tapir::Shape;
using tapir::Tensor;

TEST_CASE("shape basics and printing") {
    Shape s{2, 3, 4};
    CHECK(s.rank() == 3);
    CHECK(s.numel() == 24);
    CHECK(s.rows() == 6);
    CHECK(s.cols() == 4);
    CHECK(s.str() == "(2, 3, 4)");
    CHECK(Shape{5}.str() == "(5,)");
    CHECK(Shape{}.str() == "()");
    CHECK(Shape{}.numel() == 1);
    CHECK_THROWS_AS(Shape({1, 2, 3, 4, 5}), tapir::shape_error);
}

TEST_CASE("broadcasting rules") {
    CHECK(tapir::broadcast_shapes(Shape{4, 3}, Shape{3}, "add") == Shape{4, 3});
    CHECK(tapir::broadcast_shapes(Shape{4, 1}, Shape{1, 3}, "add") == Shape{4, 3});
    CHECK(tapir::broadcast_shapes(Shape{}, Shape{2, 2}, "add") == Shape{2, 2});
    try {
        tapir::broadcast_shapes(Shape{4, 3}, Shape{2}, "add");
        FAIL("expected a shape_error");
    } catch (const tapir::shape_error& e) {
        CHECK(std::string(e.what()) == "add: shapes cannot be broadcast: (4, 3) vs (2,)");
    }
}

TEST_CASE("tensor storage is aligned, copies deep, moves cheap") {
    Tensor<float> a(Shape{3, 5}, 2.0f);
    CHECK(reinterpret_cast<std::uintptr_t>(a.data()) % 64 == 0);
    CHECK(a.size() == 15);
    CHECK(a(2, 4) == 2.0f);
    a(1, 2) = 7.0f;
    CHECK(a[1 * 5 + 2] == 7.0f);
    Tensor<float> b = a;
    b(1, 2) = 1.0f;
    CHECK(a(1, 2) == 7.0f);
    const float* p = a.data();
    Tensor<float> c = std::move(a);
    CHECK(c.data() == p);
    CHECK(a.size() == 0);
    CHECK(c.shape() == Shape{3, 5});
}

TEST_CASE("tensor construction errors name the shape") {
    try {
        Tensor<double> t(Shape{2, 2}, {1.0, 2.0, 3.0});
        FAIL("expected a shape_error");
    } catch (const tapir::shape_error& e) {
        CHECK(std::string(e.what()) == "Tensor: 3 values given for shape (2, 2) (4 elements)");
    }
    Tensor<double> t(Shape{2, 3}, {1, 2, 3, 4, 5, 6});
    CHECK_THROWS_AS(t.reshape_(Shape{4}), tapir::shape_error);
    t.reshape_(Shape{3, 2});
    CHECK(t(2, 1) == 6.0);
    CHECK_THROWS_AS(t.item(), tapir::shape_error);
    CHECK(Tensor<double>::scalar(4.5).item() == 4.5);
}

TEST_CASE("rank-4 indexing is row-major") {
    Tensor<double> t(Shape{2, 3, 4, 5});
    t(1, 2, 3, 4) = 9.0;
    CHECK(t[((1 * 3 + 2) * 4 + 3) * 5 + 4] == 9.0);
}
