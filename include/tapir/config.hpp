#pragma once
/// Version, compiler and build-mode macros shared by every tapir header.

#define TAPIR_VERSION_MAJOR 0
#define TAPIR_VERSION_MINOR 1
#define TAPIR_VERSION_PATCH 0
#define TAPIR_VERSION_STRING "0.1.0"

#if defined(__GNUC__) || defined(__clang__)
#define TAPIR_ALWAYS_INLINE inline __attribute__((always_inline))
/// After a lambda's parameter list, for a kernel's inner step passed as a lambda: a plain lambda
/// may stay out of line, without the ISA's target attribute, and its vector wrappers with it.
#define TAPIR_ALWAYS_INLINE_LAMBDA __attribute__((always_inline))
#define TAPIR_NOINLINE __attribute__((noinline))
#define TAPIR_LIKELY(x) __builtin_expect(!!(x), 1)
#define TAPIR_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define TAPIR_RESTRICT __restrict__
#else
#define TAPIR_ALWAYS_INLINE inline
#define TAPIR_ALWAYS_INLINE_LAMBDA
#define TAPIR_NOINLINE
#define TAPIR_LIKELY(x) (x)
#define TAPIR_UNLIKELY(x) (x)
#define TAPIR_RESTRICT
#endif

/// Headers that must also build with -fno-exceptions (deploy/) test this.
#if defined(__cpp_exceptions) || defined(__EXCEPTIONS)
#define TAPIR_HAS_EXCEPTIONS 1
#else
#define TAPIR_HAS_EXCEPTIONS 0
#endif

/// TAPIR_THROW(value_error("...")): throws where exceptions exist; in a -fno-exceptions build the
/// exception expression is not even evaluated and the program aborts (the nlohmann/json rule:
/// checks sit at the public entry points only, the kernels below them never fail). A project may
/// define TAPIR_THROW itself beforehand (to log, or to trap).
#ifndef TAPIR_THROW
#if TAPIR_HAS_EXCEPTIONS
#define TAPIR_THROW(exception) throw exception
#else
#include <cstdlib>
#define TAPIR_THROW(exception) std::abort()
#endif
#endif

/// TAPIR_COMPILED_ONCE(R f<>(Args...)): a costly function that is not a template (the CSV parser,
/// the ROC sort, the file writer) is written as a template of one unused defaulted parameter, and
/// this names its one instantiation. Header-only use instantiates it where called, as before; under
/// TAPIR_EXTERN_TEMPLATES it is an extern instantiation (a non-inline template, so no file
/// instantiates it, even at -O2), and the one file that defines TAPIR_INSTANTIATE_KERNELS compiles
/// it for the program.
#if defined(TAPIR_INSTANTIATE_KERNELS)
#define TAPIR_COMPILED_ONCE(...) template __VA_ARGS__;
#elif defined(TAPIR_EXTERN_TEMPLATES)
#define TAPIR_COMPILED_ONCE(...) extern template __VA_ARGS__;
#else
#define TAPIR_COMPILED_ONCE(...)
#endif
