// The CUDA kernels against the CPU path of the same library (which native/tests checks against
// naive references): fused SGD and fused Adam/AdamW for every flag combination, both on float16
// and bfloat16 parameters too (master weights, rounding, clipping, scaling), the stochastic
// line search's passes and norm, hypergradient descent at every scope and rule, GreedyLR's device
// step over long traces, and the device-index checks.
//
// After every step the device's state is compared with the CPU path's and then becomes the CPU
// path's state, so each step is checked from identical inputs. Clipped cases (max_norm > 0) also
// compare the norm each path writes (host memory, device memory). nvcc contracts a*b+c into FMAs
// where the CPU build rounds twice; over many steps such one-ulp differences would grow, and HD's
// per-parameter normalized rule turns a flipped sign of g*u_prev into a rate 2*beta apart.
#include "checks.hpp"

#include "device.hpp"
#include "report.hpp"
#include "steps.hpp"

#include <optim.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <limits>
#include <string>
#include <vector>

namespace optim_gpu {

namespace {

// splitmix64: fast, deterministic test data.
class Rng {
  public:
    explicit Rng(uint64_t seed) : state_(seed) {}
    uint64_t next()
    {
        uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
    }
    double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-52 - 1.0; } // [-1, 1)
    int64_t below(int64_t n) { return static_cast<int64_t>(next() % static_cast<uint64_t>(n)); }

  private:
    uint64_t state_;
};

template <typename T>
constexpr int32_t dtype_of()
{
    return sizeof(T) == 4 ? OPTIM_DTYPE_FLOAT32 : OPTIM_DTYPE_FLOAT64;
}
template <typename T>
const char* dtype_name()
{
    return sizeof(T) == 4 ? "float32" : "float64";
}

// One step's rounding differences on values of order one (the state is resynchronized each step).
template <typename T>
Tolerance state_tolerance()
{
    return sizeof(T) == 4 ? Tolerance{1e-5, 1e-6} : Tolerance{1e-12, 1e-14};
}
// Scalar rates are doubles summed in another order, from element-type terms.
template <typename T>
Tolerance rate_tolerance()
{
    return sizeof(T) == 4 ? Tolerance{1e-7, 1e-15} : Tolerance{1e-11, 1e-15};
}

// The tensors of a check, in param-group order: sizes, the group of each, one tensor that joins
// late (empty until the middle step, then with a fresh momentum buffer, as a parameter whose first
// gradient comes late), and where HD's skip checks put a NaN and an infinity.
struct TensorSet {
    std::string name;
    std::vector<int64_t> sizes;
    std::vector<int32_t> group;
    int64_t late = -1;
    int64_t nan_tensor = 0, nan_element = 0;
    int64_t inf_tensor = 0, inf_element = 0;

    std::vector<int64_t> numels_at(int step, int late_step) const
    {
        std::vector<int64_t> n = sizes;
        if (late >= 0 && step < late_step) n[static_cast<size_t>(late)] = 0;
        return n;
    }
    int64_t total() const
    {
        int64_t t = 0;
        for (int64_t s : sizes) t += s;
        return t;
    }
};

// 64 tensors (more than one launch's table of SGD, 36, and of HD, 24): empty ones, sizes around
// a warp, a block and a 64 Ki-element chunk, tensors of several chunks, small random ones; in HD's
// four groups (the last has only empty tensors). Quick mode caps the sizes for the sanitizers.
TensorSet mixed_set(bool quick)
{
    const std::vector<int64_t> special = {0,   1,    2,     31,    32,    33,    511,    512,
                                          513, 4097, 65535, 65536, 65537, 70001, 131073, 200003};
    TensorSet s;
    s.name = quick ? "64 tensors, quick" : "64 tensors";
    Rng rng(7);
    size_t next_special = 0;
    for (int k = 0; k < 64; ++k) {
        int64_t n = 1 + rng.below(3000);
        if (k % 4 == 0 && next_special < special.size()) n = special[next_special++];
        if (quick && n > 70001) n = 70001;
        if (k >= 62) n = 0;
        s.sizes.push_back(n);
        s.group.push_back(k < 24 ? 0 : k < 44 ? 1 : k < 62 ? 2 : 3);
    }
    s.late = 5;
    s.sizes[5] = quick ? 5000 : 70001;
    s.nan_tensor = 48; // 65537 elements: the NaN is the only element of its second chunk
    s.nan_element = s.sizes[48] - 1;
    s.inf_tensor = 30;
    s.inf_element = 7;
    return s;
}

// One tensor of more chunks than a launch has blocks (320 of 64 Ki elements), between small ones.
TensorSet big_set()
{
    TensorSet s;
    s.name = "3 tensors, one of 22M";
    s.sizes = {5, 22000007, 70001};
    s.group = {0, 0, 2};
    s.nan_tensor = 1;
    s.nan_element = 22000000;
    s.inf_tensor = 2;
    s.inf_element = 70000;
    return s;
}

// One per-element array of every tensor, on the host (the CPU path's state) and on the side under
// check.
template <typename T>
struct Mirror {
    std::vector<std::vector<T>> host;
    std::vector<DeviceBuffer<T>> dev;

    Mirror(const std::vector<int64_t>& sizes, T value)
    {
        for (int64_t n : sizes) {
            host.emplace_back(static_cast<size_t>(n), value);
            dev.emplace_back(static_cast<size_t>(n));
        }
    }
    void upload()
    {
        for (size_t k = 0; k < host.size(); ++k) dev[k].upload(host[k].data());
    }
    std::vector<void*> host_ptrs()
    {
        std::vector<void*> p;
        for (auto& v : host) p.push_back(v.data());
        return p;
    }
    std::vector<void*> dev_ptrs()
    {
        std::vector<void*> p;
        for (auto& d : dev) p.push_back(d.get());
        return p;
    }
    // Compares the side under check with the CPU path, then makes its state the CPU path's.
    void compare_and_adopt(Report& r, const std::string& what, Tolerance tol)
    {
        for (size_t k = 0; k < host.size(); ++k) {
            std::vector<T> got = dev[k].download();
            r.close(what + " tensor " + std::to_string(k), host[k].data(), got.data(), got.size(),
                    tol);
            host[k] = std::move(got);
        }
    }
};

std::vector<const void*> const_ptrs(const std::vector<void*>& p)
{
    return std::vector<const void*>(p.begin(), p.end());
}

// Fills every element with factor * rng.uniform() (the parameters' start: factor 1).
template <typename T>
void fill_uniform(Mirror<T>& x, Rng& rng, double factor = 1.0)
{
    for (auto& v : x.host)
        for (T& e : v) e = static_cast<T>(factor * rng.uniform());
}

// Gradients of a quadratic plus noise: g = theta / 2 + noise.
template <typename T>
void quadratic_gradients(Mirror<T>& g, const Mirror<T>& p, Rng& rng)
{
    for (size_t k = 0; k < g.host.size(); ++k)
        for (size_t i = 0; i < g.host[k].size(); ++i)
            g.host[k][i] =
                static_cast<T>(0.5 * static_cast<double>(p.host[k][i]) + 0.1 * rng.uniform());
}

// Puts a non-finite value into one gradient element; at(): a set whose bad element is out of
// range fails its case instead of writing past it.
template <typename T>
void put_value(Mirror<T>& g, int64_t tensor, int64_t element, T value)
{
    g.host.at(static_cast<size_t>(tensor)).at(static_cast<size_t>(element)) = value;
}

// Each tensor's group when G groups take contiguous runs of the K tensors.
std::vector<int32_t> contiguous_groups(size_t K, size_t G)
{
    std::vector<int32_t> group_index(K);
    for (size_t k = 0; k < K; ++k) group_index[k] = static_cast<int32_t>(k * G / K);
    return group_index;
}

// The fresh flags of a step: every tensor on the first, the late tensor when it joins.
std::vector<uint8_t> fresh_flags(const TensorSet& set, int step, int late_step)
{
    std::vector<uint8_t> fresh(set.sizes.size(), 0);
    for (size_t k = 0; k < fresh.size(); ++k)
        fresh[k] = step == 0 || (static_cast<int64_t>(k) == set.late && step == late_step);
    return fresh;
}

// The prefix of a step's messages ("step 3 (NaN gradient): ").
std::string step_label(int step, const char* note = "")
{
    return "step " + std::to_string(step) + note + ": ";
}

// Runs one case: an exception (a failed CUDA or library call) ends it as failed.
template <typename Fn>
void run_case(Report& r, const std::string& name, Fn&& fn)
{
    r.begin_case(name);
    try {
        fn();
    } catch (const std::exception& e) {
        r.error(e.what());
    }
    r.end_case();
}

// The clip of a case's two calls (none for max_norm 0): the CPU path writes the norm to host
// memory, the checked path to device memory; compare() checks that they agree (both non-finite
// alike).
class ClipPair {
  public:
    explicit ClipPair(double max_norm)
        : norm_on_target_(max_norm > 0 ? 1 : 0), host_{max_norm, &norm_on_host_, 0},
          target_{max_norm, norm_on_target_.get(), 0}, on_(max_norm > 0)
    {
    }
    const optim_grad_clip* on_host() const { return on_ ? &host_ : nullptr; }
    const optim_grad_clip* on_target() const { return on_ ? &target_ : nullptr; }
    void compare(Report& r, const std::string& at)
    {
        if (!on_) return;
        double got = 0;
        norm_on_target_.download(&got);
        if (std::isfinite(norm_on_host_) || std::isfinite(got))
            r.close(at + "gradient norm", &norm_on_host_, &got, 1, rate_tolerance<double>());
    }

  private:
    double norm_on_host_ = -1;
    DeviceBuffer<double> norm_on_target_;
    optim_grad_clip host_, target_;
    bool on_;
};

// The gradient scaler of a case's two calls (none unless on): inverse scale 1/1024 and the
// found-inf flag, in host memory for the CPU path and target memory for the checked path.
// gradients() draws a step's gradients and clears both flags; compare() checks that both paths
// found the same. Scaled cases make their gradients 1024 times larger and put one infinity in them
// on the last step, which both paths must skip whole.
class ScalePair {
  public:
    explicit ScalePair(bool on)
        : inv_on_target_(on ? 1 : 0), found_on_target_(on ? 1 : 0), host_{&inv_, &found_on_host_},
          on_(on)
    {
        if (on) inv_on_target_.upload(&inv_);
        target_ = optim_grad_scale{inv_on_target_.get(), found_on_target_.get()};
    }
    const optim_grad_scale* on_host() const { return on_ ? &host_ : nullptr; }
    const optim_grad_scale* on_target() const { return on_ ? &target_ : nullptr; }
    // A step's gradients (uploaded) and cleared flags; true on the bad step.
    template <typename T>
    bool gradients(Mirror<T>& g, Rng& rng, const TensorSet& set, int step, int steps)
    {
        fill_uniform(g, rng, 0.5 * factor());
        const bool bad = new_step(step, steps);
        if (bad) put_value(g, set.inf_tensor, set.inf_element, std::numeric_limits<T>::infinity());
        g.upload();
        return bad;
    }
    // Clears both flags for a step; true on the bad step (the last one, when on).
    bool new_step(int step, int steps)
    {
        found_on_host_ = 0.0f;
        if (on_) found_on_target_.upload(&found_on_host_);
        return on_ && step == steps - 1;
    }
    // How much larger the gradients of a scaled case are.
    double factor() const { return on_ ? 1024.0 : 1.0; }
    void compare(Report& r, const std::string& at, bool expect_skip)
    {
        if (!on_) return;
        float got = -1.0f;
        found_on_target_.download(&got);
        r.same(at + "found_inf (cpu)", int64_t(expect_skip ? 1 : 0), int64_t(found_on_host_));
        r.same(at + "found_inf (checked)", int64_t(expect_skip ? 1 : 0), int64_t(got));
    }

  private:
    float inv_ = 1.0f / 1024.0f;
    float found_on_host_ = 0.0f;
    DeviceBuffer<float> inv_on_target_, found_on_target_;
    optim_grad_scale host_, target_{};
    bool on_;
};

// What an SGD or Adam case holds besides its arrays: its clip and scaler pairs, and each tensor's
// group when G groups take contiguous runs of the tensors (group_index(): NULL for one group).
class GroupedCase {
  public:
    GroupedCase(const TensorSet& set, size_t groups, double max_norm, bool scaled)
        : clip(max_norm), scale(scaled), K(set.sizes.size()), G(groups),
          groups_(contiguous_groups(K, G))
    {
    }
    const int32_t* group_index() const { return G > 1 ? groups_.data() : nullptr; }

    ClipPair clip;
    ScalePair scale;
    const size_t K, G;

  private:
    std::vector<int32_t> groups_;
};

// ---- Fused SGD ---------------------------------------------------------------------------------

struct SgdConfig {
    std::string name;
    optim_sgd_params params;
};

// The 12 reachable flag combinations (Nesterov needs momentum); heavy-ball momentum without
// maximize uses a nonzero dampening.
std::vector<SgdConfig> sgd_configs()
{
    std::vector<SgdConfig> out;
    for (int maximize : {0, 1}) {
        for (int wd : {0, 1}) {
            for (int kind : {0, 1, 2}) { // none, heavy ball, Nesterov
                optim_sgd_params p;
                optim_sgd_params_default(&p);
                p.lr = 0.05;
                p.momentum = kind == 0 ? 0.0 : 0.9;
                p.nesterov = kind == 2;
                p.dampening = (kind == 1 && !maximize) ? 0.25 : 0.0;
                p.weight_decay = wd ? 1e-2 : 0.0;
                p.maximize = maximize;
                std::string name = kind == 0 ? "plain" : kind == 1 ? "momentum" : "nesterov";
                if (p.dampening != 0) name += "+dampening";
                if (wd) name += "+weight_decay";
                if (maximize) name += "+maximize";
                out.push_back({name, p});
            }
        }
    }
    return out;
}

// One call over every tensor of the set; with several configurations, each is a param group of a
// contiguous run of the tensors (group_index), so groups of every flag combination share a call.
template <typename T>
void sgd_case(Report& r, const TensorSet& set, const std::vector<optim_sgd_params>& groups,
              int steps, uint64_t seed, double max_norm = 0, bool scaled = false)
{
    GroupedCase c(set, groups.size(), max_norm, scaled);
    ClipPair& clip = c.clip;
    ScalePair& scale = c.scale;
    const size_t K = c.K;
    bool momentum = false;
    for (const optim_sgd_params& g : groups) momentum = momentum || g.momentum != 0;
    const optim_sgd_params& config = groups[0];
    const Tolerance tol = state_tolerance<T>();
    Rng rng(seed);
    Mirror<T> p(set.sizes, T(0)), g(set.sizes, T(0));
    // A fresh buffer must never be read: start from NaN on both sides.
    Mirror<T> b(set.sizes, std::numeric_limits<T>::quiet_NaN());
    fill_uniform(p, rng);
    p.upload();
    b.upload();
    DeviceBuffer<double> lr_on_target(1);
    lr_on_target.upload(&config.lr);

    const int late_step = steps / 2;
    for (int step = 0; step < steps; ++step) {
        const std::vector<int64_t> numels = set.numels_at(step, late_step);
        const std::vector<uint8_t> fresh = fresh_flags(set, step, late_step);
        const bool bad = scale.gradients(g, rng, set, step, steps);

        std::vector<void*> hp = p.host_ptrs(), hb = b.host_ptrs(), dp = p.dev_ptrs(),
                           db = b.dev_ptrs();
        const std::vector<const void*> hg = const_ptrs(g.host_ptrs()),
                                       dg = const_ptrs(g.dev_ptrs());
        const int32_t* gi = c.group_index();
        const optim_tensor_list host{
            static_cast<int64_t>(K), hp.data(),    hg.data(), momentum ? hb.data() : nullptr,
            numels.data(),           fresh.data(), gi};
        const optim_tensor_list dev{
            static_cast<int64_t>(K), dp.data(),    dg.data(), momentum ? db.data() : nullptr,
            numels.data(),           fresh.data(), gi};
        std::vector<optim_sgd_params> on_host = groups, on_target = groups;
        for (optim_sgd_params& g : on_host) g.lr_ptr = nullptr;
        // The first group's rate from target memory on odd steps.
        on_target[0].lr_ptr = step % 2 ? lr_on_target.get() : nullptr;
        optim_ok(sgd_step(OPTIM_DEVICE_CPU, dtype_of<T>(), host, on_host, clip.on_host(),
                          scale.on_host()),
                 "optim_sgd_step (cpu)");
        checked_step(step, [&] {
            optim_ok(sgd_step(Target::device(), dtype_of<T>(), dev, on_target, clip.on_target(),
                              scale.on_target()),
                     "optim_sgd_step (checked)");
        });
        Target::sync();

        const std::string at = step_label(step, bad ? " (skipped)" : "");
        clip.compare(r, at);
        scale.compare(r, at, bad);
        p.compare_and_adopt(r, at + "param", bad ? kExact : tol);
        if (momentum) b.compare_and_adopt(r, at + "momentum buffer", bad ? kExact : tol);
        if (r.case_failed()) return;
    }
}

// ---- Fused Adam and AdamW -----------------------------------------------------------------------

struct AdamConfig {
    std::string name;
    optim_adam_params params;
};

// The 12 reachable flag combinations: no weight decay, Adam's coupled L2 or AdamW's decoupled
// decay; amsgrad; maximize.
std::vector<AdamConfig> adam_configs()
{
    std::vector<AdamConfig> out;
    for (int maximize : {0, 1}) {
        for (int amsgrad : {0, 1}) {
            for (int decay : {0, 1, 2}) { // none, coupled (Adam), decoupled (AdamW)
                optim_adam_params p;
                optim_adam_params_default(&p);
                p.lr = 0.01;
                p.weight_decay = decay ? 0.05 : 0.0;
                p.decoupled = decay == 2;
                p.amsgrad = amsgrad;
                p.maximize = maximize;
                std::string name = decay == 2 ? "adamw" : "adam";
                if (decay) name += "+weight_decay";
                if (amsgrad) name += "+amsgrad";
                if (maximize) name += "+maximize";
                out.push_back({name, p});
            }
        }
    }
    return out;
}

// One call over every tensor of the set per step, each group a contiguous run of the tensors; each
// tensor's step count advances only on steps where it takes part (the late tensor starts at 1 in
// the middle of the run, with zero moments, as a parameter whose first gradient comes late).
// With counts_on_device the checked side keeps the step counts in device memory (step_counts) and
// they are compared with the CPU side's after every step.
template <typename T>
void adam_case(Report& r, const TensorSet& set, const std::vector<optim_adam_params>& groups,
               int steps, uint64_t seed, double max_norm = 0, bool scaled = false,
               bool counts_on_device = false)
{
    GroupedCase c(set, groups.size(), max_norm, scaled);
    ClipPair& clip = c.clip;
    ScalePair& scale = c.scale;
    const size_t K = c.K;
    bool amsgrad = false;
    for (const optim_adam_params& g : groups) amsgrad = amsgrad || g.amsgrad != 0;
    const Tolerance tol = state_tolerance<T>();
    Rng rng(seed);
    Mirror<T> p(set.sizes, T(0)), g(set.sizes, T(0)), m(set.sizes, T(0)), v(set.sizes, T(0)),
        w(set.sizes, T(0));
    fill_uniform(p, rng);
    p.upload();
    m.upload();
    v.upload();
    w.upload();
    std::vector<int64_t> taken(K, 0);
    DeviceBuffer<int64_t> counts(K);
    counts.upload(taken.data());
    std::vector<int64_t*> count_ptrs(K);
    for (size_t k = 0; k < K; ++k) count_ptrs[k] = counts.get() + k;
    const int late_step = steps / 2;
    for (int step = 0; step < steps; ++step) {
        const std::vector<int64_t> numels = set.numels_at(step, late_step);
        std::vector<int64_t> step_of(K);
        for (size_t k = 0; k < K; ++k) {
            const bool joins = static_cast<int64_t>(k) != set.late || step >= late_step;
            if (joins) ++taken[k];
            step_of[k] = taken[k] > 0 ? taken[k] : 1; // an empty tensor's step is never used
        }
        const bool bad = scale.gradients(g, rng, set, step, steps);

        std::vector<void*> hp = p.host_ptrs(), hm = m.host_ptrs(), hv = v.host_ptrs(),
                           hw = w.host_ptrs(), dp = p.dev_ptrs(), dm = m.dev_ptrs(),
                           dv = v.dev_ptrs(), dw = w.dev_ptrs();
        const std::vector<const void*> hg = const_ptrs(g.host_ptrs()),
                                       dg = const_ptrs(g.dev_ptrs());
        const int32_t* gi = c.group_index();
        const optim_adam_tensors host{
            static_cast<int64_t>(K),       hp.data(),     hg.data(),      hm.data(), hv.data(),
            amsgrad ? hw.data() : nullptr, numels.data(), step_of.data(), gi,        nullptr};
        const optim_adam_tensors dev{static_cast<int64_t>(K),
                                     dp.data(),
                                     dg.data(),
                                     dm.data(),
                                     dv.data(),
                                     amsgrad ? dw.data() : nullptr,
                                     numels.data(),
                                     counts_on_device ? nullptr : step_of.data(),
                                     gi,
                                     counts_on_device ? count_ptrs.data() : nullptr};
        optim_ok(adam_step(OPTIM_DEVICE_CPU, dtype_of<T>(), host, groups, clip.on_host(),
                           scale.on_host()),
                 "optim_adam_step (cpu)");
        checked_step(step, [&] {
            optim_ok(adam_step(Target::device(), dtype_of<T>(), dev, groups, clip.on_target(),
                               scale.on_target()),
                     "optim_adam_step (checked)");
        });
        Target::sync();
        // A skipped step is no step: the counts go back (the caller keeps them on the host).
        if (bad)
            for (size_t k = 0; k < K; ++k)
                if (static_cast<int64_t>(k) != set.late || step >= late_step) --taken[k];

        const std::string at = step_label(step, bad ? " (skipped)" : "");
        clip.compare(r, at);
        scale.compare(r, at, bad);
        if (counts_on_device) {
            // An empty tensor takes no step: its count stays 0.
            std::vector<int64_t> expected(K);
            for (size_t k = 0; k < K; ++k) expected[k] = set.sizes[k] > 0 ? taken[k] : 0;
            r.close(at + "step counts", expected.data(), counts.download().data(), K, kExact);
        }
        p.compare_and_adopt(r, at + "param", tol);
        m.compare_and_adopt(r, at + "exp_avg", tol);
        v.compare_and_adopt(r, at + "exp_avg_sq", tol);
        if (amsgrad) w.compare_and_adopt(r, at + "max_exp_avg_sq", tol);
        if (r.case_failed()) return;
    }
}

// ---- 16-bit parameters ----------------------------------------------------------------------

// The value of float16 or bfloat16 bits (the library converts on its own; this decodes what the
// steps wrote).
float bits16_to_float(uint16_t h, int32_t dtype)
{
    uint32_t u = static_cast<uint32_t>(h) << 16; // bfloat16: the high half of a float32
    if (dtype == OPTIM_DTYPE_FLOAT16) {
        const uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
        if (exp == 0) { // zero or subnormal: man * 2^-24
            const float f = std::ldexp(static_cast<float>(man), -24);
            return sign ? -f : f;
        }
        u = sign | (exp == 0x1f ? 0x7f800000u : (exp + 112) << 23) | (man << 13);
    }
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

// The bits of f, which must be exact in both formats: zero, an infinity, or a normal number of at
// most 8 significant bits (the test data: k / 256 times a power of two, |k| <= 256).
uint16_t float_to_bits16(float f, int32_t dtype)
{
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    if (dtype == OPTIM_DTYPE_BFLOAT16) return static_cast<uint16_t>(u >> 16);
    const uint32_t sign = (u >> 16) & 0x8000u;
    if ((u & 0x7fffffffu) == 0) return static_cast<uint16_t>(sign);
    if ((u & 0x7f800000u) == 0x7f800000u) return static_cast<uint16_t>(sign | 0x7c00u);
    const uint32_t exp = ((u >> 23) & 0xffu) - 112; // rebias 127 -> 15
    return static_cast<uint16_t>(sign | (exp << 10) | ((u & 0x7fffffu) >> 13));
}

const char* dtype16_name(int32_t dtype)
{
    return dtype == OPTIM_DTYPE_BFLOAT16 ? "bfloat16" : "float16";
}

// One unit in the last place of the 16-bit format: the two sides round float32 values that may
// differ in their last bit (contracted FMAs), which can move a rounding (or a stochastic rounding's
// threshold) by one unit.
Tolerance tolerance16(int32_t dtype)
{
    return dtype == OPTIM_DTYPE_BFLOAT16 ? Tolerance{1.0 / 128, 1e-6} : Tolerance{1.0 / 1024, 1e-6};
}

// A 16-bit array per tensor on both sides, compared by value.
struct Bits16 {
    Mirror<uint16_t> bits;
    int32_t dtype;

    Bits16(const std::vector<int64_t>& sizes, int32_t dtype_) : bits(sizes, 0), dtype(dtype_) {}

    // Every element factor * k / 256 for a random k in [-256, 256] (factor a power of two).
    void fill(Rng& rng, float factor)
    {
        for (auto& v : bits.host)
            for (uint16_t& e : v)
                e = float_to_bits16(factor * static_cast<float>(rng.below(513) - 256) / 256.0f,
                                    dtype);
    }
    std::vector<float> values(const std::vector<uint16_t>& v) const
    {
        std::vector<float> f(v.size());
        for (size_t i = 0; i < v.size(); ++i) f[i] = bits16_to_float(v[i], dtype);
        return f;
    }
    // As Mirror::compare_and_adopt, comparing decoded values. Within one ulp is not enough: a
    // rounding that picks the wrong neighbour (a stochastic draw of another seed or step) stays
    // within it, so at most 1% of a tensor's elements (and one) may differ in their bits, where
    // only a float32 value on the rounding boundary, computed differently on the two sides, can
    // flip.
    void compare_and_adopt(Report& r, const std::string& what, Tolerance tol)
    {
        for (size_t k = 0; k < bits.host.size(); ++k) {
            std::vector<uint16_t> got = bits.dev[k].download();
            const std::vector<float> want_f = values(bits.host[k]), got_f = values(got);
            const std::string name = what + " tensor " + std::to_string(k);
            r.close(name, want_f.data(), got_f.data(), got_f.size(), tol);
            size_t differ = 0;
            for (size_t i = 0; i < got.size(); ++i) differ += got[i] != bits.host[k][i];
            r.expect(differ <= 1 + got.size() / 100,
                     name + ": at most 1% of the elements rounded differently (" +
                         std::to_string(differ) + " of " + std::to_string(got.size()) + ")");
            bits.host[k] = std::move(got);
        }
    }
};

// The options of a 16-bit case: float32 master weights or rounding in place (to nearest, or
// stochastic for bfloat16), clipping, the gradient scaler.
struct MixedConfig {
    std::string name;
    bool master;
    int32_t rounding;
    double max_norm;
    bool scaled;
};

std::vector<MixedConfig> mixed_configs(int32_t dtype)
{
    std::vector<MixedConfig> out = {
        {"master weights", true, OPTIM_ROUNDING_NEAREST, 0, false},
        {"master weights, clipped", true, OPTIM_ROUNDING_NEAREST, 1.0, false},
        {"master weights, scaled", true, OPTIM_ROUNDING_NEAREST, 0, true},
        {"round to nearest", false, OPTIM_ROUNDING_NEAREST, 0, false},
        {"round to nearest, scaled and clipped", false, OPTIM_ROUNDING_NEAREST, 1.0, true},
    };
    if (dtype == OPTIM_DTYPE_BFLOAT16) {
        out.push_back({"stochastic rounding", false, OPTIM_ROUNDING_STOCHASTIC, 0, false});
        out.push_back(
            {"stochastic rounding, clipped", false, OPTIM_ROUNDING_STOCHASTIC, 1.0, false});
    }
    return out;
}

// What every 16-bit case holds: the parameters and gradients in 16 bits, the float32 master copy,
// the clip and scaler pairs, and each side's optim_precision for a step.
class MixedCase {
  public:
    MixedCase(const TensorSet& set, int32_t dtype, const MixedConfig& config, size_t groups,
              Rng& rng)
        : c(set, groups, config.max_norm, config.scaled), p(set.sizes, dtype), g(set.sizes, dtype),
          master(set.sizes, 0.0f), set_(set), config_(config), dtype_(dtype)
    {
        p.fill(rng, 1.0f);
        p.bits.upload();
        for (size_t k = 0; k < master.host.size(); ++k) master.host[k] = p.values(p.bits.host[k]);
        master.upload();
    }

    // A step's gradients (uploaded), with one infinity on a scaled case's last step; true then.
    bool gradients(Rng& rng, int step, int steps)
    {
        const bool bad = c.scale.new_step(step, steps);
        g.fill(rng, static_cast<float>(0.5 * c.scale.factor()));
        if (bad)
            g.bits.host.at(static_cast<size_t>(set_.inf_tensor))
                .at(static_cast<size_t>(set_.inf_element)) =
                float_to_bits16(std::numeric_limits<float>::infinity(), dtype_);
        g.bits.upload();
        return bad;
    }

    optim_precision precision(std::vector<void*>& masters, int step) const
    {
        return optim_precision{config_.master ? masters.data() : nullptr, 42, step,
                               config_.rounding};
    }

    // The parameters (and master copies) after a step; a skipped step must change nothing.
    void compare(Report& r, const std::string& at, bool skipped)
    {
        c.clip.compare(r, at);
        c.scale.compare(r, at, skipped);
        p.compare_and_adopt(r, at + "param", skipped ? kExact : tolerance16(dtype_));
        if (config_.master)
            master.compare_and_adopt(r, at + "master param",
                                     skipped ? kExact : state_tolerance<float>());
    }

    GroupedCase c;
    Bits16 p, g;
    Mirror<float> master;

  private:
    const TensorSet& set_;
    MixedConfig config_;
    int32_t dtype_;
};

// Every SGD flag combination as a param group, in one _mixed call per step.
void sgd_mixed_case(Report& r, const TensorSet& set, int32_t dtype, const MixedConfig& config,
                    int steps, uint64_t seed)
{
    std::vector<optim_sgd_params> groups;
    for (const SgdConfig& sc : sgd_configs()) groups.push_back(sc.params);
    Rng rng(seed);
    MixedCase m(set, dtype, config, groups.size(), rng);
    Mirror<float> b(set.sizes, std::numeric_limits<float>::quiet_NaN()); // never read when fresh
    b.upload();
    const int late_step = steps / 2;
    for (int step = 0; step < steps; ++step) {
        const std::vector<int64_t> numels = set.numels_at(step, late_step);
        const std::vector<uint8_t> fresh = fresh_flags(set, step, late_step);
        const bool bad = m.gradients(rng, step, steps);
        std::vector<void*> hp = m.p.bits.host_ptrs(), dp = m.p.bits.dev_ptrs(), hb = b.host_ptrs(),
                           db = b.dev_ptrs(), hw = m.master.host_ptrs(), dw = m.master.dev_ptrs();
        const std::vector<const void*> hg = const_ptrs(m.g.bits.host_ptrs()),
                                       dg = const_ptrs(m.g.bits.dev_ptrs());
        const int64_t K = static_cast<int64_t>(set.sizes.size());
        const int32_t* gi = m.c.group_index();
        const optim_tensor_list host{
            K, hp.data(), hg.data(), hb.data(), numels.data(), fresh.data(), gi};
        const optim_tensor_list dev{K, dp.data(), dg.data(), db.data(), numels.data(), fresh.data(),
                                    gi};
        optim_ok(sgd_step_mixed(OPTIM_DEVICE_CPU, dtype, host, groups, m.precision(hw, step),
                                m.c.clip.on_host(), m.c.scale.on_host()),
                 "optim_sgd_step_mixed (cpu)");
        optim_ok(sgd_step_mixed(Target::device(), dtype, dev, groups, m.precision(dw, step),
                                m.c.clip.on_target(), m.c.scale.on_target()),
                 "optim_sgd_step_mixed (checked)");
        Target::sync();
        const std::string at = step_label(step, bad ? " (skipped)" : "");
        m.compare(r, at, bad);
        b.compare_and_adopt(r, at + "momentum buffer", bad ? kExact : state_tolerance<float>());
        if (r.case_failed()) return;
    }
}

// Every Adam flag combination as a param group, in one _mixed call per step; step counts as in
// adam_case.
void adam_mixed_case(Report& r, const TensorSet& set, int32_t dtype, const MixedConfig& config,
                     int steps, uint64_t seed)
{
    std::vector<optim_adam_params> groups;
    for (const AdamConfig& ac : adam_configs()) groups.push_back(ac.params);
    Rng rng(seed);
    MixedCase m(set, dtype, config, groups.size(), rng);
    Mirror<float> e(set.sizes, 0.0f), v(set.sizes, 0.0f), w(set.sizes, 0.0f);
    e.upload();
    v.upload();
    w.upload();
    const size_t K = set.sizes.size();
    std::vector<int64_t> taken(K, 0);
    const int late_step = steps / 2;
    const Tolerance tol = state_tolerance<float>();
    for (int step = 0; step < steps; ++step) {
        const std::vector<int64_t> numels = set.numels_at(step, late_step);
        std::vector<int64_t> step_of(K);
        for (size_t k = 0; k < K; ++k) {
            if (static_cast<int64_t>(k) != set.late || step >= late_step) ++taken[k];
            step_of[k] = taken[k] > 0 ? taken[k] : 1;
        }
        const bool bad = m.gradients(rng, step, steps);
        std::vector<void*> hp = m.p.bits.host_ptrs(), dp = m.p.bits.dev_ptrs(), he = e.host_ptrs(),
                           de = e.dev_ptrs(), hv = v.host_ptrs(), dv = v.dev_ptrs(),
                           hx = w.host_ptrs(), dx = w.dev_ptrs(), hw = m.master.host_ptrs(),
                           dw = m.master.dev_ptrs();
        const std::vector<const void*> hg = const_ptrs(m.g.bits.host_ptrs()),
                                       dg = const_ptrs(m.g.bits.dev_ptrs());
        const int32_t* gi = m.c.group_index();
        const optim_adam_tensors host{
            static_cast<int64_t>(K), hp.data(),      hg.data(), he.data(), hv.data(), hx.data(),
            numels.data(),           step_of.data(), gi,        nullptr};
        const optim_adam_tensors dev{
            static_cast<int64_t>(K), dp.data(),      dg.data(), de.data(), dv.data(), dx.data(),
            numels.data(),           step_of.data(), gi,        nullptr};
        optim_ok(adam_step_mixed(OPTIM_DEVICE_CPU, dtype, host, groups, m.precision(hw, step),
                                 m.c.clip.on_host(), m.c.scale.on_host()),
                 "optim_adam_step_mixed (cpu)");
        optim_ok(adam_step_mixed(Target::device(), dtype, dev, groups, m.precision(dw, step),
                                 m.c.clip.on_target(), m.c.scale.on_target()),
                 "optim_adam_step_mixed (checked)");
        Target::sync();
        if (bad)
            for (size_t k = 0; k < K; ++k)
                if (static_cast<int64_t>(k) != set.late || step >= late_step) --taken[k];
        const std::string at = step_label(step, bad ? " (skipped)" : "");
        m.compare(r, at, bad);
        e.compare_and_adopt(r, at + "exp_avg", bad ? kExact : tol);
        v.compare_and_adopt(r, at + "exp_avg_sq", bad ? kExact : tol);
        w.compare_and_adopt(r, at + "max_exp_avg_sq", bad ? kExact : tol);
        if (r.case_failed()) return;
    }
}

// ---- Stochastic line search --------------------------------------------------------------------

// One line search's memory traffic per step: the squared gradient norm, a save, trials at
// shrinking step sizes, a restore, a last trial; the device's arrays after each call against the
// CPU path's (then adopted), and the norms within a double-sum tolerance.
template <typename T>
void sls_case(Report& r, const TensorSet& set, int steps, uint64_t seed)
{
    const int64_t K = static_cast<int64_t>(set.sizes.size());
    const int32_t dt = dtype_of<T>();
    const Tolerance tol = state_tolerance<T>();
    Rng rng(seed);
    Mirror<T> p(set.sizes, T(0)), o(set.sizes, T(0)), g(set.sizes, T(0));
    fill_uniform(p, rng);
    p.upload();
    o.upload();
    // Runs `call` on the CPU path and on the side under check. The pointer lists are rebuilt for
    // each call: compare_and_adopt replaces the host arrays.
    auto both = [&](const char* fn, auto&& call) {
        std::vector<void*> hp = p.host_ptrs(), ho = o.host_ptrs(), dp = p.dev_ptrs(),
                           dO = o.dev_ptrs();
        const std::vector<const void*> hg = const_ptrs(g.host_ptrs()),
                                       dg = const_ptrs(g.dev_ptrs());
        const optim_sls_tensors host{K, hp.data(), ho.data(), hg.data(), set.sizes.data()};
        const optim_sls_tensors dev{K, dp.data(), dO.data(), dg.data(), set.sizes.data()};
        optim_ok(call(OPTIM_DEVICE_CPU, host), (std::string(fn) + " (cpu)").c_str());
        optim_ok(call(Target::device(), dev), (std::string(fn) + " (checked)").c_str());
        Target::sync();
    };
    for (int step = 0; step < steps; ++step) {
        fill_uniform(g, rng, 0.5);
        g.upload();
        const std::string at = step_label(step);
        double norms[2] = {0.0, 0.0};
        int side = 0;
        both("optim_sls_grad_norm_sq", [&](int32_t device, const optim_sls_tensors& t) {
            return optim_sls_grad_norm_sq(device, 0, dt, &t, &norms[side++]);
        });
        r.close(at + "squared gradient norm", &norms[0], &norms[1], 1, Tolerance{1e-12, 1e-300});
        both("optim_sls_save", [&](int32_t device, const optim_sls_tensors& t) {
            return optim_sls_save(device, 0, dt, &t);
        });
        o.compare_and_adopt(r, at + "origin after save", tol);
        double eta = 1.5;
        for (int trial = 0; trial < 4; ++trial, eta *= 0.9) {
            both("optim_sls_trial", [&](int32_t device, const optim_sls_tensors& t) {
                return optim_sls_trial(device, 0, dt, &t, eta);
            });
            p.compare_and_adopt(r, at + "param after trial " + std::to_string(trial), tol);
        }
        both("optim_sls_restore", [&](int32_t device, const optim_sls_tensors& t) {
            return optim_sls_restore(device, 0, dt, &t);
        });
        p.compare_and_adopt(r, at + "param after restore", tol);
        both("optim_sls_trial", [&](int32_t device, const optim_sls_tensors& t) {
            return optim_sls_trial(device, 0, dt, &t, 1e-6);
        });
        p.compare_and_adopt(r, at + "param after the fallback step", tol);
        if (r.case_failed()) return;
    }
}

// ---- Hypergradient descent ---------------------------------------------------------------------

const char* scope_name(int32_t scope)
{
    switch (scope) {
    case OPTIM_HD_SCOPE_GLOBAL:
        return "global";
    case OPTIM_HD_SCOPE_PER_GROUP:
        return "per-group";
    case OPTIM_HD_SCOPE_PER_TENSOR:
        return "per-tensor";
    default:
        return "per-parameter";
    }
}

// The param groups of an HD-SGD case (the tensor set's four groups).
std::vector<optim_hd_group> hd_sgd_groups()
{
    return {
        {0.9, 0.1, 1e-2, 0, 0}, // heavy ball, dampening, weight decay: u_prev is the buffer
        {0.8, 0.0, 1e-3, 1, 1}, // Nesterov, maximize: u_prev is prev_updates
        {0.0, 0.0, 0.0, 0, 0},  // plain SGD: u_prev is prev_updates
        {0.9, 0.0, 0.0, 0, 0},  // only empty tensors: a per-group rate slot without elements
    };
}

// The param groups of an HD-Adam case.
std::vector<optim_hd_adam_group> hd_adam_groups()
{
    return {
        {0.9, 0.999, 1e-8, 1e-2, 0, 0}, // weight decay
        {0.5, 0.9, 1e-6, 0.0, 1, 1},    // amsgrad, maximize, lerp's other branch
        {0.9, 0.999, 1e-8, 0.0, 0, 0},  // plain
        {0.9, 0.999, 1e-8, 0.0, 1, 0},  // only empty tensors: a per-group slot without elements
    };
}

// Rates that move without all reaching a bound (h grows with the elements a rate covers).
optim_hd_params hd_params(bool adam, int32_t scope, int32_t rule)
{
    optim_hd_params hp{};
    const bool per_parameter = scope == OPTIM_HD_SCOPE_PER_PARAMETER;
    if (adam)
        hp.hypergrad_lr = rule == OPTIM_HD_RULE_NORMALIZED ? 0.05 : per_parameter ? 1e-3 : 1e-8;
    else
        hp.hypergrad_lr = rule == OPTIM_HD_RULE_NORMALIZED     ? 0.05
                          : per_parameter                      ? 1e-2
                          : scope == OPTIM_HD_SCOPE_PER_TENSOR ? 1e-7
                          : scope == OPTIM_HD_SCOPE_PER_GROUP  ? 1e-8
                                                               : 1e-9;
    hp.lr_min = 1e-4;
    hp.lr_max = 0.1;
    hp.eps = 1e-8;
    hp.scope = scope;
    hp.rule = rule;
    return hp;
}

// The steps of an HD case: ordinary ones, then (with the finiteness check) a NaN step and an
// infinity step, each skipped and counted, each followed by an ordinary step; or (assume_finite)
// a NaN step that is not skipped, whose NaN reaches the same elements on both sides.
enum class Bad { kNone, kNan, kInf };

// The scalar rates of an HD case (none for the per-parameter scope), 0.01 + 0.001 * slot, on the
// CPU path's side (host) and the checked side; compare() checks the checked side's against the
// host's, then adopts them.
class RatePair {
  public:
    RatePair(int32_t scope, size_t groups, size_t tensors)
        : host_(scope == OPTIM_HD_SCOPE_PER_PARAMETER ? 0
                : scope == OPTIM_HD_SCOPE_GLOBAL      ? 1
                : scope == OPTIM_HD_SCOPE_PER_GROUP   ? groups
                                                      : tensors),
          target_(host_.size())
    {
        for (size_t s = 0; s < host_.size(); ++s) host_[s] = 0.01 + 0.001 * static_cast<double>(s);
        target_.upload(host_.data());
    }
    const std::vector<double>& host() const { return host_; }
    double* on_host() { return host_.empty() ? nullptr : host_.data(); }
    double* on_target() { return target_.get(); }
    void compare(Report& r, const std::string& at, Tolerance tol)
    {
        if (host_.empty()) return;
        const std::vector<double> got = target_.download();
        r.close(at + "rates", host_.data(), got.data(), host_.size(), tol);
        host_ = got;
    }

  private:
    std::vector<double> host_;
    DeviceBuffer<double> target_;
};

// HD's skip reports: the CPU path's of each call, and the checked side's counter (the CUDA path
// counts skipped steps; the CPU path of a dry run reports the last call's).
class SkipCounter {
  public:
    SkipCounter() : target_(1)
    {
        const int64_t zero = 0;
        target_.upload(&zero);
    }
    int64_t* on_target() { return target_.get(); }
    void check(Report& r, const std::string& at, bool skip, int64_t cpu_report)
    {
        r.same(at + "CPU skip report", int64_t(skip ? 1 : 0), cpu_report);
        skips_ += skip ? 1 : 0;
        int64_t reported = -1;
        target_.download(&reported);
        r.same(at + "skip counter", Target::dry_run() ? int64_t(skip ? 1 : 0) : skips_, reported);
    }

  private:
    DeviceBuffer<int64_t> target_;
    int64_t skips_ = 0;
};

template <typename T>
void hd_case(Report& r, const TensorSet& set, int32_t scope, int32_t rule, int32_t assume_finite,
             int steps, uint64_t seed, double max_norm = 0)
{
    ClipPair clip(max_norm);
    const std::vector<optim_hd_group> groups = hd_sgd_groups();
    const size_t K = set.sizes.size();
    const bool per_parameter = scope == OPTIM_HD_SCOPE_PER_PARAMETER;
    optim_hd_params hp = hd_params(false, scope, rule);
    hp.assume_finite = assume_finite;
    RatePair rates(scope, groups.size(), K);
    const std::vector<double> initial_rates = rates.host();
    const T initial_param_rate = T(0.01);

    Rng rng(seed);
    Mirror<T> p(set.sizes, T(0)), u(set.sizes, T(0)), a(set.sizes, initial_param_rate),
        g(set.sizes, T(0));
    Mirror<T> b(set.sizes, std::numeric_limits<T>::quiet_NaN()); // a fresh buffer is never read
    fill_uniform(p, rng);
    p.upload();
    u.upload();
    a.upload();
    b.upload();
    SkipCounter skips;

    const Tolerance tol = state_tolerance<T>();
    const int late_step = steps / 2;
    auto step = [&](int index, Bad bad) {
        const std::vector<int64_t> numels = set.numels_at(index, late_step);
        const std::vector<uint8_t> fresh = fresh_flags(set, index, late_step);
        quadratic_gradients(g, p, rng);
        if (bad == Bad::kNan)
            put_value(g, set.nan_tensor, set.nan_element, std::numeric_limits<T>::quiet_NaN());
        if (bad == Bad::kInf)
            put_value(g, set.inf_tensor, set.inf_element, std::numeric_limits<T>::infinity());
        g.upload();
        hp.first_step = index == 0;

        std::vector<void*> hpp = p.host_ptrs(), hb = b.host_ptrs(), hu = u.host_ptrs(),
                           ha = a.host_ptrs();
        std::vector<void*> dpp = p.dev_ptrs(), db = b.dev_ptrs(), du = u.dev_ptrs(),
                           da = a.dev_ptrs();
        const std::vector<const void*> hg = const_ptrs(g.host_ptrs()),
                                       dg = const_ptrs(g.dev_ptrs());
        const optim_hd_tensors host{
            static_cast<int64_t>(K), hpp.data(),       hg.data(),   hb.data(), hu.data(), ha.data(),
            numels.data(),           set.group.data(), fresh.data()};
        const optim_hd_tensors dev{
            static_cast<int64_t>(K), dpp.data(),       dg.data(),   db.data(), du.data(), da.data(),
            numels.data(),           set.group.data(), fresh.data()};
        int64_t skipped = -1;
        optim_ok(hd_step(OPTIM_DEVICE_CPU, dtype_of<T>(), host, groups, hp, rates.on_host(),
                         &skipped, clip.on_host()),
                 "optim_hd_step (cpu)");
        checked_step(index, [&] {
            optim_ok(hd_step(Target::device(), dtype_of<T>(), dev, groups, hp, rates.on_target(),
                             skips.on_target(), clip.on_target()),
                     "optim_hd_step (checked)");
        });
        Target::sync();

        const bool skip = bad != Bad::kNone && !assume_finite;
        const std::string at = step_label(index, bad == Bad::kNan   ? " (NaN gradient)"
                                                 : bad == Bad::kInf ? " (infinite gradient)"
                                                                    : "");
        skips.check(r, at, skip, skipped);
        // A skipped step writes nothing at all.
        const Tolerance t = skip ? kExact : tol;
        p.compare_and_adopt(r, at + "param", t);
        b.compare_and_adopt(r, at + "momentum buffer", t);
        u.compare_and_adopt(r, at + "prev update", t);
        a.compare_and_adopt(r, at + "param rate", t);
        rates.compare(r, at, skip ? kExact : rate_tolerance<T>());
    };

    for (int i = 0; i < steps && !r.case_failed(); ++i) step(i, Bad::kNone);
    if (r.case_failed()) return;
    // The case must exercise the rate update: some rate moved.
    bool moved = false;
    moved = rates.host() != initial_rates;
    for (const auto& v : a.host)
        for (T x : v) moved = moved || (per_parameter && x != initial_param_rate);
    r.expect(moved, "some rate moved during the ordinary steps");

    int index = steps;
    if (!assume_finite) {
        for (Bad bad : {Bad::kNan, Bad::kNone, Bad::kInf, Bad::kNone})
            if (!r.case_failed()) step(index++, bad);
    } else {
        for (Bad bad : {Bad::kNan, Bad::kNone})
            if (!r.case_failed()) step(index++, bad);
    }
}

// ---- Hypergradient Adam -------------------------------------------------------------------------

// Ordinary steps (the late tensor joins halfway, its step count starting at 1), then a NaN step
// that is skipped and writes nothing, then an ordinary one; every array and rate after each call
// against the CPU path's (then adopted).
template <typename T>
void hd_adam_case(Report& r, const TensorSet& set, int32_t scope, int32_t rule, int steps,
                  uint64_t seed, double max_norm = 0, bool counts_on_device = false)
{
    ClipPair clip(max_norm);
    const std::vector<optim_hd_adam_group> groups = hd_adam_groups();
    const size_t K = set.sizes.size();
    optim_hd_params hp = hd_params(true, scope, rule);
    RatePair rates(scope, groups.size(), K);

    Rng rng(seed);
    Mirror<T> p(set.sizes, T(0)), g(set.sizes, T(0)), m(set.sizes, T(0)), v(set.sizes, T(0)),
        w(set.sizes, T(0)), u(set.sizes, T(0)), a(set.sizes, T(0.01));
    fill_uniform(p, rng);
    for (Mirror<T>* x : {&p, &m, &v, &w, &u, &a}) x->upload();
    SkipCounter skips;
    std::vector<int64_t> taken(K, 0);
    DeviceBuffer<int64_t> counts(K);
    counts.upload(taken.data());
    std::vector<int64_t*> count_ptrs(K);
    for (size_t k = 0; k < K; ++k) count_ptrs[k] = counts.get() + k;
    const Tolerance tol = state_tolerance<T>();
    const int late_step = steps / 2;
    auto step = [&](int index, bool nan) {
        const std::vector<int64_t> numels = set.numels_at(index, late_step);
        std::vector<int64_t> step_of(K);
        for (size_t k = 0; k < K; ++k) step_of[k] = taken[k] + 1; // an empty tensor's is unused
        quadratic_gradients(g, p, rng);
        if (nan) put_value(g, set.nan_tensor, set.nan_element, std::numeric_limits<T>::quiet_NaN());
        g.upload();
        hp.first_step = index == 0;
        std::vector<void*> h[6] = {p.host_ptrs(), m.host_ptrs(), v.host_ptrs(),
                                   w.host_ptrs(), u.host_ptrs(), a.host_ptrs()};
        std::vector<void*> d[6] = {p.dev_ptrs(), m.dev_ptrs(), v.dev_ptrs(),
                                   w.dev_ptrs(), u.dev_ptrs(), a.dev_ptrs()};
        const std::vector<const void*> hg = const_ptrs(g.host_ptrs()),
                                       dg = const_ptrs(g.dev_ptrs());
        // counts: the checked side's step counts in device memory (step_counts), else null.
        const auto list = [&](std::vector<void*>(&x)[6], const std::vector<const void*>& grads,
                              int64_t* const* counts) {
            return optim_hd_adam_tensors{static_cast<int64_t>(K),
                                         x[0].data(),
                                         grads.data(),
                                         x[1].data(),
                                         x[2].data(),
                                         x[3].data(),
                                         x[4].data(),
                                         x[5].data(),
                                         numels.data(),
                                         counts ? nullptr : step_of.data(),
                                         set.group.data(),
                                         counts};
        };
        const optim_hd_adam_tensors host = list(h, hg, nullptr),
                                    dev =
                                        list(d, dg, counts_on_device ? count_ptrs.data() : nullptr);
        int64_t skipped = -1;
        optim_ok(hd_adam_step(OPTIM_DEVICE_CPU, dtype_of<T>(), host, groups, hp, rates.on_host(),
                              &skipped, clip.on_host()),
                 "optim_hd_adam_step (cpu)");
        checked_step(index, [&] {
            optim_ok(hd_adam_step(Target::device(), dtype_of<T>(), dev, groups, hp,
                                  rates.on_target(), skips.on_target(), clip.on_target()),
                     "optim_hd_adam_step (checked)");
        });
        Target::sync();
        const std::string at = step_label(index, nan ? " (NaN gradient)" : "");
        skips.check(r, at, nan, skipped);
        // A tensor without elements takes no step (with counts in memory, its count stays).
        if (!nan)
            for (size_t k = 0; k < K; ++k) taken[k] += numels[k] > 0 ? 1 : 0;
        const Tolerance t = nan ? kExact : tol;
        if (counts_on_device)
            r.close(at + "step counts", taken.data(), counts.download().data(), K, kExact);
        clip.compare(r, at);
        p.compare_and_adopt(r, at + "param", t);
        m.compare_and_adopt(r, at + "exp_avg", t);
        v.compare_and_adopt(r, at + "exp_avg_sq", t);
        w.compare_and_adopt(r, at + "max_exp_avg_sq", t);
        u.compare_and_adopt(r, at + "prev update", t);
        a.compare_and_adopt(r, at + "param rate", t);
        rates.compare(r, at, nan ? kExact : rate_tolerance<T>());
    };
    for (int i = 0; i < steps && !r.case_failed(); ++i) step(i, false);
    for (bool nan : {true, false})
        if (!r.case_failed()) step(steps + (nan ? 0 : 1), nan);
}

// ---- Hypergradient descent on 16-bit parameters -------------------------------------------------

// HD-SGD or HD-Adam on float16/bfloat16 parameters and gradients with float32 state
// (optim_hd_step_mixed, optim_hd_adam_step_mixed): parameters, master copies, every state array
// and rate after each call against the CPU path's (then adopted). HD has no scaled mixed entry
// point, so the configs are the unscaled ones.
void hd_mixed_case(Report& r, const TensorSet& set, bool adam, int32_t scope, int32_t dtype,
                   const MixedConfig& config, int steps, uint64_t seed)
{
    // The rule alternates with the scope, so both rules meet the 16-bit paths.
    const int32_t rule = scope % 2 ? OPTIM_HD_RULE_NORMALIZED : OPTIM_HD_RULE_ADDITIVE;
    const std::vector<optim_hd_group> sgd_groups = hd_sgd_groups();
    const std::vector<optim_hd_adam_group> adam_groups = hd_adam_groups();
    optim_hd_params hp = hd_params(adam, scope, rule);
    const size_t K = set.sizes.size();
    const size_t groups = adam ? adam_groups.size() : sgd_groups.size();
    RatePair rates(scope, groups, K);
    Rng rng(seed);
    MixedCase mc(set, dtype, config, groups, rng);
    // SGD: b, u, a; Adam: m, v, w, u, a. A fresh momentum buffer is never read.
    Mirror<float> b(set.sizes, std::numeric_limits<float>::quiet_NaN()), m(set.sizes, 0.0f),
        v(set.sizes, 0.0f), w(set.sizes, 0.0f), u(set.sizes, 0.0f), a(set.sizes, 0.01f);
    for (Mirror<float>* x : {&b, &m, &v, &w, &u, &a}) x->upload();
    SkipCounter skips;
    std::vector<int64_t> taken(K, 0);
    const Tolerance tol = state_tolerance<float>();
    const int late_step = steps / 2;
    for (int step = 0; step < steps && !r.case_failed(); ++step) {
        const std::vector<int64_t> numels = set.numels_at(step, late_step);
        const std::vector<uint8_t> fresh = fresh_flags(set, step, late_step);
        std::vector<int64_t> step_of(K);
        for (size_t k = 0; k < K; ++k) step_of[k] = taken[k] + 1; // an empty tensor's is unused
        mc.gradients(rng, step, steps);
        hp.first_step = step == 0;
        std::vector<void*> hw = mc.master.host_ptrs(), dw = mc.master.dev_ptrs();
        const optim_precision host_precision = mc.precision(hw, step),
                              dev_precision = mc.precision(dw, step);
        const auto sides = [&](bool host) {
            const auto ptrs = [host](Mirror<float>& x) {
                return host ? x.host_ptrs() : x.dev_ptrs();
            };
            return std::vector<std::vector<void*>>{host ? mc.p.bits.host_ptrs()
                                                        : mc.p.bits.dev_ptrs(),
                                                   ptrs(b),
                                                   ptrs(m),
                                                   ptrs(v),
                                                   ptrs(w),
                                                   ptrs(u),
                                                   ptrs(a)};
        };
        std::vector<std::vector<void*>> h = sides(true), d = sides(false);
        const std::vector<const void*> hg = const_ptrs(mc.g.bits.host_ptrs()),
                                       dg = const_ptrs(mc.g.bits.dev_ptrs());
        int64_t skipped = -1;
        const int64_t k64 = static_cast<int64_t>(K);
        if (!adam) {
            const auto list = [&](std::vector<std::vector<void*>>& x,
                                  const std::vector<const void*>& grads) {
                return optim_hd_tensors{k64,           x[0].data(),      grads.data(),
                                        x[1].data(),   x[5].data(),      x[6].data(),
                                        numels.data(), set.group.data(), fresh.data()};
            };
            const optim_hd_tensors host = list(h, hg), dev = list(d, dg);
            optim_ok(hd_step_mixed(OPTIM_DEVICE_CPU, dtype, host, sgd_groups, hp, rates.on_host(),
                                   &skipped, mc.c.clip.on_host(), host_precision),
                     "optim_hd_step_mixed (cpu)");
            checked_step(step, [&] {
                optim_ok(hd_step_mixed(Target::device(), dtype, dev, sgd_groups, hp,
                                       rates.on_target(), skips.on_target(), mc.c.clip.on_target(),
                                       dev_precision),
                         "optim_hd_step_mixed (checked)");
            });
        } else {
            const auto list = [&](std::vector<std::vector<void*>>& x,
                                  const std::vector<const void*>& grads) {
                return optim_hd_adam_tensors{
                    k64,           x[0].data(),    grads.data(),     x[2].data(),
                    x[3].data(),   x[4].data(),    x[5].data(),      x[6].data(),
                    numels.data(), step_of.data(), set.group.data(), nullptr};
            };
            const optim_hd_adam_tensors host = list(h, hg), dev = list(d, dg);
            optim_ok(hd_adam_step_mixed(OPTIM_DEVICE_CPU, dtype, host, adam_groups, hp,
                                        rates.on_host(), &skipped, mc.c.clip.on_host(),
                                        host_precision),
                     "optim_hd_adam_step_mixed (cpu)");
            checked_step(step, [&] {
                optim_ok(hd_adam_step_mixed(Target::device(), dtype, dev, adam_groups, hp,
                                            rates.on_target(), skips.on_target(),
                                            mc.c.clip.on_target(), dev_precision),
                         "optim_hd_adam_step_mixed (checked)");
            });
        }
        Target::sync();
        for (size_t k = 0; k < K; ++k) taken[k] += numels[k] > 0 ? 1 : 0;
        const std::string at = step_label(step);
        skips.check(r, at, false, skipped);
        mc.compare(r, at, false);
        if (!adam) {
            b.compare_and_adopt(r, at + "momentum buffer", tol);
        } else {
            m.compare_and_adopt(r, at + "exp_avg", tol);
            v.compare_and_adopt(r, at + "exp_avg_sq", tol);
            w.compare_and_adopt(r, at + "max_exp_avg_sq", tol);
        }
        u.compare_and_adopt(r, at + "prev update", tol);
        a.compare_and_adopt(r, at + "param rate", tol);
        rates.compare(r, at, rate_tolerance<float>());
    }
}

// ---- GreedyLR ----------------------------------------------------------------------------------

struct GreedyConfig {
    std::string name;
    optim_greedylr_config config;
    std::vector<double> rates, min_lr, max_lr;
};

std::vector<GreedyConfig> greedy_configs()
{
    std::vector<GreedyConfig> out;
    optim_greedylr_config c{};
    c.factor = 0.7;
    c.threshold = 1e-4;
    c.eps = 1e-12;
    c.mode = OPTIM_GREEDY_MODE_MIN;
    c.threshold_mode = OPTIM_GREEDY_THRESHOLD_REL;
    c.patience = 2;
    c.cooldown = 1;
    c.warmup = 1;
    c.window_size = 4;
    c.reset_start = 3;
    c.smooth = 1;
    c.trend = 1;
    c.groups = 2;
    out.push_back({"min, relative threshold, smoothing, trend, resets",
                   c,
                   {0.1, 0.02},
                   {1e-3, 1e-4},
                   {1.0, 0.5}});
    c = optim_greedylr_config{};
    c.factor = 0.5;
    c.threshold = 1e-3;
    c.eps = 0;
    c.mode = OPTIM_GREEDY_MODE_MAX;
    c.threshold_mode = OPTIM_GREEDY_THRESHOLD_ABS;
    c.patience = 0;
    c.window_size = 1;
    c.reset_start = 1;
    c.groups = 3;
    out.push_back({"max, absolute threshold, patience 0, resets",
                   c,
                   {0.05, 0.5, 1e-3},
                   {1e-4, 1e-3, 1e-5},
                   {0.5, 4.0, 0.1}});
    c = optim_greedylr_config{};
    c.factor = 0.9;
    c.threshold = 0;
    c.eps = 1e-8;
    c.mode = OPTIM_GREEDY_MODE_MIN;
    c.threshold_mode = OPTIM_GREEDY_THRESHOLD_ABS;
    c.patience = 5;
    c.cooldown = 3;
    c.warmup = 2;
    c.window_size = 7;
    c.reset_start = 0;
    c.smooth = 1;
    c.groups = 1;
    out.push_back({"min, window 7, cooldown 3, warmup 2, no reset", c, {0.01}, {1e-5}, {0.1}});
    return out;
}

// A metric trace in cycles of phases of random lengths: improving, a long plateau (every rate down
// to its floor, then full resets), worsening, noisy, one NaN or infinite value, a fast improvement.
std::vector<double> greedy_trace(size_t n, uint64_t seed)
{
    struct Phase {
        int64_t min_length, max_length;
        double trend, noise;
    };
    const Phase cycle[] = {{30, 60, 0.98, 0.002}, {120, 200, 1.0, 0.002}, {20, 40, 1.02, 0.002},
                           {20, 40, 1.0, 0.2},    {1, 1, 1.0, 0.0},       {5, 15, 0.9, 0.002}};
    Rng rng(seed);
    std::vector<double> out;
    double level = 1.0;
    for (size_t phase = 0; out.size() < n; phase = (phase + 1) % 6) {
        const Phase& p = cycle[phase];
        if (p.noise == 0.0) {
            const int64_t which = rng.below(3);
            out.push_back(which == 0   ? std::numeric_limits<double>::quiet_NaN()
                          : which == 1 ? std::numeric_limits<double>::infinity()
                                       : -std::numeric_limits<double>::infinity());
            continue;
        }
        const int64_t length = p.min_length + rng.below(p.max_length - p.min_length + 1);
        for (int64_t j = 0; j < length && out.size() < n; ++j) {
            level *= p.trend;
            if (level < 1e-3 || level > 1e3) level = 1.0;
            out.push_back(level * (1.0 + p.noise * rng.uniform()));
        }
    }
    return out;
}

template <typename M>
void greedy_case(Report& r, const GreedyConfig& gc, const std::vector<double>& trace,
                 bool expect_resets)
{
    const optim_greedylr_config& c = gc.config;
    optim_greedylr_state host{};
    optim_ok(optim_greedylr_init(&c, &host), "optim_greedylr_init");
    std::vector<double> rates = gc.rates, initial = gc.rates, lo = gc.min_lr, hi = gc.max_lr;
    std::vector<double> window(static_cast<size_t>(c.window_size), 0.0);
    DeviceBuffer<optim_greedylr_state> t_state(1);
    DeviceBuffer<double> t_rates(rates.size()), t_initial(rates.size()), t_lo(rates.size()),
        t_hi(rates.size()), t_window(window.size());
    DeviceBuffer<M> t_metric(1);
    t_state.upload(&host);
    t_rates.upload(rates.data());
    t_initial.upload(initial.data());
    t_lo.upload(lo.data());
    t_hi.upload(hi.data());
    t_window.upload(window.data());
    const optim_greedylr_buffers hb{rates.data(), initial.data(), lo.data(), hi.data(),
                                    window.data()};
    const optim_greedylr_buffers tb{t_rates.get(), t_initial.get(), t_lo.get(), t_hi.get(),
                                    t_window.get()};
    const int32_t metric_dtype = dtype_of<M>();
    int ups = 0, downs = 0;
    for (size_t i = 0; i < trace.size() && !r.case_failed(); ++i) {
        const M m = static_cast<M>(trace[i]);
        t_metric.upload(&m);
        const std::vector<double> before = rates;
        optim_ok(optim_greedylr_step(OPTIM_DEVICE_CPU, 0, &c, &host, &hb, &m, metric_dtype),
                 "optim_greedylr_step (cpu)");
        optim_ok(optim_greedylr_step(Target::device(), 0, &c, t_state.get(), &tb, t_metric.get(),
                                     metric_dtype),
                 "optim_greedylr_step (checked)");
        for (size_t g = 0; g < rates.size(); ++g) {
            ups += rates[g] > before[g];
            downs += rates[g] < before[g];
        }
        optim_greedylr_state got{};
        t_state.download(&got);
        const std::string at = "evaluation " + std::to_string(i) + ": ";
        r.same(at + "best", host.best, got.best);
        r.same(at + "num_good", host.num_good, got.num_good);
        r.same(at + "num_bad", host.num_bad, got.num_bad);
        r.same(at + "cooldown_counter", host.cooldown_counter, got.cooldown_counter);
        r.same(at + "warmup_counter", host.warmup_counter, got.warmup_counter);
        r.same(at + "reset_budget", host.reset_budget, got.reset_budget);
        r.same(at + "window_count", host.window_count, got.window_count);
        r.same(at + "window_next", host.window_next, got.window_next);
        r.same(at + "steps", host.steps, got.steps);
        r.same(at + "resets", host.resets, got.resets);
        const std::vector<double> t_r = t_rates.download(), t_w = t_window.download();
        r.close(at + "rates", rates.data(), t_r.data(), rates.size(), kExact);
        r.close(at + "window", window.data(), t_w.data(), window.size(), kExact);
    }
    // The trace must exercise the state machine.
    r.expect(ups > 0 && downs > 0, "the trace raised and lowered the rates (" +
                                       std::to_string(ups) + " raises, " + std::to_string(downs) +
                                       " cuts)");
    if (expect_resets)
        r.expect(host.resets > 0,
                 "the trace led to a full reset (" + std::to_string(host.resets) + " resets)");
}

// A state whose window position lies outside its window. The CPU path refuses it; the CUDA kernel
// cannot report, so it makes the same check (greedy_check) and writes nothing at all.
void greedy_corrupt_state_case(Report& r)
{
    optim_greedylr_config c{};
    c.factor = 0.5;
    c.mode = OPTIM_GREEDY_MODE_MIN;
    c.threshold_mode = OPTIM_GREEDY_THRESHOLD_ABS;
    c.window_size = 2;
    c.smooth = 1;
    c.groups = 1;
    optim_greedylr_state host{};
    optim_ok(optim_greedylr_init(&c, &host), "optim_greedylr_init");
    host.window_next = 1000;
    const double rate = 0.1, lo = 0.01, hi = 1.0, metric = 0.5;
    const double window[2] = {7.0, 8.0};
    DeviceBuffer<optim_greedylr_state> t_state(1);
    DeviceBuffer<double> t_rates(1), t_initial(1), t_lo(1), t_hi(1), t_window(2), t_metric(1);
    t_state.upload(&host);
    t_rates.upload(&rate);
    t_initial.upload(&rate);
    t_lo.upload(&lo);
    t_hi.upload(&hi);
    t_window.upload(window);
    t_metric.upload(&metric);
    const optim_greedylr_buffers tb{t_rates.get(), t_initial.get(), t_lo.get(), t_hi.get(),
                                    t_window.get()};
    const optim_status got = optim_greedylr_step(Target::device(), 0, &c, t_state.get(), &tb,
                                                 t_metric.get(), OPTIM_DTYPE_FLOAT64);
    Target::sync();
    // The CUDA call has returned before the kernel ran; the CPU path reports the problem.
    r.same("status", int32_t(Target::dry_run() ? OPTIM_STATUS_INVALID_ARGUMENT : OPTIM_STATUS_OK),
           int32_t(got));
    optim_greedylr_state after{};
    t_state.download(&after);
    r.expect(std::memcmp(&after, &host, sizeof host) == 0, "the state is unchanged");
    r.same("steps", int64_t(0), after.steps);
    const std::vector<double> rates_after = t_rates.download(), window_after = t_window.download();
    r.same("rate", rate, rates_after[0]);
    r.close("window", window, window_after.data(), 2, kExact);
}

// ---- The C ABI on CUDA: device indices, empty calls --------------------------------------------

void abi_checks(Report& r)
{
    run_case(r, "device count agrees with the CUDA runtime", [&] {
        int32_t ours = -1;
        optim_ok(optim_cuda_device_count(&ours), "optim_cuda_device_count");
        int theirs = -1;
        cuda_ok(cudaGetDeviceCount(&theirs), "cudaGetDeviceCount");
        r.same("device count", static_cast<int64_t>(theirs), static_cast<int64_t>(ours));
        r.same("optim_cuda_compiled", int32_t(1), optim_cuda_compiled());
    });
    run_case(r, "a device index out of range is refused by every step", [&] {
        float x = 0;
        double lr = 0.1;
        void* ps[] = {&x};
        const void* gs[] = {&x};
        int64_t ns[] = {1};
        int32_t gi[] = {0};
        const optim_tensor_list list{1, ps, gs, nullptr, ns, nullptr, nullptr};
        optim_sgd_params sp;
        optim_sgd_params_default(&sp);
        r.same("optim_sgd_step", int32_t(OPTIM_STATUS_INVALID_ARGUMENT),
               optim_sgd_step(OPTIM_DEVICE_CUDA, 999, OPTIM_DTYPE_FLOAT32, &list, 1, &sp));
        const optim_hd_tensors ht{1, ps, gs, nullptr, ps, nullptr, ns, gi, nullptr};
        const optim_hd_group hg{0, 0, 0, 0, 0};
        optim_hd_params hp{};
        hp.lr_max = 1;
        hp.eps = 1e-8;
        r.same("optim_hd_step", int32_t(OPTIM_STATUS_INVALID_ARGUMENT),
               optim_hd_step(OPTIM_DEVICE_CUDA, 999, OPTIM_DTYPE_FLOAT32, &ht, 1, &hg, &hp, &lr,
                             nullptr));
        optim_greedylr_config c{};
        c.factor = 0.5;
        c.window_size = 1;
        c.groups = 1;
        optim_greedylr_state s{};
        optim_ok(optim_greedylr_init(&c, &s), "optim_greedylr_init");
        const optim_greedylr_buffers b{&lr, &lr, &lr, &lr, nullptr};
        r.same("optim_greedylr_step", int32_t(OPTIM_STATUS_INVALID_ARGUMENT),
               optim_greedylr_step(OPTIM_DEVICE_CUDA, 999, &c, &s, &b, &lr, OPTIM_DTYPE_FLOAT64));
    });
    run_case(r, "calls with no elements succeed on CUDA and change nothing", [&] {
        optim_sgd_params sp;
        optim_sgd_params_default(&sp);
        const optim_tensor_list list{0, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr};
        optim_ok(sgd_step(OPTIM_DEVICE_CUDA, OPTIM_DTYPE_FLOAT32, list, sp), "optim_sgd_step");
        int64_t zero_sizes[] = {0, 0};
        int32_t gi[] = {0, 0};
        void* none[] = {nullptr, nullptr};
        const void* cnone[] = {nullptr, nullptr};
        const optim_hd_tensors ht{2, none, cnone, none, none, none, zero_sizes, gi, nullptr};
        const std::vector<optim_hd_group> hg = {{0.9, 0, 0, 0, 0}};
        optim_hd_params hp{};
        hp.lr_max = 1;
        hp.eps = 1e-8;
        DeviceBuffer<double> rate(1);
        const double lr = 0.1;
        rate.upload(&lr);
        optim_ok(hd_step(OPTIM_DEVICE_CUDA, OPTIM_DTYPE_FLOAT64, ht, hg, hp, rate.get(), nullptr),
                 "optim_hd_step");
        cuda_ok(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
        double after = 0;
        rate.download(&after);
        r.same("the rate", lr, after);
    });
}

// The steps on a non-blocking stream set with optim_cuda_set_stream, then captured in CUDA graphs
// (checked_step), on a set whose sizes stay fixed (no late tensor: a capture cannot grow scratch).
void stream_checks(Report& r, const TensorSet& mixed, int steps, uint64_t seed)
{
    TensorSet set = mixed;
    set.late = -1;
    std::vector<optim_sgd_params> sgd_groups;
    for (const SgdConfig& c : sgd_configs()) sgd_groups.push_back(c.params);
    std::vector<optim_adam_params> adam_groups;
    for (const AdamConfig& c : adam_configs()) adam_groups.push_back(c.params);
    for (bool graphs : {false, true}) {
        StreamScope scope(graphs);
        const std::string how = graphs ? "captured in CUDA graphs, " : "on a stream of its own, ";
        run_case(r, "the thread's stream reads back as set", [&] {
            void* got = nullptr;
            optim_ok(optim_cuda_get_stream(0, &got), "optim_cuda_get_stream");
            r.expect(got == static_cast<void*>(Target::stream()), "the stream set");
        });
        run_case(r, "SGD " + how + "every combination as a param group, clipped, scaled",
                 [&] { sgd_case<float>(r, set, sgd_groups, steps, ++seed, 1.0, true); });
        run_case(r, "Adam " + how + "every combination as a param group, clipped, scaled",
                 [&] { adam_case<float>(r, set, adam_groups, steps, ++seed, 1.0, true); });
        run_case(r, "Adam " + how + "step counts in device memory, clipped, scaled",
                 [&] { adam_case<float>(r, set, adam_groups, steps, ++seed, 1.0, true, true); });
        run_case(r, "hypergradient SGD " + how + "per-parameter normalized, clipped", [&] {
            hd_case<float>(r, set, OPTIM_HD_SCOPE_PER_PARAMETER, OPTIM_HD_RULE_NORMALIZED, 0, steps,
                           ++seed, 1.0);
        });
        run_case(r, "hypergradient Adam " + how + "per-tensor additive, clipped", [&] {
            hd_adam_case<float>(r, set, OPTIM_HD_SCOPE_PER_TENSOR, OPTIM_HD_RULE_ADDITIVE, steps,
                                ++seed, 1.0);
        });
    }
}

} // namespace

int run_checks(const CheckOptions& options, Report& r)
{
    const bool quick = options.quick;
    const int sgd_steps = quick ? 3 : 6;
    const int hd_steps = quick ? 3 : 8;
    std::vector<TensorSet> sets = {mixed_set(quick)};
    if (!quick) sets.push_back(big_set());
    uint64_t seed = 100;

    r.suite("fused SGD: CUDA vs CPU, every flag combination");
    for (const TensorSet& set : sets) {
        const bool big = set.sizes.size() < 10;
        for (const SgdConfig& c : sgd_configs()) {
            // The big set runs the fullest and the plainest combination.
            if (big && c.name != "nesterov+weight_decay+maximize" && c.name != "plain") continue;
            const int steps = big ? 3 : sgd_steps;
            run_case(r, "float32 " + c.name + ", " + set.name,
                     [&] { sgd_case<float>(r, set, {c.params}, steps, ++seed); });
            run_case(r, "float64 " + c.name + ", " + set.name,
                     [&] { sgd_case<double>(r, set, {c.params}, steps, ++seed); });
        }
        if (big) continue;
        // Every combination as its own param group, all in one call (each group's own launches).
        std::vector<optim_sgd_params> all;
        for (const SgdConfig& c : sgd_configs()) all.push_back(c.params);
        for (size_t g = 0; g < all.size(); ++g) all[g].lr *= 1.0 + 0.1 * static_cast<double>(g);
        run_case(r, "float32 every combination as a param group, " + set.name,
                 [&] { sgd_case<float>(r, set, all, sgd_steps, ++seed); });
        run_case(r, "float64 every combination as a param group, " + set.name,
                 [&] { sgd_case<double>(r, set, all, sgd_steps, ++seed); });
        run_case(r, "float32 every combination as a param group, clipped, " + set.name,
                 [&] { sgd_case<float>(r, set, all, sgd_steps, ++seed, 1.0); });
        run_case(r, "float64 every combination as a param group, clipped, " + set.name,
                 [&] { sgd_case<double>(r, set, all, sgd_steps, ++seed, 1.0); });
        run_case(r, "float32 every combination as a param group, scaled, " + set.name,
                 [&] { sgd_case<float>(r, set, all, sgd_steps, ++seed, 0, true); });
        run_case(r, "float64 every combination as a param group, scaled and clipped, " + set.name,
                 [&] { sgd_case<double>(r, set, all, sgd_steps, ++seed, 1.0, true); });
    }

    r.suite("fused Adam/AdamW: CUDA vs CPU, every flag combination");
    for (const TensorSet& set : sets) {
        const bool big = set.sizes.size() < 10;
        for (const AdamConfig& c : adam_configs()) {
            // The big set runs the fullest and the plainest combination.
            if (big && c.name != "adamw+weight_decay+amsgrad+maximize" && c.name != "adam")
                continue;
            const int steps = big ? 3 : sgd_steps;
            run_case(r, "float32 " + c.name + ", " + set.name,
                     [&] { adam_case<float>(r, set, {c.params}, steps, ++seed); });
            run_case(r, "float64 " + c.name + ", " + set.name,
                     [&] { adam_case<double>(r, set, {c.params}, steps, ++seed); });
        }
        if (big) continue;
        // Every combination as its own param group (with its own betas), all in one call.
        std::vector<optim_adam_params> all;
        for (const AdamConfig& c : adam_configs()) all.push_back(c.params);
        for (size_t g = 0; g < all.size(); ++g) {
            all[g].lr *= 1.0 + 0.1 * static_cast<double>(g);
            if (g % 2) all[g].beta1 = 0.5, all[g].beta2 = 0.9, all[g].eps = 1e-6;
        }
        run_case(r, "float32 every combination as a param group, " + set.name,
                 [&] { adam_case<float>(r, set, all, sgd_steps, ++seed); });
        run_case(r, "float64 every combination as a param group, " + set.name,
                 [&] { adam_case<double>(r, set, all, sgd_steps, ++seed); });
        run_case(r, "float32 every combination as a param group, clipped, " + set.name,
                 [&] { adam_case<float>(r, set, all, sgd_steps, ++seed, 1.0); });
        run_case(r, "float64 every combination as a param group, clipped, " + set.name,
                 [&] { adam_case<double>(r, set, all, sgd_steps, ++seed, 1.0); });
        run_case(r, "float32 every combination as a param group, scaled, " + set.name,
                 [&] { adam_case<float>(r, set, all, sgd_steps, ++seed, 0, true); });
        run_case(r, "float64 every combination as a param group, scaled and clipped, " + set.name,
                 [&] { adam_case<double>(r, set, all, sgd_steps, ++seed, 1.0, true); });
    }

    // Step counts in device memory (step_counts); the late tensor's count stays 0 until it joins.
    run_case(r,
             "float32 step counts in memory, every combination as a param group, scaled, " +
                 sets[0].name,
             [&] {
                 std::vector<optim_adam_params> all;
                 for (const AdamConfig& c : adam_configs()) all.push_back(c.params);
                 adam_case<float>(r, sets[0], all, sgd_steps, ++seed, 0, true, true);
             });
    run_case(r, "float64 step counts in memory, adamw+amsgrad, clipped, " + sets[0].name, [&] {
        adam_case<double>(r, sets[0], {adam_configs().back().params}, sgd_steps, ++seed, 1.0, false,
                          true);
    });

    r.suite("16-bit parameters: CUDA vs CPU, SGD and Adam, master weights and rounding");
    for (int32_t dtype : {OPTIM_DTYPE_FLOAT16, OPTIM_DTYPE_BFLOAT16}) {
        for (const MixedConfig& mc : mixed_configs(dtype)) {
            const std::string name = std::string(dtype16_name(dtype)) + " " + mc.name +
                                     ", every combination as a param group, " + sets[0].name;
            run_case(r, "SGD " + name,
                     [&] { sgd_mixed_case(r, sets[0], dtype, mc, sgd_steps, ++seed); });
            run_case(r, "Adam " + name,
                     [&] { adam_mixed_case(r, sets[0], dtype, mc, sgd_steps, ++seed); });
        }
    }

    r.suite("stochastic line search: CUDA vs CPU, save, trials, restore and norm");
    for (const TensorSet& set : sets) {
        const int steps = set.sizes.size() < 10 ? 2 : sgd_steps;
        run_case(r, "float32, " + set.name, [&] { sls_case<float>(r, set, steps, ++seed); });
        run_case(r, "float64, " + set.name, [&] { sls_case<double>(r, set, steps, ++seed); });
    }

    r.suite("hypergradient SGD: CUDA vs CPU, every scope and rule");
    for (int32_t scope = OPTIM_HD_SCOPE_GLOBAL; scope <= OPTIM_HD_SCOPE_PER_PARAMETER; ++scope) {
        for (int32_t rule : {OPTIM_HD_RULE_ADDITIVE, OPTIM_HD_RULE_NORMALIZED}) {
            for (int32_t assume_finite : {0, 1}) {
                const std::string name = std::string(scope_name(scope)) + " " +
                                         (rule ? "normalized" : "additive") +
                                         (assume_finite ? ", assume_finite" : "") + ", ";
                const TensorSet& set = sets[0];
                run_case(r, "float32 " + name + set.name, [&] {
                    hd_case<float>(r, set, scope, rule, assume_finite, hd_steps, ++seed);
                });
                run_case(r, "float64 " + name + set.name, [&] {
                    hd_case<double>(r, set, scope, rule, assume_finite, hd_steps, ++seed);
                });
            }
        }
    }
    // Clipped: the norm in the reduction pass, h of the clipped gradient, every scope's reduction.
    for (int32_t scope = OPTIM_HD_SCOPE_GLOBAL; scope <= OPTIM_HD_SCOPE_PER_PARAMETER; ++scope) {
        const int32_t rule = scope % 2 ? OPTIM_HD_RULE_NORMALIZED : OPTIM_HD_RULE_ADDITIVE;
        const std::string name = std::string(scope_name(scope)) + " " +
                                 (rule ? "normalized" : "additive") + ", clipped, ";
        const TensorSet& set = sets[0];
        run_case(r, "float32 " + name + set.name,
                 [&] { hd_case<float>(r, set, scope, rule, 0, hd_steps, ++seed, 1.0); });
        run_case(r, "float64 " + name + set.name,
                 [&] { hd_case<double>(r, set, scope, rule, 0, hd_steps, ++seed, 1.0); });
    }
    if (!quick) {
        const TensorSet& big = sets[1];
        run_case(r, "float32 global additive, " + big.name, [&] {
            hd_case<float>(r, big, OPTIM_HD_SCOPE_GLOBAL, OPTIM_HD_RULE_ADDITIVE, 0, 3, ++seed);
        });
        run_case(r, "float32 per-tensor normalized, " + big.name, [&] {
            hd_case<float>(r, big, OPTIM_HD_SCOPE_PER_TENSOR, OPTIM_HD_RULE_NORMALIZED, 0, 3,
                           ++seed);
        });
        run_case(r, "float32 per-parameter normalized, " + big.name, [&] {
            hd_case<float>(r, big, OPTIM_HD_SCOPE_PER_PARAMETER, OPTIM_HD_RULE_NORMALIZED, 0, 3,
                           ++seed);
        });
        run_case(r, "float64 per-group additive, " + big.name, [&] {
            hd_case<double>(r, big, OPTIM_HD_SCOPE_PER_GROUP, OPTIM_HD_RULE_ADDITIVE, 0, 3, ++seed);
        });
    }

    r.suite("hypergradient Adam: CUDA vs CPU, every scope and rule");
    for (int32_t scope = OPTIM_HD_SCOPE_GLOBAL; scope <= OPTIM_HD_SCOPE_PER_PARAMETER; ++scope) {
        for (int32_t rule : {OPTIM_HD_RULE_ADDITIVE, OPTIM_HD_RULE_NORMALIZED}) {
            const std::string name =
                std::string(scope_name(scope)) + " " + (rule ? "normalized" : "additive") + ", ";
            const TensorSet& set = sets[0];
            run_case(r, "float32 " + name + set.name,
                     [&] { hd_adam_case<float>(r, set, scope, rule, hd_steps, ++seed); });
            run_case(r, "float64 " + name + set.name,
                     [&] { hd_adam_case<double>(r, set, scope, rule, hd_steps, ++seed); });
        }
        run_case(
            r, "float32 " + std::string(scope_name(scope)) + " additive, clipped, " + sets[0].name,
            [&] {
                hd_adam_case<float>(r, sets[0], scope, OPTIM_HD_RULE_ADDITIVE, hd_steps, ++seed,
                                    1.0);
            });
    }
    // Step counts in device memory (step_counts): the late tensor's stays 0 until it joins, and the
    // NaN step leaves them all as they were.
    for (int32_t scope : {OPTIM_HD_SCOPE_PER_TENSOR, OPTIM_HD_SCOPE_PER_PARAMETER}) {
        run_case(r,
                 "float32 " + std::string(scope_name(scope)) +
                     " normalized, step counts in memory, " + sets[0].name,
                 [&] {
                     hd_adam_case<float>(r, sets[0], scope, OPTIM_HD_RULE_NORMALIZED, hd_steps,
                                         ++seed, 0, true);
                 });
    }

    r.suite("16-bit hypergradient SGD and Adam: CUDA vs CPU, every scope, master weights and "
            "rounding");
    for (int32_t dtype : {OPTIM_DTYPE_FLOAT16, OPTIM_DTYPE_BFLOAT16}) {
        std::vector<MixedConfig> unscaled;
        for (const MixedConfig& mc : mixed_configs(dtype))
            if (!mc.scaled) unscaled.push_back(mc);
        for (size_t i = 0; i < unscaled.size(); ++i) {
            const MixedConfig& mc = unscaled[i];
            for (int32_t scope = OPTIM_HD_SCOPE_GLOBAL; scope <= OPTIM_HD_SCOPE_PER_PARAMETER;
                 ++scope) {
                // A quick run (the sanitizers) takes one config per scope.
                if (quick && i != static_cast<size_t>(scope) % unscaled.size()) continue;
                const std::string name = std::string(dtype16_name(dtype)) + " " +
                                         scope_name(scope) + ", " + mc.name + ", " + sets[0].name;
                run_case(r, "HD-SGD " + name, [&] {
                    hd_mixed_case(r, sets[0], false, scope, dtype, mc, hd_steps, ++seed);
                });
                run_case(r, "HD-Adam " + name, [&] {
                    hd_mixed_case(r, sets[0], true, scope, dtype, mc, hd_steps, ++seed);
                });
            }
        }
    }

    r.suite("GreedyLR: device step vs CPU state machine");
    // A quick run's trace is the start of a full run's, so the expectations hold in both.
    const size_t evaluations = quick ? 400 : 3000;
    uint64_t trace_seed = 1000;
    for (const GreedyConfig& gc : greedy_configs()) {
        const std::vector<double> trace = greedy_trace(evaluations, ++trace_seed);
        const bool resets = gc.config.reset_start > 0;
        const std::string name = gc.name + ", " + std::to_string(evaluations) + " evaluations";
        run_case(r, "float32 metric, " + name, [&] { greedy_case<float>(r, gc, trace, resets); });
        run_case(r, "float64 metric, " + name, [&] { greedy_case<double>(r, gc, trace, resets); });
    }
    run_case(r, "a corrupt state (window position outside the window) is left as it is",
             [&] { greedy_corrupt_state_case(r); });

    if (!Target::dry_run()) {
        r.suite("C ABI on CUDA");
        abi_checks(r);
        r.suite("CUDA streams and graphs: steps on the caller's stream, captured");
        stream_checks(r, sets[0], sgd_steps, seed);
    }
    return r.failed() == 0 ? 0 : 1;
}

} // namespace optim_gpu
