// The CPU path of the fused SGD step: WorkPlan's multi-tensor loop over the pieces of all tensors
// of every param group, each piece updated by sgd_element() from sgd_math.hpp (shared with the CUDA
// kernels). Each element is read and written once (12 bytes per fp32 element without momentum, 20
// with); clipping or a gradient scaler adds one read pass over the gradients (clip_cpu.hpp) and
// scales each gradient element as it is read.
#include "../backend.hpp"
#include "../sgd_math.hpp"
#include "clip_cpu.hpp"
#include "thread_pool.hpp"
#include "work_plan.hpp"

#include <vector>

namespace optim::cpu {

namespace {

template <typename T, unsigned Flags, bool Fresh>
OPTIM_CPU_CLONES void sgd_range(T* __restrict p, const T* __restrict g, T* __restrict buf,
                                int64_t n, const SgdCoeffs<T>& c, T lr, T inv, T clip)
{
    if constexpr ((Flags & kSgdMomentum) != 0) {
        for (int64_t i = 0; i < n; ++i)
            sgd_element<T, Flags>(p[i], g[i] * inv * clip, buf[i], Fresh, c, lr);
    } else {
        T unused = T(0);
        for (int64_t i = 0; i < n; ++i)
            sgd_element<T, Flags>(p[i], g[i] * inv * clip, unused, Fresh, c, lr);
    }
}

template <typename T>
void sgd_step(const SgdCall& call)
{
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
    const GradFactors<T> f = grad_pass<T>(call.fn, plan, t.grads, call.clip, call.scale);
    if (f.skip) return; // the scaler's skip: nothing is written
    const T inv = f.inv, clip = f.coef;
    const SgdGroup<T>* G = groups.data();
    const T* lr = rates.data();
    plan.parallel_for_pieces([&](const Piece& piece) {
        const int32_t gi = call.group_of(piece.tensor);
        const SgdGroup<T>& g = G[gi];
        T* p = piece.at<T>(t.params);
        const T* grad = piece.at<const T>(t.grads);
        const bool momentum = (g.flags & kSgdMomentum) != 0;
        T* b = momentum ? piece.at<T>(t.momentum_buffers) : nullptr;
        const bool fresh = momentum && t.buffer_fresh && t.buffer_fresh[piece.tensor];
        dispatch_sgd_flags(g.flags, [&](auto F) {
            constexpr unsigned Flags = decltype(F)::value;
            if (fresh)
                sgd_range<T, Flags, true>(p, grad, b, piece.length, g.c, lr[gi], inv, clip);
            else
                sgd_range<T, Flags, false>(p, grad, b, piece.length, g.c, lr[gi], inv, clip);
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

} // namespace optim::cpu
