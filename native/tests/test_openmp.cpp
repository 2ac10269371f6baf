// The CPU path with an OpenMP runtime in the process, as in a TorchSharp process (LibTorch brings
// its libgomp): the system's libgomp.so.1 stands in for LibTorch's copy, loaded before the first
// step. libgomp keeps one team per thread that starts a parallel region, so steps from many threads
// must not each get a team: the threads of the process are counted through /proc/self/task.
#include <optim.h>

#include <gtest/gtest.h>

#include <dirent.h>
#include <dlfcn.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

constexpr int kThreads = 4; // the team: the calling thread and three more

int process_threads()
{
    int n = 0;
    if (DIR* d = opendir("/proc/self/task")) {
        while (dirent* e = readdir(d))
            if (e->d_name[0] != '.') ++n;
        closedir(d);
    }
    return n;
}

// One parallel-sized SGD step (2^17 elements and more go to the team or the pool).
struct Model {
    std::vector<float> p, g;
    explicit Model(float seed) : p(300000), g(300000)
    {
        for (size_t i = 0; i < p.size(); ++i) {
            p[i] = seed + static_cast<float>(i % 1000) * 1e-3f;
            g[i] = static_cast<float>(i % 7) * 0.25f - 0.75f;
        }
    }
    optim_status step()
    {
        void* ps[] = {p.data()};
        const void* gs[] = {g.data()};
        int64_t ns[] = {static_cast<int64_t>(p.size())};
        optim_tensor_list list{1, ps, gs, nullptr, ns, nullptr, nullptr};
        optim_sgd_params params;
        optim_sgd_params_default(&params);
        params.weight_decay = 1e-2;
        return optim_sgd_step(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_FLOAT32, &list, 1, &params);
    }
};

class OpenMp : public ::testing::Test {
  protected:
    static void SetUpTestSuite()
    {
        // Idle team threads sleep at once instead of spinning (two cores here).
        setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
        libgomp_ = dlopen("libgomp.so.1", RTLD_NOW | RTLD_GLOBAL);
    }
    void SetUp() override
    {
        if (!libgomp_) GTEST_SKIP() << "libgomp.so.1 not found: " << dlerror();
        ASSERT_EQ(optim_set_num_threads(kThreads), OPTIM_STATUS_OK);
    }
    void TearDown() override { optim_set_num_threads(0); }
    static void* libgomp_;
};
void* OpenMp::libgomp_ = nullptr;

bool runs_on_the_team(const std::string& info)
{
    return info.rfind("openmp team of ", 0) == 0 && info.find("libgomp") != std::string::npos;
}

} // namespace

TEST_F(OpenMp, StepsFromManyThreadsUseOneTeam)
{
    Model first(1.0f);
    const int before = process_threads();
    ASSERT_EQ(first.step(), OPTIM_STATUS_OK) << optim_last_error();
    // This thread ran the first parallel step: it uses the team.
    EXPECT_TRUE(runs_on_the_team(optim_threading_info())) << optim_threading_info();
    const int with_team = process_threads();

    // Eight threads step at once and stay alive (a thread's libgomp team lives as long as it does)
    // until the process's threads have been counted.
    constexpr int kCallers = 8;
    std::atomic<int> done{0};
    std::atomic<bool> release{false};
    std::vector<std::string> infos(kCallers);
    std::vector<optim_status> statuses(kCallers, OPTIM_STATUS_INTERNAL);
    std::vector<std::thread> callers;
    for (int c = 0; c < kCallers; ++c)
        callers.emplace_back([&, c] {
            Model m(static_cast<float>(c));
            statuses[static_cast<size_t>(c)] = m.step();
            infos[static_cast<size_t>(c)] = optim_threading_info();
            done.fetch_add(1);
            while (!release.load()) std::this_thread::yield();
        });
    while (done.load() < kCallers) std::this_thread::yield();
    const int with_callers = process_threads();
    release.store(true);
    for (auto& t : callers) t.join();

    const int team = with_team - before;
    const int added = with_callers - with_team - kCallers; // beyond the callers themselves
    std::printf("threads: %d before, +%d for the team, +%d more for %d other calling threads\n",
                before, team, added, kCallers);
    EXPECT_EQ(team, kThreads - 1);
    // At most one pool of ours besides the team (8 teams would be 8 * 3 = 24 threads).
    EXPECT_LE(added, kThreads - 1);
    for (int c = 0; c < kCallers; ++c) {
        EXPECT_EQ(statuses[static_cast<size_t>(c)], OPTIM_STATUS_OK);
        EXPECT_EQ(infos[static_cast<size_t>(c)].rfind("optim worker pool", 0), 0u)
            << infos[static_cast<size_t>(c)];
    }
}

TEST_F(OpenMp, TheTeamAndThePoolGiveIdenticalResults)
{
    ASSERT_EQ(optim_set_num_threads(1), OPTIM_STATUS_OK);
    Model reference(3.0f);
    for (int i = 0; i < 3; ++i) ASSERT_EQ(reference.step(), OPTIM_STATUS_OK);
    ASSERT_EQ(optim_set_num_threads(kThreads), OPTIM_STATUS_OK);
    Model on_team(3.0f), on_pool(3.0f);
    for (int i = 0; i < 3; ++i) ASSERT_EQ(on_team.step(), OPTIM_STATUS_OK);
    std::string pool_info;
    std::thread other([&] {
        for (int i = 0; i < 3; ++i) EXPECT_EQ(on_pool.step(), OPTIM_STATUS_OK);
        pool_info = optim_threading_info();
    });
    other.join();
    EXPECT_TRUE(runs_on_the_team(optim_threading_info())) << optim_threading_info();
    EXPECT_EQ(pool_info.rfind("optim worker pool", 0), 0u) << pool_info;
    EXPECT_EQ(0, std::memcmp(on_team.p.data(), reference.p.data(), reference.p.size() * 4));
    EXPECT_EQ(0, std::memcmp(on_pool.p.data(), reference.p.data(), reference.p.size() * 4));
}

TEST_F(OpenMp, TheTeamPassesToTheNextThreadWhenItsThreadExits)
{
    std::string first_info, second_info;
    bool undesignated = false;
    std::thread first([&] {
        undesignated = runs_on_the_team(optim_threading_info());
        Model m(1.0f);
        EXPECT_EQ(m.step(), OPTIM_STATUS_OK);
        first_info = optim_threading_info();
    });
    first.join();
    if (!undesignated) GTEST_SKIP() << "an earlier test in this process holds the team";
    EXPECT_TRUE(runs_on_the_team(first_info)) << first_info;
    std::thread second([&] {
        Model m(2.0f);
        EXPECT_EQ(m.step(), OPTIM_STATUS_OK);
        second_info = optim_threading_info();
    });
    second.join();
    EXPECT_TRUE(runs_on_the_team(second_info)) << second_info;
}
