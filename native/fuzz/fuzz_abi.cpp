// libFuzzer harness over the C ABI (docs/reliability.md). Each input is decoded into a few calls:
// SGD and Adam/AdamW steps (several groups; plain, clipped and scaled), Sls passes and norms, HD
// steps (every scope and rule), GreedyLR init and steps (corrupt state, non-finite metrics), thread
// counts, version bumps (count and NULL cases: no LibTorch here), the bandwidth reference and the
// information functions, with random counts and sizes, NULL and aliased pointers, extreme and
// non-finite values and inconsistent arguments. The harness owns every byte it passes, each buffer
// sized exactly, so AddressSanitizer catches any access outside them. Assertions (a failure aborts,
// which the fuzzer reports as a crash):
//  - every call returns a status a CPU-only build can return (INTERNAL is a bug);
//  - after a non-OK status every buffer is byte for byte as it was (a failed check writes nothing)
//    and optim_last_error() names the function;
//  - after any call, what the ABI only reads is unchanged (unless the input aliased it with memory
//    the call writes).
#include <optim.h>
#include <optim_bench.h>

#include <fuzzer/FuzzedDataProvider.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

namespace {

[[noreturn]] void fuzz_fail(const char* what, const char* detail)
{
    std::fprintf(stderr, "fuzz assertion failed: %s (%s)\n", what, detail);
    std::abort();
}

#define FUZZ_CHECK(condition, detail)                                                              \
    do {                                                                                           \
        if (!(condition)) fuzz_fail(#condition, detail);                                           \
    } while (0)

// Every byte one call may see, each block allocated to its exact size, with a copy to compare.
class Arena {
  public:
    void* alloc(size_t bytes, bool read_only)
    {
        blocks_.push_back(Block{std::make_unique<unsigned char[]>(bytes), bytes, read_only, {}});
        return blocks_.back().data.get();
    }
    template <class T>
    T* array(int64_t n, bool read_only)
    {
        return static_cast<T*>(alloc(static_cast<size_t>(n > 0 ? n : 0) * sizeof(T), read_only));
    }
    // The call writes through `p`: the block holding it is no longer expected to stay unchanged.
    void written(const void* p)
    {
        const auto* c = static_cast<const unsigned char*>(p);
        for (Block& b : blocks_)
            if (c >= b.data.get() && c <= b.data.get() + b.bytes) b.read_only = false;
    }
    void snapshot()
    {
        for (Block& b : blocks_) b.copy.assign(b.data.get(), b.data.get() + b.bytes);
    }
    bool unchanged(bool only_read_only) const
    {
        for (const Block& b : blocks_)
            if ((b.read_only || !only_read_only) && b.bytes > 0 &&
                std::memcmp(b.copy.data(), b.data.get(), b.bytes) != 0)
                return false;
        return true;
    }

  private:
    struct Block {
        std::unique_ptr<unsigned char[]> data;
        size_t bytes;
        bool read_only;
        std::vector<unsigned char> copy;
    };
    std::vector<Block> blocks_;
};

const double kSpecial[] = {0.0,
                           -0.0,
                           1.0,
                           -1.0,
                           0.5,
                           2.0,
                           1e-3,
                           0.9,
                           0.1,
                           1e-8,
                           1e-300,
                           5e-324,
                           -5e-324,
                           1e300,
                           -1e300,
                           3.4e38,
                           3.5e38,
                           -3.5e38,
                           1.2e-38,
                           1e-45,
                           std::numeric_limits<double>::max(),
                           std::numeric_limits<double>::lowest(),
                           std::numeric_limits<double>::min(),
                           HUGE_VAL,
                           -HUGE_VAL,
                           std::numeric_limits<double>::quiet_NaN(),
                           -std::numeric_limits<double>::quiet_NaN()};
constexpr int kSpecials = sizeof kSpecial / sizeof kSpecial[0];

// A hyperparameter or metric: usually one of `sane`, else a special value or any double.
double value(FuzzedDataProvider& in, std::initializer_list<double> sane)
{
    const uint8_t b = in.ConsumeIntegral<uint8_t>();
    if (b < 160) return sane.begin()[b % sane.size()];
    if (b < 240) return kSpecial[b % kSpecials];
    return in.ConsumeFloatingPoint<double>();
}

int32_t pick_i32(FuzzedDataProvider& in, std::initializer_list<int32_t> usual)
{
    const uint8_t b = in.ConsumeIntegral<uint8_t>();
    if (b < 240) return usual.begin()[b % usual.size()];
    return in.ConsumeIntegral<int32_t>();
}

int64_t pick_i64(FuzzedDataProvider& in, std::initializer_list<int64_t> usual)
{
    constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
    constexpr int64_t kMin = std::numeric_limits<int64_t>::min();
    static const int64_t kLimits[] = {kMax, kMin, kMax - 1, kMin + 1};
    const uint8_t b = in.ConsumeIntegral<uint8_t>();
    if (b < 128) return usual.begin()[b % usual.size()];
    if (b < 224) return kLimits[b % 4];
    return in.ConsumeIntegral<int64_t>();
}

// Element counts: mostly tiny, sometimes around a chunk, rarely enough for the worker pool.
int64_t numel(FuzzedDataProvider& in, int64_t& budget)
{
    const uint8_t b = in.ConsumeIntegral<uint8_t>();
    int64_t n = b < 200 ? b % 24 : b < 250 ? 65536 - 8 + b % 16 : 131072 + 997 * (b % 7);
    if (n > budget) n = b % 24;
    budget -= n;
    return n;
}

uint64_t next(uint64_t& s)
{
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
}

// Fills n elements (float or double) from a short description: plain values, values with
// scattered specials, raw bit patterns, or one special everywhere.
void fill(FuzzedDataProvider& in, void* data, int64_t n, bool f64)
{
    const uint8_t mode = in.ConsumeIntegral<uint8_t>() % 4;
    uint64_t s = in.ConsumeIntegral<uint32_t>() | 1u;
    const double constant = kSpecial[in.ConsumeIntegral<uint8_t>() % kSpecials];
    for (int64_t i = 0; i < n; ++i) {
        const uint64_t r = next(s);
        double v = (static_cast<double>(r >> 11) * 0x1p-53 - 0.5) * 4.0;
        if (mode == 1 && (r & 31) == 0) v = kSpecial[(r >> 8) % kSpecials];
        if (mode == 3) v = constant;
        if (f64) {
            if (mode == 2)
                std::memcpy(static_cast<double*>(data) + i, &r, sizeof(double));
            else
                static_cast<double*>(data)[i] = v;
        } else {
            if (mode == 2) {
                const uint32_t bits = static_cast<uint32_t>(r >> 17);
                std::memcpy(static_cast<float*>(data) + i, &bits, sizeof(float));
            } else {
                static_cast<float*>(data)[i] = static_cast<float>(v);
            }
        }
    }
}

// message: the failing library's last error (optim_last_error, or optim_bench_last_error for the
// benchmark library's optim_stream_reference).
void expect_status(optim_status status, const char* fn, const Arena& arena,
                   const char* message = optim_last_error())
{
    FUZZ_CHECK(message != nullptr, fn);
    FUZZ_CHECK(status == OPTIM_STATUS_OK || status == OPTIM_STATUS_INVALID_ARGUMENT ||
                   status == OPTIM_STATUS_UNSUPPORTED || status == OPTIM_STATUS_CUDA_UNAVAILABLE,
               message);
    if (status != OPTIM_STATUS_OK) {
        FUZZ_CHECK(std::strstr(message, fn) != nullptr, message);
        FUZZ_CHECK(arena.unchanged(false), message);
    }
    FUZZ_CHECK(arena.unchanged(true), fn);
}

int32_t pick_device(FuzzedDataProvider& in)
{
    return pick_i32(in, {OPTIM_DEVICE_CPU, OPTIM_DEVICE_CPU, OPTIM_DEVICE_CPU, OPTIM_DEVICE_CUDA});
}

int32_t pick_dtype(FuzzedDataProvider& in)
{
    return pick_i32(in, {OPTIM_DTYPE_FLOAT32, OPTIM_DTYPE_FLOAT64});
}

// The dtypes of the SGD, Adam and hypergradient steps, 16-bit ones included (their arrays are
// allocated as float32: the state is float32, and 16-bit parameters then stay inside their blocks).
int32_t pick_step_dtype(FuzzedDataProvider& in)
{
    return pick_i32(
        in, {OPTIM_DTYPE_FLOAT32, OPTIM_DTYPE_FLOAT64, OPTIM_DTYPE_FLOAT16, OPTIM_DTYPE_BFLOAT16});
}

// One tensor's arrays: `kinds` arrays of n elements, allocated exactly, possibly aliased with each
// other or with an earlier tensor's, possibly NULL. out[j] is array j; written[j] says whether the
// call may write it.
struct TensorArrays {
    std::vector<void*> ptr;
};

TensorArrays tensor_arrays(FuzzedDataProvider& in, Arena& arena, int64_t n, size_t esize,
                           const std::vector<bool>& written, const std::vector<TensorArrays>& prior,
                           const std::vector<int64_t>& prior_numels, bool f64)
{
    const size_t kinds = written.size();
    TensorArrays t;
    t.ptr.resize(kinds);
    const uint8_t layout = in.ConsumeIntegral<uint8_t>();
    // layout 0..191: separate arrays; 192..: one aliasing pattern.
    const uint8_t which = in.ConsumeIntegral<uint8_t>();
    const size_t a = which % kinds, b = (which / 8) % kinds;
    if (layout >= 224 && n > 0) {
        // Partial overlap: array b starts `off` elements into array a's block.
        const int64_t off = 1 + which % 3;
        for (size_t j = 0; j < kinds; ++j) {
            if (j == b && b != a) continue;
            t.ptr[j] =
                arena.alloc(static_cast<size_t>(n + (j == a ? off : 0)) * esize, !written[j]);
            fill(in, t.ptr[j], n + (j == a ? off : 0), f64);
        }
        if (b != a) t.ptr[b] = static_cast<unsigned char*>(t.ptr[a]) + off * esize;
    } else {
        for (size_t j = 0; j < kinds; ++j) {
            t.ptr[j] = arena.alloc(static_cast<size_t>(n) * esize, !written[j]);
            fill(in, t.ptr[j], n, f64);
        }
        if (layout >= 192 && layout < 208) {
            t.ptr[b] = t.ptr[a]; // the same buffer twice (a parameter as its own gradient, ...)
        } else if (layout >= 208 && layout < 224 && !prior.empty()) {
            const size_t k = which % prior.size();
            if (prior_numels[k] >= n && prior[k].ptr[a] != nullptr)
                t.ptr[b] = prior[k].ptr[a]; // shared with an earlier tensor
        }
    }
    // NULL entries, where the input asks for them.
    const uint8_t nulls = in.ConsumeIntegral<uint8_t>();
    if (nulls >= 240) t.ptr[nulls % kinds] = nullptr;
    return t;
}

// Marks every array the call may write, and whatever it aliases, as written.
void mark_written(Arena& arena, const std::vector<TensorArrays>& tensors,
                  const std::vector<bool>& written)
{
    for (const TensorArrays& t : tensors)
        for (size_t j = 0; j < written.size(); ++j)
            if (written[j] && t.ptr[j]) arena.written(t.ptr[j]);
}

template <class T>
T* maybe(FuzzedDataProvider& in, T* p)
{
    return in.ConsumeIntegral<uint8_t>() >= 235 ? nullptr : p;
}

// The clip of a _clipped entry point (its norm is written), or null with `clipped` false: the plain
// entry point. NULL pointers and bad max_norm values where the input asks for them.
const optim_grad_clip* pick_clip(FuzzedDataProvider& in, Arena& arena, bool& clipped)
{
    clipped = in.ConsumeBool();
    if (!clipped) return nullptr;
    auto* norm = arena.array<double>(1, false);
    *norm = 0;
    auto* clip = arena.array<optim_grad_clip>(1, true);
    *clip =
        optim_grad_clip{value(in, {1.0, 0.5, 1e3}), maybe(in, norm), pick_i32(in, {0, 0, 0, 1, 2})};
    return maybe(in, clip);
}

// The scale of a _scaled entry point (its flag is written), or null with `scaled` false. NULL
// pointers, a flag set on entry and bad inverse scales where the input asks for them.
const optim_grad_scale* pick_scale(FuzzedDataProvider& in, Arena& arena, bool& scaled)
{
    scaled = in.ConsumeIntegral<uint8_t>() >= 170;
    if (!scaled) return nullptr;
    auto* inv = arena.array<float>(1, true);
    *inv = static_cast<float>(value(in, {1.0, 0.5, 1.0 / 65536}));
    auto* found = arena.array<float>(1, false);
    *found = in.ConsumeBool() ? 0.0f : 1.0f;
    auto* scale = arena.array<optim_grad_scale>(1, true);
    *scale = optim_grad_scale{maybe(in, inv), maybe(in, found)};
    return maybe(in, scale);
}

// The precision of a _mixed (or, with a scale, _mixed_scaled) entry point, or null with `mixed`
// false: the plain, _clipped or _scaled one.
// Master weights (float32, written; sometimes a parameter's own memory or NULL), a rounding mode,
// seed and step, where the input asks for them.
const optim_precision* pick_precision(FuzzedDataProvider& in, Arena& arena,
                                      const std::vector<int64_t>& numels, void* const* params,
                                      bool& mixed)
{
    mixed = in.ConsumeIntegral<uint8_t>() >= 170;
    if (!mixed) return nullptr;
    const int64_t count = static_cast<int64_t>(numels.size());
    auto* masters = arena.array<void*>(count, true);
    for (int64_t k = 0; k < count; ++k) {
        const int64_t n = numels[static_cast<size_t>(k)];
        masters[k] = arena.alloc(static_cast<size_t>(n) * 4, false);
        fill(in, masters[k], n, false);
        arena.written(masters[k]);
        const uint8_t b = in.ConsumeIntegral<uint8_t>();
        if (b >= 250) masters[k] = nullptr;
        if (b >= 240 && b < 250) masters[k] = params[k];
    }
    auto* precision = arena.array<optim_precision>(1, true);
    *precision = optim_precision{in.ConsumeBool() ? masters : nullptr,
                                 in.ConsumeIntegral<int64_t>(), in.ConsumeIntegral<int64_t>(),
                                 pick_i32(in, {OPTIM_ROUNDING_NEAREST, OPTIM_ROUNDING_STOCHASTIC})};
    return maybe(in, precision);
}

// The per-tensor field a step reads besides its arrays: none, the fresh flags (SGD and HD's
// momentum start) or the step counts (Adam's bias corrections).
enum class PerTensor { None, Fresh, Steps };

// The tensors of one call, decoded tensor by tensor: with a group (non-decreasing unless the input
// says otherwise) and the per-tensor field where the step has them, then a numel (sometimes
// negative) and `written.size()` arrays.
struct TensorSet {
    int64_t count;
    std::vector<TensorArrays> tensors;
    std::vector<int64_t> numels;
    int64_t* numel_array;
    int32_t* group_index = nullptr;
    uint8_t* fresh = nullptr;
    int64_t* steps = nullptr;

    // Array j of every tensor, as the pointer array of a tensor struct.
    void** column(Arena& arena, size_t j) const
    {
        auto* out = arena.array<void*>(count, true);
        for (int64_t k = 0; k < count; ++k) out[k] = tensors[static_cast<size_t>(k)].ptr[j];
        return out;
    }
};

TensorSet decode_tensors(FuzzedDataProvider& in, Arena& arena, int64_t count, int64_t budget,
                         size_t esize, const std::vector<bool>& written, bool f64, bool grouped,
                         PerTensor field)
{
    TensorSet s{count, {}, {}, arena.array<int64_t>(count, true)};
    if (grouped) s.group_index = arena.array<int32_t>(count, true);
    if (field == PerTensor::Fresh) s.fresh = arena.array<uint8_t>(count, true);
    if (field == PerTensor::Steps) s.steps = arena.array<int64_t>(count, true);
    int32_t group = 0;
    for (int64_t k = 0; k < count; ++k) {
        if (grouped) {
            const uint8_t step = in.ConsumeIntegral<uint8_t>();
            group += step < 160 ? 0 : step < 250 ? 1 : -1;
            s.group_index[k] = step == 255 ? in.ConsumeIntegral<int32_t>() : group;
        }
        if (field == PerTensor::Fresh) s.fresh[k] = in.ConsumeIntegral<uint8_t>() % 3 == 0;
        if (field == PerTensor::Steps) s.steps[k] = pick_i64(in, {1, 2, 1000, 0});
        const int64_t n = numel(in, budget);
        s.numel_array[k] = in.ConsumeIntegral<uint8_t>() >= 250 ? -n - 1 : n;
        s.tensors.push_back(tensor_arrays(in, arena, n, esize, written, s.tensors, s.numels, f64));
        s.numels.push_back(n);
    }
    return s;
}

// The device, device index and element type of a call (16-bit types: the SGD, Adam and
// hypergradient steps).
struct Target {
    int32_t device, device_index, dtype;
    bool f64() const { return dtype == OPTIM_DTYPE_FLOAT64; }
    size_t esize() const { return f64() ? 8 : 4; }
};

Target pick_target(FuzzedDataProvider& in, bool low_precision)
{
    const int32_t device = pick_device(in);
    const int32_t device_index = in.ConsumeIntegralInRange<int32_t>(-1, 1);
    return {device, device_index, low_precision ? pick_step_dtype(in) : pick_dtype(in)};
}

// One optimizer's step entry points by variant, with their names: one row per optimizer, NULL
// where it has no such variant. Args: what every variant takes before its own arguments.
template <class... Args>
struct StepEntries {
    optim_status (*plain)(Args...);
    optim_status (*clipped)(Args..., const optim_grad_clip*);
    optim_status (*scaled)(Args..., const optim_grad_clip*, const optim_grad_scale*);
    optim_status (*mixed)(Args..., const optim_grad_clip*, const optim_precision*);
    optim_status (*mixed_scaled)(Args..., const optim_grad_clip*, const optim_grad_scale*,
                                 const optim_precision*);
    const char* names[5]; // plain, clipped, scaled, mixed, mixed_scaled
};

#define FUZZ_STEP_ARGS(Tensors, Groups)                                                            \
    int32_t, int32_t, int32_t, const Tensors*, int32_t, const Groups*
#define FUZZ_HD_ARGS(Tensors, Groups)                                                              \
    FUZZ_STEP_ARGS(Tensors, Groups), const optim_hd_params*, double*, int64_t*

const StepEntries<FUZZ_STEP_ARGS(optim_tensor_list, optim_sgd_params)> kSgdEntries{
    optim_sgd_step,
    optim_sgd_step_clipped,
    optim_sgd_step_scaled,
    optim_sgd_step_mixed,
    optim_sgd_step_mixed_scaled,
    {"optim_sgd_step", "optim_sgd_step_clipped", "optim_sgd_step_scaled", "optim_sgd_step_mixed",
     "optim_sgd_step_mixed_scaled"}};
const StepEntries<FUZZ_STEP_ARGS(optim_adam_tensors, optim_adam_params)> kAdamEntries{
    optim_adam_step,
    optim_adam_step_clipped,
    optim_adam_step_scaled,
    optim_adam_step_mixed,
    optim_adam_step_mixed_scaled,
    {"optim_adam_step", "optim_adam_step_clipped", "optim_adam_step_scaled",
     "optim_adam_step_mixed", "optim_adam_step_mixed_scaled"}};
const StepEntries<FUZZ_HD_ARGS(optim_hd_tensors, optim_hd_group)> kHdEntries{
    optim_hd_step,
    optim_hd_step_clipped,
    optim_hd_step_scaled,
    optim_hd_step_mixed,
    nullptr,
    {"optim_hd_step", "optim_hd_step_clipped", "optim_hd_step_scaled", "optim_hd_step_mixed",
     nullptr}};
const StepEntries<FUZZ_HD_ARGS(optim_hd_adam_tensors, optim_hd_adam_group)> kHdAdamEntries{
    optim_hd_adam_step,
    optim_hd_adam_step_clipped,
    nullptr,
    optim_hd_adam_step_mixed,
    nullptr,
    {"optim_hd_adam_step", "optim_hd_adam_step_clipped", nullptr, "optim_hd_adam_step_mixed",
     nullptr}};

// The variant of one call and its inputs: a clip, then a scale and a precision where the step has
// those variants (scaled and mixed together: the mixed-scaled step; else the first chosen of
// scaled, mixed and clipped wins; else the plain step).
struct VariantInputs {
    bool clipped = false, scaled = false, mixed = false;
    const optim_grad_clip* clip = nullptr;
    const optim_grad_scale* scale = nullptr;
    const optim_precision* precision = nullptr;
};

template <class... Args>
VariantInputs pick_variant(FuzzedDataProvider& in, Arena& arena, const StepEntries<Args...>& e,
                           const TensorSet& s, void* const* params)
{
    VariantInputs v;
    v.clip = pick_clip(in, arena, v.clipped);
    if (e.scaled) v.scale = pick_scale(in, arena, v.scaled);
    if (e.mixed) v.precision = pick_precision(in, arena, s.numels, params, v.mixed);
    return v;
}

// Calls the chosen variant and checks its status; returns the status.
template <class... Args, class... Given>
optim_status call_step(const StepEntries<Args...>& e, const VariantInputs& v, const Arena& arena,
                       Given... args)
{
    optim_status status;
    const char* name;
    if (v.scaled && v.mixed && e.mixed_scaled) {
        status = e.mixed_scaled(args..., v.clip, v.scale, v.precision);
        name = e.names[4];
    } else if (v.scaled) {
        status = e.scaled(args..., v.clip, v.scale);
        name = e.names[2];
    } else if (v.mixed) {
        status = e.mixed(args..., v.clip, v.precision);
        name = e.names[3];
    } else if (v.clipped) {
        status = e.clipped(args..., v.clip);
        name = e.names[1];
    } else {
        status = e.plain(args...);
        name = e.names[0];
    }
    expect_status(status, name, arena);
    return status;
}

void fuzz_sgd(FuzzedDataProvider& in)
{
    Arena arena;
    const Target at = pick_target(in, true);
    const int32_t n_groups = in.ConsumeIntegralInRange<int32_t>(-1, 4);
    auto* groups = arena.array<optim_sgd_params>(n_groups, true);
    for (int32_t g = 0; g < n_groups; ++g) {
        optim_sgd_params& p = groups[g];
        optim_sgd_params_default(&p);
        p.lr = value(in, {0.01, 0.1, 1.0, 0.0});
        p.momentum = value(in, {0.0, 0.9, 0.0, 0.5});
        p.dampening = value(in, {0.0, 0.0, 0.1});
        p.weight_decay = value(in, {0.0, 1e-4, 0.0});
        p.nesterov = pick_i32(in, {0, 0, 1});
        p.maximize = pick_i32(in, {0, 1});
        if (in.ConsumeIntegral<uint8_t>() >= 200) {
            auto* lr = arena.array<double>(1, true);
            *lr = value(in, {0.05, 0.0});
            p.lr_ptr = lr;
        }
    }
    const int64_t count = in.ConsumeIntegralInRange<int64_t>(-1, 6);
    const std::vector<bool> written = {true, false, true}; // param, grad, momentum buffer
    const TensorSet s = decode_tensors(in, arena, count, 200000, at.esize(), written, at.f64(),
                                       true, PerTensor::Fresh);
    void** ps = s.column(arena, 0);
    auto* list = arena.array<optim_tensor_list>(1, true);
    *list = optim_tensor_list{count,
                              maybe(in, ps),
                              maybe(in, s.column(arena, 1)),
                              maybe(in, s.column(arena, 2)),
                              maybe(in, s.numel_array),
                              maybe(in, s.fresh),
                              maybe(in, s.group_index)};
    const VariantInputs v = pick_variant(in, arena, kSgdEntries, s, ps);
    mark_written(arena, s.tensors, written);
    arena.snapshot();
    call_step(kSgdEntries, v, arena, at.device, at.device_index, at.dtype, maybe(in, list),
              n_groups, maybe(in, groups));
}

void fuzz_adam(FuzzedDataProvider& in)
{
    Arena arena;
    const Target at = pick_target(in, true);
    const int32_t n_groups = in.ConsumeIntegralInRange<int32_t>(-1, 4);
    auto* groups = arena.array<optim_adam_params>(n_groups, true);
    for (int32_t g = 0; g < n_groups; ++g) {
        optim_adam_params& p = groups[g];
        optim_adam_params_default(&p);
        p.lr = value(in, {1e-3, 0.1, 0.0});
        p.beta1 = value(in, {0.9, 0.0, 0.5, 0.999999});
        p.beta2 = value(in, {0.999, 0.0, 0.9});
        p.eps = value(in, {1e-8, 0.0, 1e-3});
        p.weight_decay = value(in, {0.0, 1e-2, 0.0});
        p.amsgrad = pick_i32(in, {0, 1});
        p.maximize = pick_i32(in, {0, 1});
        p.decoupled = pick_i32(in, {0, 1});
    }
    const int64_t count = in.ConsumeIntegralInRange<int64_t>(-1, 6);
    // param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq
    const std::vector<bool> written = {true, false, true, true, true};
    const TensorSet s = decode_tensors(in, arena, count, 200000, at.esize(), written, at.f64(),
                                       true, PerTensor::Steps);
    void** ps = s.column(arena, 0);
    auto* list = arena.array<optim_adam_tensors>(1, true);
    *list = optim_adam_tensors{count,
                               maybe(in, ps),
                               maybe(in, s.column(arena, 1)),
                               maybe(in, s.column(arena, 2)),
                               maybe(in, s.column(arena, 3)),
                               maybe(in, s.column(arena, 4)),
                               maybe(in, s.numel_array),
                               maybe(in, s.steps),
                               maybe(in, s.group_index),
                               nullptr};
    const VariantInputs v = pick_variant(in, arena, kAdamEntries, s, ps);
    mark_written(arena, s.tensors, written);
    arena.snapshot();
    call_step(kAdamEntries, v, arena, at.device, at.device_index, at.dtype, maybe(in, list),
              n_groups, maybe(in, groups));
}

// The stochastic line search's passes (save, trial, restore) and its gradient norm.
void fuzz_sls(FuzzedDataProvider& in)
{
    Arena arena;
    const Target at = pick_target(in, false);
    const int32_t device = at.device, device_index = at.device_index, dtype = at.dtype;
    const int op = in.ConsumeIntegralInRange<int>(0, 3); // save, trial, restore, norm
    const double step_size = value(in, {1.0, 0.5, 0.0, 1e-6});
    const int64_t count = in.ConsumeIntegralInRange<int64_t>(-1, 6);
    // param, origin, grad: save writes the origins, trial and restore the parameters.
    const std::vector<bool> written = {op == 1 || op == 2, op == 0, false};
    const TensorSet s = decode_tensors(in, arena, count, 200000, at.esize(), written, at.f64(),
                                       false, PerTensor::None);
    auto* list = arena.array<optim_sls_tensors>(1, true);
    *list = optim_sls_tensors{count, maybe(in, s.column(arena, 0)), maybe(in, s.column(arena, 1)),
                              maybe(in, s.column(arena, 2)), maybe(in, s.numel_array)};
    auto* result = arena.array<double>(1, true);
    mark_written(arena, s.tensors, written);
    if (op == 3) arena.written(result);
    arena.snapshot();
    const optim_sls_tensors* t = maybe(in, list);
    switch (op) {
    case 0:
        expect_status(optim_sls_save(device, device_index, dtype, t), "optim_sls_save", arena);
        break;
    case 1:
        expect_status(optim_sls_trial(device, device_index, dtype, t, step_size), "optim_sls_trial",
                      arena);
        break;
    case 2:
        expect_status(optim_sls_restore(device, device_index, dtype, t), "optim_sls_restore",
                      arena);
        break;
    default:
        expect_status(optim_sls_grad_norm_sq(device, device_index, dtype, t, maybe(in, result)),
                      "optim_sls_grad_norm_sq", arena);
        break;
    }
}

// The rate options of a hypergradient step (SGD or Adam).
optim_hd_params* hd_params(FuzzedDataProvider& in, Arena& arena)
{
    auto* hp = arena.array<optim_hd_params>(1, true);
    hp->hypergrad_lr = value(in, {1e-3, 0.0, 1.0});
    hp->lr_min = value(in, {0.0, 1e-4});
    hp->lr_max = value(in, {1.0, HUGE_VAL, 0.0});
    hp->eps = value(in, {1e-8, 1.0});
    hp->scope = pick_i32(in, {OPTIM_HD_SCOPE_GLOBAL, OPTIM_HD_SCOPE_PER_GROUP,
                              OPTIM_HD_SCOPE_PER_TENSOR, OPTIM_HD_SCOPE_PER_PARAMETER});
    hp->rule = pick_i32(in, {OPTIM_HD_RULE_ADDITIVE, OPTIM_HD_RULE_NORMALIZED});
    hp->first_step = pick_i32(in, {0, 1});
    hp->assume_finite = pick_i32(in, {0, 0, 1});
    hp->across_ranks = pick_i32(in, {0, 0, 0, 1, 2});
    return hp;
}

// The scalar rates of a scope (host doubles; a per-parameter call gets a few anyway).
double* hd_rates(FuzzedDataProvider& in, Arena& arena, int32_t scope, int32_t n_groups,
                 int64_t count)
{
    const int64_t slots = scope == OPTIM_HD_SCOPE_GLOBAL       ? 1
                          : scope == OPTIM_HD_SCOPE_PER_GROUP  ? n_groups
                          : scope == OPTIM_HD_SCOPE_PER_TENSOR ? count
                                                               : in.ConsumeIntegralInRange(0, 2);
    auto* rates = arena.array<double>(slots, false);
    for (int64_t s = 0; s < slots; ++s) rates[s] = value(in, {0.01, 0.1, 0.0});
    return rates;
}

// The skip flag of an HD step, set to a value no step writes.
int64_t* skip_flag(Arena& arena)
{
    auto* skipped = arena.array<int64_t>(1, false);
    *skipped = 7;
    return skipped;
}

// The CPU path reports the skip as 0 or 1 (a CUDA call with no tensors does nothing at all).
void expect_skip_flag(optim_status status, const int64_t* skip_out, int32_t device)
{
    if (status == OPTIM_STATUS_OK && skip_out && device == OPTIM_DEVICE_CPU)
        FUZZ_CHECK(*skip_out == 0 || *skip_out == 1, "skipped");
}

void fuzz_hd(FuzzedDataProvider& in)
{
    Arena arena;
    const Target at = pick_target(in, true);
    optim_hd_params* hp = hd_params(in, arena);
    const int32_t n_groups = in.ConsumeIntegralInRange<int32_t>(-1, 4);
    auto* groups = arena.array<optim_hd_group>(n_groups, true);
    for (int32_t g = 0; g < n_groups; ++g) {
        groups[g].momentum = value(in, {0.0, 0.9});
        groups[g].dampening = value(in, {0.0, 0.1});
        groups[g].weight_decay = value(in, {0.0, 1e-2});
        groups[g].nesterov = pick_i32(in, {0, 1});
        groups[g].maximize = pick_i32(in, {0, 1});
    }
    const int64_t count = in.ConsumeIntegralInRange<int64_t>(-1, 6);
    // param, grad, momentum buffer, previous update, per-parameter rates
    const std::vector<bool> written = {true, false, true, true, true};
    const TensorSet s = decode_tensors(in, arena, count, 200000, at.esize(), written, at.f64(),
                                       true, PerTensor::Fresh);
    double* rates = hd_rates(in, arena, hp->scope, n_groups, count);
    int64_t* skipped = skip_flag(arena);
    void** ps = s.column(arena, 0);
    auto* t = arena.array<optim_hd_tensors>(1, true);
    *t = optim_hd_tensors{count,
                          maybe(in, ps),
                          maybe(in, s.column(arena, 1)),
                          maybe(in, s.column(arena, 2)),
                          maybe(in, s.column(arena, 3)),
                          maybe(in, s.column(arena, 4)),
                          maybe(in, s.numel_array),
                          maybe(in, s.group_index),
                          maybe(in, s.fresh)};
    const VariantInputs v = pick_variant(in, arena, kHdEntries, s, ps);
    mark_written(arena, s.tensors, written);
    arena.snapshot();
    int64_t* skip_out = maybe(in, skipped);
    const optim_status status =
        call_step(kHdEntries, v, arena, at.device, at.device_index, at.dtype, maybe(in, t),
                  n_groups, maybe(in, groups), maybe(in, hp), maybe(in, rates), skip_out);
    expect_skip_flag(status, skip_out, at.device);
}

// Hypergradient Adam: Adam's groups and tensors (with u_prev and per-parameter rates), HD's
// options.
void fuzz_hd_adam(FuzzedDataProvider& in)
{
    Arena arena;
    const Target at = pick_target(in, true);
    optim_hd_params* hp = hd_params(in, arena);
    const int32_t n_groups = in.ConsumeIntegralInRange<int32_t>(-1, 4);
    auto* groups = arena.array<optim_hd_adam_group>(n_groups, true);
    for (int32_t g = 0; g < n_groups; ++g) {
        groups[g].beta1 = value(in, {0.9, 0.0, 1.0});
        groups[g].beta2 = value(in, {0.999, 0.5, 1.0});
        groups[g].eps = value(in, {1e-8, 0.0});
        groups[g].weight_decay = value(in, {0.0, 1e-2});
        groups[g].amsgrad = pick_i32(in, {0, 1});
        groups[g].maximize = pick_i32(in, {0, 1});
    }
    const int64_t count = in.ConsumeIntegralInRange<int64_t>(-1, 6);
    // param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, previous update, per-parameter rates
    const std::vector<bool> written = {true, false, true, true, true, true, true};
    const TensorSet s = decode_tensors(in, arena, count, 200000, at.esize(), written, at.f64(),
                                       true, PerTensor::Steps);
    double* rates = hd_rates(in, arena, hp->scope, n_groups, count);
    int64_t* skipped = skip_flag(arena);
    void** ps = s.column(arena, 0);
    auto* t = arena.array<optim_hd_adam_tensors>(1, true);
    *t = optim_hd_adam_tensors{count,
                               maybe(in, ps),
                               maybe(in, s.column(arena, 1)),
                               maybe(in, s.column(arena, 2)),
                               maybe(in, s.column(arena, 3)),
                               maybe(in, s.column(arena, 4)),
                               maybe(in, s.column(arena, 5)),
                               maybe(in, s.column(arena, 6)),
                               maybe(in, s.numel_array),
                               maybe(in, s.steps),
                               maybe(in, s.group_index),
                               nullptr};
    const VariantInputs v = pick_variant(in, arena, kHdAdamEntries, s, ps);
    mark_written(arena, s.tensors, written);
    arena.snapshot();
    int64_t* skip_out = maybe(in, skipped);
    const optim_status status =
        call_step(kHdAdamEntries, v, arena, at.device, at.device_index, at.dtype, maybe(in, t),
                  n_groups, maybe(in, groups), maybe(in, hp), maybe(in, rates), skip_out);
    expect_skip_flag(status, skip_out, at.device);
}

void fuzz_greedylr(FuzzedDataProvider& in)
{
    Arena arena;
    auto* c = arena.array<optim_greedylr_config>(1, true);
    c->factor = value(in, {0.5, 0.95, 0.1});
    c->threshold = value(in, {1e-4, 0.0, 0.1});
    c->eps = value(in, {1e-8, 0.0});
    c->mode = pick_i32(in, {OPTIM_GREEDY_MODE_MIN, OPTIM_GREEDY_MODE_MAX});
    c->threshold_mode = pick_i32(in, {OPTIM_GREEDY_THRESHOLD_REL, OPTIM_GREEDY_THRESHOLD_ABS});
    c->patience = pick_i32(in, {0, 1, 2, -1});
    c->cooldown = pick_i32(in, {0, 1, 2, -1});
    c->warmup = pick_i32(in, {0, 1, 2, -1});
    c->window_size = in.ConsumeIntegralInRange<int32_t>(-1, 6);
    c->reset_start = pick_i32(in, {0, 1, 2, -1});
    c->smooth = pick_i32(in, {0, 1});
    c->trend = pick_i32(in, {0, 1});
    c->groups = in.ConsumeIntegralInRange<int32_t>(-1, 3);

    auto* state = arena.array<optim_greedylr_state>(1, false);
    std::memset(state, 0, sizeof *state);
    arena.snapshot();
    expect_status(optim_greedylr_init(maybe(in, c), maybe(in, state)), "optim_greedylr_init",
                  arena);
    // A corrupt state (a bad file): any field may hold anything.
    while (in.ConsumeIntegral<uint8_t>() >= 200) {
        const int64_t v = pick_i64(in, {-1, 0, 1, c->window_size, c->window_size + 1, 2});
        switch (in.ConsumeIntegral<uint8_t>() % 10) {
        case 0:
            state->best = value(in, {0.0, 1.0});
            break;
        case 1:
            state->num_good = v;
            break;
        case 2:
            state->num_bad = v;
            break;
        case 3:
            state->cooldown_counter = v;
            break;
        case 4:
            state->warmup_counter = v;
            break;
        case 5:
            state->reset_budget = v;
            break;
        case 6:
            state->window_count = v;
            break;
        case 7:
            state->window_next = v;
            break;
        case 8:
            state->steps = v;
            break;
        default:
            state->resets = v;
            break;
        }
    }
    const int32_t groups = c->groups;
    auto* rates = arena.array<double>(groups, false);
    auto* initial = arena.array<double>(groups, true);
    auto* min_lr = arena.array<double>(groups, true);
    auto* max_lr = arena.array<double>(groups, true);
    for (int32_t g = 0; g < groups; ++g) {
        rates[g] = value(in, {0.1, 0.01, 1.0});
        initial[g] = value(in, {0.1, 0.01});
        min_lr[g] = value(in, {1e-3, 0.0});
        max_lr[g] = value(in, {1.0, 10.0});
    }
    auto* window = arena.array<double>(c->window_size, false);
    for (int32_t i = 0; i < c->window_size; ++i) window[i] = value(in, {1.0, 0.5});
    auto* b = arena.array<optim_greedylr_buffers>(1, true);
    *b = optim_greedylr_buffers{maybe(in, rates), maybe(in, initial), maybe(in, min_lr),
                                maybe(in, max_lr), maybe(in, window)};
    const int steps = in.ConsumeIntegralInRange(1, 6);
    for (int i = 0; i < steps && in.remaining_bytes() > 0; ++i) {
        auto* m32 = arena.array<float>(1, true);
        auto* m64 = arena.array<double>(1, true);
        *m64 = value(in, {1.0, 0.5, 2.0, 0.25});
        *m32 = static_cast<float>(*m64);
        const int32_t metric_dtype = pick_dtype(in);
        const void* metric = metric_dtype == OPTIM_DTYPE_FLOAT64 ? static_cast<void*>(m64) : m32;
        arena.snapshot();
        const optim_status status = optim_greedylr_step(
            pick_device(in), in.ConsumeIntegralInRange<int32_t>(-1, 1), maybe(in, c),
            maybe(in, state), maybe(in, b), maybe(in, metric), metric_dtype);
        expect_status(status, "optim_greedylr_step", arena);
    }
}

void fuzz_stream(FuzzedDataProvider& in)
{
    Arena arena;
    const int32_t dtype = pick_dtype(in);
    const bool f64 = dtype == OPTIM_DTYPE_FLOAT64;
    const size_t esize = f64 ? 8 : 4;
    const int32_t n_read = in.ConsumeIntegralInRange<int32_t>(-1, OPTIM_STREAM_MAX_ARRAYS + 1);
    const int32_t n_update = in.ConsumeIntegralInRange<int32_t>(-1, OPTIM_STREAM_MAX_ARRAYS + 1);
    const int32_t nr = n_read < 0 ? 0 : n_read > OPTIM_STREAM_MAX_ARRAYS ? 0 : n_read;
    const int32_t nu = n_update < 0 ? 0 : n_update > OPTIM_STREAM_MAX_ARRAYS ? 0 : n_update;
    const int64_t count = in.ConsumeIntegralInRange<int64_t>(-1, 5);
    std::vector<bool> written;
    for (int j = 0; j < nr; ++j) written.push_back(false);
    for (int j = 0; j < nu; ++j) written.push_back(true);
    if (written.empty()) written.push_back(false);
    const TensorSet s =
        decode_tensors(in, arena, count, 150000, esize, written, f64, false, PerTensor::None);
    auto* read = arena.array<const void*>(count * nr, true);
    auto* update = arena.array<void*>(count * nu, true);
    for (int64_t k = 0; k < count; ++k) {
        for (int j = 0; j < nr; ++j) read[k * nr + j] = s.tensors[static_cast<size_t>(k)].ptr[j];
        for (int j = 0; j < nu; ++j)
            update[k * nu + j] = s.tensors[static_cast<size_t>(k)].ptr[nr + j];
    }
    auto* t = arena.array<optim_stream_tensors>(1, true);
    *t = optim_stream_tensors{
        count, n_read, n_update, maybe(in, read), maybe(in, update), maybe(in, s.numel_array)};
    auto* sum = arena.array<double>(1, false);
    *sum = -1.0;
    mark_written(arena, s.tensors, written);
    arena.snapshot();
    const optim_status status =
        optim_stream_reference(dtype, maybe(in, t), value(in, {1.0, -0.5, 0.0}), maybe(in, sum));
    expect_status(status, "optim_stream_reference", arena, optim_bench_last_error());
}

void fuzz_threads(FuzzedDataProvider& in)
{
    const int32_t n = pick_i32(in, {0, 1, 2, 3, 4, -1, 1025, std::numeric_limits<int32_t>::min(),
                                    std::numeric_limits<int32_t>::max()});
    const int32_t before = optim_get_num_threads();
    const bool valid = n >= 0 && n <= 1024;
    if (n > 4 && valid) return; // a thousand threads per input would only slow the fuzzer down
    const optim_status status = optim_set_num_threads(n);
    FUZZ_CHECK(status == (valid ? OPTIM_STATUS_OK : OPTIM_STATUS_INVALID_ARGUMENT),
               optim_last_error());
    const int32_t after = optim_get_num_threads();
    if (valid && n > 0) FUZZ_CHECK(after == n, "optim_get_num_threads after a valid set");
    if (!valid) FUZZ_CHECK(after == before, "optim_get_num_threads after an invalid set");
}

void fuzz_bump(FuzzedDataProvider& in)
{
    Arena arena;
    const int64_t count = pick_i64(in, {0, 1, 2, -1, 3});
    const int64_t n = count > 0 && count < 8 ? count : 0;
    auto* handles = arena.array<void*>(n, true);
    auto* dummy = arena.array<int64_t>(4, true);
    for (int64_t k = 0; k < n; ++k) handles[k] = in.ConsumeBool() ? dummy : nullptr;
    // Only counts the harness has memory for reach the library with a non-NULL array.
    void** arg = n == count ? maybe(in, handles) : nullptr;
    arena.snapshot();
    const optim_status status = optim_torch_bump_versions(arg, count);
    expect_status(status, "optim_torch_bump_versions", arena);
    if (count < 0 || (count > 0 && !arg))
        FUZZ_CHECK(status == OPTIM_STATUS_INVALID_ARGUMENT, optim_last_error());
    else if (count == 0)
        FUZZ_CHECK(status == OPTIM_STATUS_OK, optim_last_error());
    else
        FUZZ_CHECK(status == OPTIM_STATUS_UNSUPPORTED, optim_last_error()); // no LibTorch here

    // The gradient look-up takes the same handles; without LibTorch it must write nothing.
    auto* grads = arena.array<const void*>(n, true);
    const void** out = n == count ? maybe(in, grads) : nullptr;
    arena.snapshot();
    const optim_status looked_up =
        optim_torch_gradients(const_cast<const void* const*>(arg), count, out);
    expect_status(looked_up, "optim_torch_gradients", arena);
    if (count < 0 || (count > 0 && (!arg || !out)))
        FUZZ_CHECK(looked_up == OPTIM_STATUS_INVALID_ARGUMENT, optim_last_error());
    else if (count == 0)
        FUZZ_CHECK(looked_up == OPTIM_STATUS_OK, optim_last_error());
    else
        FUZZ_CHECK(looked_up == OPTIM_STATUS_UNSUPPORTED, optim_last_error());
}

// The optim_mpi_* entry points: a fuzz build has no MPI plugin, so every call must refuse (bad
// arguments first, then OPTIM_STATUS_UNSUPPORTED naming the function) and write nothing.
void fuzz_mpi(FuzzedDataProvider& in)
{
    Arena arena;
    const int32_t device = pick_device(in);
    const int32_t dtype = pick_i32(in, {OPTIM_DTYPE_FLOAT32, OPTIM_DTYPE_FLOAT64, -1, 7});
    const int64_t count = pick_i64(in, {0, 1, 2, 3, -1});
    const int64_t n = count > 0 && count < 8 ? count : 0;
    auto* data = arena.array<void*>(n, true);
    auto* numels = arena.array<int64_t>(n, true);
    auto* owners = arena.array<int32_t>(n, true);
    int64_t budget = 64;
    for (int64_t k = 0; k < n; ++k) {
        numels[k] = in.ConsumeBool() ? numel(in, budget) : pick_i64(in, {-1, 0, 5});
        // Counts beyond the harness's memory get a small block: without the plugin (fuzz builds)
        // no call reads tensor data, it only checks the arguments.
        const int64_t held = numels[k] > 0 && numels[k] <= 4096 ? numels[k] : 1;
        data[k] = numels[k] > 0 ? arena.alloc(size_t(held) * 8, true) : nullptr;
        if (in.ConsumeIntegral<uint8_t>() >= 240) data[k] = nullptr;
        owners[k] = pick_i32(in, {0, 1, -1, 1 << 30});
    }
    // Only counts the harness has memory for reach the library with non-NULL arrays.
    const bool fits = n == count;
    optim_comm_tensors list{count, fits ? maybe(in, data) : nullptr,
                            fits ? maybe(in, numels) : nullptr};
    const optim_comm_tensors* tensors = in.ConsumeIntegral<uint8_t>() >= 240 ? nullptr : &list;
    const int32_t* owner_arg = fits ? maybe(in, owners) : nullptr;
    const int32_t op = pick_i32(in, {OPTIM_REDUCE_SUM, OPTIM_REDUCE_MEAN, OPTIM_REDUCE_MAX, 9});
    const int64_t bucket = pick_i64(in, {1024, 8, 4, 0, -1, INT64_MAX});
    double scalars[4] = {1, 2, 3, 4};
    const int64_t scalar_count = pick_i64(in, {0, 2, 4, -1, int64_t(1) << 31});
    arena.snapshot();
    const char* fn = "";
    optim_status status = OPTIM_STATUS_OK;
    switch (in.ConsumeIntegral<uint8_t>() % 7) {
    case 0:
        fn = "optim_mpi_broadcast";
        status = optim_mpi_broadcast(device, dtype, tensors, pick_i32(in, {0, 1, -1}), bucket);
        break;
    case 1:
        fn = "optim_mpi_allreduce";
        status = optim_mpi_allreduce(device, dtype, tensors, op, bucket);
        break;
    case 2:
        fn = "optim_mpi_reduce_scatter";
        status = optim_mpi_reduce_scatter(device, dtype, tensors, owner_arg, op, bucket);
        break;
    case 3:
        fn = "optim_mpi_allgather";
        status = optim_mpi_allgather(device, dtype, tensors, owner_arg, bucket);
        break;
    case 4:
        fn = "optim_mpi_set_timeout";
        status = optim_mpi_set_timeout(value(in, {5.0, 0.0, -1.0}));
        break;
    case 5:
        fn = "optim_mpi_get_timeout";
        status = optim_mpi_get_timeout(in.ConsumeBool() ? &scalars[0] : nullptr);
        break;
    default:
        fn = "optim_mpi_allreduce_scalars";
        status =
            optim_mpi_allreduce_scalars(in.ConsumeBool() ? scalars : nullptr, scalar_count, op);
        break;
    }
    FUZZ_CHECK(status == OPTIM_STATUS_INVALID_ARGUMENT || status == OPTIM_STATUS_UNSUPPORTED,
               optim_last_error());
    expect_status(status, fn, arena);
    FUZZ_CHECK(scalars[0] == 1 && scalars[3] == 4, "scalars written by a refused call");
}

void fuzz_info(FuzzedDataProvider& in)
{
    FUZZ_CHECK(optim_abi_version() == OPTIM_ABI_VERSION, "abi version");
    FUZZ_CHECK(std::strncmp(optim_build_info(), "optim ", 6) == 0, optim_build_info());
    FUZZ_CHECK(optim_status_name(pick_i32(in, {0, 1, 2, 3, 4, 5, 6, 7, -1})) != nullptr,
               "status name");
    FUZZ_CHECK(optim_cuda_compiled() == 0, "a fuzz build has no CUDA kernels");
    FUZZ_CHECK(optim_threading_info() != nullptr, "threading info");
    FUZZ_CHECK(optim_last_error() != nullptr, "last error");
    FUZZ_CHECK(optim_get_num_threads() >= 1, "thread count");
    int32_t devices = -1;
    FUZZ_CHECK(optim_cuda_device_count(in.ConsumeBool() ? &devices : nullptr) != OPTIM_STATUS_OK ||
                   devices == 0,
               "no CUDA device in a fuzz build");
    optim_sgd_params p;
    optim_sgd_params_default(in.ConsumeBool() ? &p : nullptr);
    optim_adam_params a;
    optim_adam_params_default(in.ConsumeBool() ? &a : nullptr);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size)
{
    FuzzedDataProvider in(data, size);
    for (int calls = 0; calls < 6 && in.remaining_bytes() > 0; ++calls) {
        switch (in.ConsumeIntegral<uint8_t>() % 11) {
        case 0:
            fuzz_sgd(in);
            break;
        case 1:
            fuzz_hd(in);
            break;
        case 2:
            fuzz_greedylr(in);
            break;
        case 3:
            fuzz_stream(in);
            break;
        case 4:
            fuzz_threads(in);
            break;
        case 5:
            fuzz_bump(in);
            break;
        case 6:
            fuzz_adam(in);
            break;
        case 7:
            fuzz_mpi(in);
            break;
        case 8:
            fuzz_sls(in);
            break;
        case 9:
            fuzz_hd_adam(in);
            break;
        default:
            fuzz_info(in);
            break;
        }
    }
    return 0;
}
