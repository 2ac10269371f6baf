#include "thread_pool.hpp"

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <dlfcn.h>
#include <link.h>
#include <sched.h>
#endif

namespace optim::cpu {

namespace {

thread_local bool t_inside_pool = false;

// ---- The OpenMP runtime LibTorch brought into the process, if any
// ---------------------------------
//
// LibTorch's intra-op threads are an OpenMP team (its own libgomp copy). After each parallel region
// those threads spin for a while; a second pool of ours would then fight them for the cores, and an
// optimizer step right after a backward pass would lose. So when a libgomp is already loaded we run
// our parallel loops on its team through GOMP_parallel, found with dlsym; we never link an OpenMP
// runtime ourselves (docs/design.md).
using GompParallelFn = void (*)(void (*)(void*), void*, unsigned, unsigned);
using OmpIntFn = int (*)();

struct Gomp {
    GompParallelFn parallel = nullptr;
    OmpIntFn max_threads = nullptr;
    std::string path;
};

#if defined(__linux__)
int find_libgomp(struct dl_phdr_info* info, size_t, void* data)
{
    const char* name = info->dlpi_name;
    if (name && std::strstr(name, "libgomp") != nullptr) {
        static_cast<std::string*>(data)->assign(name);
        return 1;
    }
    return 0;
}
#endif

Gomp detect_gomp()
{
    Gomp g;
#if defined(__linux__)
    const char* mode = std::getenv("OPTIM_THREADING");
    if (mode && std::strcmp(mode, "pool") == 0) return g;
    std::string path;
    dl_iterate_phdr(find_libgomp, &path);
    if (path.empty()) return g;
    void* handle = dlopen(path.c_str(), RTLD_LAZY | RTLD_NOLOAD);
    if (!handle) return g;
    g.parallel = reinterpret_cast<GompParallelFn>(dlsym(handle, "GOMP_parallel"));
    g.max_threads = reinterpret_cast<OmpIntFn>(dlsym(handle, "omp_get_max_threads"));
    if (!g.parallel || !g.max_threads) return Gomp{};
    g.path = path;
#endif
    return g;
}

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
    std::mutex run_mutex; // one parallel_for at a time on our own workers

    std::mutex mutex;
    std::condition_variable wake;
    std::condition_variable done;
    std::vector<std::thread> workers;
    int requested = 0; // 0 = default
    bool started = false;
    uint64_t generation = 0;
    bool stopping = false;

    std::mutex gomp_mutex;
    std::atomic<bool> gomp_found{false};
    Gomp gomp;

    // The job being run.
    Task task = nullptr;
    void* context = nullptr;
    int64_t count = 0;
    std::atomic<int64_t> next{0};
    int busy = 0; // workers still inside the current job
    std::exception_ptr error;
    std::mutex error_mutex;

    // Looked up until found (LibTorch may be loaded after our first call; a miss costs a walk over
    // the loaded libraries, about a microsecond, and happens only on parallel-sized work), then
    // cached.
    const Gomp& openmp()
    {
        if (!gomp_found.load(std::memory_order_acquire)) {
            std::lock_guard<std::mutex> lock(gomp_mutex);
            if (!gomp_found.load(std::memory_order_relaxed)) {
                Gomp g = detect_gomp();
                if (g.parallel) {
                    gomp = g;
                    gomp_found.store(true, std::memory_order_release);
                }
            }
        }
        return gomp;
    }

    int threads()
    {
        if (requested > 0) return requested;
        const Gomp& g = openmp();
        return g.parallel ? g.max_threads() : default_num_threads();
    }

    // Pulls indices until none are left; records the first exception and stops handing out work.
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
                next.store(count, std::memory_order_relaxed);
            }
        }
    }

    static void openmp_body(void* self)
    {
        const bool was_inside = t_inside_pool;
        t_inside_pool = true;
        static_cast<Impl*>(self)->work();
        t_inside_pool = was_inside;
    }

    // `seen` starts at the generation current when the worker was started: a worker started after a
    // set_num_threads must not take the last job's generation for a new job (it would run it twice
    // and break the busy count).
    void worker_loop(uint64_t seen)
    {
        t_inside_pool = true;
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

    void start(int n)
    {
        stopping = false;
        const uint64_t current = generation;
        for (int i = 1; i < n; ++i) workers.emplace_back([this, current] { worker_loop(current); });
        started = true;
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
        started = false;
    }
};

ThreadPool& ThreadPool::instance()
{
    static ThreadPool pool;
    return pool;
}

ThreadPool::ThreadPool() : impl_(new Impl) {}

ThreadPool::~ThreadPool()
{
    impl_->stop();
    delete impl_;
}

int ThreadPool::num_threads() const noexcept
{
    return impl_->threads();
}

void ThreadPool::set_num_threads(int n)
{
    std::lock_guard<std::mutex> guard(impl_->run_mutex);
    impl_->stop();
    impl_->requested = n > 0 ? n : 0;
}

const char* ThreadPool::backend() const noexcept
{
    thread_local std::string text;
    const Gomp& g = impl_->openmp();
    text = g.parallel ? "openmp team of " + g.path : std::string("optim worker pool");
    return text.c_str();
}

void ThreadPool::run(int64_t n, Task task, void* context)
{
    if (n <= 0) return;
    const int threads = impl_->threads();
    // Nested use, a single index, or a single thread: run inline.
    if (t_inside_pool || n == 1 || threads <= 1) {
        for (int64_t i = 0; i < n; ++i) task(context, i);
        return;
    }
    std::lock_guard<std::mutex> guard(impl_->run_mutex);
    Impl& s = *impl_;
    s.task = task;
    s.context = context;
    s.count = n;
    s.next.store(0, std::memory_order_relaxed);
    s.error = nullptr;

    const Gomp& g = s.openmp();
    if (g.parallel) {
        g.parallel(&Impl::openmp_body, &s, static_cast<unsigned>(threads), 0);
    } else {
        if (!s.started) s.start(threads);
        {
            std::lock_guard<std::mutex> lock(s.mutex);
            s.busy = static_cast<int>(s.workers.size());
            ++s.generation;
        }
        s.wake.notify_all();
        t_inside_pool = true;
        s.work();
        t_inside_pool = false;
        std::unique_lock<std::mutex> lock(s.mutex);
        s.done.wait(lock, [&] { return s.busy == 0; });
    }
    if (s.error) std::rethrow_exception(s.error);
}

} // namespace optim::cpu
