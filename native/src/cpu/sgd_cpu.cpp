// The CPU path of the fused SGD step: WorkPlan's multi-tensor loop over the pieces of all tensors
// of every param group, each piece updated by sgd_element() from sgd_math.hpp (shared with the CUDA
// kernels). Each element is read and written once (12 bytes per fp32 element without momentum, 20
// with; 16-bit parameters (precision.hpp) keep float32 momentum buffers: 6 and 14 bytes in place,
// 14 and 22 with master weights); clipping or a gradient scaler adds one read pass over the
// gradients (clip_cpu.hpp) and scales each gradient element as it is read.
#include "../backend.hpp"
#include "../precision.hpp"
#include "../sgd_math.hpp"
#include "clip_cpu.hpp"
#include "thread_pool.hpp"
#include "work_plan.hpp"

#include <vector>

namespace optim::cpu {

namespace {

template <typename S, unsigned Flags, bool Fresh, bool Master, int Round>
OPTIM_CPU_CLONES void sgd_range(ParamAccess<S, Master, Round> p, const S* __restrict g,
                                compute_t<S>* __restrict buf, int64_t n,
                                const SgdCoeffs<compute_t<S>>& c, compute_t<S> lr, compute_t<S> inv,
                                compute_t<S> clip)
{
    using T = compute_t<S>;
    T unused = T(0);
    // The arrays are distinct (api.cpp checks; optim.h: partial overlaps are unspecified).
    OPTIM_DISTINCT_ARRAYS
    for (int64_t i = 0; i < n; ++i) {
        T pi = p.load(i);
        T& b = (Flags & kSgdMomentum) ? buf[i] : unused;
        sgd_element<T, Flags>(pi, load_value(g[i]) * inv * clip, b, Fresh, c, lr);
        p.store(i, pi);
    }
}

template <typename S>
void sgd_step(const SgdCall& call)
{
    using T = compute_t<S>;
    const PrecisionCall precision(call.precision);
    // Per calling thread and reused, so a warm step allocates nothing; filled before any write.
    thread_local std::vector<SgdGroup<T>> groups;
    groups.resize(static_cast<size_t>(call.n_groups));
    for (int32_t g = 0; g < call.n_groups; ++g)
        groups[static_cast<size_t>(g)] = sgd_group<T>(call.groups[g], "optim_sgd_step");
    thread_local std::vector<T> rates;
    rates.resize(static_cast<size_t>(call.n_groups));
    for (int32_t g = 0; g < call.n_groups; ++g) {
        const optim_sgd_params& p = call.groups[g];
        rates[static_cast<size_t>(g)] = static_cast<T>(p.lr_ptr ? *p.lr_ptr : p.lr);
    }

    const optim_tensor_list& t = *call.tensors;
    WorkPlan& plan = WorkPlan::for_this_thread();
    plan.build(t.numels, t.count);
    const GradFactors<T> f = grad_pass<S>(call.fn, plan, t.grads, call.clip, call.scale);
    if (f.skip) return; // the scaler's skip: nothing is written
    const T inv = f.inv, clip = f.coef;
    const SgdGroup<T>* G = groups.data();
    const T* lr = rates.data();
    plan.parallel_for_pieces([&](const Piece& piece) {
        const int32_t gi = call.group_of(piece.tensor);
        const SgdGroup<T>& g = G[gi];
        const S* grad = piece.at<const S>(t.grads);
        const bool momentum = (g.flags & kSgdMomentum) != 0;
        T* b = momentum ? piece.at<T>(t.momentum_buffers) : nullptr;
        const bool fresh = momentum && t.buffer_fresh && t.buffer_fresh[piece.tensor];
        const uint64_t key = precision.key(piece.tensor);
        dispatch_precision<S>(precision, [&](auto master, auto round) {
            constexpr bool Master = decltype(master)::value;
            constexpr int Round = decltype(round)::value;
            const ParamAccess<S, Master, Round> p{piece.at<S>(t.params),
                                                  Master ? piece.at<T>(precision.master) : nullptr,
                                                  key, piece.begin};
            dispatch_sgd_flags(g.flags, [&](auto F) {
                constexpr unsigned Flags = decltype(F)::value;
                if (fresh)
                    sgd_range<S, Flags, true, Master, Round>(p, grad, b, piece.length, g.c, lr[gi],
                                                             inv, clip);
                else
                    sgd_range<S, Flags, false, Master, Round>(p, grad, b, piece.length, g.c, lr[gi],
                                                              inv, clip);
            });
        });
    });
}

} // namespace

void sgd_step_f32(const SgdCall& call)
{
    sgd_step<float>(call);
}
void sgd_step_f64(const SgdCall& call)
{
    sgd_step<double>(call);
}
void sgd_step_f16(const SgdCall& call)
{
    sgd_step<Half>(call);
}
void sgd_step_bf16(const SgdCall& call)
{
    sgd_step<BFloat16>(call);
}

} // namespace optim::cpu
