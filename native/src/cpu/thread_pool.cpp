#include "thread_pool.hpp"

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <dlfcn.h>
#include <link.h>
#include <pthread.h>
#include <sched.h>
#endif

namespace optim::cpu {

namespace {

thread_local bool t_inside_pool = false;

// ---- The OpenMP runtime LibTorch brought into the process, if any -----------------------------
//
// LibTorch's intra-op threads are an OpenMP team (its own libgomp copy). After each parallel region
// those threads spin for a while; a second pool of ours would then fight them for the cores, and an
// optimizer step right after a backward pass would lose. So when a libgomp is already loaded we run
// our parallel loops on its team through GOMP_parallel, found with dlsym; we never link an OpenMP
// runtime ourselves (docs/design.md).
using GompParallelFn = void (*)(void (*)(void*), void*, unsigned, unsigned);
using OmpIntFn = int (*)();

// Detection and the texts of optim_threading_info use fixed buffers: detection may run inside a
// step, which must not fail part-way, and nothing here may throw (a missing runtime is no error).
constexpr size_t kPathMax = 4096;

struct Gomp {
    GompParallelFn parallel = nullptr;
    OmpIntFn max_threads = nullptr;
    char team_text[kPathMax + 64] = "";  // on the thread that uses the team
    char other_text[kPathMax + 64] = ""; // on every other thread
};

#if defined(__linux__)
int find_libgomp(struct dl_phdr_info* info, size_t, void* data)
{
    const char* name = info->dlpi_name;
    if (name && std::strstr(name, "libgomp") != nullptr) {
        std::snprintf(static_cast<char*>(data), kPathMax, "%s", name);
        return 1;
    }
    return 0;
}
#endif

bool detect_gomp(Gomp& g) noexcept
{
#if defined(__linux__)
    const char* mode = std::getenv("OPTIM_THREADING");
    if (mode && std::strcmp(mode, "pool") == 0) return false;
    char path[kPathMax] = "";
    dl_iterate_phdr(find_libgomp, path);
    if (path[0] == '\0') return false;
    void* handle = dlopen(path, RTLD_LAZY | RTLD_NOLOAD);
    if (!handle) return false;
    g.parallel = reinterpret_cast<GompParallelFn>(dlsym(handle, "GOMP_parallel"));
    g.max_threads = reinterpret_cast<OmpIntFn>(dlsym(handle, "omp_get_max_threads"));
    if (!g.parallel || !g.max_threads) return false;
    std::snprintf(g.team_text, sizeof g.team_text, "openmp team of %s", path);
    std::snprintf(g.other_text, sizeof g.other_text,
                  "optim worker pool (another thread uses the openmp team of %s)", path);
    return true;
#else
    (void)g;
    return false;
#endif
}

// ---- One OpenMP team at most --------------------------------------------------------------------
//
// libgomp keeps a team per thread that calls GOMP_parallel, so every distinct calling thread would
// add a team of spinning threads. Only one thread, the first to run a parallel step while the
// runtime is loaded, uses the team; parallel steps from other threads run on our own pool. The
// designation ends when that thread exits (libgomp then frees its team), and the next thread to run
// a parallel step takes it over. Thread ids, not addresses: they are never reused.
std::atomic<uint64_t> g_next_thread_id{0};
std::atomic<uint64_t> g_openmp_thread{0}; // 0: no thread designated
thread_local uint64_t t_thread_id = 0;

uint64_t this_thread_id() noexcept
{
    if (t_thread_id == 0) t_thread_id = g_next_thread_id.fetch_add(1) + 1;
    return t_thread_id;
}

#if defined(__linux__)
pthread_key_t g_exit_key;
std::once_flag g_exit_key_once;
bool g_exit_key_ok = false;

void on_openmp_thread_exit(void*)
{
    uint64_t me = t_thread_id;
    g_openmp_thread.compare_exchange_strong(me, 0);
}
#endif

// Whether the calling thread uses the OpenMP team (designating it if no thread is).
bool claim_openmp_team()
{
    const uint64_t me = this_thread_id();
    uint64_t owner = g_openmp_thread.load(std::memory_order_acquire);
    if (owner != 0) return owner == me;
#if defined(__linux__)
    std::call_once(g_exit_key_once, [] {
        g_exit_key_ok = pthread_key_create(&g_exit_key, on_openmp_thread_exit) == 0;
    });
    // Without a way to hand the team on at exit, the designation would outlive the thread.
    if (!g_exit_key_ok || pthread_setspecific(g_exit_key, &g_openmp_thread) != 0) return false;
#endif
    return g_openmp_thread.compare_exchange_strong(owner, me);
}

bool is_openmp_thread() noexcept
{
    const uint64_t owner = g_openmp_thread.load(std::memory_order_acquire);
    return owner == 0 || owner == this_thread_id();
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
    std::mutex run_mutex; // one parallel_for at a time (on the OpenMP team or on our workers)

    std::mutex mutex;
    std::condition_variable wake;
    std::condition_variable done;
    std::vector<std::thread> workers;
    // Written under run_mutex, read by every step without it.
    std::atomic<int> requested{0}; // 0 = default
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
    // cached. Null when no OpenMP runtime is used.
    const Gomp* openmp()
    {
        if (!gomp_found.load(std::memory_order_acquire)) {
            std::lock_guard<std::mutex> lock(gomp_mutex);
            if (!gomp_found.load(std::memory_order_relaxed)) {
                if (!detect_gomp(gomp)) return nullptr;
                gomp_found.store(true, std::memory_order_release);
            }
        }
        return &gomp;
    }

    int threads()
    {
        const int n = requested.load(std::memory_order_relaxed);
        if (n > 0) return n;
        const Gomp* g = openmp();
        return g ? g->max_threads() : default_num_threads();
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

    // Starts up to n - 1 workers. Fewer (none, at worst) when the system refuses threads: the
    // caller then takes more of the indices, so a step never fails half-way for want of threads.
    void start(int n) noexcept
    {
        stopping = false;
        const uint64_t current = generation;
        try {
            workers.reserve(static_cast<size_t>(n > 1 ? n - 1 : 0));
            for (int i = 1; i < n; ++i)
                workers.emplace_back([this, current] { worker_loop(current); });
        } catch (...) {
        }
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

int ThreadPool::num_threads() const
{
    return impl_->threads();
}

void ThreadPool::set_num_threads(int n)
{
    std::lock_guard<std::mutex> guard(impl_->run_mutex);
    impl_->stop();
    impl_->requested.store(n > 0 ? n : 0, std::memory_order_relaxed);
}

const char* ThreadPool::backend() const
{
    const Gomp* g = impl_->openmp();
    if (!g) return "optim worker pool";
    return is_openmp_thread() ? g->team_text : g->other_text;
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

    const Gomp* g = s.openmp();
    if (g && claim_openmp_team()) {
        g->parallel(&Impl::openmp_body, &s, static_cast<unsigned>(threads), 0);
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
