// The CPU path of the fused SGD step: a fixed partition of all elements of all tensors (of every
// param group) into chunks, spread over the worker pool. The per-element math is sgd_element() from
// sgd_math.hpp, shared with the CUDA kernels. Each element is read and written once (12 bytes per
// fp32 element without momentum, 20 with).
#include "../backend.hpp"
#include "../sgd_math.hpp"
#include "thread_pool.hpp"
#include "work_plan.hpp"

#include <vector>

namespace optim::cpu {

namespace {

template <typename T, unsigned Flags, bool Fresh>
OPTIM_CPU_CLONES void sgd_range(T* __restrict p, const T* __restrict g, T* __restrict buf,
                                int64_t n, const SgdCoeffs<T>& c, T lr)
{
    if constexpr ((Flags & kSgdMomentum) != 0) {
        for (int64_t i = 0; i < n; ++i) sgd_element<T, Flags>(p[i], g[i], buf[i], Fresh, c, lr);
    } else {
        T unused = T(0);
        for (int64_t i = 0; i < n; ++i) sgd_element<T, Flags>(p[i], g[i], unused, Fresh, c, lr);
    }
}

// What a piece of a tensor needs of its param group, rounded to the element type once per call.
template <typename T>
struct SgdGroup {
    unsigned flags;
    SgdCoeffs<T> c;
    T lr;
};

template <typename T>
void sgd_step(const SgdCall& call)
{
    // Per calling thread and reused, so a warm step allocates nothing; filled before any write.
    thread_local std::vector<SgdGroup<T>> groups;
    groups.resize(static_cast<size_t>(call.n_groups));
    for (int32_t g = 0; g < call.n_groups; ++g) {
        const optim_sgd_params& p = call.groups[g];
        SgdGroup<T>& G = groups[static_cast<size_t>(g)];
        G.flags = sgd_flags(p.momentum, p.weight_decay, p.nesterov != 0, p.maximize != 0);
        G.c.momentum = static_cast<T>(p.momentum);
        G.c.one_minus_dampening = static_cast<T>(1.0 - p.dampening);
        G.c.weight_decay = static_cast<T>(p.weight_decay);
        G.lr = static_cast<T>(p.lr_ptr ? *p.lr_ptr : p.lr);
        if (!dispatch_sgd_flags(G.flags, [](auto) {}))
            fail(OPTIM_STATUS_INTERNAL, "optim_sgd_step: unexpected flag combination");
    }

    const optim_tensor_list& t = *call.tensors;
    WorkPlan& plan = WorkPlan::for_this_thread();
    plan.build(t.numels, t.count);
    const SgdGroup<T>* G = groups.data();
    auto body = [&](int64_t chunk) {
        plan.for_each_piece(chunk, [&](int64_t k, int64_t begin, int64_t len) {
            const SgdGroup<T>& g = G[call.group_of(k)];
            T* p = static_cast<T*>(t.params[k]) + begin;
            const T* grad = static_cast<const T*>(t.grads[k]) + begin;
            const bool momentum = (g.flags & kSgdMomentum) != 0;
            T* b = momentum ? static_cast<T*>(t.momentum_buffers[k]) + begin : nullptr;
            const bool fresh = momentum && t.buffer_fresh && t.buffer_fresh[k];
            dispatch_sgd_flags(g.flags, [&](auto F) {
                constexpr unsigned Flags = decltype(F)::value;
                if (fresh)
                    sgd_range<T, Flags, true>(p, grad, b, len, g.c, g.lr);
                else
                    sgd_range<T, Flags, false>(p, grad, b, len, g.c, g.lr);
            });
        });
    };
    plan.parallel_for_chunks(body);
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
