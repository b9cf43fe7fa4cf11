#pragma once
// The message of the exception of type E that f() throws, or "" if it throws none: the tests of
// error messages compare it with the text a user would read.
#include <string>

namespace tapir_test {

template <class E, class F>
std::string message_of(F&& f) {
    try {
        f();
    } catch (const E& e) {
        return e.what();
    }
    return "";
}

} // namespace tapir_test
