// The CPU path of the fused Adam/AdamW step: WorkPlan's multi-tensor loop over the pieces of all
// tensors of every param group, each piece updated by the per-element math of adam_element() from
// adam_math.hpp (shared with the CUDA kernel). Each element is read and written once: 28 bytes per
// fp32 element (read p, g, m, v; write p, m, v), 36 with amsgrad; 16-bit parameters (precision.hpp)
// keep float32 moments: 22 bytes in place, 28 with master weights (read g, master, m, v; write
// master, m, v and the rounded parameter). Clipping adds one read pass over the gradients
// (clip_cpu.hpp; also a gradient scaler's) and scales each gradient element as it is read.
#include "../adam_math.hpp"
#include "../backend.hpp"
#include "../precision.hpp"
#include "clip_cpu.hpp"
#include "thread_pool.hpp"
#include "work_plan.hpp"

#include <vector>

namespace optim::cpu {

namespace {

template <typename S, unsigned Flags, bool Master, int Round>
OPTIM_CPU_CLONES void
adam_range(ParamAccess<S, Master, Round> p, const S* __restrict g, compute_t<S>* __restrict m,
           compute_t<S>* __restrict v, compute_t<S>* __restrict vmax, int64_t n,
           const AdamCoeffs<compute_t<S>>& c, compute_t<S> inv, compute_t<S> clip)
{
    using T = compute_t<S>;
    T unused = T(0);
    // The arrays are distinct (api.cpp checks; optim.h: partial overlaps are unspecified).
    OPTIM_DISTINCT_ARRAYS
    for (int64_t i = 0; i < n; ++i) {
        T pi = p.load(i);
        T& w = (Flags & kAdamAmsgrad) ? vmax[i] : unused;
        adam_element<T, Flags>(pi, load_value(g[i]) * inv * clip, m[i], v[i], w, c);
        p.store(i, pi);
    }
}

// What a tensor's pieces need: its group's flags, its coefficients (its own step count) and its
// stochastic rounding key.
template <typename T>
struct AdamTensor {
    unsigned flags;
    AdamCoeffs<T> c;
    uint64_t key;
};

template <typename S>
void adam_step(const AdamCall& call)
{
    using T = compute_t<S>;
    const optim_adam_tensors& t = *call.tensors;
    const PrecisionCall precision(call.precision);
    // Per calling thread and reused, so a warm step allocates nothing; filled before any write.
    thread_local std::vector<AdamTensor<T>> tensors;
    tensors.resize(static_cast<size_t>(t.count));
    for (int64_t k = 0; k < t.count; ++k) {
        const optim_adam_params& o = call.groups[call.group_of(k)];
        AdamTensor<T>& a = tensors[static_cast<size_t>(k)];
        a.flags = adam_flags(o.weight_decay, o.decoupled != 0, o.amsgrad != 0, o.maximize != 0);
        a.c = adam_coeffs<T>(o.lr, o.beta1, o.beta2, o.eps, o.weight_decay, adam_step_number(t, k));
        a.key = precision.key(k);
        if (!dispatch_adam_flags(a.flags, [](auto) {}))
            fail(OPTIM_STATUS_INTERNAL, "optim_adam_step: unexpected flag combination");
    }

    WorkPlan& plan = WorkPlan::for_this_thread();
    plan.build(t.numels, t.count);
    const GradFactors<T> f = grad_pass<S>(call.fn, plan, t.grads, call.clip, call.scale);
    if (f.skip) return; // the scaler's skip: nothing is written
    const T inv = f.inv, clip = f.coef;
    const AdamTensor<T>* A = tensors.data();
    plan.parallel_for_pieces([&](const Piece& piece) {
        const AdamTensor<T>& a = A[piece.tensor];
        T* vmax = (a.flags & kAdamAmsgrad) ? piece.at<T>(t.max_exp_avg_sqs) : nullptr;
        dispatch_precision<S>(precision, [&](auto master, auto round) {
            constexpr bool Master = decltype(master)::value;
            constexpr int Round = decltype(round)::value;
            const ParamAccess<S, Master, Round> p{piece.at<S>(t.params),
                                                  Master ? piece.at<T>(precision.master) : nullptr,
                                                  a.key, piece.begin};
            dispatch_adam_flags(a.flags, [&](auto F) {
                adam_range<S, decltype(F)::value, Master, Round>(
                    p, piece.at<const S>(t.grads), piece.at<T>(t.exp_avgs),
                    piece.at<T>(t.exp_avg_sqs), vmax, piece.length, a.c, inv, clip);
            });
        });
    });
    if (t.step_counts) // an entry without elements takes no step
        for (int64_t k = 0; k < t.count; ++k) *t.step_counts[k] += t.numels[k] > 0 ? 1 : 0;
}

} // namespace

void adam_step_f32(const AdamCall& call)
{
    adam_step<float>(call);
}
void adam_step_f64(const AdamCall& call)
{
    adam_step<double>(call);
}
void adam_step_f16(const AdamCall& call)
{
    adam_step<Half>(call);
}
void adam_step_bf16(const AdamCall& call)
{
    adam_step<BFloat16>(call);
}

} // namespace optim::cpu
