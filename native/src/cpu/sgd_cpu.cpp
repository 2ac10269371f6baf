// The CPU path of the fused SGD step: a fixed partition of all elements of all tensors into chunks,
// spread over the worker pool. The per-element math is sgd_element() from sgd_math.hpp, shared with
// the CUDA kernels. Each element is read and written once (12 bytes per fp32 element without
// momentum, 20 with).
#include "../backend.hpp"
#include "../sgd_math.hpp"
#include "thread_pool.hpp"
#include "work_plan.hpp"

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

template <typename T, unsigned Flags>
void sgd_all(const SgdCall& call, const SgdCoeffs<T>& c, T lr)
{
    const optim_tensor_list& t = *call.tensors;
    WorkPlan& plan = WorkPlan::for_this_thread();
    plan.build(t.numels, t.count);
    auto body = [&](int64_t chunk) {
        plan.for_each_piece(chunk, [&](int64_t k, int64_t begin, int64_t len) {
            T* p = static_cast<T*>(t.params[k]) + begin;
            const T* g = static_cast<const T*>(t.grads[k]) + begin;
            T* b =
                (Flags & kSgdMomentum) ? static_cast<T*>(t.momentum_buffers[k]) + begin : nullptr;
            const bool fresh = (Flags & kSgdMomentum) && t.buffer_fresh && t.buffer_fresh[k];
            if (fresh)
                sgd_range<T, Flags, true>(p, g, b, len, c, lr);
            else
                sgd_range<T, Flags, false>(p, g, b, len, c, lr);
        });
    };
    plan.parallel_for_chunks(body);
}

template <typename T>
void sgd_step(const SgdCall& call)
{
    SgdCoeffs<T> c;
    c.momentum = static_cast<T>(call.momentum);
    c.one_minus_dampening = static_cast<T>(1.0 - call.dampening);
    c.weight_decay = static_cast<T>(call.weight_decay);
    const T lr = static_cast<T>(call.lr_ptr ? *call.lr_ptr : call.lr);

    const unsigned flags =
        sgd_flags(call.momentum, call.weight_decay, call.nesterov, call.maximize);
    const bool known = dispatch_sgd_flags(flags, [&](auto F) {
        constexpr unsigned Flags = decltype(F)::value;
        sgd_all<T, Flags>(call, c, lr);
    });
    if (!known) fail(OPTIM_STATUS_INTERNAL, "optim_sgd_step: unexpected flag combination");
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
