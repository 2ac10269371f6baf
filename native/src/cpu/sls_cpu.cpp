// The CPU path of the stochastic line search: the save, trial and restore passes (sls_element() of
// sls_math.hpp over WorkPlan's pieces of all tensors) and the squared gradient norm (per-piece
// partial sums in double, combined in piece order, so the result never depends on the thread
// count). Bytes per fp32 element: save and restore 8, trial 12, norm 4.
#include "../backend.hpp"
#include "../sls_math.hpp"
#include "work_plan.hpp"

#include <vector>

namespace optim::cpu {

namespace {

template <typename T, int Op>
OPTIM_CPU_CLONES void sls_range(T* __restrict p, T* __restrict origin, const T* __restrict g,
                                int64_t n, T step_size)
{
    if constexpr (Op == kSlsTrial) {
        for (int64_t i = 0; i < n; ++i) sls_element<T, Op>(p[i], origin[i], g[i], step_size);
    } else {
        for (int64_t i = 0; i < n; ++i) sls_element<T, Op>(p[i], origin[i], T(0), step_size);
    }
}

// kLanes accumulators, element i to lane i % kLanes, combined in lane order: a fixed order the
// compiler can vectorize without reassociating the sum.
constexpr int kLanes = 8;

template <typename T>
OPTIM_CPU_CLONES double sum_squares(const T* __restrict g, int64_t n)
{
    double acc[kLanes] = {};
    const int64_t whole = n - n % kLanes;
    for (int64_t i = 0; i < whole; i += kLanes)
        for (int lane = 0; lane < kLanes; ++lane) acc[lane] += sls_square(g[i + lane]);
    for (int64_t i = whole; i < n; ++i) acc[i - whole] += sls_square(g[i]);
    double s = 0.0;
    for (int lane = 0; lane < kLanes; ++lane) s += acc[lane];
    return s;
}

template <typename T>
void sls_pass(const SlsCall& call)
{
    const optim_sls_tensors& t = *call.tensors;
    const T step_size = static_cast<T>(call.step_size);
    WorkPlan& plan = WorkPlan::for_this_thread();
    plan.build(t.numels, t.count);
    plan.parallel_for_pieces([&](const Piece& piece) {
        T* p = piece.at<T>(t.params);
        T* o = piece.at<T>(t.origins);
        switch (call.op) {
        case kSlsSave:
            sls_range<T, kSlsSave>(p, o, nullptr, piece.length, step_size);
            break;
        case kSlsTrial:
            sls_range<T, kSlsTrial>(p, o, piece.at<const T>(t.grads), piece.length, step_size);
            break;
        default:
            sls_range<T, kSlsRestore>(p, o, nullptr, piece.length, step_size);
            break;
        }
    });
}

template <typename T>
double grad_norm_sq(const optim_sls_tensors& t)
{
    WorkPlan& plan = WorkPlan::for_this_thread();
    plan.build(t.numels, t.count);
    // Per calling thread and reused, so a warm call allocates nothing.
    thread_local std::vector<double> partials;
    partials.assign(static_cast<size_t>(plan.pieces()), 0.0);
    double* out = partials.data();
    plan.parallel_for_pieces([&](const Piece& piece) {
        out[piece.index] = sum_squares(piece.at<const T>(t.grads), piece.length);
    });
    double s = 0.0;
    for (double part : partials) s += part;
    return s;
}

} // namespace

void sls_pass_f32(const SlsCall& call)
{
    sls_pass<float>(call);
}
void sls_pass_f64(const SlsCall& call)
{
    sls_pass<double>(call);
}
double sls_grad_norm_sq_f32(const optim_sls_tensors& tensors)
{
    return grad_norm_sq<float>(tensors);
}
double sls_grad_norm_sq_f64(const optim_sls_tensors& tensors)
{
    return grad_norm_sq<double>(tensors);
}

} // namespace optim::cpu
