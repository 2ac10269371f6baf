// Pieces of argument validation shared by the C entry points of both libraries (api.cpp, and the
// benchmark library's bench/stream_reference.cpp): message formatting and the aliasing check.
#pragma once

#include "error.hpp"

#include <cstdint>
#include <cstdio>
#include <string>

namespace optim {

inline std::string num(double v)
{
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.17g", v);
    return buf;
}

inline std::string at(int64_t k)
{
    return "tensor " + std::to_string(k);
}

// One array of a tensor, named for messages.
struct Array {
    const void* data;
    const char* name;
};

// Fails when an array the call writes (the first n_written; NULL = unused) is another array of the
// same tensor: a parameter passed as its own gradient, and the like. Partial overlaps and memory
// shared between tensors are not detected (optim.h says what then holds).
inline void require_unaliased(const char* fn, int64_t k, const Array* a, int n, int n_written)
{
    for (int i = 0; i < n_written; ++i)
        for (int j = i + 1; j < n; ++j)
            OPTIM_REQUIRE(a[i].data == nullptr || a[i].data != a[j].data, fn,
                          at(k) + ": the " + a[i].name + " and the " + a[j].name +
                              " are the same memory");
}

} // namespace optim
