// What the 16-bit tests share: a float32 value stored in float16 or bfloat16 (rounded to nearest,
// as the library stores it), and that storage type's dtype code.
#pragma once

#include "../src/precision.hpp"

#include <optim.h>

#include <cstdint>
#include <type_traits>

namespace optim_test {

template <typename S>
S to_storage(float x)
{
    return optim::store_value<S>(x);
}

template <typename S>
constexpr int32_t dtype_of()
{
    return std::is_same_v<S, optim::Half> ? OPTIM_DTYPE_FLOAT16 : OPTIM_DTYPE_BFLOAT16;
}

} // namespace optim_test
