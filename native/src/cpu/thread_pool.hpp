// A small persistent worker pool for the CPU path, or the team of an OpenMP runtime already in the
// process (LibTorch's), used by one thread at a time at most (docs/design.md). We never link an
// OpenMP runtime: LibTorch ships its own, and a second one would fight it for the cores.
//
// parallel_for(n, fn) runs fn(i) for every i in [0, n) exactly once, spread over the pool's threads
// (the caller is one of them), and returns when all have finished. Which thread runs which index is
// not fixed, so callers that need reproducible results make each index's work independent of the
// others (elementwise updates) or write one partial result per index and combine them in index
// order.
#pragma once

#include <cstdint>
#include <type_traits>

namespace optim::cpu {

class ThreadPool {
  public:
    // The process-wide pool (created on first use).
    static ThreadPool& instance();

    // The requested count, else the OpenMP runtime's default (torch.set_num_threads), else
    // OPTIM_NUM_THREADS or the CPUs this process may run on. Allocates nothing.
    int num_threads() const;
    // 0 = default.
    void set_num_threads(int n);
    // Which threads run the calling thread's parallel steps (optim_threading_info): a static text,
    // or one kept by the pool for the life of the process. Allocates nothing.
    const char* backend() const;

    template <class Fn>
    void parallel_for(int64_t n, Fn&& fn)
    {
        using F = std::remove_reference_t<Fn>;
        run(n, &invoke<F>, const_cast<void*>(static_cast<const void*>(&fn)));
    }

    ThreadPool(const ThreadPool&) = delete;
    ThreadPool& operator=(const ThreadPool&) = delete;
    ~ThreadPool();

  private:
    ThreadPool();
    using Task = void (*)(void* context, int64_t index);
    template <class Fn>
    static void invoke(void* context, int64_t index)
    {
        (*static_cast<Fn*>(context))(index);
    }
    void run(int64_t n, Task task, void* context);

    struct Impl;
    Impl* impl_;
};

// The default size of our own pool: OPTIM_NUM_THREADS if set to a positive number, else the CPUs in
// this process's affinity mask.
int default_num_threads();

} // namespace optim::cpu
