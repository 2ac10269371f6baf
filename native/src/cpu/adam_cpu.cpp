// The CPU path of the fused Adam/AdamW step: WorkPlan's multi-tensor loop over the pieces of all
// tensors of every param group, each piece updated by the per-element math of adam_element() from
// adam_math.hpp (shared with the CUDA kernel). Each element is read and written once: 28 bytes per
// fp32 element (read p, g, m, v; write p, m, v), 36 with amsgrad; clipping or a gradient scaler
// adds one read pass over the gradients (clip_cpu.hpp) and scales each gradient element as it is
// read.
#include "../adam_math.hpp"
#include "../backend.hpp"
#include "clip_cpu.hpp"
#include "thread_pool.hpp"
#include "work_plan.hpp"

#include <vector>

namespace optim::cpu {

namespace {

template <typename T, unsigned Flags>
OPTIM_CPU_CLONES void adam_range(T* __restrict p, const T* __restrict g, T* __restrict m,
                                 T* __restrict v, T* __restrict vmax, int64_t n,
                                 const AdamCoeffs<T>& c, T inv, T clip)
{
    if constexpr ((Flags & kAdamAmsgrad) != 0) {
        for (int64_t i = 0; i < n; ++i)
            adam_element<T, Flags>(p[i], g[i] * inv * clip, m[i], v[i], vmax[i], c);
    } else {
        T unused = T(0);
        for (int64_t i = 0; i < n; ++i)
            adam_element<T, Flags>(p[i], g[i] * inv * clip, m[i], v[i], unused, c);
    }
}

// What a tensor's pieces need: its group's flags and its coefficients (its own step count).
template <typename T>
struct AdamTensor {
    unsigned flags;
    AdamCoeffs<T> c;
};

template <typename T>
void adam_step(const AdamCall& call)
{
    const optim_adam_tensors& t = *call.tensors;
    // Per calling thread and reused, so a warm step allocates nothing; filled before any write.
    thread_local std::vector<AdamTensor<T>> tensors;
    tensors.resize(static_cast<size_t>(t.count));
    for (int64_t k = 0; k < t.count; ++k) {
        const optim_adam_params& o = call.groups[call.group_of(k)];
        AdamTensor<T>& a = tensors[static_cast<size_t>(k)];
        a.flags = adam_flags(o.weight_decay, o.decoupled != 0, o.amsgrad != 0, o.maximize != 0);
        a.c = adam_coeffs<T>(o.lr, o.beta1, o.beta2, o.eps, o.weight_decay, t.steps[k]);
        if (!dispatch_adam_flags(a.flags, [](auto) {}))
            fail(OPTIM_STATUS_INTERNAL, "optim_adam_step: unexpected flag combination");
    }

    WorkPlan& plan = WorkPlan::for_this_thread();
    plan.build(t.numels, t.count);
    const GradFactors<T> f = grad_pass<T>(call.fn, plan, t.grads, call.clip, call.scale);
    if (f.skip) return; // the scaler's skip: nothing is written
    const T inv = f.inv, clip = f.coef;
    const AdamTensor<T>* A = tensors.data();
    plan.parallel_for_pieces([&](const Piece& piece) {
        const AdamTensor<T>& a = A[piece.tensor];
        T* vmax = (a.flags & kAdamAmsgrad) ? piece.at<T>(t.max_exp_avg_sqs) : nullptr;
        dispatch_adam_flags(a.flags, [&](auto F) {
            adam_range<T, decltype(F)::value>(piece.at<T>(t.params), piece.at<const T>(t.grads),
                                              piece.at<T>(t.exp_avgs), piece.at<T>(t.exp_avg_sqs),
                                              vmax, piece.length, a.c, inv, clip);
        });
    });
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

} // namespace optim::cpu
