// Low-precision parameters (float16, bfloat16): their storage types, the conversions to and from
// float32, the rounding modes and the storage-type/compute-type split of the element loops, written
// once for the CPU loops (software conversions, bit for bit those of IEEE 754
// round-to-nearest-even) and the CUDA kernels (cuda_fp16/cuda_bf16 intrinsics, the same results).
#pragma once

#include "sgd_math.hpp" // OPTIM_HOST_DEVICE

#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif

namespace optim {

// IEEE 754 binary16 and bfloat16 (the upper half of a float32), as their bits.
struct Half {
    uint16_t bits;
};
struct BFloat16 {
    uint16_t bits;
};

// The type an element's math is done in, and the type of its optimizer state: float32 for the
// 16-bit types, the element type itself for float32 and float64.
template <typename S>
struct StorageTraits {
    using Compute = S;
};
template <>
struct StorageTraits<Half> {
    using Compute = float;
};
template <>
struct StorageTraits<BFloat16> {
    using Compute = float;
};
template <typename S>
using compute_t = typename StorageTraits<S>::Compute;

template <typename S>
constexpr bool is_low_precision = !std::is_same_v<S, compute_t<S>>;

OPTIM_HOST_DEVICE uint32_t float_to_bits(float x)
{
#if defined(__CUDA_ARCH__)
    return __float_as_uint(x);
#else
    uint32_t u;
    std::memcpy(&u, &x, sizeof u);
    return u;
#endif
}

OPTIM_HOST_DEVICE float bits_to_float(uint32_t u)
{
#if defined(__CUDA_ARCH__)
    return __uint_as_float(u);
#else
    float x;
    std::memcpy(&x, &u, sizeof x);
    return x;
#endif
}

// binary16 -> float32, exact. NaNs stay NaNs (quieted, sign and payload kept).
OPTIM_HOST_DEVICE float half_to_float(Half h)
{
#if defined(__CUDA_ARCH__)
    return __half2float(__ushort_as_half(h.bits));
#else
    const uint32_t sign = static_cast<uint32_t>(h.bits & 0x8000u) << 16;
    const uint32_t exponent = (h.bits >> 10) & 0x1Fu;
    const uint32_t mantissa = h.bits & 0x3FFu;
    if (exponent == 0x1Fu) // infinity, or NaN (quiet bit set)
        return bits_to_float(sign | 0x7F800000u | (mantissa << 13) | (mantissa ? 0x400000u : 0u));
    if (exponent == 0) { // zero or subnormal: mantissa * 2^-24, exact in float32
        const float magnitude = static_cast<float>(mantissa) * 5.9604644775390625e-8f;
        return sign ? -magnitude : magnitude;
    }
    return bits_to_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
#endif
}

// float32 -> binary16, rounded to nearest, ties to even; overflow to infinity, subnormals kept,
// NaNs stay NaNs (quiet). The CPU path is the well-known bit-exact construction: the exponent
// rebiased and a rounding bias of 0xFFF plus the lowest kept bit added before truncation; results
// below 2^-14 rounded by one float addition at the subnormal scale (which needs the default
// round-to-nearest mode of the FPU, as every other float operation here does).
OPTIM_HOST_DEVICE Half float_to_half(float x)
{
#if defined(__CUDA_ARCH__)
    return Half{__half_as_ushort(__float2half_rn(x))};
#else
    uint32_t u = float_to_bits(x);
    const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
    u &= 0x7FFFFFFFu;
    if (u > 0x7F800000u) // NaN: quiet, top payload bits kept
        return Half{static_cast<uint16_t>(sign | 0x7E00u | ((u >> 13) & 0x3FFu))};
    if (u >= 0x477FF000u) // >= 65520 (half way above 65504 ties to the even infinity), or infinity
        return Half{static_cast<uint16_t>(sign | 0x7C00u)};
    if (u < 0x38800000u) { // below 2^-14: subnormal or zero
        // Adding 0.5 puts the value's units of 2^-24 in the low mantissa bits, rounded by the FPU.
        const float shifted = bits_to_float(u) + 0.5f;
        return Half{static_cast<uint16_t>(sign | (float_to_bits(shifted) - 0x3F000000u))};
    }
    const uint32_t odd = (u >> 13) & 1u;
    u += 0xC8000FFFu + odd; // exponent rebias (15 - 127) << 23, plus the rounding bias
    return Half{static_cast<uint16_t>(sign | (u >> 13))};
#endif
}

// bfloat16 -> float32, exact.
OPTIM_HOST_DEVICE float bfloat16_to_float(BFloat16 b)
{
    return bits_to_float(static_cast<uint32_t>(b.bits) << 16);
}

// float32 -> bfloat16, rounded to nearest, ties to even; NaNs stay NaNs (quiet). The CUDA
// intrinsic from sm_80 on (CUDA 11's cuda_bf16.h offers it to no older device); the same bit
// operations as the CPU before.
OPTIM_HOST_DEVICE BFloat16 float_to_bfloat16(float x)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    return BFloat16{__bfloat16_as_ushort(__float2bfloat16_rn(x))};
#else
    const uint32_t u = float_to_bits(x);
    const uint32_t nearest = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
    const uint32_t nan = (u >> 16) | 0x40u;
    // A select, not a branch: the CPU loops vectorise it.
    return BFloat16{static_cast<uint16_t>((u & 0x7FFFFFFFu) > 0x7F800000u ? nan : nearest)};
#endif
}

// float32 -> bfloat16, rounded stochastically: up with probability (the dropped 16 bits) / 2^16,
// so the expected result is x (unbiased) for every x between two finite bfloat16 values. noise is
// 16 uniform random bits. NaNs stay NaNs; infinities stay; above the largest finite bfloat16 the
// result may round up to infinity, with that same probability.
OPTIM_HOST_DEVICE BFloat16 float_to_bfloat16_stochastic(float x, uint32_t noise)
{
    const uint32_t u = float_to_bits(x);
    const uint32_t rounded = (u + (noise & 0xFFFFu)) >> 16;
    const uint32_t nan = (u >> 16) | 0x40u;
    return BFloat16{static_cast<uint16_t>((u & 0x7FFFFFFFu) > 0x7F800000u ? nan : rounded)};
}

// ---- Stochastic rounding's random bits: a counter-based hash, no generator state ----

// SplitMix64's finalizer: a bijection of 64-bit integers whose every output bit depends on every
// input bit.
OPTIM_HOST_DEVICE uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// The key of one tensor of one step: the hash of (seed, step, tensor index in the call). Computed
// once per tensor on the host.
inline uint64_t rounding_key(int64_t seed, int64_t step, int64_t tensor)
{
    uint64_t z = mix64(static_cast<uint64_t>(seed) ^ 0x6A09E667F3BCC909ull);
    z = mix64(z + static_cast<uint64_t>(step));
    return mix64(z + static_cast<uint64_t>(tensor));
}

// The 16 random bits of element `index` of the tensor with this key: the same on every run, thread
// count and device.
OPTIM_HOST_DEVICE uint32_t rounding_noise(uint64_t key, int64_t index)
{
    return static_cast<uint32_t>(
        mix64(key + static_cast<uint64_t>(index) * 0x9E3779B97F4A7C15ull) >> 48);
}

// ---- The element loops' reads and writes ----

// How a value computed in float32 is written back to 16-bit storage.
enum Rounding : int {
    kRoundNearest = 0,    // to nearest, ties to even
    kRoundStochastic = 1, // bfloat16 only: float_to_bfloat16_stochastic
};

// An element read in its compute type (exact).
OPTIM_HOST_DEVICE float load_value(float v)
{
    return v;
}
OPTIM_HOST_DEVICE double load_value(double v)
{
    return v;
}
OPTIM_HOST_DEVICE float load_value(Half v)
{
    return half_to_float(v);
}
OPTIM_HOST_DEVICE float load_value(BFloat16 v)
{
    return bfloat16_to_float(v);
}

// A computed value rounded to the storage type S: identity for float32 and float64; for stochastic
// rounding, key and index name the element's random bits.
template <typename S, int Round = kRoundNearest>
OPTIM_HOST_DEVICE S store_value(compute_t<S> x, uint64_t key = 0, int64_t index = 0)
{
    if constexpr (std::is_same_v<S, Half>) {
        return float_to_half(x);
    } else if constexpr (std::is_same_v<S, BFloat16>) {
        if constexpr (Round == kRoundStochastic)
            return float_to_bfloat16_stochastic(x, rounding_noise(key, index));
        else
            return float_to_bfloat16(x);
    } else {
        (void)key;
        (void)index;
        return x;
    }
}

// Where an update reads and writes one parameter element: the parameter itself (read in the compute
// type, written back rounded), or with master weights its float32 copy, which is read and written
// exactly, with the parameter written as the copy's rounding (never read). Compile-time, so the
// loops stay branch free.
template <typename S, bool Master, int Round>
struct ParamAccess {
    S* __restrict param;
    compute_t<S>* __restrict master; // Master only
    uint64_t key;                    // kRoundStochastic only
    int64_t base;                    // the index in its tensor of element 0 of this range

    OPTIM_HOST_DEVICE compute_t<S> load(int64_t i) const
    {
        if constexpr (Master)
            return master[i];
        else
            return load_value(param[i]);
    }
    OPTIM_HOST_DEVICE void store(int64_t i, compute_t<S> value) const
    {
        if constexpr (Master) master[i] = value;
        param[i] = store_value<S, Round>(value, key, base + i);
    }
};

} // namespace optim
