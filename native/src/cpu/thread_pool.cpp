#include "thread_pool.hpp"

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <sched.h>
#endif

namespace optim::cpu {

namespace {
thread_local bool t_inside_pool = false;
} // namespace

int default_num_threads()
{
    if (const char* env = std::getenv("OPTIM_NUM_THREADS")) {
        char* end = nullptr;
        long v = std::strtol(env, &end, 10);
        if (end != env && *end == '\0' && v > 0 && v <= 1024) return static_cast<int>(v);
    }
#if defined(__linux__)
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0) return n;
    }
#endif
    unsigned n = std::thread::hardware_concurrency();
    return n > 0 ? static_cast<int>(n) : 1;
}

struct ThreadPool::Impl {
    std::mutex run_mutex; // one parallel_for at a time

    std::mutex mutex;
    std::condition_variable wake;
    std::condition_variable done;
    std::vector<std::thread> workers;
    uint64_t generation = 0;
    bool stopping = false;

    // The job being run.
    Task task = nullptr;
    void* context = nullptr;
    int64_t count = 0;
    std::atomic<int64_t> next{0};
    int busy = 0; // workers still inside the current job
    std::exception_ptr error;
    std::mutex error_mutex;

    void work()
    {
        for (;;) {
            int64_t i = next.fetch_add(1, std::memory_order_relaxed);
            if (i >= count) return;
            try {
                task(context, i);
            } catch (...) {
                std::lock_guard<std::mutex> lock(error_mutex);
                if (!error) error = std::current_exception();
                next.store(count, std::memory_order_relaxed); // stop handing out work
            }
        }
    }

    void worker_loop()
    {
        t_inside_pool = true;
        uint64_t seen = 0;
        for (;;) {
            {
                std::unique_lock<std::mutex> lock(mutex);
                wake.wait(lock, [&] { return stopping || generation != seen; });
                if (stopping) return;
                seen = generation;
            }
            work();
            {
                std::lock_guard<std::mutex> lock(mutex);
                if (--busy == 0) done.notify_one();
            }
        }
    }

    void start(int threads)
    {
        stopping = false;
        for (int i = 1; i < threads; ++i) workers.emplace_back([this] { worker_loop(); });
    }

    void stop()
    {
        {
            std::lock_guard<std::mutex> lock(mutex);
            stopping = true;
        }
        wake.notify_all();
        for (auto& w : workers) w.join();
        workers.clear();
    }
};

ThreadPool& ThreadPool::instance()
{
    static ThreadPool pool;
    return pool;
}

ThreadPool::ThreadPool() : impl_(new Impl)
{
    impl_->start(default_num_threads());
}

ThreadPool::~ThreadPool()
{
    impl_->stop();
    delete impl_;
}

int ThreadPool::num_threads() const noexcept
{
    return static_cast<int>(impl_->workers.size()) + 1;
}

void ThreadPool::set_num_threads(int n)
{
    std::lock_guard<std::mutex> guard(impl_->run_mutex);
    impl_->stop();
    impl_->start(n > 0 ? n : default_num_threads());
}

void ThreadPool::run(int64_t n, Task task, void* context)
{
    if (n <= 0) return;
    // Nested use, a single index, or a single thread: run inline.
    if (t_inside_pool || n == 1 || impl_->workers.empty()) {
        for (int64_t i = 0; i < n; ++i) task(context, i);
        return;
    }
    std::lock_guard<std::mutex> guard(impl_->run_mutex);
    Impl& s = *impl_;
    {
        std::lock_guard<std::mutex> lock(s.mutex);
        s.task = task;
        s.context = context;
        s.count = n;
        s.next.store(0, std::memory_order_relaxed);
        s.error = nullptr;
        s.busy = static_cast<int>(s.workers.size());
        ++s.generation;
    }
    s.wake.notify_all();
    t_inside_pool = true;
    s.work();
    t_inside_pool = false;
    {
        std::unique_lock<std::mutex> lock(s.mutex);
        s.done.wait(lock, [&] { return s.busy == 0; });
    }
    if (s.error) std::rethrow_exception(s.error);
}

} // namespace optim::cpu
